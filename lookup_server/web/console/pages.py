"""The console's pages: overview, log in and out, HelpSpot set-up, configuration, recent calls."""

from __future__ import annotations

import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from flask import Response, redirect, request, session, url_for

from lookup_server.config.effective import effective_config
from lookup_server.helpspot.bridge import BridgeError, bridge_filename, render_bridge
from lookup_server.runtime.probe import Health, check_live, key_warnings
from lookup_server.runtime.service import Plugged
from lookup_server.telemetry import ENDPOINTS
from lookup_server.telemetry.activity import Figures, LastError
from lookup_server.web.blueprints.common import state
from lookup_server.web.console.access import loopback_only, password_matches
from lookup_server.web.console.blueprint import (
    bp,
    console_state,
    local_path,
    logged_in,
    page,
    plain,
    start_session,
)
from lookup_server.web.console.charts import Chart, chart
from lookup_server.webhooks import probe as probe_outbox

#: The most checks run at once when the overview first opens.
MAX_PARALLEL_CHECKS = 8


@dataclass(frozen=True)
class ItemRow:
    """One source or target on the overview."""

    kind: str
    name: str
    backend: str
    capabilities: list[str]
    health: Health
    last_error: LastError | None
    figures: Figures
    chart: Chart


# -- log in and out -----------------------------------------------------------------


