"""The slack target against a stand-in for Slack's incoming webhooks.

The stand-in follows Slack's documented behaviour: ``POST`` JSON ``{"text": ...}``
to the webhook's secret path, answered ``200 ok``, or an error code as plain
text (``400 invalid_payload``, ``403 action_prohibited``, ``404 no_service``,
``410 channel_is_archived``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask, Response, request
from lookup_plugins.slack_target import (
    SlackTarget,
    SlackTargetOptions,
    slack_escape,
    slack_link,
)

from lookup_server.core.registry import Registry
from lookup_server.plugin import BackendError, PushRequest, Secret, TargetSettings, Webhook
from tests.plugins.emulators import Running, serve
from tests.support.hanging import HTTP_BODY_DRIP, as_target, dripping, hang_every_slot, wait_for

HOOK_PATH = "/services/T000/B000/XXXXsecretXXXX"


@dataclass
class FakeSlack:
    """Messages posted to the webhook, and an error code to answer instead."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    error: tuple[int, str] | None = None

    def app(self) -> Flask:
        app = Flask("slack")

        @app.post(HOOK_PATH)
        def hook() -> Response:
            if self.error is not None:
                return Response(self.error[1], status=self.error[0], content_type="text/plain")
            if request.mimetype != "application/json":
                return Response("invalid_payload", status=400, content_type="text/plain")
            body = request.get_json()
            if not isinstance(body, dict) or not body.get("text"):
                return Response("no_text", status=400, content_type="text/plain")
            self.messages.append(body)
            return Response("ok", status=200, content_type="text/plain")

        @app.post("/services/<path:other>")
        def unknown(other: str) -> Response:
            return Response("no_service", status=404, content_type="text/plain")

        return app


@pytest.fixture
def slack() -> Iterator[tuple[FakeSlack, Running]]:
    state = FakeSlack()
    with serve(state.app()) as running:
        yield state, running


def make_target(base_url: str, path: str = HOOK_PATH, request_url: str = "") -> SlackTarget:
    options = SlackTargetOptions(webhook_url=Secret(base_url + path), request_url=request_url)
    return SlackTarget(options, TargetSettings(name="chat", backend="slack", timeout=5))


PUSHED = {
    "xRequest": "12345",
    "sTitle": "Printer <!channel> & <https://evil|click>",
    "fullname": "Zoë Núñez",
    "sEmail": "zoe@example.com",
    "acting_person_fname": "Ada",
    "acting_person_lname": "Lovelace",
    "staff_comment": "Line one\nLine <two>",
    "request_history": {"678": {"tNote": "<p>Hi</p>"}},
}


def test_it_is_a_valid_plugin_without_details() -> None:
    assert Registry().targets.load("slack") is SlackTarget
    assert SlackTarget.capabilities() == {"push", "webhook"}


def test_escape_follows_slack() -> None:
    assert slack_escape("a & b <c> \"d\" 'e'") == "a &amp; b &lt;c&gt; \"d\" 'e'"
    assert slack_link("https://h/?a=1&b=<x>|y", "#1 <b>") == (
        "<https://h/?a=1&amp;b=&lt;x&gt;%7Cy|#1 &lt;b&gt;>"
    )


def test_push_posts_an_escaped_message_and_makes_up_an_id(slack: tuple[FakeSlack, Running]) -> None:
    state, running = slack
    target = make_target(
        running.base_url, request_url="https://help.example.com/admin?pg=request&reqid={request}"
    )
    push_id = target.push(PushRequest(PUSHED))
    assert re.fullmatch(r"slack-12345-\d+", push_id)
    (message,) = state.messages
    assert set(message) == {"text"}
    assert message["text"].splitlines() == [
        "*HelpSpot request <https://help.example.com/admin?pg=request&amp;reqid=12345|#12345>"
        " was pushed*",
        "Title: Printer &lt;!channel&gt; &amp; &lt;https://evil|click&gt;",
        "Customer: Zoë Núñez &lt;zoe@example.com&gt;",
        "Pushed by: Ada Lovelace",
        ">Line one",
        ">Line &lt;two&gt;",
    ]


def test_push_without_optional_fields(slack: tuple[FakeSlack, Running]) -> None:
    state, running = slack
    make_target(running.base_url).push(PushRequest({"xRequest": "7"}))
    assert state.messages[0]["text"] == "*HelpSpot request #7 was pushed*"


