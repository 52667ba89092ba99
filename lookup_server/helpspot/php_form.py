"""Form-encoded bodies with PHP bracket nesting, parsed exactly as PHP fills ``$_POST``.

HelpSpot's webhooks (HELPSPOT.md §6) arrive as
``request_history[item][678][tNote]=...``: PHP's ``http_build_query`` on the
sending side, so the one faithful reading is PHP's own ``parse_str``. This
module mirrors it rule for rule (checked against php-cli in
``tests/helpspot/test_php_form.py``):

* Pairs are split on ``&`` (empty pairs skipped) and at the first ``=``; ``+``
  and ``%XX`` are decoded, a bad ``%`` escape is kept literally.
* A name is cut at its first NUL byte; leading spaces are dropped; in the part
  before the first ``[``, ``.`` and space become ``_``. We mirror this mangling
  on purpose: a receiver of HelpSpot's webhooks written in PHP sees these
  names, and one rule set that php-cli can verify beats a "nicer" variant
  nobody else uses. Names inside brackets are kept as sent.
* ``a[b][c]`` nests; ``a[]`` (or ``a[ ]``) appends with the next integer key
  (one above the largest integer key so far); text after a ``]`` that is not
  another ``[`` is ignored; a ``[`` without a ``]`` at the first level turns
  into ``_`` (``a[b=1`` is ``a_b``), deeper down it ends the name there.
  Names that are empty after this (``=1``, ``[x]=1``) are ignored.
* A repeated name: the last value wins; a value that must become an array
  replaces whatever was there.
* Keys that look like canonical integers (``0``, ``-3``, not ``05`` or ``1.5``)
  are integers, as in a PHP array.

The result is what ``json_decode(json_encode($_POST))`` gives in Python: a
``dict`` at the top, and below it a PHP array is a ``list`` when its keys are
exactly 0..n-1 in order (a PHP "list", which ``json_encode`` writes as a JSON
array) and a ``dict`` with ``str`` keys otherwise. So the same HelpSpot data has
the same shape whether it came through the push bridge (``json_encode``) or a
webhook (this parser), and it is JSON-ready as it is.

Values are bytes in PHP. Here they are text: UTF-8 when valid, otherwise
Latin-1 (HelpSpot databases can be Latin-1; Latin-1 never fails and keeps every
byte recoverable with ``.encode("latin-1")``).

Where PHP silently drops data, we refuse instead: more than ``max_depth``
levels of brackets (PHP's ``max_input_nesting_level``) or more than
``max_fields`` pairs (PHP's ``max_input_vars``) raise :class:`FormError`, whose
message is fit for a 400 answer. No other input raises.
"""

from __future__ import annotations

import re
from typing import TypeAlias
from urllib.parse import unquote_to_bytes

#: A parsed value: text, or a nested PHP array as list (0..n-1) or dict.
FormValue: TypeAlias = "str | list[FormValue] | dict[str, FormValue]"

#: PHP's default ``max_input_nesting_level``.
DEFAULT_MAX_DEPTH = 64
#: HelpSpot sends about a dozen fields per history entry; PHP's default of 1000
#: would cut a long request's history short.
DEFAULT_MAX_FIELDS = 10_000

_PHP_INT_MAX = 2**63 - 1
_PHP_INT_MIN = -(2**63)
_CANONICAL_INT = re.compile(r"(?:0|-?[1-9][0-9]*)\Z")

_Key = int | str


class FormError(ValueError):
    """The body cannot be accepted; the message says why, for a 400 answer."""


