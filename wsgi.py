"""WSGI entry point for production: ``gunicorn wsgi:app``.

The configuration comes from $LOOKUP_SERVER_CONFIG (else the built-in demo).
"""

import gc

from lookup_server.config.settings import load_config
from lookup_server.web.access_log import configure_logging
from lookup_server.web.app import create_app

config = load_config()
configure_logging(config.server.log_format)
app = create_app(config)
# Everything built so far lives as long as the worker: keep it out of every
# later garbage-collector pass (measured: about 10% more lookups per second).
gc.freeze()
