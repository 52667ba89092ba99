"""gunicorn settings for lookup-server; gunicorn reads this file from the working folder.

Run: gunicorn wsgi:app   (see README.md, "Production").
"""

import multiprocessing
import os

bind = os.environ.get("LOOKUP_SERVER_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("LOOKUP_SERVER_WORKERS", min(4, multiprocessing.cpu_count() * 2)))
# An event loop reads each request whole, then one of `threads` threads answers it:
# idle and slow connections cost no thread (see lookup_server/web/worker.py).
worker_class = "lookup_server.web.worker.LookupWorker"
threads = int(os.environ.get("LOOKUP_SERVER_THREADS", 32))
# Seconds an idle kept-alive connection stays open.
keepalive = 5
# The event loop tells gunicorn it is alive every second, whatever the threads do;
# a worker that stays silent this long is restarted. Starting counts too, and a
# worker's start may build the index of a large CSV file.
timeout = 330
# Access log to stderr, with shared keys hidden from the request line.
accesslog = "-"
logger_class = "lookup_server.web.access_log.GunicornLogger"
# The request line's bound is [server] max_request_line of lookup-server's own
# configuration: this worker does not use gunicorn's parser, which stops at 8,190
# bytes (HelpSpot puts every custom field in the URL, encoded twice).
