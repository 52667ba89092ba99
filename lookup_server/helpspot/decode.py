"""The one module that knows HelpSpot's input quirks (HELPSPOT.md §1, §2, §4).

* The request page URL-encodes ``sUserId``, ``sEmail``, ..., ``xCategory`` and
  every ``CustomN`` twice: after the normal decode they still hold ``%40``.
* An unchecked checkbox arrives as the string ``null``.
* The standard names (``customer_id``, ``email``, ...) arrive clean and win;
  the ``s*`` names are the fallback (``sUserID`` as the manual spells it, too).
* In http-post mode a query string in the configured URL is not split off:
  ``?ll_key=x`` arrives as ``ll_key=x?source_id=0``.
* On the command line, 5.3+ sends ``--name=value`` (a bare ``--name`` is
  empty) and 5.0.x sends positional ``customer_id first_name last_name email
  phone Custom...``. Nothing says which style arrived, and a positional value
  is whatever staff or a customer typed, ``--x=y`` included. So the arguments
  are named only when the first one is ``--name`` or ``--name=value`` with a
  name HelpSpot sends (:data:`HELPSPOT_NAMES`, ``CustomN``); anything else is
  positional. The one case read wrongly is a 5.0.x customer id that is itself
  spelled like a HelpSpot argument: ``--email=x`` makes all the arguments
  named, so the search is for the e-mail address x, and the positional values
  after it are ignored.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast
from urllib.parse import unquote

from lookup_server.core.models import Audience, LookupQuery, OptionsQuery, PushRequest

#: Standard name -> the request-page names that stand in for it, in order.
FALLBACKS: dict[str, tuple[str, ...]] = {
    "customer_id": ("sUserId", "sUserID"),
    "first_name": ("sFirstName",),
    "last_name": ("sLastName",),
    "email": ("sEmail",),
    "phone": ("sPhone",),
}
_DOUBLE_ENCODED = frozenset(
    {
        "sUserId",
        "sUserID",
        "sFirstName",
        "sLastName",
        "sEmail",
        "sPhone",
        "xStatus",
        "xCategory",
        "xPersonAssignedTo",
    }
)
_CUSTOM = re.compile(r"Custom\d+")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NAMED_ARG = re.compile(r"--([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?", re.DOTALL)
POSITIONAL_ORDER = ("customer_id", "first_name", "last_name", "email", "phone")
#: Sent by the request page or rules, never by the address book (with ``CustomN``).
_NOT_FROM_ADDRESS_BOOK = ("sUserId", "sUserID", "customer_id", "email", "phone")
#: Parameter names HelpSpot sends (HELPSPOT.md §1, §5), besides ``CustomN``: those
#: of the request page, then the request row automation rules and triggers send.
HELPSPOT_NAMES = frozenset(
    {
        "source_id",
        *POSITIONAL_ORDER,
        "request",
        *_DOUBLE_ENCODED,
        "acting_person_xperson",
        "acting_person_fusertype",
        "acting_person_fname",
        "acting_person_lname",
        "acting_person_email",
        "xRequest",
        "fOpenedVia",
        "xOpenedViaId",
        "xPersonOpenedBy",
        "fOpen",
        "fUrgent",
        "dtGMTOpened",
        "dtGMTClosed",
        "iLastReplyBy",
        "iLastReadCount",
        "fTrash",
        "dtGMTTrashed",
        "sRequestPassword",
        "sTitle",
        "sRequestHash",
        "sStatus",
        "sCategory",
        "fullname",
    }
)
#: Parameters that carry our own key; never kept among the request fields.
KEY_PARAM = "ll_key"


def decode_value(name: str, raw: str, twice: bool = True) -> str:
    """One parameter's value, with HelpSpot's double encoding and ``null`` undone."""
    encoded_twice = twice and (name in _DOUBLE_ENCODED or _CUSTOM.fullmatch(name))
    value = unquote(raw) if encoded_twice else raw
    value = _CONTROL.sub("", value)  # no legitimate input carries NUL or escapes
    return "" if value == "null" else value


def decode_params(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Every parameter, decoded; the first occurrence of a name wins.

    Only the request page's browser code encodes twice: automation rules and
    triggers (which send ``xRequest``) build their query once, with PHP.
    """
    pairs = list(pairs)
    twice = all(name != "xRequest" for name, _ in pairs)
    params: dict[str, str] = {}
    for name, raw in pairs:
        if name not in params:
            params[name] = decode_value(name, raw, twice)
    return params


