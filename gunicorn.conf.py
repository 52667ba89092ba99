"""gunicorn settings for lookup-server; gunicorn reads this file from the working folder.

Run: gunicorn wsgi:app   (see README.md, "Production").
"""

import multiprocessing
import os

bind = os.environ.get("LOOKUP_SERVER_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("LOOKUP_SERVER_WORKERS", min(4, multiprocessing.cpu_count() * 2)))
# Every backend call is bounded by its source's timeout (at most 300 s).
timeout = 330
# Access log to stderr, with shared keys hidden from the request line.
accesslog = "-"
logger_class = "lookup_server.access_log.GunicornLogger"
# HelpSpot puts every custom field of the request in the URL, URL-encoded twice
# (HELPSPOT.md §1), also in http-post mode: allow gunicorn's largest bounded request
# line rather than its 4094-byte default. (0 would mean unbounded, which lets any
# client make a worker buffer without end.)
limit_request_line = 8190


def on_starting(server: object) -> None:
    """Before the workers fork: gunicorn's own error pages in plain text, which
    HelpSpot shows as an error rather than as "No customers found"."""
    from lookup_server import gunicorn_errors

    gunicorn_errors.install()
