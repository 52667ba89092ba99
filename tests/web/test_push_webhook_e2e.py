"""Request Push and webhooks end to end, through a running lookup-server.

The other system is a small HTTP receiver on 127.0.0.1. lookup-server runs as
a real HTTP server in a thread; Request Push goes through the PHP bridge that
`lookup-server bridge` generates, loaded in php-cli as HelpSpot loads it;
webhooks are posted form-encoded with PHP bracket nesting, as HelpSpot does.
"""

from __future__ import annotations

import html
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import requests
from click.testing import CliRunner
from werkzeug.serving import make_server

from lookup_server.cli import cli
from lookup_server.helpspot.bridge import bridge_filename
from lookup_server.web.app import create_app
from lookup_server.webhooks import Outbox
from tests.conftest import CUSTOMER_HEADER, write_csv
from tests.helpspot.test_bridge import run_bridge
from tests.support.backend_contract import PEOPLE
from tests.webhooks.conftest import (
    AS_ROOT,
    corrupt_header,
    restore_header,
    stored_entry,
    under_a_file,
)

KEY = "push-and-webhook-key_0123456789"


@dataclass
class Receiver:
    """The other system: records what it gets, answers as told."""

    url: str = ""
    received: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    status: int = 200
    answer: dict[str, Any] = field(default_factory=lambda: {"id": "R-1"})


def _receiver_handler(state: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.received.append((dict(self.headers), json.loads(body)))
            data = json.dumps(state.answer).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _receiver_handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}/in"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()


@dataclass
class Running:
    """lookup-server serving on 127.0.0.1, and its config file."""

    url: str
    config: Path
    outbox: Path


@contextmanager
def serving(tmp_path: Path, receiver: Receiver, outbox: Path | None = None) -> Iterator[Running]:
    """lookup-server with the targets crm and hooks and CSV sources, on a free port."""
    outbox = outbox or tmp_path / "outbox.sqlite3"
    people = write_csv(
        tmp_path / "people.csv", CUSTOMER_HEADER, ([*p.as_fields().values()] for p in PEOPLE)
    )
    options = write_csv(tmp_path / "options.csv", ["value", "description"], [["gold", "Gold"]])
    config = tmp_path / "lookup.toml"
    config.write_text(f"""
[server]
shared_key = "{KEY}"
outbox = "{outbox}"
max_body_bytes = 65536

[sources.people]
backend = "csv"
path = "{people}"

[sources.options]
backend = "csv"
path = "{options}"

[targets.crm]
backend = "http"
url = "{receiver.url}"
store = "pushes.sqlite3"
link = "https://crm.example.com/items/{{id}}"

[targets.hooks]
backend = "http"
url = "{receiver.url}"
store = "hooks.sqlite3"
""")
    from lookup_server.config.settings import load_config

    app = create_app(load_config(config))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Running(f"http://127.0.0.1:{server.server_port}", config, outbox)
    finally:
        server.shutdown()
        app.extensions["lookup_server"].webhooks.close()


@pytest.fixture
def running(tmp_path: Path, receiver: Receiver) -> Iterator[Running]:
    with serving(tmp_path, receiver) as server:
        yield server


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# -- Request Push through the generated PHP bridge ----------------------------------------


def generate_bridge(running: Running, folder: Path) -> str:
    result = CliRunner().invoke(
        cli,
        [
            "bridge",
            "crm",
            "--url",
            running.url,
            "--config",
            str(running.config),
            "--name",
            "Crm",
            "--output",
            str(folder),
        ],
    )
    assert result.exit_code == 0, result.output
    file = folder / bridge_filename("Crm")
    assert file.stat().st_mode & 0o777 == 0o640
    assert "never world-readable" in result.output
    return file.read_text()


def test_push_and_details_round_trip_through_php(
    tmp_path: Path, running: Running, receiver: Receiver
) -> None:
    receiver.answer = {"id": "CRM-<7>"}
    source = generate_bridge(running, tmp_path)
    result = run_bridge(tmp_path, source, "Crm", "12345", details_id="CRM-<7>")
    assert result["id"] == "CRM-<7>" and result["errorMsg"] == ""
    _headers, pushed = receiver.received[-1]
    assert pushed["xRequest"] == "12345" and "documents" not in pushed
    assert pushed["request_history"]["678"]["files"][0]["sFilename"] == "photo.jpg"
    details = result["details"]  # the HTML HelpSpot inserts raw into the request page
    assert details.startswith('<div class="lookup-server-push"><p><strong>Pushed to 127.0.0.1')
    assert "<td>CRM-&lt;7&gt;</td>" in details and "CRM-<7>" not in details
    assert '<td>Printer &lt;on&gt; "fire"</td>' in details
    assert '<a href="https://crm.example.com/items/CRM-%3C7%3E" target="_blank"' in details