def shared_key(raw: str | None) -> str:
    """The ``ll_key`` value without the junk http-post mode appends after a ``?``."""
    return (raw or "").split("?", 1)[0]


def lookup_query(params: Mapping[str, str]) -> LookupQuery:
    """A LookupQuery from decoded parameters: standard names first, then fallbacks."""
    standard = {}
    for name, alternatives in FALLBACKS.items():
        value = params.get(name, "").strip()
        if not value:
            value = next(filter(None, (params.get(a, "").strip() for a in alternatives)), "")
        standard[name] = value
    return LookupQuery(**standard, fields=_request_fields(params))


def audience(params: Mapping[str, str]) -> Audience:
    """Which HelpSpot page made this Live Lookup call (HELPSPOT.md §1, §3).

    The request page always sends ``request`` (maybe empty); automation rules and
    triggers send the request row (``xRequest``) and no ``request``; the address
    book sends ``source_id``, the names and ``acting_person_*`` only. Anything
    else is read as the request page, which shows every value as HTML.
    """
    if "request" in params:
        return Audience.REQUEST_PAGE
    if "xRequest" in params:
        return Audience.AUTOMATION
    if any(name in params for name in _NOT_FROM_ADDRESS_BOOK) or any(
        map(_CUSTOM.fullmatch, params)
    ):
        return Audience.REQUEST_PAGE
    return Audience.ADDRESS_BOOK


def options_query(params: Mapping[str, str]) -> OptionsQuery:
    """An OptionsQuery: the text typed into the calling field, and the other fields.

    HelpSpot sends ``callingField=Custom5``, the id of the AJAX field whose button
    was pressed; what staff typed is that field's own (double-encoded) value. A
    ``callingField`` that is not a field id is taken as the search text itself,
    as other callers send it: no text HelpSpot sends looks like ``CustomN``.
    """
    calling = params.get("callingField", "")
    fields = _request_fields(params)
    if _CUSTOM.fullmatch(calling):
        fields.pop("callingField", None)
        return OptionsQuery(search=fields.pop(calling, "").strip(), fields=fields)
    return OptionsQuery(search=calling.strip(), fields=fields)


def _request_fields(params: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in params.items() if k != KEY_PARAM}


def cli_params(args: Sequence[str]) -> dict[str, str]:
    """HelpSpot's command-line arguments as parameters (5.3+ named or 5.0.x positional)."""
    args = [argv_text(arg) for arg in args]
    if args and _is_helpspot_argument(args[0]):
        pairs = []
        for arg in args:
            match = _NAMED_ARG.fullmatch(arg)
            if match:  # anything else is not HelpSpot's and is ignored
                pairs.append((match.group(1), match.group(2) or ""))
        return decode_params(pairs)
    # 5.0.x: five standard values, then custom fields by ascending id; we cannot
    # know those ids, and a Live Lookup search never uses custom fields, so the
    # extra positional values are ignored.
    return decode_params(zip(POSITIONAL_ORDER, args, strict=False))


def _is_helpspot_argument(arg: str) -> bool:
    """True for ``--name`` or ``--name=value`` with a name HelpSpot sends."""
    match = _NAMED_ARG.fullmatch(arg)
    if match is None:
        return False
    name = match.group(1)
    return name in HELPSPOT_NAMES or _CUSTOM.fullmatch(name) is not None


def argv_text(arg: str) -> str:
    r"""A command-line argument as text, whatever bytes it was.

    Python turns bytes that are not UTF-8 into lone surrogates, which no
    backend can encode. HelpSpot is PHP, whose data is often Latin-1: such an
    argument is read as Latin-1 (the bytes ``N\xfa\xf1ez`` as "Núñez"), as a
    form body is.
    """
    if arg.isascii():
        return arg
    from lookup_server.helpspot.php_form import php_text  # a command-line lookup rarely needs it

    return php_text(os.fsencode(arg))


