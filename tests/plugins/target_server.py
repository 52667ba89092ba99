"""lookup-server serving one configured target, reached the ways HelpSpot reaches it.

:func:`serving` runs lookup-server as a real HTTP server in a thread with a
config holding one ``[targets.NAME]`` (its outbox and webhook record under
the test's folder). :func:`push_through_the_bridge` has ``lookup-server bridge``
write the PHP class, which php-cli loads the way HelpSpot does
(tests/helpspot/test_bridge.py's harness) to push a request shaped like
HelpSpot's and ask for the details of an id; :func:`post_webhook` posts a
webhook form-encoded, as HelpSpot's automation rules do.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests
from click.testing import CliRunner
from werkzeug.serving import make_server

from lookup_server.cli import cli
from lookup_server.config.settings import load_config
from lookup_server.web.app import create_app
from tests.helpspot.test_bridge import need_php, run_bridge

KEY = "bridge-round-trip-key_0123456789"
#: The request number the harness pushes.
REQUEST_ID = "12345"


def _toml(table: Mapping[str, Any]) -> str:
    # JSON strings and numbers are TOML basic strings and numbers
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in table.items())


@dataclass(frozen=True)
class Serving:
    """A running lookup-server: its address and its config file."""

    url: str
    config: Path


@contextmanager
def serving(tmp_path: Path, name: str, table: Mapping[str, Any]) -> Iterator[Serving]:
    """lookup-server with the single target ``name`` configured by ``table``, on a free port."""
    config = tmp_path / "lookup.toml"
    config.write_text(
        "[server]\n"
        + _toml({"shared_key": KEY, "outbox": str(tmp_path / "outbox.sqlite3")})
        + f"\n[targets.{name}]\n"
        + _toml({"store": str(tmp_path / "webhooks.sqlite3"), **table}),
        encoding="utf-8",
    )
    app = create_app(load_config(config))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Serving(f"http://127.0.0.1:{server.server_port}", config)
    finally:
        server.shutdown()
        thread.join()
        app.extensions["lookup_server"].webhooks.close()


def push_through_the_bridge(
    tmp_path: Path, name: str, table: Mapping[str, Any], details_id: str
) -> dict[str, Any]:
    """The harness's result (``id``, ``errorMsg``, ``details``) for a push to target ``name``."""
    need_php()
    with serving(tmp_path, name, table) as running:
        folder = tmp_path / "custom_code"
        folder.mkdir()
        written = CliRunner().invoke(
            cli,
            [
                "bridge",
                name,
                "--url",
                running.url,
                "--config",
                str(running.config),
                "--name",
                "Tracker",
                "--output",
                str(folder),
            ],
        )
        assert written.exit_code == 0, written.output
        (source,) = folder.iterdir()
        return run_bridge(tmp_path, source.read_text(), "Tracker", REQUEST_ID, details_id)


def post_webhook(running: Serving, name: str, fields: Sequence[tuple[str, str]]) -> int:
    """POST ``fields`` as HelpSpot posts a webhook; the id the outbox stored it under."""
    answer = requests.post(
        f"{running.url}/webhook/{name}/{KEY}",
        data=urlencode(fields),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    webhook_id: int = answer.json()["id"]
    return webhook_id
