"""Try a Live Lookup or an AJAX field from the console, exactly as HelpSpot would call it."""

from __future__ import annotations

import re
from typing import Any

from flask import render_template, request, url_for

from lookup_server.core.models import ByEmail, ById, ByPhone, SearchTerm
from lookup_server.helpspot import staff
from lookup_server.helpspot.trial import MODES, Ticket, Trial, try_ajax, try_lookup
from lookup_server.web.blueprints.common import state
from lookup_server.web.console.blueprint import bp, page
from lookup_server.web.console.pages import cmdline_path

#: Custom-field rows on the form.
CUSTOM_ROWS = 3
_CUSTOM = re.compile(r"Custom[1-9][0-9]{0,3}")
#: What the form accepts of one field: more is not a lookup anyone makes.
MAX_FIELD = 4096


def _sources_offering(capability: str) -> list[str]:
    return [n for n, s in state().sources.items().items() if capability in s.capabilities]


def _ticket() -> tuple[Ticket, list[str]]:
    """The form's ticket, and what was wrong with it."""
    form = request.form
    problems = []
    custom = {}
    for i in range(CUSTOM_ROWS):
        name = form.get(f"custom_name_{i}", "").strip()
        value = form.get(f"custom_value_{i}", "")
        if not name:
            continue
        if not _CUSTOM.fullmatch(name):
            problems.append(f"{name!r} is not a custom field id: write CustomN, e.g. Custom5")
            continue
        custom[name] = value[:MAX_FIELD]
    fields = {
        key: form.get(key, "")[:MAX_FIELD]
        for key in ("customer_id", "first_name", "last_name", "email", "phone", "category")
    }
    return Ticket(**fields, custom=custom), problems


@bp.route("/console/try", methods=["GET", "POST"])
def try_livelookup() -> str:
    """The form, and after it is sent, what staff would see and how it was found."""
    names = _sources_offering("livelookup")
    context: dict[str, Any] = {"names": names, "modes": MODES, "rows": range(CUSTOM_ROWS)}
    if request.method == "GET":
        return page("try.html", form={}, **context)
    ticket, problems = _ticket()
    source, mode = request.form.get("source", ""), request.form.get("mode", "")
    if source not in names:
        problems.append("choose a source")
    if mode not in MODES:
        problems.append("choose how HelpSpot calls")
    if problems:
        return page("try.html", form=request.form, problems=problems, **context)
    trial = try_lookup(state().sources, source, mode, ticket, cmdline_path(source))
    return page("try.html", form=request.form, trial=trial, shown=_shown(trial), **context)


def _shown(trial: Trial) -> dict[str, Any]:
    """What each HelpSpot page makes of the answer."""
    if trial.mode == "address_book":
        return {"address_book": staff.address_book(trial.view)}
    if trial.mode == "automation":
        applied, why = staff.automation_applies(trial.view)
        return {"applied": applied, "why": why}
    shown = staff.request_page(trial.view, trial.parse_error)
    css = url_for("console.static", filename="console.css")
    html = render_template("console/staff_request_page.html", rp=shown, css=css)
    return {"request_page": shown, "staff_html": html}


@bp.app_template_filter("term")
def describe_term(term: SearchTerm) -> str:
    """A search strategy's term as the console names it."""
    if isinstance(term, ById):
        return f"customer id {term.customer_id!r}"
    if isinstance(term, ByEmail):
        return f"e-mail {term.address!r}"
    if isinstance(term, ByPhone):
        return f"phone digits {term.digits!r}"
    return f"name: last {term.last!r}" + (f", first {term.first!r}" if term.first else "")


@bp.route("/console/try-ajax", methods=["GET", "POST"])
def try_ajaxfield() -> str:
    """Press an AJAX field's button: the drop-down staff would get."""
    names = _sources_offering("ajax")
    context: dict[str, Any] = {"names": names, "rows": range(CUSTOM_ROWS)}
    if request.method == "GET":
        return page("try_ajax.html", form={}, **context)
    ticket, problems = _ticket()
    source = request.form.get("source", "")
    field_id = request.form.get("field", "").strip()
    if source not in names:
        problems.append("choose a source")
    if not _CUSTOM.fullmatch(field_id):
        problems.append("the AJAX field's id is CustomN, e.g. Custom5")
    if problems:
        return page("try_ajax.html", form=request.form, problems=problems, **context)
    typed = request.form.get("typed", "")[:MAX_FIELD]
    trial = try_ajax(state().sources, source, field_id, typed, ticket)
    return page("try_ajax.html", form=request.form, trial=trial, **context)