#: An attachment's bytes, when HelpSpot stores attachments in its database
#: (HELPSPOT.md §5, §6): ``request_history[item][ID][documents][0][blobFile]``.
FILE_BYTES = "blobFile"


def without_file_bytes(value: object) -> object:
    """``value`` with every attachment's bytes left out, at any depth; metadata stays."""
    if isinstance(value, dict):
        return {k: without_file_bytes(v) for k, v in value.items() if k != FILE_BYTES}
    if isinstance(value, list):
        return [without_file_bytes(v) for v in value]
    return value


class InputError(ValueError):
    """A request body that cannot be used; the message says why, for a 400 answer."""


class UnsupportedBody(InputError):
    """A body of a kind lookup-server does not read (a 415 answer)."""


@dataclass(frozen=True)
class Body:
    """A push or webhook body: its data, and the shared key it carried (taken out)."""

    data: dict[str, object]
    key: str | None


#: What HelpSpot sends: its webhooks are forms, our bridge's pushes JSON. A form
#: without a content type is read as PHP reads it.
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", ""})


def parsed_body(body: bytes, content_type: str) -> Body:
    """A push or webhook body as nested data: JSON (our PHP bridge) or PHP-style form.

    HelpSpot's webhooks are form-encoded with PHP bracket nesting
    (``request_history[item][678][tNote]=...``), parsed as PHP's parse_str does.
    The shared key may ride in the body too: it is taken out here, once the
    body is parsed, so that every spelling the parser reads as ``ll_key``
    (``ll.key``, ``ll_key[]``, ...) goes, and the key is never stored in the
    outbox nor forwarded to a target; the caller is authorized with exactly
    this key (never with one another parser found). Only the top level: deeper
    down it is HelpSpot's data. Any other kind of body (multipart, say) is
    refused: no other parser may read what is then stored.
    """
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        data = _json_body(body)
    elif media_type in FORM_TYPES:
        data = _form_body(body)
    else:
        raise UnsupportedBody(
            f"a body of type {media_type!r} is not accepted; send "
            "application/x-www-form-urlencoded (as HelpSpot does) or JSON"
        )
    key = data.pop(KEY_PARAM, None)
    # Bytes of files are no text: stored, they would be megabytes of garbled data.
    return Body(
        cast(dict[str, object], without_file_bytes(data)), key if isinstance(key, str) else None
    )


def _json_body(body: bytes) -> dict[str, object]:
    try:
        # Python's json reads NaN, Infinity and 1e999 (as inf), which no strict JSON
        # parser accepts: forwarded, every delivery would fail, retried for a day.
        data = json.loads(body, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError("the JSON body must be an object")
    from lookup_server.helpspot.php_form import DEFAULT_MAX_DEPTH  # the nesting PHP allows a form

    if _depth(data, DEFAULT_MAX_DEPTH) > DEFAULT_MAX_DEPTH:
        raise InputError(
            f"the JSON body is nested more than {DEFAULT_MAX_DEPTH} levels deep; "
            "that many are not accepted"
        )
    try:  # "\ud800" is valid JSON but not text: nothing could store or send it
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            "the JSON body holds an unpaired surrogate escape (like \\ud800), which is not text"
        ) from None
    return data


def _depth(value: object, limit: int) -> int:
    """How deeply ``value`` nests, counted up to ``limit`` + 1 (without recursion)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth <= limit:
                todo.extend(
                    (child, depth + 1)
                    for child in (item.values() if isinstance(item, dict) else item)
                )
    return deepest


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large to be finite")
    return value


def _form_body(body: bytes) -> dict[str, object]:
    from lookup_server.helpspot.php_form import FormError, parse_form

    try:
        return dict(parse_form(body, skip=frozenset({FILE_BYTES.encode()})))
    except FormError as exc:
        raise InputError(str(exc)) from None


def push_request(data: dict[str, object]) -> PushRequest:
    """A PushRequest, without ``documents`` (PHP objects HelpSpot cannot encode)."""
    return PushRequest({k: v for k, v in data.items() if k != "documents"})
