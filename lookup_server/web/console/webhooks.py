"""The webhook outbox in the console: by state and target, attempts, retry, purge."""

from __future__ import annotations

import time
from typing import Any

from flask import abort, flash, redirect, request, url_for

from lookup_server.web.blueprints.common import state
from lookup_server.web.console.blueprint import bp, local_path, page
from lookup_server.web.console.charts import chart
from lookup_server.webhooks import STATES, OutboxError, parse_moment, target_statuses

#: Webhooks listed at most on one page.
LISTED = 100
#: The chart's span, in hours.
CHART_HOURS = 24


@bp.route("/console/webhooks")
def webhooks() -> Any:
    """Counts by state and target, each target's breaker and limits, a day's chart, the newest."""
    wanted = {key: request.args.get(key, "") for key in ("state", "target")}
    box = state().webhooks.outbox
    try:
        counts = box.counts()
        oldest = box.oldest_pending()
        now = time.time()
        first_hour = int(now // 3600) - CHART_HOURS + 1
        by_hour = box.created_by_hour(first_hour * 3600.0)
        states = [wanted["state"]] if wanted["state"] in STATES else None
        after, _ = box.newest(LISTED, states)
        listed = [
            e for e in box.summaries(states, after_id=after) if wanted["target"] in ("", e.target)
        ]
        deliveries = target_statuses(
            state().webhooks.target_names, box.policies, box.target_states()
        )
    except OutboxError as exc:
        return page("webhooks.html", error=str(exc), wanted=wanted, states=STATES, targets=[])
    hours = range(first_hour, first_hour + CHART_HOURS)
    series = [
        (
            sum(n for (hour, _), n in by_hour.items() if hour == h * 3600),
            by_hour.get((h * 3600, "failed"), 0),
        )
        for h in hours
    ]
    targets = sorted({t for t, _ in counts} | set(state().webhooks.target_names))
    return page(
        "webhooks.html",
        error=None,
        counts=counts,
        targets=targets,
        states=STATES,
        oldest_age=None if oldest is None else now - oldest,
        chart=chart(series, unit="hour"),
        listed=list(reversed(listed)),
        wanted=wanted,
        deliveries=deliveries,
        now=now,
    )


@bp.route("/console/webhooks/<int:webhook_id>")
def webhook(webhook_id: int) -> str:
    """One webhook: its state, and every attempt to deliver it."""
    box = state().webhooks.outbox
    entry = box.get(webhook_id)
    if entry is None:
        abort(404)
    request_id = entry.payload.get("xRequest", "")
    return page(
        "webhook.html",
        entry=entry,
        request_id=request_id if isinstance(request_id, str) else "",
        attempts=box.attempts(webhook_id),
    )


@bp.route("/console/webhooks/<int:webhook_id>/retry", methods=["POST"])
def retry(webhook_id: int) -> Any:
    """Make one webhook due now."""
    try:
        entry = state().webhooks.outbox.retry(webhook_id)
        flash(f"Webhook {entry.id} for {entry.target} is pending again.")
    except OutboxError as exc:
        flash(str(exc))
    return redirect(
        local_path(request.form.get("back", ""))
        if "back" in request.form
        else url_for("console.webhooks")
    )


@bp.route("/console/webhooks/retry-failed", methods=["POST"])
def retry_failed() -> Any:
    """Make every failed webhook of one target due now, or those received in a time range."""
    target = request.form.get("target", "")
    if target not in state().webhooks.target_names:
        flash(f"No target named {target!r} takes webhooks.")
        return redirect(url_for("console.webhooks"))
    try:
        since, until = (_moment(request.form.get(key, ""), key) for key in ("since", "until"))
        count = state().webhooks.outbox.retry_failed(target, since=since, until=until)
        within = "" if since is None and until is None else " in that time range"
        flash(f"{count} failed webhook(s) for {target}{within} are pending again.")
    except OutboxError as exc:
        flash(str(exc))
    return redirect(url_for("console.webhooks"))


def _moment(text: str, what: str) -> float | None:
    """A form's time (a datetime-local field: local time, as the page shows), None when blank."""
    return parse_moment(text, f"{what.capitalize()}:") if text.strip() else None


@bp.route("/console/webhooks/purge", methods=["POST"])
def purge() -> Any:
    """Delete delivered and failed webhooks older than the days given."""
    try:
        days = float(request.form.get("days", ""))
        purged = state().webhooks.outbox.purge(days)
        flash(f"Purged {purged.webhooks} webhook(s) and {purged.refusals} refusal(s).")
    except ValueError:
        flash("Give the age in days, e.g. 30.")
    except OutboxError as exc:
        flash(str(exc))
    return redirect(url_for("console.webhooks"))
