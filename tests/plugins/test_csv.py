"""The CSV backend: the shared contract, plus what only a file-backed index does."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from lookup_plugins.csv import build as csv_build
from lookup_plugins.csv import index as csv_index
from lookup_plugins.csv.backend import CsvBackend, CsvOptions
from lookup_plugins.csv.index import CsvIndex, IndexReplaced

from lookup_server.cli import cli
from lookup_server.plugin import (
    BackendError,
    ByEmail,
    ById,
    ByName,
    ByPhone,
    OptionsQuery,
    SourceSettings,
)
from tests.conftest import CUSTOMER_HEADER, write_csv
from tests.support.backend_contract import PEOPLE, BackendContract


class TestCsvContract(BackendContract):
    backend_name = "csv"

    @pytest.fixture(scope="class")
    @classmethod
    def contract_source(cls, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
        folder = tmp_path_factory.mktemp("csv")
        write_csv(
            folder / "people.csv", CUSTOMER_HEADER, ([*p.as_fields().values()] for p in PEOPLE)
        )
        return {"backend": "csv", "path": "people.csv", "_base_dir": str(folder)}


class TestCsvShardedContract(TestCsvContract):
    """The contract again, on an index built in three parts by three processes."""

    @pytest.fixture(scope="class")
    @classmethod
    def contract_source(cls, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
        folder = tmp_path_factory.mktemp("csv")
        path = write_csv(
            folder / "people.csv", CUSTOMER_HEADER, ([*p.as_fields().values()] for p in PEOPLE)
        )
        with pytest.MonkeyPatch.context() as patch:
            sharded(patch, merge=False)
            assert len(opened(CsvBackend(CsvOptions(path), SourceSettings("t", "csv"))).shards) == 2
        return {"backend": "csv", "path": "people.csv", "_base_dir": str(folder)}


def opened(b: CsvBackend) -> CsvIndex:
    b.prepare()
    assert b._index is not None
    return b._index


def backend(path: Path, **settings: Any) -> CsvBackend:
    return CsvBackend(CsvOptions(path), SourceSettings(name="t", backend="csv", **settings))


def test_utf8_with_bom_reads_the_first_header(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "bom.csv",
        CUSTOMER_HEADER,
        [["1", "Zoë", "Ünder", "z@example.com", "", ""]],
        encoding="utf-8-sig",
    )
    (found,) = backend(path).find(ById("1"), 5)
    assert found.fields["first_name"] == "Zoë"


def test_field_mapping_renames_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "crm.csv", ["id", "surname", "Custom5"], [["77", "Doe", "gold"]])
    b = backend(path, fields={"customer_id": "id", "last_name": "surname"})
    (found,) = b.find(ByName("do"), 5)
    assert dict(found.fields) == {"customer_id": "77", "last_name": "Doe", "Custom5": "gold"}


def test_missing_customer_id_column_is_a_clear_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "x.csv", ["id", "name"], [["1", "a"]])
    with pytest.raises(BackendError, match=r"neither a .customer_id. column.*fields"):
        backend(path).find(ById("1"), 5)


def test_latin1_file_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"customer_id,last_name\n1,Smith\n2,M\xfcller\n")
    with pytest.raises(BackendError, match="line 3: not UTF-8"):
        backend(path).find(ById("1"), 5)


@pytest.mark.parametrize("bad", ["first name", "notes\n", "1st", "customer", "livelookup"])
def test_invalid_element_names_are_reported_not_sent(tmp_path: Path, bad: str) -> None:
    # "notes\n" (a line break quoted into the header) once passed the name check and
    # made lxml refuse every answer holding it
    path = write_csv(tmp_path / "x.csv", ["customer_id", bad], [["1", "Ada"]])
    b = backend(path)
    assert any(repr(bad) in w for w in b.check())
    assert dict(b.find(ById("1"), 5)[0].fields) == {"customer_id": "1"}


@pytest.mark.parametrize("reserved", ["customer", "livelookup"])
def test_check_says_why_a_reserved_column_is_not_sent(tmp_path: Path, reserved: str) -> None:
    # <livelookup> inside a customer fails our own XSD; HelpSpot starts a new
    # customer at every <customer>
    write_csv(tmp_path / "x.csv", ["customer_id", reserved, "last_name"], [["1", "x", "L"]])
    config = tmp_path / "lookup.toml"
    config.write_text('[sources.x]\nbackend = "csv"\npath = "x.csv"\n')
    result = CliRunner().invoke(cli, ["check", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert (
        f"     warning: column {reserved!r} is reserved: <{reserved}> is part of the "
        "livelookup document's own structure"
    ) in result.output


@pytest.mark.parametrize("delimiter", ["", ";;", '"', "\n"])
def test_a_delimiter_that_cannot_work_is_a_config_problem(tmp_path: Path, delimiter: str) -> None:
    path = write_csv(tmp_path / "x.csv", ["customer_id"], [["1"]])
    problems = CsvBackend.validate(
        CsvOptions(path, delimiter=delimiter), SourceSettings("t", "csv")
    )
    assert [key for key, _ in problems] == ["delimiter"]
    assert not CsvBackend.validate(CsvOptions(path, delimiter="\t"), SourceSettings("t", "csv"))


def test_index_persists_and_is_not_rebuilt_for_an_unchanged_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", CUSTOMER_HEADER, [["1", "A", "B", "", "", ""]])
    backend(path).find(ById("1"), 5)
    index = tmp_path / "p.csv.lookup-index.sqlite3"
    built = index.stat().st_mtime_ns
    assert backend(path).find(ById("1"), 5)
    assert index.stat().st_mtime_ns == built


def test_changed_file_is_reindexed_by_the_next_process(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", CUSTOMER_HEADER, [["1", "A", "Old", "", "", ""]])
    first = backend(path)
    first.prepare()
    assert first.find(ById("1"), 5)[0].fields["last_name"] == "Old"
    write_csv(path, CUSTOMER_HEADER, [["1", "A", "New", "", "", ""], ["2", "B", "Two", "", "", ""]])
    os.utime(path, ns=(1, 1))  # a different mtime even within the clock's resolution
    second = backend(path)  # as the next CLI process would
    second.prepare()
    assert second.find(ById("1"), 5)[0].fields["last_name"] == "New"
    assert second.find(ById("2"), 5)


def test_server_keeps_answering_from_the_old_index_while_rebuilding(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", CUSTOMER_HEADER, [["1", "A", "Old", "", "", ""]])
    b = backend(path)
    b.prepare()
    write_csv(path, CUSTOMER_HEADER, [["1", "A", "New", "", "", ""]])
    os.utime(path, ns=(1, 1))
    b._checked_at = 0.0
    first = b.find(ById("1"), 5)[0].fields["last_name"]
    assert first in ("Old", "New")  # never an error, never nothing
    _wait_for(lambda: not b._rebuilding)
    b._checked_at = 0.0
    assert b.find(ById("1"), 5)[0].fields["last_name"] == "New"


def test_read_only_folder_keeps_the_index_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    path = write_csv(folder / "p.csv", CUSTOMER_HEADER, [["1", "A", "B", "", "", ""]])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != folder)
    assert backend(path).find(ById("1"), 5)
    assert list((tmp_path / "cache" / "lookup-server").glob("p.csv-*.sqlite3"))


def test_options_filter_by_request_fields_and_calling_field(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "o.csv",
        ["customer_id", "value", "description", "xCategory"],
        [
            ["", "gold", "Gold support", ""],
            ["", "hw1", "Laptop repair", "3"],
            ["", "hw2", "Desktop repair", "3"],
            ["", "sw1", "Office licence", "4"],
        ],
    )
    b = backend(path)
    values = [o.value for o in b.find_options(OptionsQuery("", {"xCategory": "3"}), 10)]
    assert values == ["gold", "hw1", "hw2"]
    values = [o.value for o in b.find_options(OptionsQuery("REPAIR", {"xCategory": "3"}), 10)]
    assert values == ["hw1", "hw2"]
    assert len(b.find_options(OptionsQuery("", {"xCategory": "3"}), 2)) == 2


def _wait_for(condition: Any, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_an_options_file_cannot_answer_live_lookups(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "o.csv", ["value", "description"], [["a", "A"]])
    with pytest.raises(BackendError, match="cannot answer Live Lookups"):
        backend(path).find(ById("1"), 5)


@pytest.mark.parametrize(
    "header,row,expected",
    [
        (["customer_id", "bad name"], ["1", "x"], {"customer_id": "1"}),
        (["bad name", "customer_id", "also bad"], ["x", "1", "y"], {"customer_id": "1"}),
        (["customer_id", "email"], ["1"], {"customer_id": "1", "email": ""}),  # short row
        (["customer_id", "email"], ["1", "a@b.c", "extra"], {"customer_id": "1", "email": "a@b.c"}),
    ],
)
def test_odd_rows_and_columns(
    tmp_path: Path, header: list[str], row: list[str], expected: dict[str, str]
) -> None:
    path = write_csv(tmp_path / "x.csv", header, [row])
    assert dict(backend(path).find(ById("1"), 5)[0].fields) == expected


# -- the index built on several cores (csv_build) -----------------------------------

TRICKY_ROWS = [
    [
        str(i),
        f"First{i}",
        f"Last{i % 7}",
        f"user{i}@example.com",
        f"+1 (555) {i:07d}",
        # values spanning lines, quotes, the delimiter, and a stray quote in a bare value
        f'line one\nline "two" of {i}, and more' if i % 5 == 0 else f'5" disk {i}',
    ]
    for i in range(1, 400)
]


def every_answer(b: CsvBackend) -> list[Any]:
    answers: list[Any] = []
    for i in range(0, 402):
        answers.append(b.find(ById(str(i)), 50))
        answers.append(b.find(ByEmail(f"USER{i}@example.com"), 50))
        answers.append(b.find(ByPhone(f"555{i:07d}"), 50))
    answers += [b.find(ByName(f"last{k}"), 50) for k in range(8)]
    answers.append(b.find(ByName("last", "first3"), 50))
    return [[dict(c.fields) for c in found] for found in answers]


def sharded(monkeypatch: pytest.MonkeyPatch, merge: bool = False) -> None:
    """Index files in three parts; without ``merge``, they stay parts."""
    monkeypatch.setattr(csv_build, "_shard_count", lambda size: 3)
    if not merge:
        monkeypatch.setattr(csv_index, "start_merge", lambda target, generation: None)


def test_an_index_built_in_parts_answers_exactly_as_one_built_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "parts").mkdir()
    whole = backend(
        write_csv(tmp_path / "one" / "p.csv", CUSTOMER_HEADER, TRICKY_ROWS, encoding="utf-8-sig")
    )
    assert opened(whole).shards == []
    sharded(monkeypatch)
    parts = backend(
        write_csv(tmp_path / "parts" / "p.csv", CUSTOMER_HEADER, TRICKY_ROWS, encoding="utf-8-sig")
    )
    index = opened(parts)
    assert len(index.shards) == 2 and index.row_count == len(TRICKY_ROWS)
    assert every_answer(parts) == every_answer(whole)
    # file order across the parts: the first customers of every part, in order
    assert [c.customer_id for c in parts.find(ByName("last1"), 100)] == [
        str(i) for i in range(1, 400) if i % 7 == 1
    ]


def test_a_cut_inside_a_quoted_value_is_caught_and_the_file_indexed_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_csv(tmp_path / "p.csv", CUSTOMER_HEADER, TRICKY_ROWS)
    data = path.read_bytes()
    inside = data.index(b'\nline ""two') + 1  # just after the line end inside row 5's value
    monkeypatch.setattr(
        csv_build, "cut_points", lambda path, size, shards: [0, inside, len(data) // 2, len(data)]
    )
    b = backend(path)
    assert opened(b).shards == []
    assert "indexing p.csv on one core: a quoted value spans a cut" in caplog.text
    assert every_answer(b)[15] == [dict(zip(CUSTOMER_HEADER, TRICKY_ROWS[4], strict=True))]
    assert not [p for p in tmp_path.iterdir() if p.suffix not in (".csv", ".sqlite3", ".lock")]


def test_a_failed_helper_process_means_the_file_is_indexed_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sharded(monkeypatch)
    # the helpers are started as ``sys.executable -m lookup_plugins.csv.build``
    monkeypatch.setattr(sys, "executable", "/bin/false")
    b = backend(write_csv(tmp_path / "p.csv", CUSTOMER_HEADER, TRICKY_ROWS))
    assert opened(b).shards == [] and opened(b).row_count == len(TRICKY_ROWS)
    assert "indexing p.csv on one core: a helper process failed" in caplog.text


def test_errors_in_a_file_built_in_parts_name_their_exact_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sharded(monkeypatch)
    path = write_csv(tmp_path / "p.csv", CUSTOMER_HEADER, TRICKY_ROWS)
    lines = path.read_bytes().split(b"\n")
    lines[-40] = lines[-40].replace(b"First", b"F\xfcrst")
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(BackendError, match=f"line {len(lines) - 39}: not UTF-8"):
        backend(path).find(ById("1"), 5)


def test_rebuilds_remove_the_files_of_earlier_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sharded(monkeypatch)
    path = write_csv(tmp_path / "p.csv", CUSTOMER_HEADER, TRICKY_ROWS)
    index = tmp_path / "p.csv.lookup-index.sqlite3"
    # what a build killed midway leaves behind
    (tmp_path / f"{index.name}.4242.tmp").write_bytes(b"x")
    (tmp_path / f"{index.name}.0123456789ab.1").write_bytes(b"x")
    first = opened(backend(path))
    write_csv(path, CUSTOMER_HEADER, TRICKY_ROWS[:300])
    os.utime(path, ns=(1, 1))
    second = opened(backend(path))
    assert second.generation != first.generation
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["p.csv", index.name, f"{index.name}.lock", *(s.name for s in second.shards)]
    )


def test_a_thread_that_meets_replaced_index_files_takes_the_new_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sharded(monkeypatch)
    path = write_csv(tmp_path / "p.csv", CUSTOMER_HEADER, TRICKY_ROWS)
    serving = backend(path)
    old = opened(serving)
    rows = [[*row[:2], "Renamed", *row[3:]] for row in TRICKY_ROWS]
    write_csv(path, CUSTOMER_HEADER, rows)
    os.utime(path, ns=(1, 1))
    opened(backend(path))  # another process rebuilt the index
    answers: list[Any] = []

    def new_thread() -> None:
        with pytest.raises(IndexReplaced):
            old.query("customer_id = ?", ("1",), 5)
        answers.append(serving.find(ById("1"), 5))

    thread = threading.Thread(target=new_thread)
    thread.start()
    thread.join()
    assert answers[0][0].fields["last_name"] == "Renamed"


def test_parts_are_merged_into_one_file_that_servers_switch_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "one").mkdir()
    whole = backend(write_csv(tmp_path / "one" / "p.csv", CUSTOMER_HEADER, TRICKY_ROWS))
    sharded(monkeypatch, merge=True)
    serving = backend(write_csv(tmp_path / "p.csv", CUSTOMER_HEADER, TRICKY_ROWS))
    parts = opened(serving)
    assert parts.shards
    # a process of its own merges them, then servers notice the new file
    _wait_for(lambda: not any(shard.exists() for shard in parts.shards), timeout=60)
    assert opened(backend(tmp_path / "p.csv")).shards == []
    serving._checked_at = 0.0
    serving.find(ById("1"), 5)
    _wait_for(lambda: serving._index is not None and not serving._index.shards)
    assert every_answer(serving) == every_answer(whole)


def test_lookups_take_no_locks_on_the_index_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Index files never change once in place, so they are opened immutable: a
    # lock held by anyone else cannot delay or fail a lookup.
    sharded(monkeypatch)
    b = backend(write_csv(tmp_path / "p.csv", CUSTOMER_HEADER, TRICKY_ROWS))
    index = opened(b)
    holders = [sqlite3.connect(p, timeout=0) for p in (index.path, *index.shards)]
    try:
        for holder in holders:
            holder.execute("BEGIN EXCLUSIVE")
        assert [c.customer_id for c in b.find(ById("1"), 5)] == ["1"]
        assert b._index is index  # answered from these files, not from a rebuild
    finally:
        for holder in holders:
            holder.close()


def _page_size(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])


def test_only_parts_have_the_larger_pages_that_build_faster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "one").mkdir()
    whole = opened(backend(write_csv(tmp_path / "one" / "p.csv", CUSTOMER_HEADER, TRICKY_ROWS)))
    assert _page_size(whole.path) == 4096  # SQLite's default: the fastest lookups
    sharded(monkeypatch)
    index = opened(backend(write_csv(tmp_path / "p.csv", CUSTOMER_HEADER, TRICKY_ROWS)))
    assert {_page_size(p) for p in (index.path, *index.shards)} == {csv_build.PART_PAGE_SIZE}
    assert csv_index.merge_parts(index.path, index.generation)
    assert _page_size(index.path) == 4096


def test_a_merge_of_an_index_rebuilt_meanwhile_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sharded(monkeypatch)
    index = opened(backend(write_csv(tmp_path / "p.csv", CUSTOMER_HEADER, TRICKY_ROWS)))
    assert not csv_index.merge_parts(index.path, "0123456789ab")
    assert all(shard.exists() for shard in index.shards)
    assert csv_index.merge_parts(index.path, index.generation)
    assert not any(shard.exists() for shard in index.shards)


# -- who may read the index --------------------------------------------------------------


def index_files(index: CsvIndex) -> list[Path]:
    return [index.path, *index.shards]


@pytest.fixture
def no_umask() -> Any:
    """A umask of 0, so that only the code decides how open a new file is."""
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.mark.parametrize(
    "csv_mode,index_mode",
    [
        (0o600, 0o600),
        (0o640, 0o640),
        (0o604, 0o604),
        (0o644, 0o644),
        (0o666, 0o644),  # others may read, as the CSV; but never write
        (0o400, 0o600),  # the server must write its own index
    ],
)
def test_the_index_is_no_more_readable_than_its_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_umask: None, csv_mode: int, index_mode: int
) -> None:
    path = write_csv(tmp_path / "p.csv", CUSTOMER_HEADER, TRICKY_ROWS)
    path.chmod(csv_mode)
    whole = opened(backend(path))
    assert [p.stat().st_mode & 0o777 for p in index_files(whole)] == [index_mode]
    sharded(monkeypatch)  # parts, and the file they are merged into
    os.utime(path, ns=(1, 1))
    parts = opened(backend(path))
    assert len(parts.shards) == 2
    assert {p.stat().st_mode & 0o777 for p in index_files(parts)} == {index_mode}
    assert csv_index.merge_parts(parts.path, parts.generation)
    assert parts.path.stat().st_mode & 0o777 == index_mode


def test_the_index_of_a_group_readable_csv_is_readable_by_that_group_only(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another group needs root")
    path = write_csv(tmp_path / "p.csv", CUSTOMER_HEADER, TRICKY_ROWS)
    os.chown(path, -1, os.getegid() + 1)  # a group other than ours
    path.chmod(0o640)
    index = opened(backend(path))
    assert index.path.stat().st_gid == path.stat().st_gid


def test_a_link_planted_where_a_merge_writes_is_not_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sharded(monkeypatch)
    index = opened(backend(write_csv(tmp_path / "p.csv", CUSTOMER_HEADER, TRICKY_ROWS)))
    victim = tmp_path / "elsewhere"
    monkeypatch.setattr(os, "getpid", lambda: 4242)  # names the merge's temporary file
    (tmp_path / f"{index.path.name}.4242.tmp").symlink_to(victim)
    assert csv_index.merge_parts(index.path, index.generation)
    assert not victim.exists() and not index.path.is_symlink()


def test_a_process_waiting_for_a_build_takes_the_index_while_the_lock_is_still_held(
    tmp_path: Path,
) -> None:
    # A merge holds the lock for seconds after the build: waiting for the lock
    # kept a second gunicorn worker from starting (and from stopping) meanwhile.
    from lookup_plugins.index_files import exclusive_lock

    b = backend(write_csv(tmp_path / "p.csv", CUSTOMER_HEADER, [["1", "A", "B", "", "", ""]]))
    target = b.layout.index_file()
    opened_: list[CsvIndex] = []
    with exclusive_lock(target.with_name(target.name + ".lock")):
        waiting = threading.Thread(
            target=lambda: opened_.append(csv_index.open_fresh_index(b.layout))
        )
        waiting.start()
        csv_index._build(b.layout, target)  # as the process holding the lock would
        waiting.join(timeout=10)
        assert opened_, "open_fresh_index waited for the lock, not for the index"
    assert opened_[0].row_count == 1
