"""Mirrored ldap sources, and what every mirror does, against a real slapd.

The shared contract runs on mirrored directories with slapd stopped once the
first copy is made, so every answer provably comes from the mirror. The other
tests change the real directory and watch the copy follow, or stop, freeze
and cut it off. tests/plugins/test_mirror_odbc.py does the same for tables.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest
from lookup_plugins.index_files import lock_unless_held
from lookup_plugins.mirror.feed import MirrorFeed, Record
from lookup_plugins.mirror.settings import parse_duration
from lookup_plugins.mirror.state import read_status

from lookup_server.config.settings import ConfigError, config_from_mapping
from lookup_server.plugin import BackendError, ById, ByName
from lookup_server.runtime.probe import probe_all
from lookup_server.web.app import create_app
from lookup_server.web.blueprints.common import EXTENSION
from tests.plugins.ldap_directory import CONTRACT_AD, CONTRACT_OPENLDAP, FIRST_USN, directory
from tests.plugins.mirrors import (
    SETTLE,
    Serve,
    backend_of,
    everyone,
    first_copy,
    last_names,
    mirror_of,
)
from tests.plugins.slapd import (
    ROOT_DN,
    ROOT_PASSWORD,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SUFFIX,
    Slapd,
    slapd_available,
)
from tests.support.backend_contract import PEOPLE, BackendContract
from tests.support.hanging import wait_for
from tests.support.helpspot import helpspot_error
from tests.support.requirements import need


def _need_slapd() -> None:
    need(slapd_available(), "slapd not installed (apt-get install slapd ldap-utils openssl)")


def ldap_table(
    slapd: Slapd, base_dn: str, preset: str, folder: Path, **extra: Any
) -> dict[str, Any]:
    """A mirrored ldap source over ``base_dn`` of ``slapd``."""
    return {
        "backend": "ldap",
        "url": slapd.url,
        "bind_dn": SERVICE_DN,
        "password": SERVICE_PASSWORD,
        "base_dn": base_dn,
        "preset": preset,
        "mirror": "1h",
        "mirror_path": str(folder),
        **extra,
    }


# -- the shared contract, answered from a mirror with its store gone ------------------------


class _MirroredLdap(BackendContract):
    backend_name = "ldap"
    mirrored = True
    base_dn = CONTRACT_OPENLDAP
    preset = "openldap"

    @pytest.fixture(scope="class")
    @classmethod
    def contract_source(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
        _need_slapd()
        root = tmp_path_factory.mktemp("mirrored-slapd")
        slapd = Slapd(root / "slapd", tls=False)
        slapd.load(directory())
        slapd.start()
        try:
            table = ldap_table(slapd, cls.base_dn, cls.preset, root / "mirror")
            first_copy(table, root)
        finally:
            slapd.stop()  # from here on only the mirror can answer
        yield {**table, "_base_dir": str(root)}


class TestMirroredOpenLdapContract(_MirroredLdap):
    pass


class TestMirroredActiveDirectoryContract(_MirroredLdap):
    base_dn = CONTRACT_AD
    preset = "active_directory"


# -- a directory that changes, stops, freezes ---------------------------------------------------


@pytest.fixture
def slapd(tmp_path: Path) -> Iterator[Slapd]:
    """A directory of the test's own, which it may change, stop or freeze."""
    _need_slapd()
    server = Slapd(tmp_path / "slapd", tls=False)
    server.load(directory())
    server.start()
    yield server
    if server.process is not None:
        server.resume()
        server.stop()


def admin(slapd: Slapd) -> ldap3.Connection:
    """A connection as the directory's root, to change entries."""
    return ldap3.Connection(slapd.url, ROOT_DN, ROOT_PASSWORD, auto_bind=True)


def test_a_change_in_the_directory_shows_within_one_interval(
    slapd: Slapd, tmp_path: Path, serve: Serve
) -> None:
    table = ldap_table(slapd, CONTRACT_OPENLDAP, "openldap", tmp_path / "mirror", mirror="1s")
    client = serve(table, tmp_path)
    assert last_names(client, customer_id="1001") == ["Lovelace"]
    conn = admin(slapd)
    conn.modify(_dn_of(conn, "1001"), {"sn": [(ldap3.MODIFY_REPLACE, ["Byron"])]})
    wait_for(lambda: last_names(client, customer_id="1001") == ["Byron"], "the change", SETTLE)
    status = read_status(tmp_path / "mirror" / "status.json")
    assert status.kind == "changes"
    assert status.by not in (0, os.getpid())  # refreshed in a process of its own


