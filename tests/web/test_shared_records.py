"""Two servers on one PostgreSQL database: a push made through one shows its details on the other.

Each server is an app of its own, in a folder of its own (another host), with
``[server] outbox`` and the http target's ``store`` in the same database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from lookup_server.web.app import create_app
from tests.plugins.emulators import serve
from tests.plugins.test_http_target import PUSHED, Receiver
from tests.support.postgres import schema_of_its_own

KEY = "shared-records-key-0123456789"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Flask, Flask]]:
    """Two servers whose outbox and crm target's push record share one PostgreSQL schema."""
    receiver = Receiver()
    with schema_of_its_own("shared_records") as url, serve(receiver.app()) as peer:
        config: dict[str, Any] = {
            "server": {"shared_key": KEY, "outbox": url},
            "targets": {"crm": {"backend": "http", "url": f"{peer.base_url}/items", "store": url}},
        }
        made = []
        for host in ("one", "two"):
            (tmp_path / host).mkdir()
            made.append(create_app(config, base_dir=tmp_path / host))
        try:
            yield made[0], made[1]
        finally:
            for app in made:
                state = app.extensions["lookup_server"]
                state.webhooks.close()
                state.targets.close()
                getattr(state.webhooks.outbox, "close", lambda: None)()


def test_a_push_through_one_server_shows_its_details_on_the_other(
    servers: tuple[Flask, Flask],
) -> None:
    one, two = (app.test_client() for app in servers)
    auth = {"Authorization": f"Bearer {KEY}"}
    pushed = one.post("/push/crm", json=PUSHED, headers=auth)
    assert pushed.status_code == 200, pushed.text
    push_id = pushed.json["id"]  # type: ignore[index]
    details = two.get(f"/push/crm/{push_id}", headers=auth)
    assert details.status_code == 200, details.text
    assert "Printer &lt;on&gt; fire" in details.text and "zoe@example.com" in details.text
    assert two.get("/push/crm/crm-999", headers=auth).status_code == 404
