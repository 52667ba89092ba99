"""The HTTP side: the Flask app, its blueprints, key checks, access logs, gunicorn worker.

The top layer: only cli.py (``serve``) and wsgi.py import it.
"""
