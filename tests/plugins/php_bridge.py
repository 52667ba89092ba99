"""A Request Push through the PHP bridge, as HelpSpot makes it, to one configured target.

lookup-server runs as a real HTTP server in a thread with a config holding one
``[targets.NAME]``; ``lookup-server bridge`` writes the PHP class, and php-cli
loads it the way HelpSpot does (tests/helpspot/test_bridge.py's harness),
pushes a request shaped like HelpSpot's and asks for the details of an id.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def push_through_the_bridge(
    tmp_path: Path, name: str, table: Mapping[str, Any], details_id: str
) -> dict[str, Any]:
    """The harness's result (``id``, ``errorMsg``, ``details``) for a push to target ``name``."""
    need_php()
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
        folder = tmp_path / "custom_code"
        folder.mkdir()
        written = CliRunner().invoke(
            cli,
            [
                "bridge",
                name,
                "--url",
                f"http://127.0.0.1:{server.server_port}",
                "--config",
                str(config),
                "--name",
                "Tracker",
                "--output",
                str(folder),
            ],
        )
        assert written.exit_code == 0, written.output
        (source,) = folder.iterdir()
        return run_bridge(tmp_path, source.read_text(), "Tracker", REQUEST_ID, details_id)
    finally:
        server.shutdown()
        thread.join()
        app.extensions["lookup_server"].webhooks.close()