def test_an_entry_deleted_from_the_directory_leaves_the_mirror(
    slapd: Slapd, tmp_path: Path, serve: Serve
) -> None:
    table = ldap_table(slapd, CONTRACT_OPENLDAP, "openldap", tmp_path / "mirror", mirror="1s")
    client = serve(table, tmp_path)
    assert last_names(client, customer_id="1004") == ["Wild*Card"]
    conn = admin(slapd)
    conn.delete(_dn_of(conn, "1004"))
    wait_for(lambda: last_names(client, customer_id="1004") == [], "the deletion", SETTLE)
    assert last_names(client, customer_id="1001") == ["Lovelace"]


def _dn_of(conn: ldap3.Connection, uid: str) -> str:
    conn.search(CONTRACT_OPENLDAP, f"(uid={uid})", attributes=["1.1"])
    (entry,) = conn.response
    return str(entry["dn"])


def test_lookups_answer_from_the_mirror_while_the_directory_is_down_or_frozen(
    slapd: Slapd, tmp_path: Path, serve: Serve
) -> None:
    table = ldap_table(slapd, CONTRACT_OPENLDAP, "openldap", tmp_path / "mirror", timeout=2)
    client = serve(table, tmp_path)
    slapd.pause()  # frozen: connections open, nothing answers
    assert last_names(client, last_name="smith", first_name="ma") == ["Smith", "Smith"]
    slapd.resume()
    slapd.stop()
    assert last_names(client, email="ada@example.com") == ["Lovelace"]
    backend = backend_of(table, tmp_path)
    try:
        warnings = backend.check()
        (age,) = backend.status()
    finally:
        backend.close()
    assert any("answered from the mirror, but its source fails" in w for w in warnings)
    assert f"{len(PEOPLE)} entries as of" in age


def test_a_mirror_older_than_its_limit_is_an_error_not_stale_data(
    slapd: Slapd, tmp_path: Path, serve: Serve
) -> None:
    table = ldap_table(
        slapd, CONTRACT_OPENLDAP, "openldap", tmp_path / "mirror", mirror="1s", mirror_max_age="3s"
    )
    client = serve(table, tmp_path)
    assert last_names(client, customer_id="1001") == ["Lovelace"]
    slapd.stop()

    def refused() -> bool:
        body = client.get("/livelookup/people", query_string={"customer_id": "1001"}).data
        # refused, saying why the refreshes fail
        return (
            b"<customer>" not in body
            and b"over mirror_max_age" in body
            and b"cannot connect" in body
        )

    wait_for(refused, "the stale mirror refused", SETTLE)
    body = client.get("/livelookup/people", query_string={"customer_id": "1001"}).data
    assert helpspot_error(body)  # staff see "An Error Occurred", not stale data
    config = config_from_mapping({"sources": {"people": table}}, base_dir=tmp_path)
    lines = [line for line, _ok in probe_all(config)]
    assert any(
        line.startswith("FAIL sources.people") and "over mirror_max_age" in line for line in lines
    )


class _FailingFeed:
    """The real feed, failing after it has read ``good`` records (a directory dying mid-pass)."""

    def __init__(self, feed: MirrorFeed, good: int) -> None:
        self._feed, self._good = feed, good

    def __getattr__(self, name: str) -> Any:
        return getattr(self._feed, name)

    def read_all(self) -> Iterator[Record]:
        return self._cut(self._feed.read_all())

    def read_changed(self, since: Any) -> Iterator[Record]:
        return self._cut(self._feed.read_changed(since))

    def _cut(self, records: Iterator[Record]) -> Iterator[Record]:
        for n, record in enumerate(records):
            if n == self._good:
                raise BackendError("the directory went away mid-pass")
            yield record


