"""CSV lookups answered from stored fragments: the same bytes, new ones after a config change."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from lookup_plugins.csv import fragments as csv_fragments
from lookup_plugins.csv.backend import CsvBackend

from lookup_server.config.settings import config_from_mapping
from lookup_server.core.fragments import FragmentSpec
from lookup_server.helpspot.answers import livelookup_answer
from lookup_server.helpspot.decode import lookup_query
from lookup_server.runtime.service import Sources
from tests.conftest import write_csv
from tests.support.helpspot import (
    address_book_params,
    assert_livelookup,
    automation_params,
    request_page_params,
)

HEADER = ["customer_id", "first_name", "last_name", "email", "phone", "Custom3", "notes", "bio"]
ROWS = [
    ["1", "Ada", "Lovelace", "ada@example.com", "+1 (555) 010-2000", "Gold", "AT&T", "<b>hi</b>"],
    ["2", "Zoë", "Lovelace", "zoe@example.com", "555-010-2000", "", "<script>x</script>", "]]>"],
    ["", "Nobody", "Lovelace", "none@example.com", "5550102000", "x", "no id", ""],
    [" ", "Blank", "Lovelace", "blank@example.com", "", "y", "blank id", ""],
    [
        "3",
        "Hacker<img src=x onerror=alert(1)>",
        "Lovelady",
        "x'-alert(1)-'@example.com",
        "1",
        "",
        "",
        "",
    ],
    ["4", "R&D &amp;", "Núñez", "r&d@example.com", "12", "0", "a\r\nb\x01c", "\x00"],
    ["5", "Long", "Lovelock", "long@example.com", "", "", "é" * 5000, "<i>" * 100],
    ["6", "Seán", "O'Brien", "sean@example.com", "+353 1 555 0102", "Gold & <Platinum>", "", ""],
]
CALLS = [
    request_page_params(customer_id="1"),
    request_page_params(email="ZOE@example.com"),
    request_page_params(phone="555 010 2000"),
    request_page_params(phone="12"),
    request_page_params(last_name="Lov"),
    request_page_params(last_name="lovelace", first_name="z"),
    request_page_params(last_name="Núñez"),
    request_page_params(customer_id="999", email="sean@example.com"),
    request_page_params(customer_id="999"),
    automation_params(sUserId="4"),
    automation_params(sLastName="Love"),
    address_book_params("", "Love"),
    address_book_params("Hack", "Lovelady"),
]


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, str, FragmentSpec]]:
    """Renders that lookups asked for, recorded instead of started in the background."""
    calls: list[tuple[Path, str, FragmentSpec]] = []
    monkeypatch.setattr(csv_fragments, "start_rendering", lambda *args: calls.append(args))
    return calls


def sources(folder: Path, **settings: Any) -> Sources:
    raw = {"sources": {"people": {"backend": "csv", "path": "people.csv", **settings}}}
    return Sources(config_from_mapping(raw, folder))


def answers(made: Sources) -> list[bytes]:
    bodies = []
    for params in CALLS:
        answer = livelookup_answer(made, "people", params)
        assert answer.status == 200, answer.body
        assert_livelookup(answer.body)
        bodies.append(answer.body)
    return bodies


def render_asked(asked: list[tuple[Path, str, FragmentSpec]]) -> None:
    for index, generation, spec in asked:
        assert csv_fragments.render_store(index, generation, spec)
    asked.clear()


def from_fragments(made: Sources, params: dict[str, str], spec: FragmentSpec) -> bool:
    source = made["people"]
    return source.lookup_prerendered(lookup_query(params), spec) is not None


DRESSED = {
    "labels": {"Custom3": "Contract <level>", "notes": "Notes & more"},
    "html_fields": ["bio"],
    "columns": ["email", "Custom3"],
}


@pytest.mark.parametrize("settings", [{}, DRESSED], ids=["plain", "dressed"])
def test_answers_from_fragments_are_the_renderers_bytes(
    tmp_path: Path, asked: list[Any], settings: dict[str, Any]
) -> None:
    write_csv(tmp_path / "people.csv", HEADER, ROWS)
    rendered_now = answers(sources(tmp_path, **settings))
    # the lookups asked for one store per audience, each once
    specs = {spec.key: spec for _, _, spec in asked}
    assert len(asked) == len(specs) == 3
    render_asked(asked)
    made = sources(tmp_path, **settings)
    assert answers(made) == rendered_now
    assert not asked
    for spec in specs.values():  # and they did come from the stores
        assert from_fragments(made, request_page_params(customer_id="1"), spec)


def test_a_config_change_renders_again(tmp_path: Path, asked: list[Any]) -> None:
    write_csv(tmp_path / "people.csv", HEADER, ROWS)
    answers(sources(tmp_path))
    render_asked(asked)
    plain = answers(sources(tmp_path))
    for setting in (
        {"labels": {"notes": "Remarks"}},
        {"html_fields": ["notes"]},
        {"fields": {"phone": "notes"}},
        {"clear_empty": True},
    ):
        made = sources(tmp_path, **setting)
        now = answers(made)  # by the renderer: no store has these settings yet
        assert now != plain, setting
        assert {spec.key for _, _, spec in asked}, setting
        render_asked(asked)
        assert answers(sources(tmp_path, **setting)) == now, setting


def test_a_changed_file_starts_without_fragments_and_drops_the_old_ones(
    tmp_path: Path, asked: list[Any]
) -> None:
    path = write_csv(tmp_path / "people.csv", HEADER, ROWS)
    answers(sources(tmp_path))
    render_asked(asked)
    assert len(list(tmp_path.glob("*.fragments-????????????????"))) == 3
    write_csv(path, HEADER, [[*ROWS[0][:6], "changed", ""]])
    made = sources(tmp_path)
    body = livelookup_answer(made, "people", request_page_params(customer_id="1")).body
    assert b"changed" in body
    assert list(tmp_path.glob("*.fragments-????????????????")) == []
    (spec,) = [spec for _, _, spec in asked]
    backend = made["people"].source
    assert isinstance(backend, CsvBackend) and backend._index is not None
    render_asked([(backend._index.path, backend._index.generation, spec)])
    fresh = sources(tmp_path)
    assert livelookup_answer(fresh, "people", request_page_params(customer_id="1")).body == body
    assert from_fragments(fresh, request_page_params(customer_id="1"), spec)


def test_no_renderer_is_started_while_another_renders_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # on the command line every lookup is a new process: each would start an
    # interpreter only to find the store's lock held
    from lookup_plugins.index_files import lock_unless_held

    from lookup_server.core.models import Audience

    started: list[object] = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a))
    index, spec = tmp_path / "people.csv.lookup-index.sqlite3", FragmentSpec(Audience.REQUEST_PAGE)
    store = csv_fragments.store_path(index, "g1", spec.key)
    with lock_unless_held(csv_fragments.render_lock(store)) as held:
        assert held
        csv_fragments.start_rendering(index, "g1", spec)
    assert started == []
    csv_fragments.start_rendering(index, "g1", spec)  # nobody renders it: one is started
    assert len(started) == 1