def test_push_failure_reaches_staff_as_errormsg(
    tmp_path: Path, running: Running, receiver: Receiver
) -> None:
    receiver.status, receiver.answer = 500, {"message": "CRM is <down>"}
    result = run_bridge(tmp_path, generate_bridge(running, tmp_path), "Crm", "12345")
    assert result["id"] is False
    # HelpSpot shows errorMsg raw in the request page's pop-up and HTML-escaped in an
    # automation rule's log note: it must read right in both, so it holds no < > & " '
    message = result["errorMsg"]
    assert message.startswith("target \u2019crm\u2019 failed:") and "\u2039down\u203a" in message
    assert html.escape(message) == message


def test_push_refuses_a_wrong_key_and_bad_bodies(running: Running, receiver: Receiver) -> None:
    url = f"{running.url}/push/crm"
    assert requests.post(url, json={"xRequest": "1"}, timeout=10).status_code == 403
    auth = {"Authorization": f"Bearer {KEY}"}
    bad = requests.post(
        url, data=b"{nope", headers={**auth, "Content-Type": "application/json"}, timeout=10
    )
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]
    listed = requests.post(url, json=[1, 2], headers=auth, timeout=10)
    assert listed.status_code == 400 and "must be an object" in listed.json()["error"]
    unknown = requests.post(f"{running.url}/push/nope", json={}, headers=auth, timeout=10)
    assert unknown.status_code == 404
    assert receiver.received == []


