"""The application factory: everything is built here, nothing is global."""

from __future__ import annotations

import atexit
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response
from werkzeug.exceptions import HTTPException
from werkzeug.serving import run_simple

from lookup_server.config.settings import Config, config_from_mapping, load_config
from lookup_server.core.calls import CallsInFlight
from lookup_server.runtime.service import Sources, Targets
from lookup_server.telemetry import Fanout, Telemetry
from lookup_server.telemetry.activity import Activity, activity_file
from lookup_server.telemetry.json_log import JsonCallLog
from lookup_server.telemetry.metrics import PrometheusMetrics
from lookup_server.web.access_log import RedactingRequestHandler, install_key_filter
from lookup_server.web.blueprints import ajax, health, livelookup, metrics, push, webhook
from lookup_server.web.blueprints.common import EXTENSION, AppState
from lookup_server.web.calls import count_calls, record_calls
from lookup_server.web.console import install_console
from lookup_server.webhooks.intake import Webhooks

log = logging.getLogger(__name__)


def create_app(
    test_config: Config | Mapping[str, Any] | None = None, base_dir: Path | None = None
) -> Flask:
    """Build the app from a Config, a config mapping (tests), or the configured file.

    With no argument the file comes from ``$LOOKUP_SERVER_CONFIG``, else the
    built-in demo. A mapping's relative paths resolve against ``base_dir``.
    """
    if isinstance(test_config, Config):
        config = test_config
    elif test_config is not None:
        config = config_from_mapping(test_config, base_dir or Path.cwd(), origin="test config")
    else:
        config = load_config()
    # No log line of this process may show a key, whoever writes it (tornado, werkzeug...),
    # nor the console's password.
    install_key_filter(
        secret.reveal()
        for secret in (
            config.server.shared_key,
            *config.server.endpoint_keys.values(),
            config.console.password,
        )
        if secret
    )
    app = Flask(__name__)
    # Refused with 413 before anything is read, let alone stored.
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    activity = Activity(activity_file(config.server.outbox)) if config.console.enabled else None
    prometheus = PrometheusMetrics() if config.console.enabled else None
    telemetry = _telemetry(config, activity, prometheus)
    sources, targets = Sources(config, telemetry), Targets(config)
    sources.prepare()
    targets.prepare()
    calls = CallsInFlight()
    # first: every other before_request runs while the call is counted
    count_calls(app, calls)
    webhooks = Webhooks(config.server, targets, telemetry, calls)
    app.extensions[EXTENSION] = AppState(config, sources, targets, webhooks, telemetry, prometheus)
    for closing in (sources.close, targets.close, webhooks.close):
        atexit.register(closing)
    # Pending webhooks are delivered with nothing but the server running; a process
    # forked after this point (gunicorn --preload) starts its own worker on its
    # first request.
    webhooks.ensure_worker()
    app.before_request(webhooks.ensure_worker)
    # Sources' own background work (a sync) runs in the server only, never on the
    # command line; like the delivery worker, again in each forked worker.
    sources.start_background(webhooks.submit)
    app.before_request(lambda: sources.start_background(webhooks.submit))
    for blueprint in (livelookup.bp, ajax.bp, push.bp, webhook.bp, health.bp, metrics.bp):
        app.register_blueprint(blueprint)
    if activity is not None:
        install_console(app, config, activity)
    else:
        app.add_url_rule("/", "console_off", _console_off)
    record_calls(app, telemetry)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    return app


def _telemetry(
    config: Config, activity: Activity | None, prometheus: PrometheusMetrics | None
) -> Telemetry:
    """Who hears of the work done: nobody, unless the configuration asks for it.

    ``activity`` and ``prometheus`` are built by the caller, since the console
    and ``/metrics`` read them too.
    """
    consumers: list[Telemetry] = [c for c in (activity, prometheus) if c is not None]
    if config.server.log_format == "json":
        consumers.append(JsonCallLog())
    return Fanout(*consumers) if consumers else Telemetry()


def run_development_server(app: Flask, host: str, port: int) -> None:
    """Serve ``app`` on werkzeug's threaded server until interrupted (``lookup-server serve``).

    Its request-line log goes through RedactingRequestHandler, so no key shows.
    """
    run_simple(host, port, app, threaded=True, request_handler=RedactingRequestHandler)


def _console_off() -> Response:
    return Response(
        "lookup-server is running. Its console is off: add a [console] table to the "
        'configuration to turn it on (README, "The console").\n',
        content_type="text/plain; charset=utf-8",
    )


def _http_error(error: HTTPException) -> Response:
    # Plain text: HelpSpot shows it as the parser error, not an HTML page.
    return Response(
        f"lookup-server error: {error.name}\n",
        status=error.code or 500,
        content_type="text/plain; charset=utf-8",
    )


def _unexpected_error(error: Exception) -> Response:
    log.exception("unexpected error", exc_info=error)
    return Response(
        "lookup-server error: internal error (details in the server log)\n",
        status=500,
        content_type="text/plain; charset=utf-8",
    )
