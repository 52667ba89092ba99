"""Customers rendered ahead of time: what a stored ``<customer>`` fragment depends on.

A backend with a local index (the CSV backend) can keep every customer's
``<customer>`` fragment, rendered once by the renderer, and answer a lookup by
joining the stored bytes: no per-field work, no XML library on the lookup's
path. A fragment is only valid for the exact settings it was rendered with,
so every one is stored under :attr:`FragmentSpec.key`, a hash of all of them
and of the renderer's own version: change a label, ``html_fields`` or
``fields``, or the renderer, and the key changes, and with it the store.

The renderer (lookup_server.helpspot.render) decides what the bytes are;
this module only says what they depend on, as plain data a background
process can be handed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from lookup_server.core.models import Audience


@dataclass(frozen=True)
class FragmentSpec:
    """Everything a customer's rendered fragment (and the document around it) depends on."""

    audience: Audience
    labels: tuple[tuple[str, str], ...] = ()
    html_fields: tuple[str, ...] = ()
    clear_empty: bool = False
    columns: tuple[str, ...] = ()
    #: element -> backend field: which element names a backend's record yields
    fields: tuple[tuple[str, str], ...] = ()
    #: the renderer's version: a hash of its source (see helpspot.prerendered)
    renderer: str = ""
    key: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256(self.to_json().encode()).hexdigest()[:16]
        object.__setattr__(self, "key", digest)

    def to_json(self) -> str:
        """The spec as JSON (for a background process); :meth:`from_json` reads it back."""
        return json.dumps(
            {
                "audience": self.audience.name,
                "labels": [list(pair) for pair in self.labels],
                "html_fields": list(self.html_fields),
                "clear_empty": self.clear_empty,
                "columns": list(self.columns),
                "fields": [list(pair) for pair in self.fields],
                "renderer": self.renderer,
            },
            sort_keys=True,
            ensure_ascii=True,
        )

    @classmethod
    def from_json(cls, text: str) -> FragmentSpec:
        """The spec :meth:`to_json` wrote."""
        data = json.loads(text)
        return cls(
            audience=Audience[data["audience"]],
            labels=tuple((str(k), str(v)) for k, v in data["labels"]),
            html_fields=tuple(data["html_fields"]),
            clear_empty=bool(data["clear_empty"]),
            columns=tuple(data["columns"]),
            fields=tuple((str(k), str(v)) for k, v in data["fields"]),
            renderer=str(data["renderer"]),
        )

    @classmethod
    def of(
        cls,
        audience: Audience,
        labels: Mapping[str, str],
        html_fields: frozenset[str],
        clear_empty: bool,
        columns: tuple[str, ...],
        fields: Mapping[str, str],
        renderer: str,
    ) -> FragmentSpec:
        """A spec from a source's settings, in a canonical order."""
        return cls(
            audience,
            tuple(sorted(labels.items())),
            tuple(sorted(html_fields)),
            clear_empty,
            columns,
            tuple(sorted(fields.items())),
            renderer,
        )


@dataclass(frozen=True)
class Frame:
    """The livelookup document around the fragments: head, tail, and the empty document."""

    head: bytes
    tail: bytes
    empty: bytes

    def document(self, fragments: list[bytes]) -> bytes:
        """The whole document of these fragments, exactly as the renderer writes it."""
        body = b"".join(fragments)
        return self.head + body + self.tail if body else self.empty


@dataclass(frozen=True)
class Prerendered:
    """What one search found, as stored fragments.

    ``fragments`` holds one entry per customer found (customers without a
    customer id are left out, as every search leaves them out); an entry is
    ``b""`` where the renderer sends nothing of that customer to the spec's
    audience (the address book leaves out unusable e-mail addresses).
    """

    frame: Frame
    fragments: list[bytes]
