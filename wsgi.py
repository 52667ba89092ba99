"""WSGI entry point for production: ``gunicorn wsgi:app``.

The configuration comes from $LOOKUP_SERVER_CONFIG (else the built-in demo).
"""

from lookup_server.access_log import configure_logging
from lookup_server.app import create_app

configure_logging()
app = create_app()