@pytest.mark.parametrize("full", [False, True], ids=["changes", "full-copy"])
def test_a_refresh_failing_midway_leaves_the_previous_copy_serving(
    slapd: Slapd, tmp_path: Path, full: bool
) -> None:
    table = ldap_table(slapd, CONTRACT_OPENLDAP, "openldap", tmp_path / "mirror")
    backend = backend_of(table, tmp_path)
    try:
        backend.prepare()
        mirror = mirror_of(backend)
        conn = admin(slapd)
        for uid in ("1001", "1002"):
            conn.modify(_dn_of(conn, uid), {"title": [(ldap3.MODIFY_REPLACE, ["Changed"])]})
        conn.delete(_dn_of(conn, "1004"))
        real = mirror.feed
        if full:
            mirror.files.records.path.unlink()  # no records: the pass must copy everything
        mirror.feed = _FailingFeed(real, good=1)
        assert mirror.refresh_now() is None
        status = read_status(mirror.files.status)
        assert "mid-pass" in status.error
        before = {c.customer_id: c.fields.get("title") for c in everyone(backend)}
        assert (before["1001"], before["1002"]) == ("Analyst", "R&D <Lead>")
        assert "1004" in before
        assert not [p for p in mirror.files.folder.iterdir() if p.name.endswith(".tmp")]
        mirror.feed = real
        assert mirror.refresh_now() is not None
        after = {c.customer_id: c.fields.get("title") for c in everyone(backend)}
        assert after["1001"] == after["1002"] == "Changed"
        assert "1004" not in after
    finally:
        backend.close()


def test_lookups_never_see_a_half_written_copy(slapd: Slapd, tmp_path: Path) -> None:
    table = ldap_table(slapd, CONTRACT_OPENLDAP, "openldap", tmp_path / "mirror")
    backend = backend_of(table, tmp_path)
    try:
        backend.prepare()
        mirror = mirror_of(backend)
        seen: set[int] = set()
        done = threading.Event()

        def read() -> None:
            while not done.is_set():
                seen.add(len(backend.find(ByName("Smith", ""), 50)))

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for _ in range(5):
                mirror.files.records.path.unlink()  # each pass a full copy, published anew
                assert mirror.refresh_now() is not None
        finally:
            done.set()
            reader.join()
        assert seen == {8}
    finally:
        backend.close()


def test_only_one_process_refreshes_at_a_time(slapd: Slapd, tmp_path: Path) -> None:
    table = ldap_table(slapd, CONTRACT_OPENLDAP, "openldap", tmp_path / "mirror", mirror="1s")
    backend = backend_of(table, tmp_path)
    try:
        backend.prepare()
        mirror = mirror_of(backend)
        wait_for(lambda: mirror._due(read_status(mirror.files.status)), "a pass due", SETTLE)
        with lock_unless_held(mirror.files.lock) as held:  # another worker refreshing
            assert held
            assert mirror.refresh_if_due() is None
        assert mirror.refresh_if_due() is not None
        assert mirror.refresh_if_due() is None  # just done: not due again yet
    finally:
        backend.close()


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"mirror": "soon"}, "mirror"),
        ({"mirror": "5m", "mirror_max_age": "1m"}, "mirror_max_age"),
        ({"mirror_max_age": "1h"}, "mirror_max_age"),
    ],
)
def test_mirror_keys_are_checked_when_the_config_loads(
    tmp_path: Path, extra: dict[str, str], key: str
) -> None:
    table = {
        "backend": "ldap",
        "url": "ldap://127.0.0.1:1",
        "bind_dn": "cn=x",
        "password": "x",
        "base_dn": "dc=example,dc=com",
        "preset": "openldap",
        **extra,
    }
    with pytest.raises(ConfigError, match=rf"sources\.people\.{key}"):
        config_from_mapping({"sources": {"people": table}}, base_dir=tmp_path)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1.5h", 5400), ("90", 90)]
)
def test_intervals_read_as_people_write_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


# -- the copy's age: in check, the console, the log ------------------------------------------


