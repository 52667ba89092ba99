"""A target's Request Push and webhooks end to end, the way HelpSpot makes them.

lookup-server serves a config file over real HTTP in a thread;
:func:`push_through_bridge` writes the PHP bridge with ``lookup-server
bridge`` and runs it in php-cli as HelpSpot does (push, then details), and
:func:`post_webhook` posts a form-encoded webhook as HelpSpot's triggers do.
For targets whose other system is an emulator (tests/plugins/emulators).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from click.testing import CliRunner
from werkzeug.serving import make_server

from lookup_server.cli import cli
from lookup_server.config.settings import load_config
from lookup_server.helpspot.bridge import bridge_filename
from lookup_server.web.app import create_app
from tests.helpspot.test_bridge import run_bridge
from tests.support.hanging import wait_for

KEY = "bridge-round-trip-key_0123456789"


@dataclass(frozen=True)
class Serving:
    """lookup-server on 127.0.0.1, and the config file it serves."""

    url: str
    config: Path


@contextmanager
def serving(config_text: str, folder: Path) -> Iterator[Serving]:
    """Serve ``config_text`` (TOML; ``{KEY}`` is the shared key) from a file in ``folder``."""
    config = folder / "lookup.toml"
    config.write_text(config_text.replace("{KEY}", KEY), encoding="utf-8")
    app = create_app(load_config(config))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Serving(f"http://127.0.0.1:{server.server_port}", config)
    finally:
        server.shutdown()
        app.extensions["lookup_server"].webhooks.close()


def push_through_bridge(
    running: Serving, folder: Path, target: str, request_id: str, details_id: str
) -> dict[str, Any]:
    """Generate the bridge for ``target``, push request ``request_id``, show ``details_id``."""
    name = target.capitalize()
    result = CliRunner().invoke(
        cli,
        [
            "bridge",
            target,
            "--url",
            running.url,
            "--config",
            str(running.config),
            "--name",
            name,
            "--output",
            str(folder),
        ],
    )
    assert result.exit_code == 0, result.output
    source = (folder / bridge_filename(name)).read_text(encoding="utf-8")
    return run_bridge(folder, source, name, request_id, details_id=details_id)


def post_webhook(running: Serving, target: str, fields: list[tuple[str, str]]) -> int:
    """Post a webhook as HelpSpot does (form-encoded, the key in the URL); its outbox id."""
    response = requests.post(
        f"{running.url}/webhook/{target}/{KEY}",
        data=fields,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return int(response.json()["id"])


def delivered(condition: Callable[[], bool], what: str) -> None:
    """Wait until the outbox worker has delivered what ``condition`` sees."""
    wait_for(condition, what, 20.0)
