"""What only the PostgreSQL outbox does: wake every server at once, keep its URL's secret."""

from __future__ import annotations

import threading

import pytest

from lookup_server.webhooks import DeliveryWorker, OutboxError, open_outbox, probe
from lookup_server.webhooks.pgdatabase import SCHEMA_VERSION, safe_url
from lookup_server.webhooks.postgres import PostgresOutbox
from tests.webhooks.conftest import PAYLOAD, Recorder, wait_for

#: Long enough that only a NOTIFY can explain a delivery within the test's wait.
NO_POLL = 3600.0


def test_a_store_on_one_server_wakes_the_worker_of_another(postgres_url: str) -> None:
    here, there = PostgresOutbox(postgres_url), PostgresOutbox(postgres_url)
    deliver = Recorder()
    worker = DeliveryWorker(there, deliver, poll_seconds=NO_POLL)
    worker.start()
    try:
        wait_for(lambda: there._listening is not None)  # LISTENing before the store
        entry = here.store("crm", PAYLOAD)
        wait_for(lambda: [w.id for _, w in deliver.calls] == [entry.id])
        wait_for(lambda: (here.get(entry.id) or entry).state == "delivered")
    finally:
        worker.stop(timeout=5)
        here.close()
        there.close()


def test_waiting_without_a_listen_connection_polls(postgres_url: str) -> None:
    box = PostgresOutbox(postgres_url)
    box._db.url = "postgresql://nobody@127.0.0.1:1/none"  # LISTEN cannot connect
    wake = threading.Event()
    wake.set()
    box.wait_for_work(wake, NO_POLL)  # returns on the event, as the SQLite store does
    assert box._listening is None


def test_the_schema_version_is_recorded_and_a_newer_one_refused(postgres_url: str) -> None:
    box = PostgresOutbox(postgres_url)
    with box._db.reading() as conn:
        assert conn.execute("SELECT version FROM outbox_schema").fetchall() == [(SCHEMA_VERSION,)]
        conn.execute("UPDATE outbox_schema SET version = %s", (SCHEMA_VERSION + 1,))
    box.close()
    with pytest.raises(OutboxError, match="made by a newer lookup-server"):
        PostgresOutbox(postgres_url)


def test_the_url_is_never_shown_with_its_password() -> None:
    url = "postgresql://lookup:hunter2@db.example:5433/outbox?password=hunter2&sslmode=require"
    assert safe_url(url) == "postgresql://lookup@db.example:5433/outbox"
    box = open_outbox(url, lazy=True)
    assert "hunter2" not in box.description
    ok, detail = probe("postgresql://lookup:hunter2@127.0.0.1:1/outbox")
    assert not ok and "hunter2" not in detail and "127.0.0.1:1/outbox" in detail
    with pytest.raises(OutboxError) as info:
        box_down = open_outbox("postgresql://lookup:hunter2@127.0.0.1:1/outbox", lazy=True)
        box_down.counts()
    assert "hunter2" not in str(info.value)


def test_check_probes_the_database(postgres_url: str) -> None:
    ok, detail = probe(postgres_url)
    assert ok and detail.startswith("postgresql://postgres@127.0.0.1")