@bp.route("/console/login", methods=["GET", "POST"])
def login() -> Any:
    """The login form: one password field."""
    console = console_state()
    after = _next_page()
    if loopback_only(console.settings) or logged_in():
        return redirect(after)
    if request.method == "GET":
        return page("login.html", next=after, error=None)
    address = request.remote_addr or ""
    wait = console.limiter.wait_seconds(address)
    if wait > 0:
        response = Response(
            page("login.html", next=after, error="Too many failed logins: wait and try again."),
            status=429,
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    if not password_matches(console.settings, request.form.get("password", "")):
        console.limiter.failed(address)
        return Response(page("login.html", next=after, error="Wrong password."), status=401)
    start_session()
    return redirect(after)


def _next_page() -> str:
    return local_path(request.values.get("next", "/"))


@bp.route("/console/logout", methods=["POST"])
def logout() -> Any:
    """End the session."""
    session.clear()
    return redirect(url_for("console.login"))


# -- overview -------------------------------------------------------------------------


@bp.route("/")
def overview() -> str:
    """Every source and target: health, last error, the last hour's calls."""
    return page("overview.html", sources=_rows("source"), targets=_rows("target"))


def _items(kind: str) -> dict[str, Plugged[Any]]:
    app_state = state()
    items = app_state.sources if kind == "source" else app_state.targets
    return dict(items.items())


def _rows(kind: str) -> list[ItemRow]:
    console = console_state()
    items = _items(kind)
    health = _health(kind, items)
    figures = console.activity.figures(kind, items)
    errors = console.activity.last_errors(kind)
    return [
        ItemRow(
            kind,
            name,
            item.settings.backend,
            sorted(item.capabilities),
            health[name],
            errors.get(name),
            figures[name],
            chart(figures[name].per_minute),
        )
        for name, item in items.items()
    ]


def _health(kind: str, items: dict[str, Plugged[Any]], again: bool = False) -> dict[str, Health]:
    """Each item's last check in this process; those never checked (or all, ``again``) now."""
    console = console_state()
    with console.lock:
        known = {name: console.health.get((kind, name)) for name in items}
    due = [name for name, health in known.items() if again or health is None]
    if due:
        with ThreadPoolExecutor(min(MAX_PARALLEL_CHECKS, len(due))) as pool:
            fresh = dict(zip(due, pool.map(lambda name: check_live(items[name]), due), strict=True))
        with console.lock:
            for name, health in fresh.items():
                console.health[(kind, name)] = health
        known.update(fresh)
    return {name: health for name, health in known.items() if health is not None}


@bp.route("/console/check", methods=["POST"])
def check_again() -> Any:
    """Run the check of one source or target, or of all, again."""
    kind, name = request.form.get("kind", ""), request.form.get("name", "")
    for each in ("source", "target"):
        items = _items(each)
        if kind in ("", each):
            chosen = {n: i for n, i in items.items() if name in ("", n)}
            _health(each, chosen, again=True)
    return redirect(url_for("console.overview"))


# -- recent calls ---------------------------------------------------------------------


@bp.route("/console/calls")
def calls() -> str:
    """The last calls HelpSpot made, newest first, filterable."""
    wanted = {key: request.args.get(key, "") for key in ("endpoint", "name", "outcome")}
    records = console_state().activity.recent(
        endpoint=wanted["endpoint"], name=wanted["name"], outcome=wanted["outcome"]
    )
    return page(
        "calls.html",
        calls=records,
        wanted=wanted,
        endpoints=ENDPOINTS,
        names=sorted({*_items("source"), *_items("target")}),
    )


# -- configuration --------------------------------------------------------------------


@bp.route("/console/config")
def configuration() -> str:
    """The problems ``check`` would report, and the effective configuration, secrets masked."""
    config = state().config
    problems = [line for line, _ in key_warnings(config)]
    for kind in ("source", "target"):
        for name, health in _health(kind, _items(kind)).items():
            if not health.ok:
                problems.append(f"{kind}s.{name}: {health.problem}")
            problems += [f"{kind}s.{name}: warning: {w}" for w in health.warnings]
    if state().webhooks.enabled:
        ok, detail = probe_outbox(config.server.outbox_location)
        if not ok:
            problems.append(f"server.outbox: {detail}")
    return page("config.html", problems=problems, text=effective_config(config))


# -- HelpSpot set-up ------------------------------------------------------------------


@dataclass(frozen=True)
class SetupValue:
    """One value to enter in HelpSpot's admin, and where."""

    where: str
    value: str
    note: str = ""
    #: A download of the file ``value`` names.
    download: str = ""


@bp.route("/console/setup", methods=["GET", "POST"])
def setup() -> str:
    """What to enter in HelpSpot for every source and target (keys on request)."""
    reveal = request.method == "POST" and request.form.get("reveal") == "1"
    base = _base_url()
    sources = {
        name: _source_values(name, item, base, reveal) for name, item in _items("source").items()
    }
    targets = {
        name: _target_values(name, item, base, reveal) for name, item in _items("target").items()
    }
    return page("setup.html", sources=sources, targets=targets, base=base, revealed=reveal)


def _base_url() -> str:
    given = request.values.get("url", "").strip().rstrip("/")
    if given and urlsplit(given).scheme in ("http", "https") and urlsplit(given).netloc:
        return given
    return request.host_url.rstrip("/")


def _key(kind: str, reveal: bool) -> str | None:
    key = state().config.server.key_for(kind)
    if key is None:
        return None
    return key.reveal() if reveal else "KEY-HIDDEN"


def _source_values(name: str, item: Plugged[Any], base: str, reveal: bool) -> list[SetupValue]:
    values = []
    path = quote(name, safe="")
    if "livelookup" in item.capabilities:
        key = _key("livelookup", reveal)
        query = f"?ll_key={key}" if key else ""
        values.append(
            SetupValue(
                "Admin → Settings → Live Lookup: type http (GET), Path",
                f"{base}/livelookup/{path}{query}",
            )
        )
        values.append(
            SetupValue(
                "… or type cmdline (on HelpSpot's server), Path",
                cmdline_path(name),
                "needs no key; give the web server a UTF-8 locale",
            )
        )
    if "ajax" in item.capabilities:
        key = _key("ajax", reveal)
        values.append(
            SetupValue(
                "Admin → Custom Fields → AJAX selection field, URL",
                f"{base}/ajax/{path}" + (f"/{key}" if key else ""),
                "every staff member can read this URL: use an ajax_key that opens nothing else",
            )
        )
    return values


def _target_values(name: str, item: Plugged[Any], base: str, reveal: bool) -> list[SetupValue]:
    values = []
    if "push" in item.capabilities:
        values.append(
            SetupValue(
                "Request Push: a file for HelpSpot's custom_code/ folder",
                bridge_filename(bridge_name(name)),
                "the file holds the push key: make it readable by the web server only",
                download=url_for("console.bridge", target=name, url=base),
            )
        )
    if "webhook" in item.capabilities:
        key = _key("webhook", reveal)
        values.append(
            SetupValue(
                "Triggers and automation rules → Webhook, URL",
                f"{base}/webhook/{quote(name, safe='')}" + (f"/{key}" if key else ""),
            )
        )
    return values


def cmdline_path(source: str) -> str:
    """What a cmdline Live Lookup source's Path is in HelpSpot (HELPSPOT.md §2).

    The lookup-server program beside this interpreter, and the configuration
    file the server runs on (a stand-in when it runs on none).
    """
    beside = Path(sys.executable).with_name("lookup-server")
    program = shlex.quote(str(beside)) if beside.exists() else "lookup-server"
    origin = state().config.origin
    config = shlex.quote(origin) if Path(origin).is_file() else "/etc/lookup-server/lookup.toml"
    return f"{program} livelookup --config {config} --source {shlex.quote(source)} --"


@bp.route("/console/setup/bridge/<target>")
def bridge(target: str) -> Response:
    """The Request Push bridge file for ``target``, as a download."""
    item = _items("target").get(target)
    if item is None or "push" not in item.capabilities:
        return plain(f"no target named {target!r} takes Request Push", 404)
    key = state().config.server.key_for("push")
    name = bridge_name(target)
    try:
        text = render_bridge(target, _base_url(), key.reveal() if key else None, name)
    except BridgeError as exc:
        return plain(str(exc), 400)
    response = Response(text, content_type="application/x-php; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="{bridge_filename(name)}"'
    return response


def bridge_name(target: str) -> str:
    """The bridge's NAME for a target: a dash cannot be in the PHP class HelpSpot loads."""
    return target.replace("-", "_")