class _PhpArray:
    """An ordered PHP array: keys are int or str, appends use the next free integer."""

    __slots__ = ("items", "next_free")

    def __init__(self) -> None:
        self.items: dict[_Key, _PhpArray | str] = {}
        self.next_free: int | None = None  # None: no integer key yet, append uses 0

    def set(self, key: _Key, value: _PhpArray | str) -> None:
        """Insert or overwrite ``key``."""
        self.items[key] = value
        if isinstance(key, int) and (self.next_free is None or key >= self.next_free):
            self.next_free = min(key + 1, _PHP_INT_MAX)

    def append(self, value: _PhpArray | str) -> bool:
        """Insert under the next integer key; False when PHP would refuse (key taken)."""
        key = 0 if self.next_free is None else self.next_free
        if key in self.items:
            return False  # only after a key of PHP_INT_MAX
        self.set(key, value)
        return True

    def child_array(self, key: _Key) -> _PhpArray:
        """The array under ``key``, replacing a string that was there."""
        found = self.items.get(key)
        if isinstance(found, _PhpArray):
            return found
        child = _PhpArray()
        self.set(key, child)
        return child


def parse_form(
    body: bytes | str,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_fields: int = DEFAULT_MAX_FIELDS,
    skip: frozenset[bytes] = frozenset(),
) -> dict[str, FormValue]:
    """Parse a form-encoded body into nested data exactly as PHP's ``parse_str`` does.

    Fields whose last key is in ``skip`` are left out unread: an attachment's
    bytes are megabytes that would only be decoded to be thrown away.
    """
    raw = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body
    pairs = [pair for pair in raw.split(b"&") if pair]
    if len(pairs) > max_fields:
        raise FormError(f"the form has {len(pairs)} fields; at most {max_fields} are accepted")
    root = _PhpArray()
    for pair in pairs:
        name, _, value = pair.partition(b"=")
        split = _split_name(_url_decode(name), max_depth)
        if split is not None and (split[1][-1] if split[1] else split[0]) not in skip:
            _register(root, split, _url_decode(value))
    return {str(key): _export(value) for key, value in root.items.items()}


def _url_decode(data: bytes) -> bytes:
    return unquote_to_bytes(data.replace(b"+", b" "))


def php_text(data: bytes) -> str:
    """PHP's bytes as text: UTF-8 when valid, otherwise Latin-1 (see above)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _key(data: bytes) -> _Key:
    text = php_text(data)
    if _CANONICAL_INT.match(text):
        number = int(text)
        if _PHP_INT_MIN <= number <= _PHP_INT_MAX:
            return number
    return text


def _split_name(name: bytes, max_depth: int) -> tuple[bytes, list[bytes | None]] | None:
    """The top-level name and the bracket indexes (None: append), or None to ignore."""
    name = name.split(b"\0", 1)[0].lstrip(b" ")
    base, bracket, rest = name.partition(b"[")
    base = base.replace(b" ", b"_").replace(b".", b"_")
    if not base:
        return None
    indexes: list[bytes | None] = []
    nested = bool(bracket)
    while nested:
        index, closed, after = rest.partition(b"]")
        if not closed:
            if not indexes:  # an unclosed first bracket is part of the name
                tail = index.replace(b" ", b"_").replace(b".", b"_").replace(b"[", b"_")
                return base + b"_" + tail, []
            break
        indexes.append(None if index in (b"", b" ") else index)
        if len(indexes) > max_depth:  # stop early: a megabyte of "[]" is not worth reading
            raise FormError(
                f"the field {php_text(base)[:40]!r} is nested more than {max_depth} levels "
                "deep; that many are not accepted"
            )
        nested, rest = after[:1] == b"[", after[1:]
    return base, indexes


def _register(root: _PhpArray, split: tuple[bytes, list[bytes | None]], value: bytes) -> None:
    base, indexes = split
    keys: list[_Key | None] = [_key(base), *(None if i is None else _key(i) for i in indexes)]
    target = root
    for key in keys[:-1]:
        if key is None:
            child = _PhpArray()
            if not target.append(child):
                return
            target = child
        else:
            target = target.child_array(key)
    last = keys[-1]
    if last is None:
        target.append(php_text(value))
    else:
        target.set(last, php_text(value))


def _export(value: _PhpArray | str) -> FormValue:
    """JSON-friendly: str stays, a PHP list becomes a list, any other array a dict."""
    if isinstance(value, str):
        return value
    items = value.items
    if all(key == position for position, key in enumerate(items)):
        return [_export(item) for item in items.values()]
    return {str(key): _export(item) for key, item in items.items()}
