"""The webhook outbox in the console: by state and target, attempts, retry, purge."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, request, url_for

from lookup_server.web.blueprints.common import state
from lookup_server.web.console.blueprint import bp, page
from lookup_server.webhooks import STATES, OutboxError

#: Webhooks listed at most on one page.
LISTED = 100


@bp.route("/console/webhooks")
def webhooks() -> str:
    """The newest webhooks, of one state and target if asked."""
    wanted_state = request.args.get("state", "")
    wanted_target = request.args.get("target", "")
    box = state().webhooks.outbox
    listed = []
    error = None
    try:
        states = [wanted_state] if wanted_state in STATES else None
        after, _ = box.newest(LISTED, states)
        listed = [
            e
            for e in box.summaries(states, after_id=after)
            if not wanted_target or e.target == wanted_target
        ]
    except OutboxError as exc:
        error = str(exc)
    return page(
        "webhooks.html",
        listed=list(reversed(listed)),
        error=error,
        states=STATES,
        wanted={"state": wanted_state, "target": wanted_target},
        targets=sorted(state().targets.items()),
    )


@bp.route("/console/webhooks/<int:webhook_id>/retry", methods=["POST"])
def retry(webhook_id: int) -> Any:
    """Make one webhook due now."""
    try:
        entry = state().webhooks.outbox.retry(webhook_id)
        flash(f"Webhook {entry.id} for {entry.target} is pending again.")
    except OutboxError as exc:
        flash(str(exc))
    return redirect(url_for("console.webhooks"))


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
