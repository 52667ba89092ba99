"""gunicorn settings for lookup-server; gunicorn reads this file from the working folder.

Run: gunicorn wsgi:app   (see README.md, "Production").
"""

import glob
import multiprocessing
import os
import shutil
import tempfile

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

# -- /metrics across workers (lookup_server/telemetry/metrics.py) ----------------------
# Each worker writes its Prometheus counts to files in this folder, and a scrape of
# any worker adds up all of them. prometheus_client reads the variable when the app
# imports it, so it is set here, before any worker (or --preload) loads the app; it
# is a fresh private folder unless the environment names one.
_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# Which folder this file made (and removes at exit): a configuration reload runs
# this file again, with the variable already set.
_MADE_METRICS_DIR = "LOOKUP_SERVER_MADE_METRICS_DIR"
if not os.environ.get(_METRICS_DIR):
    os.environ[_METRICS_DIR] = os.environ[_MADE_METRICS_DIR] = tempfile.mkdtemp(
        prefix="lookup-server-metrics-"
    )


def on_starting(server):
    """Before the first worker: counts left by an earlier run of the server are not ours."""
    os.makedirs(os.environ[_METRICS_DIR], mode=0o700, exist_ok=True)
    for stale in glob.glob(os.path.join(os.environ[_METRICS_DIR], "*.db")):
        os.remove(stale)


def child_exit(server, worker):
    """A worker ended: prometheus_client's bookkeeping of its files."""
    # Not at the top: what reads this file only for its settings need not load it.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """The server stops: remove the folder this file made."""
    made = os.environ.get(_MADE_METRICS_DIR)
    if made and made == os.environ.get(_METRICS_DIR):
        shutil.rmtree(made, ignore_errors=True)
