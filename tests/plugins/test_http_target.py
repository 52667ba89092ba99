"""The http push/webhook target against a local stand-in for the receiving system."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask, Response, request
from lookup_plugins.http_client import EXCERPT_BYTES, answer_excerpt
from lookup_plugins.http_target import (
    HttpTarget,
    HttpTargetOptions,
    customer_of,
    default_store,
)

from lookup_server.core.backend import ANSWER_EXCERPT_CHARS
from lookup_server.plugin import (
    BackendError,
    BackendTimeout,
    DeliveryFailed,
    PushRequest,
    Secret,
    StoreLocation,
    TargetSettings,
    Webhook,
)
from tests.plugins.conftest import file_store
from tests.plugins.emulators import Running, serve
from tests.support.hanging import (
    HTTP_HEADERS_DRIP,
    as_target,
    dripping,
    hang_every_slot,
    wait_for,
)
from tests.support.target_contract import CONTRACT_SECRET, HttpPeer, MakeTarget, TargetContract

SECRET = "s3cr3t-token-value"
PUSHED = {
    "xRequest": "12345",
    "sTitle": "Printer <on> fire",
    "sFirstName": "Zoë",
    "sLastName": "Núñez",
    "sEmail": "zoe@example.com",
    "fullname": "Zoë Núñez",
    "staff_comment": "Please check",
    "request_history": {"678": {"tNote": "<p>Hi</p>", "files": [{"sFilename": "a.pdf"}]}},
}


@dataclass
class Receiver:
    """What the stand-in received, and what it answers next."""

    received: list[dict[str, Any]] = field(default_factory=list)
    #: (status, body, content type) answered instead of the normal id answer.
    scripted: tuple[int, str, str] | None = None
    release: threading.Event = field(default_factory=threading.Event)

    def app(self) -> Flask:
        app = Flask("receiver")

        @app.post("/items")
        def items() -> Response:
            self.received.append(
                {"headers": dict(request.headers), "body": request.get_data(), "path": request.path}
            )
            if self.scripted is not None:
                status, body, kind = self.scripted
                if status == 0:  # hang until the test ends
                    self.release.wait()
                    status = 200
                return Response(body, status=status, content_type=kind)
            number = len(self.received)
            return Response(
                json.dumps({"id": f"crm-{number}", "data": {"id": number}}),
                status=201,
                content_type="application/json",
            )

        return app


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, Running]]:
    state = Receiver()
    with serve(state.app()) as running:
        yield state, running
        state.release.set()


def make_target(
    base_url: str,
    tmp_path: Path,
    timeout: float = 5.0,
    store: StoreLocation | None = None,
    **options: Any,
) -> HttpTarget:
    """An http target posting to ``base_url``; its pushes in ``store`` (default: a file)."""
    opts = HttpTargetOptions(
        url=f"{base_url}/items", store=store or file_store(tmp_path / "pushes.sqlite3"), **options
    )
    return HttpTarget(opts, TargetSettings(name="crm", backend="http", timeout=timeout))


class TestHttpTargetContract(TargetContract):
    """The shared target behaviour, against the stand-in receiver."""

    backend_name = "http"
    # check() opens the push record only: an arbitrary endpoint has no request
    # without side effects to probe it with
    check_contacts_peer = False
    invalid_options = (
        (HttpTargetOptions(url="crm.example.com/items"), {"url"}),
        (HttpTargetOptions(url="ftp://crm.example.com/items"), {"url"}),
        (HttpTargetOptions(url="https://crm.example.com/items", link="https://x/"), {"link"}),
    )

    @pytest.fixture
    def contract_peer(self) -> Iterator[HttpPeer]:
        with HttpPeer(Receiver().app()) as peer:
            yield peer

    @pytest.fixture
    def make_contract_target(self, tmp_path: Path) -> MakeTarget:
        def make(address: str, timeout: float) -> HttpTarget:
            return make_target(address, tmp_path, timeout, secret=Secret(CONTRACT_SECRET))

        return make


def test_it_offers_push_details_and_webhooks() -> None:
    assert HttpTarget.capabilities() == {"push", "details", "webhook"}


# -- push -------------------------------------------------------------------------------


def test_push_posts_the_request_as_json_and_returns_the_id(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    state, running = receiver
    target = make_target(
        running.base_url, tmp_path, secret=Secret(SECRET), headers={"X-Team": "support"}
    )
    assert target.push(PushRequest(PUSHED)) == "crm-1"
    (got,) = state.received
    assert json.loads(got["body"]) == PUSHED
    assert got["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert got["headers"]["X-Team"] == "support"
    assert got["headers"]["Content-Type"] == "application/json; charset=utf-8"


def test_id_field_can_point_into_the_answer(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    _, running = receiver
    target = make_target(running.base_url, tmp_path, id_field="data.id")
    assert target.push(PushRequest(PUSHED)) == "1"  # a JSON number becomes text


def test_a_long_id_is_cut_to_255_characters(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    state, running = receiver
    state.scripted = (200, json.dumps({"id": "x" * 300}), "application/json")
    assert make_target(running.base_url, tmp_path).push(PushRequest(PUSHED)) == "x" * 255


def test_an_answer_without_the_id_field_is_an_error(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    state, running = receiver
    state.scripted = (200, json.dumps({"ok": True}), "application/json")
    with pytest.raises(BackendError, match="has no 'id' field; check id_field"):
        make_target(running.base_url, tmp_path).push(PushRequest(PUSHED))


@pytest.mark.parametrize(
    "answer", ["not json", json.dumps({"id": True}), json.dumps({"id": ""}), json.dumps(["id"])]
)
def test_unusable_ids_are_errors(
    receiver: tuple[Receiver, Running], tmp_path: Path, answer: str
) -> None:
    state, running = receiver
    state.scripted = (200, answer, "application/json")
    with pytest.raises(BackendError, match="no 'id' field"):
        make_target(running.base_url, tmp_path).push(PushRequest(PUSHED))


def test_a_refusal_carries_the_status_and_the_other_systems_message(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    state, running = receiver
    state.scripted = (422, json.dumps({"error": "title is\nrequired"}), "application/json")
    with pytest.raises(BackendError) as caught:
        make_target(running.base_url, tmp_path).push(PushRequest(PUSHED))
    assert str(caught.value) == "127.0.0.1 refused the push (HTTP 422): title is required"


def test_a_server_error_page_is_not_quoted(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    state, running = receiver
    state.scripted = (500, "<html>Traceback ... password=x</html>", "text/html")
    with pytest.raises(BackendError) as caught:
        make_target(running.base_url, tmp_path).push(PushRequest(PUSHED))
    assert str(caught.value) == "127.0.0.1 refused the push (HTTP 500)"


def test_a_redirect_is_not_followed(receiver: tuple[Receiver, Running], tmp_path: Path) -> None:
    state, running = receiver
    state.scripted = (302, "", "text/plain")
    with pytest.raises(BackendError, match="HTTP 302"):
        make_target(running.base_url, tmp_path, secret=Secret(SECRET)).push(PushRequest(PUSHED))
    assert len(state.received) == 1


def test_an_unreachable_target_is_a_clear_error_without_secrets(tmp_path: Path) -> None:
    target = make_target("http://127.0.0.1:9", tmp_path, secret=Secret(SECRET))
    with pytest.raises(BackendError) as caught:
        target.push(PushRequest(PUSHED))
    assert "cannot connect to 127.0.0.1" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_a_hanging_target_times_out(receiver: tuple[Receiver, Running], tmp_path: Path) -> None:
    state, running = receiver
    state.scripted = (0, "{}", "application/json")
    with pytest.raises(BackendTimeout, match=r"did not answer within 0\.3 s"):
        make_target(running.base_url, tmp_path, timeout=0.3).push(PushRequest(PUSHED))


def test_a_target_dripping_its_headers_gets_its_threads_and_connections_back(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    # a body that never ends is the contract's hanging peer; this is the other drip
    state, running = receiver
    with dripping(HTTP_HEADERS_DRIP, upstream=("127.0.0.1", running.port)) as server:
        target = as_target(make_target(f"http://127.0.0.1:{server.port}", tmp_path, timeout=2))
        hang_every_slot(target, lambda: target.push(PushRequest(PUSHED)))
        wait_for(lambda: server.open_connections == 0, "every connection was closed")
        server.dripping = False
        assert target.push(PushRequest(PUSHED)) == "crm-1"  # not "busy"
        target.deliver(Webhook(1, "k", {"a": "1"}))
    assert len(state.received) == 2


# -- details --------------------------------------------------------------------------------


def test_details_show_the_recorded_push_and_answer(
    receiver: tuple[Receiver, Running], tmp_path: Path, store_location: StoreLocation
) -> None:
    _, running = receiver
    one = make_target(running.base_url, tmp_path, store=store_location)
    push_id = one.push(PushRequest(PUSHED))
    # Another server on the same store (another worker, host, or a restart) reads it.
    again = make_target(
        running.base_url, tmp_path, store=store_location, link="https://crm.example/items/{id}"
    )
    try:
        details = again.details(push_id)
    finally:
        one.close()
        again.close()
    rows = dict(details.rows)
    assert details.title == "Pushed to 127.0.0.1"
    assert details.link == "https://crm.example/items/crm-1"
    assert rows["Id"] == "crm-1" and rows["HelpSpot request"] == "12345"
    assert rows["Title"] == "Printer <on> fire"  # raw: the core escapes
    assert rows["Customer"] == "Zoë Núñez <zoe@example.com>"
    assert rows["Answer"] == "HTTP 201"
    assert json.loads(rows["Answer body"])["id"] == "crm-1"
    assert rows["Pushed at"].endswith(" UTC")


def test_details_of_an_unknown_push_is_an_error(tmp_path: Path) -> None:
    target = make_target("http://127.0.0.1:9", tmp_path)
    with pytest.raises(BackendError, match="no push with id 'nope' was recorded"):
        target.details("nope")


def test_a_push_that_cannot_be_recorded_still_returns_its_id(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    _, running = receiver
    blocker = tmp_path / "file"
    blocker.write_text("x")
    opts = HttpTargetOptions(
        url=f"{running.base_url}/items", store=file_store(blocker / "pushes.sqlite3")
    )
    target = HttpTarget(opts, TargetSettings(name="crm", backend="http"))
    assert target.push(PushRequest(PUSHED)) == "crm-1"
    with pytest.raises(BackendError, match="cannot open the push record"):
        target.check()


def test_the_push_record_is_readable_by_the_server_only(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    _, running = receiver
    previous = os.umask(0o022)  # the usual one, under which SQLite makes files 0644
    try:
        make_target(running.base_url, tmp_path).push(PushRequest(PUSHED))
    finally:
        os.umask(previous)
    files = sorted(tmp_path.glob("pushes.sqlite3*"))  # and its -wal, -shm if left
    assert files and {p.stat().st_mode & 0o777 for p in files} == {0o600}


def test_customer_is_built_from_what_is_there() -> None:
    assert customer_of(PushRequest({"sFirstName": "Ada", "sLastName": "L"})) == "Ada L"
    assert customer_of(PushRequest({"sEmail": "a@b.c"})) == "<a@b.c>"
    assert customer_of(PushRequest({})) == ""


def test_the_default_store_is_in_the_state_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_store("my crm/x") == tmp_path / "lookup-server" / "push-my_crm_x.sqlite3"


# -- webhooks ---------------------------------------------------------------------------------


def test_deliver_posts_the_payload_with_its_idempotency_key(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    state, running = receiver
    target = make_target(running.base_url, tmp_path, secret=Secret(SECRET))
    payload = {"xRequest": "1", "request_history": {"item": {"678": {"tNote": "x"}}}}
    webhook = Webhook(7, "0f8fad5b-d9cb-469f-a165-70867728950e", payload)
    target.deliver(webhook)
    target.deliver(webhook)  # a retry carries the same key
    assert [json.loads(r["body"]) for r in state.received] == [payload, payload]
    assert {r["headers"]["Idempotency-Key"] for r in state.received} == {webhook.idempotency_key}
    assert state.received[0]["headers"]["Authorization"] == f"Bearer {SECRET}"


def test_deliver_raises_on_a_non_2xx_answer(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    state, running = receiver
    state.scripted = (503, json.dumps({"message": "maintenance"}), "application/json")
    with pytest.raises(BackendError, match=r"refused the webhook \(HTTP 503\): maintenance"):
        make_target(running.base_url, tmp_path).deliver(Webhook(1, "k", {"a": "1"}))


def test_a_refused_webhook_carries_the_status_and_the_start_of_the_answer(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    state, running = receiver
    body = json.dumps({"message": "maintenance", "until": "noon", "pad": "x" * 5000})
    state.scripted = (503, body, "application/json")
    with pytest.raises(DeliveryFailed) as caught:
        make_target(running.base_url, tmp_path).deliver(Webhook(1, "k", {"a": "1"}))
    assert caught.value.status == 503
    assert caught.value.answer == body[:ANSWER_EXCERPT_CHARS]


def test_the_answer_never_shows_the_secret_the_headers_or_the_url_past_the_host(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    # what a debug page echoes of the request: its line, its headers, raw or encoded
    state, running = receiver
    echoed = [SECRET, "hdr key/0815", "hdr%20key%2F0815", "/items?token=q-token-77", "q-token-77"]
    state.scripted = (
        400,
        "Cannot POST /items?token=q-token-77\n" + "\n".join(echoed),
        "text/plain",
    )
    target = HttpTarget(
        HttpTargetOptions(
            url=f"{running.base_url}/items?token=q-token-77",
            secret=Secret(SECRET),
            headers={"X-Api-Key": "hdr key/0815"},
            store=file_store(tmp_path / "pushes.sqlite3"),
        ),
        TargetSettings(name="crm", backend="http"),
    )
    with pytest.raises(DeliveryFailed) as caught:
        target.deliver(Webhook(1, "k", {"a": "1"}))
    assert caught.value.answer == "Cannot POST [hidden]" + "\n[hidden]" * len(echoed)


def test_the_peers_message_never_shows_the_secret(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    state, running = receiver
    state.scripted = (401, json.dumps({"error": f"bad token Bearer {SECRET}"}), "application/json")
    with pytest.raises(DeliveryFailed) as caught:
        make_target(running.base_url, tmp_path, secret=Secret(SECRET)).deliver(
            Webhook(1, "k", {"a": "1"})
        )
    assert (
        str(caught.value) == "127.0.0.1 refused the webhook (HTTP 401): bad token Bearer [hidden]"
    )


def test_an_excerpt_cut_at_its_edge_never_shows_the_start_of_a_secret(
    receiver: tuple[Receiver, Running],
) -> None:
    state, running = receiver
    state.scripted = (500, "a" * (EXCERPT_BYTES - 6) + SECRET, "text/plain")
    response = requests.post(f"{running.base_url}/items", timeout=5)
    assert answer_excerpt(response, [SECRET]) == "a" * (EXCERPT_BYTES - len(SECRET))


def test_an_answer_in_a_charset_python_does_not_know_is_read_as_utf8(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    state, running = receiver
    state.scripted = (500, "café closed", "text/plain; charset=x-no-such-charset")
    with pytest.raises(DeliveryFailed) as caught:
        make_target(running.base_url, tmp_path).deliver(Webhook(1, "k", {"a": "1"}))
    assert caught.value.answer == "café closed"


# -- configuration -------------------------------------------------------------------------------


def test_validate_and_check(tmp_path: Path) -> None:
    settings = TargetSettings(name="crm", backend="http")
    assert HttpTarget.validate(HttpTargetOptions(url="crm.example.com", link="x"), settings) == [
        ("url", "must be an address starting with https:// (or http://)"),
        ("link", "must contain {id}, where the pushed item's id goes"),
    ]
    assert (
        HttpTarget.validate(HttpTargetOptions(url="https://h", link="https://h/x"), settings)[0][0]
        == "link"
    )
    assert HttpTarget.validate(HttpTargetOptions(url="https://h/items"), settings) == []
    plain = HttpTarget(
        HttpTargetOptions(
            url="http://crm.example.com/items", store=file_store(tmp_path / "p.sqlite3")
        ),
        settings,
    )
    assert plain.check() == ["url: pushes and webhooks go to crm.example.com unencrypted (http://)"]
