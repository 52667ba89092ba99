"""The registry's own reading of entry points finds what importlib.metadata finds."""

from __future__ import annotations

import sys
import zipfile
from importlib.metadata import entry_points as installed
from pathlib import Path

import pytest

from lookup_server.core.entry_points import entry_points
from lookup_server.core.registry import SOURCES_GROUP, TARGETS_GROUP

GROUPS = [SOURCES_GROUP, TARGETS_GROUP, "console_scripts"]


def as_set(points: object) -> set[tuple[str, str, str]]:
    return {(ep.group, ep.name, ep.value) for ep in points}  # type: ignore[attr-defined]


def theirs(groups: list[str]) -> set[tuple[str, str, str]]:
    found = installed()
    return {(ep.group, ep.name, ep.value) for g in groups for ep in found.select(group=g)}


def test_the_installed_packages_entry_points_are_importlib_metadatas() -> None:
    assert as_set(entry_points(GROUPS)) == theirs(GROUPS)
    assert {ep.group for ep in entry_points([SOURCES_GROUP])} == {SOURCES_GROUP}


def dist(folder: Path, name: str, text: str) -> None:
    info = folder / f"{name}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.split('-')[0]}\n")
    (info / "entry_points.txt").write_text(text)


def test_the_first_of_a_project_on_the_path_wins_as_in_importlib_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    dist(first, "Some_Plugin-1.0", "# a comment\n[lookup_server.backends]\nnew = m.new:B [x]\n")
    dist(second, "some.plugin-0.9", "[lookup_server.backends]\nold = m.old:B\n")
    dist(second, "other-2", "[lookup_server.targets]\n\nt = m.t:T\n")
    monkeypatch.setattr(sys, "path", [str(first), str(second), str(tmp_path / "missing")])
    assert (
        as_set(entry_points(GROUPS))
        == theirs(GROUPS)
        == {
            (SOURCES_GROUP, "new", "m.new:B [x]"),
            (TARGETS_GROUP, "t", "m.t:T"),
        }
    )


def test_a_zip_on_the_path_is_read_by_importlib_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("zipped-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: zipped\n")
        z.writestr("zipped-1.0.dist-info/entry_points.txt", "[lookup_server.backends]\nz = m:Z\n")
    monkeypatch.setattr(sys, "path", [str(archive)])
    assert as_set(entry_points(GROUPS)) == {(SOURCES_GROUP, "z", "m:Z")}


def test_an_entry_point_loads_its_attribute() -> None:
    (csv,) = [ep for ep in entry_points([SOURCES_GROUP]) if ep.name == "csv"]
    from lookup_plugins.csv.backend import CsvBackend

    assert csv.load() is CsvBackend
