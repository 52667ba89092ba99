"""Signed webhooks of the http target (Standard Webhooks), checked as a receiver would."""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import re
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lookup_plugins.http_target import HttpTarget, HttpTargetOptions
from lookup_plugins.webhook_signature import (
    BadSigningSecret,
    signature,
    signature_headers,
    signing_key,
)
from werkzeug.datastructures import Headers

from lookup_server.plugin import PushRequest, Secret, TargetSettings, Webhook
from tests.plugins.emulators import Running, serve
from tests.plugins.test_http_target import PUSHED, Receiver, make_target

README = Path(__file__).resolve().parents[2] / "README.md"
#: The specification's own test vector (its reference libraries test against it).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
NEW = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OLD = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
KEY = "0f8fad5b-d9cb-469f-a165-70867728950e"

Verify = Callable[[str, Any, bytes], bool]


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, Running]]:
    state = Receiver()
    with serve(state.app()) as running:
        yield state, running
        state.release.set()


def readme_verifier(now: float | None = None) -> Verify:
    """The README's verification example, run as written (its clock at ``now`` if given)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    (code,) = [block for block in blocks if "def verify_webhook(" in block]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 (our own docs)
    if now is not None:
        namespace["time"] = types.SimpleNamespace(time=lambda: now)
    verify: Verify = namespace["verify_webhook"]
    return verify


def delivered(
    receiver: tuple[Receiver, Running], tmp_path: Path, **options: Any
) -> tuple[Headers, bytes]:
    """Deliver one webhook through a target with ``options``; what the receiver got."""
    state, running = receiver
    target = make_target(running.base_url, tmp_path, **options)
    target.deliver(Webhook(7, KEY, {"xRequest": "1", "sTitle": "Zoë's printer"}))
    got = state.received[-1]
    return Headers(got["headers"]), got["body"]


def test_the_specs_test_vector() -> None:
    key = signing_key(SPEC_SECRET)
    assert signature(key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_the_readme_example_accepts_the_specs_test_vector_within_the_tolerance() -> None:
    headers = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }
    assert readme_verifier(SPEC_TIMESTAMP + 300)(SPEC_SECRET, headers, SPEC_BODY)
    assert readme_verifier(SPEC_TIMESTAMP - 300)(SPEC_SECRET, headers, SPEC_BODY)
    assert not readme_verifier(SPEC_TIMESTAMP + 301)(SPEC_SECRET, headers, SPEC_BODY)
    assert not readme_verifier(SPEC_TIMESTAMP - 301)(SPEC_SECRET, headers, SPEC_BODY)


def test_the_readme_example_verifies_a_real_delivery(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    headers, body = delivered(receiver, tmp_path, signing_secret=Secret(NEW))
    verify = readme_verifier()
    assert verify(NEW, headers, body)
    assert not verify(OLD, headers, body)
    assert not verify(NEW, headers, body.replace(b"printer", b"printers"))
    headers["webhook-id"] = "another-id"
    assert not verify(NEW, headers, body)


def test_the_headers_carry_the_idempotency_key_and_the_attempts_time(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    state, running = receiver
    target = make_target(running.base_url, tmp_path, signing_secret=Secret(NEW))
    webhook = Webhook(7, KEY, {"xRequest": "1"})
    for moment in (1_800_000_000.75, 1_800_000_030.0):  # a first try and a retry
        target.clock = functools.partial(float, moment)
        target.deliver(webhook)
    first, retry = (Headers(r["headers"]) for r in state.received)
    assert first["webhook-id"] == retry["webhook-id"] == KEY == first["Idempotency-Key"]
    assert (first["webhook-timestamp"], retry["webhook-timestamp"]) == ("1800000000", "1800000030")
    body = state.received[0]["body"]
    assert first["webhook-signature"] == signature(signing_key(NEW), KEY, 1800000000, body)


def test_while_rotating_both_signatures_are_sent_and_each_verifies(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    headers, body = delivered(
        receiver, tmp_path, signing_secret=Secret(NEW), signing_secret_previous=Secret(OLD)
    )
    stamp = int(headers["webhook-timestamp"])
    assert headers["webhook-signature"] == " ".join(
        signature(signing_key(s), KEY, stamp, body) for s in (NEW, OLD)
    )
    verify = readme_verifier()
    assert verify(NEW, headers, body) and verify(OLD, headers, body)


def test_the_bearer_secret_still_goes_with_a_signed_webhook(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    headers, _ = delivered(receiver, tmp_path, secret=Secret("tok-123"), signing_secret=Secret(NEW))
    assert headers["Authorization"] == "Bearer tok-123"
    assert "webhook-signature" in headers


def test_without_a_signing_secret_nothing_is_signed(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    headers, body = delivered(receiver, tmp_path)
    assert "webhook-signature" not in headers and "webhook-id" not in headers
    assert json.loads(body)["xRequest"] == "1"


def test_pushes_are_not_signed(receiver: tuple[Receiver, Running], tmp_path: Path) -> None:
    state, running = receiver
    target = make_target(running.base_url, tmp_path, signing_secret=Secret(NEW))
    target.push(PushRequest(PUSHED))
    sent = {name.lower() for name in state.received[0]["headers"]}
    assert not {"webhook-id", "webhook-signature"} & sent


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with whsec_"),
        ("whsec_not base64!", "the key in base64"),
        ("whsec_" + base64.b64encode(b"x" * 23).decode(), "its key is 23 bytes"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "its key is 65 bytes"),
    ],
)
def test_validate_names_an_unfit_secret_without_quoting_it(secret: str, says: str) -> None:
    settings = TargetSettings(name="crm", backend="http")
    for name in ("signing_secret", "signing_secret_previous"):
        options = HttpTargetOptions(url="https://h/items", signing_secret=Secret(NEW))
        changed: dict[str, Any] = {name: Secret(secret)}
        options = dataclasses.replace(options, **changed)
        ((key, message),) = HttpTarget.validate(options, settings)
        assert key == name and says in message and secret not in message
    with pytest.raises(BadSigningSecret):
        signing_key(secret)


def test_a_previous_secret_alone_is_a_mistake() -> None:
    options = HttpTargetOptions(url="https://h/items", signing_secret_previous=Secret(OLD))
    problems = HttpTarget.validate(options, TargetSettings(name="crm", backend="http"))
    assert [key for key, _ in problems] == ["signing_secret_previous"]


def test_a_webhook_id_with_a_dot_is_never_signed() -> None:
    with pytest.raises(ValueError, match="must not contain"):
        signature_headers([signing_key(NEW)], "a.b", 1, b"{}")


def test_the_signing_secrets_never_show_in_an_answer(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    state, running = receiver
    state.scripted = (500, f"echo {NEW} {OLD}", "text/plain")
    target = make_target(
        running.base_url, tmp_path, signing_secret=Secret(NEW), signing_secret_previous=Secret(OLD)
    )
    with pytest.raises(Exception) as caught:
        target.deliver(Webhook(1, "k", {}))
    assert NEW not in str(caught.value.__dict__) and OLD not in str(caught.value.__dict__)


def test_a_timestamp_is_read_per_attempt_from_the_wall_clock(
    receiver: tuple[Receiver, Running], tmp_path: Path
) -> None:
    before = int(time.time())
    headers, _ = delivered(receiver, tmp_path, signing_secret=Secret(NEW))
    assert before <= int(headers["webhook-timestamp"]) <= int(time.time())