def test_push_details_for_an_unknown_id_is_an_escaped_message(
    running: Running, tmp_path: Path
) -> None:
    response = requests.get(
        f"{running.url}/push/crm/{quote('<b>x</b>', safe='')}",
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    assert response.status_code == 404
    assert response.json()["error"] == (
        "target 'crm': no push with id '<b>x</b>' was recorded by this server"
    )
    # what details() puts into the request page: the server's reason, escaped once
    result = run_bridge(tmp_path, generate_bridge(running, tmp_path), "Crm", "1", "<b>x</b>")
    assert result["details"] == (
        "<p>target &#039;crm&#039;: no push with id "
        "&#039;&lt;b&gt;x&lt;/b&gt;&#039; was recorded by this server</p>"
    )


# -- webhooks ---------------------------------------------------------------------------------

HELPSPOT_WEBHOOK = [
    ("xRequest", "12345"),
    ("sTitle", "Printer & <fire>"),
    ("sStatus", "Active"),
    ("sCategory", "Hardware"),
    ("fullname", "Zoë Núñez"),
    ("acting_person", "Ada"),
    ("note_type", "public"),
    ("note_content", "<p>Hot</p>"),
    ("request_history[item][678][tNote]", "First"),
    ("request_history[item][679][tNote]", "Next"),
    ("Custom1[]", "a"),
    ("Custom1[]", "b"),
]


def post_webhook(
    running: Running,
    body: bytes | str,
    path_key: str = KEY,
    content_type: str = "application/x-www-form-urlencoded",
) -> requests.Response:
    return requests.post(
        f"{running.url}/webhook/hooks/{path_key}",
        data=body,
        headers={"Content-Type": content_type},
        timeout=10,
    )


def test_webhook_is_stored_before_the_answer_then_delivered(
    running: Running, receiver: Receiver
) -> None:
    response = post_webhook(running, urlencode(HELPSPOT_WEBHOOK))
    assert response.status_code == 202
    stored = Outbox(running.outbox).get(response.json()["id"])  # a second connection
    assert stored is not None and stored.payload["sTitle"] == "Printer & <fire>"
    wait_for(lambda: len(receiver.received) == 1)
    headers, payload = receiver.received[0]
    assert payload["request_history"] == {
        "item": {"678": {"tNote": "First"}, "679": {"tNote": "Next"}}
    }
    assert payload["Custom1"] == ["a", "b"] and payload["fullname"] == "Zoë Núñez"
    assert headers["Idempotency-Key"] == stored.idempotency_key
    wait_for(lambda: stored_entry(Outbox(running.outbox), stored.id).state == "delivered")


def test_failed_delivery_stays_visible_and_is_retried_with_the_same_key(
    running: Running, receiver: Receiver
) -> None:
    receiver.status = 503
    webhook_id = post_webhook(running, urlencode(HELPSPOT_WEBHOOK)).json()["id"]
    outbox = Outbox(running.outbox)

    def failure_recorded() -> bool:
        # an attempt is counted when the webhook is claimed, before it fails
        entry = outbox.get(webhook_id)
        return entry is not None and entry.state == "pending" and entry.last_error != ""

    wait_for(failure_recorded)
    listed = CliRunner().invoke(cli, ["outbox", "list", "--config", str(running.config)])
    assert f"{webhook_id:>6}" in listed.output and "HTTP 503" in listed.output
    receiver.status = 200
    retried = CliRunner().invoke(
        cli, ["outbox", "retry", str(webhook_id), "--config", str(running.config)]
    )
    assert retried.exit_code == 0, retried.output
    wait_for(lambda: stored_entry(outbox, webhook_id).state == "delivered")
    keys = {headers["Idempotency-Key"] for headers, _ in receiver.received}
    assert len(receiver.received) == 2 and len(keys) == 1


def test_each_attempt_is_recorded_with_the_peers_status_and_answer(
    running: Running, receiver: Receiver
) -> None:
    receiver.status, receiver.answer = 503, {"message": "down for maintenance"}
    before = time.time()
    webhook_id = post_webhook(running, urlencode(HELPSPOT_WEBHOOK)).json()["id"]
    outbox = Outbox(running.outbox)
    wait_for(lambda: len(outbox.attempts(webhook_id)) == 1)
    (refused,) = outbox.attempts(webhook_id)
    assert (refused.number, refused.delivered, refused.status) == (1, False, 503)
    assert refused.answer == json.dumps(receiver.answer)
    assert refused.error == (
        "target 'hooks' failed: 127.0.0.1 refused the webhook (HTTP 503): down for maintenance"
    )
    assert before <= refused.started_at <= time.time() and refused.duration_ms >= 0
    receiver.status = 200
    retried = CliRunner().invoke(
        cli, ["outbox", "retry", str(webhook_id), "--config", str(running.config)]
    )
    assert retried.exit_code == 0, retried.output
    wait_for(lambda: len(outbox.attempts(webhook_id)) == 2)
    delivered = outbox.attempts(webhook_id)[1]
    assert (delivered.number, delivered.delivered, delivered.status) == (2, True, None)
    shown = CliRunner().invoke(
        cli, ["outbox", "show", str(webhook_id), "--config", str(running.config)]
    )
    assert "HTTP 503" in shown.output and "down for maintenance" in shown.output
    assert "request          12345" in shown.output and "<p>Hot</p>" not in shown.output


def test_a_key_in_the_body_is_neither_stored_nor_forwarded(
    running: Running, receiver: Receiver
) -> None:
    # the key in the body is accepted as the credential, and goes no further
    response = requests.post(
        f"{running.url}/webhook/hooks",
        timeout=10,
        data=urlencode([("ll_key", KEY), *HELPSPOT_WEBHOOK]),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 202
    stored = Outbox(running.outbox).get(response.json()["id"])
    assert stored is not None and "ll_key" not in stored.payload
    pushed = requests.post(
        f"{running.url}/push/crm",
        json={"ll_key": KEY, "xRequest": "7"},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    assert pushed.status_code == 200
    wait_for(lambda: len(receiver.received) == 2)
    assert all(KEY not in json.dumps(payload) for _headers, payload in receiver.received)
    assert {payload["xRequest"] for _headers, payload in receiver.received} == {"12345", "7"}


@pytest.mark.parametrize(
    "body,content_type,key,status",
    [
        ("a" + "[x]" * 100 + "=1", "application/x-www-form-urlencoded", KEY, 400),
        ("{not json", "application/json", KEY, 400),
        ('{"sTitle": "\\ud800"}', "application/json", KEY, 400),  # an escape that is not text
        ('{"xRequest": NaN}', "application/json", KEY, 400),  # strict JSON has no NaN
        ('{"xRequest": 1e999}', "application/json", KEY, 400),  # read as inf: Infinity again
        ("xRequest=1", "application/x-www-form-urlencoded", "wrong-key-0123456789", 403),
        ("x=" + "y" * 70000, "application/x-www-form-urlencoded", KEY, 413),
        ('{"a":' * 500 + "1" + "}" * 500, "application/json", KEY, 400),  # once a 500
        ('{"xRequest": "1"}', "text/json", KEY, 415),
        (
            '--XX\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--XX--\r\n',
            "multipart/form-data; boundary=XX",
            KEY,
            415,
        ),
    ],
)
def test_bad_webhooks_get_a_clear_answer_and_nothing_is_stored(
    running: Running,
    body: str,
    content_type: str,
    key: str,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="lookup_server"):
        response = post_webhook(running, body, key, content_type)
    assert response.status_code == status
    assert not running.outbox.exists() or list(Outbox(running.outbox).summaries()) == []
    # HelpSpot drops the answer: the log is where an admin learns of the loss
    assert "webhook for 'hooks' refused" in caplog.text


def test_webhook_for_an_unknown_target_is_refused(running: Running) -> None:
    response = requests.post(f"{running.url}/webhook/nope/{KEY}", data="a=1", timeout=10)
    assert response.status_code == 404
    assert "no target named 'nope'" in response.json()["error"]


def test_purge_keeps_pending_webhooks(running: Running, receiver: Receiver) -> None:
    receiver.status = 500
    webhook_id = post_webhook(running, "a=1").json()["id"]
    result = CliRunner().invoke(
        cli, ["outbox", "purge", "--older-than", "0", "--config", str(running.config)]
    )
    assert result.exit_code == 0 and "purged 0 webhook(s)" in result.output
    assert Outbox(running.outbox).get(webhook_id) is not None


# -- a bad outbox costs the webhooks only, and only while it lasts -----------------------------


def _damaged(tmp_path: Path) -> Path:
    path = tmp_path / "outbox.sqlite3"
    Outbox(path).store("hooks", {"xRequest": "1"})
    corrupt_header(path)
    return path


def _not_sqlite(tmp_path: Path) -> Path:
    path = tmp_path / "outbox.sqlite3"
    path.write_text("[server]\n" * 100)
    return path


_under_a_file = under_a_file


def _read_only_folder(tmp_path: Path) -> Path:
    if AS_ROOT:
        pytest.skip("running as root: chmod 0555 does not stop root (_under_a_file covers it)")
    folder = tmp_path / "ro"
    folder.mkdir()
    Outbox(folder / "outbox.sqlite3").store("hooks", {"xRequest": "1"})
    folder.chmod(0o555)
    return folder / "outbox.sqlite3"


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("make", [_damaged, _not_sqlite, _under_a_file, _read_only_folder])
def test_a_bad_outbox_costs_only_the_webhooks(
    tmp_path: Path,
    receiver: Receiver,
    make: Callable[[Path], Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="lookup_server")
    with serving(tmp_path, receiver, make(tmp_path)) as running:  # it starts at all
        lookup = requests.get(
            f"{running.url}/livelookup/people/{KEY}",
            params={"email": "ADA@example.com"},
            timeout=10,
        )
        assert lookup.status_code == 200 and b"<customer_id>1001</customer_id>" in lookup.content
        ajax = requests.get(f"{running.url}/ajax/options/{KEY}", timeout=10)
        assert ajax.status_code == 200 and b"Gold" in ajax.content
        pushed = requests.post(
            f"{running.url}/push/crm",
            json={"xRequest": "7"},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=10,
        )
        assert pushed.status_code == 200 and pushed.json()["id"] == "R-1"
        for _ in range(3):
            refused = post_webhook(running, urlencode(HELPSPOT_WEBHOOK))
            assert refused.status_code == 503
            assert refused.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert refused.text == (
                "lookup-server error: the webhook outbox is unusable, so "
                "this webhook was NOT stored (details in the server log)\n"
            )
        wait_for(lambda: _logged(caplog, "(logged once;") == 1)  # the worker said so, once
        assert _logged(caplog, "webhook for 'hooks' NOT stored") == 3  # each loss is logged
    assert [headers for headers, payload in receiver.received if "sTitle" in payload] == []


def test_webhooks_come_back_by_themselves_when_the_outbox_is_repaired(
    tmp_path: Path, receiver: Receiver
) -> None:
    path = tmp_path / "outbox.sqlite3"
    Outbox(path).store("hooks", {"xRequest": "1", "stored": "before"})
    original = corrupt_header(path)
    with serving(tmp_path, receiver, path) as running:
        assert post_webhook(running, urlencode(HELPSPOT_WEBHOOK)).status_code == 503
        restore_header(path, original)
        accepted = post_webhook(running, urlencode(HELPSPOT_WEBHOOK))
        assert accepted.status_code == 202
        wait_for(lambda: len(receiver.received) == 2)  # the new one and the one from before
    assert sorted(payload.get("stored", "new") for _, payload in receiver.received) == [
        "before",
        "new",
    ]


# -- refused as too large: recorded, never the body -------------------------------------------


def _too_large() -> bytes:
    return urlencode(
        [*HELPSPOT_WEBHOOK, ("request_history[item][680][tNote]", "y" * 70_000)]
    ).encode()


def test_a_webhook_refused_as_too_large_is_recorded_without_its_body(
    running: Running, receiver: Receiver
) -> None:
    body = _too_large()
    response = post_webhook(running, body)
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.text == (
        "lookup-server error: the webhook is larger than [server] "
        "max_body_bytes (65536 bytes), so it was NOT stored\n"
    )
    (refusal,) = Outbox(running.outbox).refusals()
    assert (refusal.target, refusal.size_bytes, refusal.limit_bytes, refusal.request_id) == (
        "hooks",
        len(body),
        65536,
        "12345",
    )
    assert b"y" * 100 not in running.outbox.read_bytes()  # not a byte of the body
    listed = CliRunner().invoke(cli, ["outbox", "list", "--config", str(running.config)])
    assert f"hooks            refused    size={len(body)} bytes  request=12345" in listed.output
    assert receiver.received == []


@pytest.mark.parametrize(
    "url",
    [
        "/webhook/hooks/wrong-key-0123456789",
        "/webhook/hooks",
        f"/webhook/nope/{KEY}",
        f"/webhook/crm/{KEY}?x=1",
    ],
)
def test_a_refusal_is_recorded_only_for_helpspot_and_a_webhook_target(
    running: Running, url: str
) -> None:
    # crm takes pushes and webhooks alike; nope does not exist; the others lack the key
    response = requests.post(
        f"{running.url}{url}",
        data=_too_large(),
        timeout=10,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    recorded = list(Outbox(running.outbox).refusals()) if running.outbox.exists() else []
    assert [r.target for r in recorded] == (["crm"] if "crm" in url else [])


def test_a_refusal_is_answered_even_when_the_outbox_is_unusable(
    tmp_path: Path, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    with serving(tmp_path, receiver, _damaged(tmp_path)) as running:
        assert post_webhook(running, _too_large()).status_code == 413
    assert "refused webhook for 'hooks' (request 12345) NOT recorded" in caplog.text


def test_a_key_only_another_parser_finds_never_authorizes(
    running: Running, receiver: Receiver
) -> None:
    # werkzeug would read ll_key from this multipart form; what is stored would
    # be the PHP-form reading of the same bytes, key included
    body = f'--XX\r\nContent-Disposition: form-data; name="ll_key"\r\n\r\n{KEY}\r\n--XX--\r\n'
    for path in ("/webhook/hooks", "/push/crm"):
        response = requests.post(
            f"{running.url}{path}",
            data=body,
            timeout=10,
            headers={"Content-Type": "multipart/form-data; boundary=XX"},
        )
        assert response.status_code == 403, path
    assert not running.outbox.exists() or Outbox(running.outbox).get(1) is None
    assert receiver.received == []
    # the key in a form body HelpSpot could send authorizes, and is not stored
    accepted = requests.post(
        f"{running.url}/webhook/hooks", data={"ll_key": KEY, "xRequest": "7"}, timeout=10
    )
    assert accepted.status_code == 202
    stored = Outbox(running.outbox).get(accepted.json()["id"])
    assert stored is not None and stored.payload == {"xRequest": "7"}
