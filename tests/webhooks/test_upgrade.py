"""An outbox made by an older version gains the columns added since, in place, in both stores."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from lookup_server.webhooks import TargetPolicy, open_outbox
from tests.webhooks.conftest import PAYLOAD, T0, MakeOutbox

#: (table, column) as each store names them: what an older outbox lacks.
ADDED = {
    "sqlite": [("target_states", "next_claim_at"), ("webhooks", "request_id")],
    "postgres": [("outbox_target_states", "next_claim_at"), ("outbox_webhooks", "request_id")],
}


def drop_columns(location: str | Path, store_kind: str) -> None:
    """Make the outbox at ``location`` look as an older version left it."""
    if store_kind == "sqlite":
        lite = sqlite3.connect(location)
        try:
            lite.execute("DROP INDEX webhooks_by_request")  # SQLite drops no indexed column
            for table, column in ADDED[store_kind]:
                lite.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
            lite.commit()
        finally:
            lite.close()
        return
    import psycopg

    with psycopg.connect(str(location), autocommit=True) as conn:
        for table, column in ADDED[store_kind]:
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")


def test_an_older_outbox_gains_the_new_columns_and_keeps_its_webhooks(
    make_outbox: MakeOutbox, outbox_location: str | Path, store_kind: str
) -> None:
    old = make_outbox()
    kept = old.store("slack", PAYLOAD, now=T0)
    close = getattr(old, "close", None)
    if close is not None:
        close()
    drop_columns(outbox_location, store_kind)
    policies = {"slack": TargetPolicy(max_per_second=1, ordered=True)}
    upgraded = make_outbox(policies=policies)
    later = upgraded.store("slack", PAYLOAD, now=T0, request_id="7")
    entry = upgraded.claim("w", now=T0 + 1)
    assert entry is not None and entry.id == kept.id and entry.request_id == ""
    assert upgraded.get(later.id) == later and later.request_id == "7"
    assert [s.next_claim_at for s in upgraded.target_states()] == [T0 + 2]
    # and the upgrade is done once: opening it again changes nothing
    again = open_outbox(outbox_location, policies=policies)
    assert again.claim("w", now=T0 + 1.5) is None
    found = again.claim("w", now=T0 + 2)
    assert found is not None and found.id == later.id
    getattr(again, "close", lambda: None)()
