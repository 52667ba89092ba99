"""Local stand-ins for hosted APIs, serving the vendors' documented shapes.

Each emulator is a small Flask app; :func:`serve` runs one on 127.0.0.1 on a
free port in a background thread for the duration of a fixture.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from ssl import SSLContext
from typing import Any

import tomllib
from werkzeug.serving import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # keep test output (and caplog) free of access-log lines


@dataclass(frozen=True)
class Running:
    """A started emulator: where to reach it."""

    base_url: str
    port: int


@contextmanager
def serve(app: Any, ssl_context: SSLContext | None = None) -> Iterator[Running]:
    """Serve ``app`` on 127.0.0.1 until the block ends."""
    server = make_server(
        "127.0.0.1", 0, app, threaded=True, ssl_context=ssl_context, request_handler=_QuietHandler
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    scheme = "https" if ssl_context is not None else "http"
    try:
        yield Running(f"{scheme}://127.0.0.1:{server.server_port}", server.server_port)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@dataclass
class Scripted:
    """A canned answer served instead of the normal one (errors, throttling, junk)."""

    status: int
    body: Any
    headers: dict[str, str]
    #: Only requests whose path contains this are answered (all when empty).
    path_contains: str = ""


def documented_tables(doc: Path) -> dict[str, Any]:
    """The TOML examples of a docs/backends page, merged (what an admin would paste)."""
    blocks = re.findall(r"```toml\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)
    merged: dict[str, Any] = {}
    for block in blocks:
        for table, entries in tomllib.loads(block).items():
            merged.setdefault(table, {}).update(entries)
    return merged


DOCS = Path(__file__).resolve().parents[3] / "docs" / "backends"
README = DOCS.parents[1] / "README.md"


def readme_target_tables() -> list[dict[str, Any]]:
    """Every ``[targets.NAME]`` table of the README's TOML examples, as an admin would paste it."""
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    return [
        table
        for block in blocks
        for table in tomllib.loads(block).get("targets", {}).values()
        if isinstance(table, dict)
    ]


def readme_tables(heading: str) -> dict[str, Any]:
    """The TOML examples of one ``### heading`` section of the README, merged."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n### {heading}\n")
    end = min(
        (i for i in (text.find("\n### ", start + 1), text.find("\n## ", start + 1)) if i > 0),
        default=len(text),
    )
    blocks = re.findall(r"```toml\n(.*?)```", text[start:end], re.S)
    merged: dict[str, Any] = {}
    for block in blocks:
        for table, entries in tomllib.loads(block).items():
            merged.setdefault(table, {}).update(entries)
    return merged
