"""What is kept of a webhook refused as too large: HelpSpot's request id, found cheaply."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest

from lookup_server.config.settings import config_from_mapping
from lookup_server.runtime.service import Targets
from lookup_server.webhooks import TargetPolicy
from lookup_server.webhooks.intake import REQUEST_ID_WINDOW, Webhooks, find_request_id


@pytest.mark.parametrize(
    ("head", "complete", "found"),
    [
        (b"xRequest=12345&sTitle=x", False, "12345"),
        (b"sTitle=a%26xRequest%3D9&xRequest=77&z=1", False, "77"),  # an encoded & is no field
        (b"request_history[item][1][xRequest]=5&xRequest=6&", False, "6"),  # nested is not it
        (b"a=1&xRequest=123", False, ""),  # cut off: the id may go on past the window
        (b"a=1&xRequest=123", True, "123"),  # the whole body: the end ends the field
        (b"xRequest=12a&", False, ""),  # HelpSpot's ids are numbers
        (b'{"sTitle": "x", "xRequest": "4711", "request_history": {}}', False, "4711"),
        (b'{"xRequest":4711,"sTitle":"x"}', False, "4711"),
        (b'{"sTitle": "no id here"}', False, ""),
        (b'{"xRequest": "47', False, ""),
        (b"", False, ""),
    ],
)
def test_find_request_id(head: bytes, complete: bool, found: str) -> None:
    assert find_request_id(head, complete) == found


def test_find_request_id_looks_only_at_the_window() -> None:
    late = b"a=" + b"x" * REQUEST_ID_WINDOW + b"&xRequest=1&"
    assert find_request_id(late) == ""
    assert find_request_id(urlencode({"xRequest": "8", "big": "y" * 10**6}).encode()) == "8"


def test_a_refusal_without_a_length_is_recorded_as_more_than_the_limit(tmp_path: Path) -> None:
    config = config_from_mapping(
        {
            "server": {"outbox": "outbox.sqlite3", "max_body_bytes": 4096},
            "targets": {
                "hooks": {
                    "backend": "http",
                    "url": "http://127.0.0.1:9/in",
                    "store": "pushes.sqlite3",
                }
            },
        },
        tmp_path,
    )
    webhooks = Webhooks(config.server, Targets(config))
    webhooks.record_refusal("hooks", None)  # chunked: nothing was read of it
    webhooks.record_refusal("nope", 10_000)  # no such target: nothing to record
    (refusal,) = webhooks.outbox.refusals()
    assert (refusal.target, refusal.size_bytes, refusal.limit_bytes, refusal.request_id) == (
        "hooks",
        None,
        4096,
        "",
    )


def test_a_webhook_right_after_the_outbox_file_was_deleted_is_stored(tmp_path: Path) -> None:
    from lookup_server.web.app import create_app

    app = create_app(
        {
            "server": {"outbox": str(tmp_path / "outbox.sqlite3")},
            "targets": {"t": {"backend": "http", "url": "http://127.0.0.1:9/x"}},
        },
        base_dir=tmp_path,
    )
    client = app.test_client()
    assert client.post("/webhook/t", data={"xRequest": "1"}).status_code == 202
    for file in tmp_path.glob("outbox.sqlite3*"):
        file.unlink(missing_ok=True)  # the last connection closed removes -wal and -shm
    # the first webhook after the loss must not be lost too: HelpSpot never resends it
    assert client.post("/webhook/t", data={"xRequest": "2"}).status_code == 202


def test_the_outbox_holds_each_targets_breaker_settings(tmp_path: Path) -> None:
    hook = {"backend": "http", "url": "http://127.0.0.1:9/in", "store": "pushes.sqlite3"}
    config = config_from_mapping(
        {
            "server": {"outbox": "outbox.sqlite3"},
            "targets": {
                "crm": {**hook, "breaker_failures": 5, "breaker_probe_seconds": 30},
                "plain": hook,
            },
        },
        tmp_path,
    )
    webhooks = Webhooks(config.server, Targets(config))
    assert webhooks.outbox.policies == {
        "crm": TargetPolicy(breaker_failures=5, breaker_probe_seconds=30),
        "plain": TargetPolicy(),
    }


def test_a_webhook_is_stored_with_its_request_id_and_its_target_s_order(tmp_path: Path) -> None:
    hook = {"backend": "http", "url": "http://127.0.0.1:9/in", "store": "pushes.sqlite3"}
    config = config_from_mapping(
        {
            "server": {"outbox": "outbox.sqlite3"},
            "targets": {"slack": {**hook, "ordered": True, "max_per_second": 1}},
        },
        tmp_path,
    )
    webhooks = Webhooks(config.server, Targets(config))
    assert webhooks.outbox.policies == {"slack": TargetPolicy(max_per_second=1.0, ordered=True)}
    webhooks.enabled = False  # no worker: the test reads what was stored
    assert webhooks.accept("slack", {"xRequest": "12345", "sTitle": "x"}).request_id == "12345"
    assert webhooks.accept("slack", {"xRequest": 77}).request_id == "77"
    assert webhooks.accept("slack", {"xRequest": "12a"}).request_id == ""
    assert webhooks.accept("slack", {"sTitle": "no id"}).request_id == ""
