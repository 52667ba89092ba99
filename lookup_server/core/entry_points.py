"""The installed packages' entry points, read as importlib.metadata reads them, without it.

``importlib.metadata`` takes 15 to 20 ms to import (it loads the e-mail parser,
zipfile and more), and every command-line lookup, a new process on every
click of staff (HELPSPOT.md §2), needs the registry. The registry only needs
``entry_points.txt`` of each distribution on ``sys.path``: this reads those,
in the same order and with the same rule for a project installed twice (the
first one on ``sys.path`` wins). Where ``sys.path`` holds something this
cannot read (a zip file, an egg), it hands over to importlib.metadata.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol


class EntryPointLike(Protocol):
    """What the registry uses of an entry point (importlib.metadata's, or :class:`EntryPoint`)."""

    @property
    def name(self) -> str:
        """The backend's name."""

    @property
    def value(self) -> str:
        """``module:attribute``."""

    @property
    def group(self) -> str:
        """The entry point group."""

    def load(self) -> Any:
        """Import the module and return the attribute."""


@dataclass(frozen=True)
class EntryPoint:
    """One entry point read from a distribution's ``entry_points.txt``."""

    name: str
    value: str
    group: str

    def load(self) -> Any:
        """Import ``module`` and return ``attribute`` of ``module:attribute [extras]``."""
        module, _, attribute = self.value.partition("[")[0].partition(":")
        found: Any = importlib.import_module(module.strip())
        for part in filter(None, attribute.strip().split(".")):
            found = getattr(found, part)
        return found


def entry_points(groups: Iterable[str]) -> list[EntryPointLike]:
    """The entry points of ``groups`` of every installed distribution, in ``sys.path`` order."""
    wanted = set(groups)
    folders = [entry or "." for entry in sys.path]
    if not all(os.path.isdir(folder) or not os.path.exists(folder) for folder in folders):
        from importlib.metadata import entry_points as installed  # a zip or egg on sys.path

        found = installed()
        return [ep for group in sorted(wanted) for ep in found.select(group=group)]
    seen: set[str] = set()
    points: list[EntryPointLike] = []
    for folder in folders:
        for project, text in _metadata_of(folder):
            if project in seen:
                continue  # importlib.metadata too keeps the first of a project
            seen.add(project)
            points.extend(ep for ep in _parsed(text) if ep.group in wanted)
    return points


_DISTRIBUTION = re.compile(r"(?P<name>[^-]+)(-.*)?\.(dist|egg)-info", re.IGNORECASE)


def _metadata_of(folder: str) -> Iterator[tuple[str, str]]:
    """(normalised project name, entry_points.txt) of each distribution in ``folder``."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = _DISTRIBUTION.fullmatch(name)
        if match is None:
            continue
        try:
            with open(os.path.join(folder, name, "entry_points.txt"), encoding="utf-8") as handle:
                text = handle.read()
        except OSError:
            text = ""  # a distribution without entry points still counts as seen
        yield re.sub(r"[-_.]+", "_", match["name"]).lower(), text


def _parsed(text: str) -> Iterator[EntryPoint]:
    """The entries of an ``entry_points.txt`` (an INI file: ``[group]``, ``name = value``)."""
    group = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1].strip()
        elif group is not None and "=" in line:
            name, _, value = line.partition("=")
            yield EntryPoint(name.strip(), value.strip(), group)
