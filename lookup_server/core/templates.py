"""The one template mechanism every target builds its message or issue text with.

A target option such as ``title = "{{ sTitle }} ({{ customer }})"`` is a
Jinja2 template, run in Jinja's sandbox (no attribute of Python's internals
is reachable, whatever an admin writes) with autoescaping off: the result is
plain text, which each target then encodes the way its API wants (JSON
strings, XML). What a template may use is :func:`request_context`: the same
names for a Request Push and a webhook.

A target whose text is itself markup (Slack's ``<url|label>``, Campfire's
HTML) gives :class:`TextTemplate` its ``escape``: every value a ``{{ ... }}``
prints passes through it, the template's own text does not. So an admin's
template may hold markup while HelpSpot's text never becomes any. Escaping
what is printed, rather than the context's values beforehand, keeps filters
and tests working on the text itself (``truncate`` never cuts an ``&amp;``,
``sTitle == "R&D"`` holds), and ``striptags``, which decodes entities, has
its result escaped again, so neither ``{{ x | striptags }}`` nor a
``{% filter striptags %}`` block can turn escaped text back into markup.

Notes arrive from HelpSpot as HTML; :func:`html_to_text` makes readable text
of them with inscriptis (lists, paragraphs and line breaks kept, scripts and
styles dropped), never with regular expressions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

# jinja2 and inscriptis load when a template is compiled or a note converted, not
# when this module is imported: every target imports it, and a command-line lookup
# would pay 25 ms for them (see bench/README.md).
if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

#: The request page of request N in HelpSpot, under [server] helpspot_url.
REQUEST_PAGE = "{base}/admin.php?pg=request&reqid={request}"
#: A note longer than this is cut, with a mark: an issue is no place for a whole thread.
MAX_NOTE_CHARS = 20_000

#: Escapes text for a target's markup (Slack's three characters, HTML, ...).
Escape = Callable[[str], str]


class Escaped(str):
    """Text already escaped for the target: printed as it is, not escaped twice."""


@cache
def _environment(escape: Escape | None) -> SandboxedEnvironment:
    """The sandbox templates compile in; with ``escape``, one that escapes what it prints."""
    from jinja2 import Undefined
    from jinja2.sandbox import SandboxedEnvironment

    environment = SandboxedEnvironment(
        autoescape=False,
        undefined=Undefined,  # a name HelpSpot did not send is empty, not an error
        keep_trailing_newline=False,
        finalize=None if escape is None else _printing(escape),
    )
    if escape is not None:
        environment.filters["striptags"] = _striptags(escape)
    return environment


def _printing(escape: Escape) -> Callable[[object], str]:
    def finalize(value: object) -> str:
        return value if isinstance(value, Escaped) else escape(str(value))

    return finalize


def _striptags(escape: Escape) -> Callable[[object], Escaped]:
    # Jinja's striptags decodes entities: "&lt;b&gt;" would come out as "<b>"
    from jinja2.filters import do_striptags

    def striptags(value: object) -> Escaped:
        return Escaped(escape(str(do_striptags(str(value)))))

    return striptags


class TemplateProblem(ValueError):
    """A template that cannot be compiled; the message says where and why."""


@dataclass(frozen=True)
class Note:
    """One entry of a request's history, as text."""

    when: str
    text: str
    public: bool
    initial: bool


class TextTemplate:
    """A compiled template; :meth:`render` gives its text.

    With ``escape``, every value the template prints is escaped by it (see above).
    """

    def __init__(self, source: str, escape: Escape | None = None) -> None:
        from jinja2 import TemplateError, meta

        environment = _environment(escape)
        try:
            self._template = environment.from_string(source)
            #: The names of the context it uses (``request_url``, ``sTitle``, ...).
            self.names = frozenset(meta.find_undeclared_variables(environment.parse(source)))
        except TemplateError as exc:
            line = getattr(exc, "lineno", None)
            where = f" (line {line})" if line else ""
            raise TemplateProblem(f"not a valid template{where}: {exc}") from None
        self.source = source

    def render(self, context: Mapping[str, object]) -> str:
        """The text for ``context``; TemplateProblem when the template fails while rendering."""
        from jinja2 import TemplateError

        try:
            return self._template.render(dict(context)).strip()
        except TemplateError as exc:
            raise TemplateProblem(f"the template failed: {exc}") from None
        except Exception as exc:  # an admin's {{ 1 / 0 }}, {{ sTitle + 1 }}: still the template's
            raise TemplateProblem(f"the template failed: {type(exc).__name__}: {exc}") from None


