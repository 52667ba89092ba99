"""An outbox made by an older version gains the columns added since, in place, in both stores."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from lookup_server.webhooks import TargetPolicy, open_outbox
from tests.webhooks.conftest import PAYLOAD, T0, MakeOutbox

#: (table, column) as each store names them: what an older outbox lacks.
ADDED = {
    "sqlite": [("target_states", "next_claim_at")],
    "postgres": [("outbox_target_states", "next_claim_at")],
}


def drop_columns(location: str | Path, store_kind: str) -> None:
    """Make the outbox at ``location`` look as an older version left it."""
    if store_kind == "sqlite":
        lite = sqlite3.connect(location)
        try:
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
    policies = {"slack": TargetPolicy(max_per_second=1)}
    upgraded = make_outbox(policies=policies)
    entry = upgraded.claim("w", now=T0 + 1)
    assert entry is not None and entry.id == kept.id
    assert [s.next_claim_at for s in upgraded.target_states()] == [T0 + 2]
    # and the upgrade is done once: opening it again changes nothing
    again = open_outbox(outbox_location, policies=policies)
    assert again.claim("w", now=T0 + 1.5) is None
    getattr(again, "close", lambda: None)()
