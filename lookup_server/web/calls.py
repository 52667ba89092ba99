"""A CallRecord for every call to a HelpSpot endpoint, handed to the app's Telemetry.

And the count of calls being answered, which deliveries give way to.

Recorded around the views, so that every answer counts, refusals and errors
included; the console and ``/metrics`` are not HelpSpot's calls and are not
recorded.
"""

from __future__ import annotations

import json
import time

from flask import Flask, Response, g, request

from lookup_server.core.calls import ANSWERED, CallsInFlight
from lookup_server.telemetry import (
    SOURCE_ENDPOINTS,
    UNKNOWN_NAME,
    CallRecord,
    Telemetry,
    outcome_for,
    reason_of,
    shortened,
)
from lookup_server.web.auth import redact
from lookup_server.web.blueprints.common import state

#: The blueprints that serve HelpSpot, and what their views are called in a record.
_ENDPOINTS = {
    "livelookup.livelookup": "livelookup",
    "ajax.ajax": "ajax",
    "push.push": "push",
    "push.details": "details",
    "webhook.webhook": "webhook",
}
#: A failed call's reason is read from the start of its answer.
_DETAIL_BYTES = 2048


def count_calls(app: Flask, calls: CallsInFlight) -> None:
    """Keep ``calls`` counting the requests ``app`` is answering (every endpoint).

    Under lookup-server's worker a call ends when its answer is written: the
    worker writes it after the app returns, and a delivery starting then
    would hold up the write (bench/bench_outbox.py). Elsewhere it ends with
    the request.
    """

    @app.before_request
    def begun() -> None:
        calls.started()
        answered = request.environ.get(ANSWERED)
        if isinstance(answered, list):
            answered.append(calls.ended)
        else:
            g.call_counted = True

    @app.teardown_request
    def finished(_error: BaseException | None) -> None:
        # only a request that was counted: a before_request may fail before ours
        if g.pop("call_counted", False):
            calls.ended()


def record_calls(app: Flask, telemetry: Telemetry) -> None:
    """Report every HelpSpot call ``app`` answers to ``telemetry``."""
    if type(telemetry) is Telemetry:
        # nobody hears of calls (no console, metrics or JSON log): build no records,
        # about 6% of a lookup under gunicorn (see bench/README.md)
        return

    @app.before_request
    def started() -> None:
        g.call_started = (time.time(), time.perf_counter())

    @app.after_request
    def answered(response: Response) -> Response:
        endpoint = _ENDPOINTS.get(request.endpoint or "")
        if endpoint is None or "call_started" not in g:
            return response
        at, started_counter = g.call_started
        view_args = request.view_args or {}
        name = str(view_args.get("source") or view_args.get("target") or "")
        status = response.status_code
        count = g.get("answer_count")
        telemetry.call(
            CallRecord(
                at=at,
                endpoint=endpoint,
                name=_configured(endpoint, name),
                outcome=outcome_for(status, count),
                status=status,
                duration_ms=(time.perf_counter() - started_counter) * 1000,
                count=count if status == 200 else None,
                detail=_detail(response) if status >= 400 else "",
                path=shortened(redact(request.full_path.rstrip("?"))),
                remote_addr=request.remote_addr or "",
            )
        )
        return response


def _configured(endpoint: str, name: str) -> str:
    """``name``, or UNKNOWN_NAME when no such source or target is configured.

    Figures and metrics are kept per name, and a URL can name anything; the
    record's path still shows what was asked for.
    """
    app_state = state()
    configured = app_state.sources if endpoint in SOURCE_ENDPOINTS else app_state.targets
    return name if name in configured.items() else UNKNOWN_NAME


def _detail(response: Response) -> str:
    """The reason an error answer gave: its plain text, or its JSON ``error``."""
    if response.is_streamed:
        return ""
    head = response.get_data()[:_DETAIL_BYTES].decode("utf-8", "replace")
    if response.mimetype == "application/json":
        try:
            return str(json.loads(head).get("error", ""))
        except (ValueError, AttributeError):
            return ""
    return reason_of(head)