def test_a_huge_comment_is_shortened(slack: tuple[FakeSlack, Running]) -> None:
    state, running = slack
    make_target(running.base_url).push(PushRequest({"xRequest": "7", "staff_comment": "x" * 10**5}))
    assert len(state.messages[0]["text"]) < 3000


def test_deliver_posts_a_summary_of_the_webhook(slack: tuple[FakeSlack, Running]) -> None:
    state, running = slack
    payload = {
        "xRequest": "12345",
        "sTitle": "Refund",
        "sStatus": "Active",
        "sCategory": "Billing",
        "fullname": "Bob Jones",
        "acting_person": "Ada Lovelace",
        "note_type": "public",
        "note_content": "<p>We refunded you & more</p>",
        "request_history": {"item": {"1": {"tNote": "x"}}},
    }
    make_target(running.base_url).deliver(Webhook(1, "key", payload))
    assert state.messages[0]["text"].splitlines() == [
        "*HelpSpot request #12345 changed*",
        "Title: Refund",
        "Customer: Bob Jones",
        "Status: Active, Billing",
        "By: Ada Lovelace",
        "Public:",
        ">&lt;p&gt;We refunded you &amp; more&lt;/p&gt;",
    ]


@pytest.mark.parametrize(
    ("status", "code", "meaning"),
    [
        (404, "no_service", "disabled, revoked or wrong"),
        (410, "channel_is_archived", "is archived"),
        (403, "action_prohibited", "restricted posting"),
        (400, "invalid_payload", "could not read"),
        (500, "rollup_error", "having problems"),
        (429, "", "rate-limiting"),
    ],
)
def test_slack_errors_are_explained_without_the_webhook_url(
    slack: tuple[FakeSlack, Running], status: int, code: str, meaning: str
) -> None:
    state, running = slack
    state.error = (status, code)
    with pytest.raises(BackendError) as caught:
        make_target(running.base_url).push(PushRequest(PUSHED))
    text = str(caught.value)
    assert text.startswith(f"Slack refused the message (HTTP {status}): ")
    assert meaning in text and "secret" not in text and "T000" not in text


def test_a_wrong_webhook_path_is_no_service(slack: tuple[FakeSlack, Running]) -> None:
    _, running = slack
    with pytest.raises(BackendError, match="disabled, revoked or wrong"):
        make_target(running.base_url, "/services/T000/B000/wrong").deliver(
            Webhook(1, "k", {"xRequest": "1"})
        )


def test_an_unreachable_slack_is_a_clear_error_without_the_url() -> None:
    with pytest.raises(BackendError) as caught:
        make_target("http://127.0.0.1:9").push(PushRequest(PUSHED))
    assert "cannot connect to Slack" in str(caught.value)
    assert "secret" not in str(caught.value)


def test_validate() -> None:
    settings = TargetSettings(name="chat", backend="slack")
    problems = SlackTarget.validate(SlackTargetOptions(Secret("hooks.slack.com/x"), "h"), settings)
    assert [key for key, _ in problems] == ["webhook_url", "request_url"]
    assert "hooks.slack.com/x" not in str(problems)  # the secret is not repeated
    assert (
        SlackTarget.validate(
            SlackTargetOptions(Secret("https://hooks.slack.com/x"), "https://h/?id=1"), settings
        )[0][0]
        == "request_url"
    )
    assert (
        SlackTarget.validate(SlackTargetOptions(Secret("https://hooks.slack.com/x")), settings)
        == []
    )


def test_a_dripping_slack_gets_its_threads_and_connections_back(
    slack: tuple[FakeSlack, Running],
) -> None:
    state, running = slack
    with dripping(HTTP_BODY_DRIP, upstream=("127.0.0.1", running.port)) as server:
        chat = make_target(f"http://127.0.0.1:{server.port}")
        target = as_target(SlackTarget(chat.options, TargetSettings("chat", "slack", timeout=2)))
        hang_every_slot(target, lambda: target.push(PushRequest(PUSHED)))
        wait_for(lambda: server.open_connections == 0, "every connection was closed")
        server.dripping = False
        assert target.push(PushRequest(PUSHED)).startswith("slack-12345-")  # not "busy"
    assert len(state.messages) == 1