def template_problem(source: str) -> str | None:
    """Why ``source`` is not a usable template, or None (for a target's ``validate``)."""
    try:
        TextTemplate(source)
    except TemplateProblem as exc:
        return str(exc)
    return None


def html_to_text(html: str) -> str:
    """Readable plain text of a HelpSpot note (HTML), cut at MAX_NOTE_CHARS."""
    if not html.strip():
        return ""
    from inscriptis import get_text

    text = str(get_text(html)).strip()
    if len(text) > MAX_NOTE_CHARS:
        text = text[:MAX_NOTE_CHARS].rstrip() + "\n[…]"
    return text


def request_link(helpspot_url: str, request_id: str) -> str:
    """The request's page in HelpSpot ("" without [server] helpspot_url or a request id)."""
    if not helpspot_url or not request_id:
        return ""
    return REQUEST_PAGE.format(base=helpspot_url.rstrip("/"), request=request_id)


def request_context(data: Mapping[str, object], helpspot_url: str = "") -> dict[str, Any]:
    """What a template may use of a pushed request or a webhook (README, "Templates").

    Every scalar field HelpSpot sent, by its own name (``sTitle``,
    ``sFirstName``, ``CustomN``, ...), and: ``request_id``, ``request_url``,
    ``customer`` (the name, else the e-mail address), ``staff`` (who pushed or
    acted), ``staff_comment`` (a push's comment), ``first_note`` and
    ``last_note`` (as text) and ``notes`` (every history entry, oldest first,
    each with ``when``, ``text``, ``public`` and ``initial``).
    """
    context: dict[str, Any] = {
        key: value for key, value in data.items() if isinstance(value, str | int | float)
    }
    request_id = _text(data, "xRequest")
    notes = list(_notes(data.get("request_history")))
    first = next((n for n in notes if n.initial), notes[0] if notes else None)
    name = " ".join(filter(None, (_text(data, "sFirstName"), _text(data, "sLastName"))))
    staff = " ".join(
        filter(None, (_text(data, "acting_person_fname"), _text(data, "acting_person_lname")))
    )
    context.update(
        request_id=request_id,
        request_url=request_link(helpspot_url, request_id),
        customer=name or _text(data, "fullname") or _text(data, "sEmail"),
        staff=staff,
        staff_comment=_text(data, "staff_comment"),
        first_note=first.text if first else html_to_text(_text(data, "note_content")),
        last_note=notes[-1].text if notes else html_to_text(_text(data, "note_content")),
        notes=notes,
    )
    return context


def _text(data: Mapping[str, object], key: str) -> str:
    value = data.get(key)
    return "" if value is None or isinstance(value, dict | list) else str(value).strip()


def _notes(history: object) -> Iterable[Note]:
    """The request history's entries, oldest first, from a push or a webhook.

    A push sends ``{id: entry}``; a webhook's form nesting sends
    ``{"item": {id: entry}}``. Entries without a note (log lines) are left out.
    """
    if not isinstance(history, Mapping):
        return []
    entries = history.get("item", history)
    if not isinstance(entries, Mapping):
        return []
    found = []
    for key, entry in entries.items():
        if not isinstance(entry, Mapping) or not _text(entry, "tNote"):
            continue
        html = _text(entry, "tNote")
        is_html = _text(entry, "fNoteIsHTML") not in ("", "0")
        found.append(
            (
                _order(entry.get("xRequestHistory", key)),
                Note(
                    when=_text(entry, "dtGMTChange"),
                    text=html_to_text(html) if is_html else html[:MAX_NOTE_CHARS],
                    public=_text(entry, "fPublic") == "1",
                    initial=_text(entry, "fInitial") == "1",
                ),
            )
        )
    return [note for _, note in sorted(found, key=lambda pair: pair[0])]


def _order(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0