def test_check_the_console_and_the_log_say_how_old_the_mirror_is(
    slapd: Slapd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.web.console.conftest import LOCAL, PASSWORD, log_in

    table = ldap_table(slapd, CONTRACT_OPENLDAP, "openldap", tmp_path / "mirror")
    config = {
        "server": {"outbox": str(tmp_path / "outbox.sqlite3")},
        "console": {"password": PASSWORD, "allowed_networks": ["127.0.0.1/32"]},
        "sources": {"people": table},
    }
    with caplog.at_level("INFO", logger="lookup_plugins.mirror"):
        app = create_app(config, base_dir=tmp_path)
    try:
        logged = [r.getMessage() for r in caplog.records]
        assert any(f"mirror refreshed (full copy): {len(PEOPLE)} entries" in m for m in logged)
        client = app.test_client()
        log_in(client)
        page = client.get("/", environ_base=LOCAL).data.decode()
        people = page[page.index('id="source-people"') :][:3000]
        assert "healthy" in people and f"mirror: {len(PEOPLE)} entries as of" in people
    finally:
        app.extensions[EXTENSION].sources.close()
        app.extensions[EXTENSION].webhooks.close()
    lines = [line for line, _ok in probe_all(config_from_mapping(config, base_dir=tmp_path))]
    (verdict,) = [i for i, line in enumerate(lines) if "sources.people" in line]
    assert lines[verdict].startswith("ok   sources.people")
    assert lines[verdict + 1].startswith(f"     mirror: {len(PEOPLE)} entries as of")
    assert "old (refreshed every 1 h, limit 1 d" in lines[verdict + 1]


def test_a_pass_stopped_at_the_directorys_size_limit_fails_rather_than_deleting(
    tmp_path: Path,
) -> None:
    _need_slapd()
    # slapd's sizelimit (5000) caps paged searches too, unless the bind_dn may read on
    server = Slapd(tmp_path / "slapd", tls=False)
    bulk = f"ou=bulk,{SUFFIX}"
    people = [
        (
            f"uid=u{n},{bulk}",
            {"objectClass": ["inetOrgPerson"], "uid": [f"u{n}"], "cn": ["U"], "sn": ["U"]},
        )
        for n in range(5100)
    ]
    server.load(
        [*directory(), (bulk, {"objectClass": ["organizationalUnit"], "ou": ["bulk"]}), *people]
    )
    server.start()
    try:
        table = ldap_table(server, bulk, "openldap", tmp_path / "mirror")
        backend = backend_of(table, tmp_path)
        try:
            with pytest.raises(BackendError, match="size limit, after 5000 entries"):
                backend.prepare()
        finally:
            backend.close()
    finally:
        server.stop()


def test_active_directory_changes_are_counted_per_domain_controller(tmp_path: Path) -> None:
    _need_slapd()
    dcs = [Slapd(tmp_path / name, tls=False) for name in ("dc1", "dc2")]
    for dc in dcs:
        dc.load(directory())
        dc.start()
    try:
        table = ldap_table(dcs[0], CONTRACT_AD, "active_directory", tmp_path / "mirror")
        table["url"] = [dc.url for dc in dcs]
        backend = backend_of(table, tmp_path)
        try:
            backend.prepare()
            mirror = mirror_of(backend)
            conn = admin(dcs[0])
            conn.search(CONTRACT_AD, "(sAMAccountName=1001)", attributes=["1.1"])
            ada = str(conn.response[0]["dn"])
            # as AD does: the change raises the entry's uSNChanged past every other
            change = {"title": ["Changed"], "uSNChanged": [str(FIRST_USN + 100)]}
            conn.modify(ada, {k: [(ldap3.MODIFY_REPLACE, v)] for k, v in change.items()})
            status = mirror.refresh_now()
            assert status is not None and status.kind == "changes"
            assert (status.changed, status.read) == (1, 2)  # and the newest seen before, again
            assert backend.find(ById("1001"), 1)[0].fields["title"] == "Changed"
            dcs[0].stop()  # failover: dc2 counts its own changes, so a full copy from dc2
            status = mirror.refresh_now()
            assert status is not None and status.kind == "full copy"
            assert backend.find(ById("1001"), 1)[0].fields["title"] == "Analyst"
        finally:
            backend.close()
    finally:
        for dc in dcs:
            dc.stop()


def test_a_pass_that_finds_nothing_new_keeps_the_copy_and_renews_its_age(
    slapd: Slapd, tmp_path: Path
) -> None:
    from lookup_plugins.index_files import file_identity

    table = ldap_table(slapd, CONTRACT_OPENLDAP, "openldap", tmp_path / "mirror")
    backend = backend_of(table, tmp_path)
    try:
        backend.prepare()
        mirror = mirror_of(backend)
        first = read_status(mirror.files.status)
        published = file_identity(mirror.files.csv), file_identity(mirror.files.index)
        status = mirror.refresh_now()
        assert status is not None and status.kind == "changes"
        assert (status.changed, status.gone) == (0, 0) and status.read > 0
        assert status.as_of > first.as_of
        assert (file_identity(mirror.files.csv), file_identity(mirror.files.index)) == published
    finally:
        backend.close()
