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
    DEFAULT_MESSAGE,
    SlackTarget,
    SlackTargetOptions,
    slack_escape,
)

from lookup_server.plugin import (
    BackendError,
    DeliveryFailed,
    PushRequest,
    Secret,
    TargetSettings,
    Webhook,
)
from tests.plugins.emulators import Running, readme_target_tables, serve
from tests.support.target_contract import CONTRACT_SECRET, HttpPeer, MakeTarget, TargetContract

HOOK_PATH = "/services/T000/B000/XXXXsecretXXXX"


@dataclass
class FakeSlack:
    """Messages posted to the webhook, and an error code to answer instead."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    error: tuple[int, str] | None = None
    #: The webhook's secret path; any other /services/ path is no_service.
    hook_path: str = HOOK_PATH

    def app(self) -> Flask:
        app = Flask("slack")

        @app.post(self.hook_path)
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


HELPSPOT = "https://help.example.com"


def make_target(
    base_url: str,
    path: str = HOOK_PATH,
    request_url: str = "",
    timeout: float = 5,
    message: str = DEFAULT_MESSAGE,
    helpspot_url: str = "",
) -> SlackTarget:
    options = SlackTargetOptions(Secret(base_url + path), request_url, message)
    settings = TargetSettings("chat", "slack", timeout=timeout, helpspot_url=helpspot_url)
    return SlackTarget(options, settings)


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


#: The contract's webhook: its secret is the URL's path, as in Slack's.
CONTRACT_HOOK = f"/services/T000/B000/{CONTRACT_SECRET}"


class TestSlackTargetContract(TargetContract):
    """The shared target behaviour, against the Slack stand-in."""

    backend_name = "slack"
    # an incoming webhook can only post: check() would have to write to the channel
    check_contacts_peer = False
    invalid_options = (
        (SlackTargetOptions(Secret(f"hooks.slack.com{CONTRACT_HOOK}")), {"webhook_url"}),
        (
            SlackTargetOptions(Secret(f"https://hooks.slack.com{CONTRACT_HOOK}"), "h"),
            {"request_url"},
        ),
        (
            SlackTargetOptions(Secret(f"https://hooks.slack.com{CONTRACT_HOOK}"), "", "{% if %}"),
            {"message"},
        ),
    )

    @pytest.fixture
    def contract_peer(self) -> Iterator[HttpPeer]:
        with HttpPeer(FakeSlack(hook_path=CONTRACT_HOOK).app()) as peer:
            yield peer

    @pytest.fixture
    def make_contract_target(self) -> MakeTarget:
        def make(address: str, timeout: float) -> SlackTarget:
            return make_target(address, CONTRACT_HOOK, timeout=timeout)

        return make


def test_it_offers_no_details() -> None:
    assert SlackTarget.capabilities() == {"push", "webhook"}


def test_escape_follows_slack() -> None:
    assert slack_escape("a & b <c> \"d\" 'e'") == "a &amp; b &lt;c&gt; \"d\" 'e'"


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
        "note_content": "<p>We refunded you &amp; more</p>",
        "request_history": {
            "item": {
                "1": {"tNote": "<p>Hi</p>", "fNoteIsHTML": "1"},
                "2": {
                    "tNote": "<p>We refunded you &amp; more</p><p><b>Bye</b></p>",
                    "fNoteIsHTML": "1",
                },
            }
        },
    }
    make_target(running.base_url).deliver(Webhook(1, "key", payload))
    assert state.messages[0]["text"].splitlines() == [
        "*HelpSpot request #12345 changed*",
        "Title: Refund",
        "Customer: Bob Jones",
        "Status: Active, Billing",
        "By: Ada Lovelace",
        "Public:",
        ">We refunded you &amp; more",  # the newest note as text, no longer its HTML
        ">",
        ">Bye",
    ]


def test_the_link_comes_from_helpspot_url(slack: tuple[FakeSlack, Running]) -> None:
    state, running = slack
    make_target(running.base_url, helpspot_url=HELPSPOT).push(PushRequest({"xRequest": "7"}))
    assert state.messages[0]["text"] == (
        "*HelpSpot request <https://help.example.com/admin.php?pg=request&amp;reqid=7|#7>"
        " was pushed*"
    )


def test_the_older_request_url_wins_over_helpspot_url(slack: tuple[FakeSlack, Running]) -> None:
    # a target's own setting: adding helpspot_url for another target changes nothing here
    state, running = slack
    target = make_target(
        running.base_url,
        request_url="https://portal.example.com/r/{request}",
        helpspot_url=HELPSPOT,
    )
    target.push(PushRequest({"xRequest": "7 8"}))
    assert state.messages[0]["text"].startswith(
        "*HelpSpot request <https://portal.example.com/r/7%208|#7 8>"
    )
    assert target.check() == [
        "request_url: the links posted use this older option, not [server] helpspot_url; "
        "remove request_url to use helpspot_url"
    ]
    assert make_target(running.base_url, helpspot_url=HELPSPOT).check() == []


def test_check_says_when_the_message_wants_a_link_nothing_gives() -> None:
    assert make_target("http://127.0.0.1:9").check() == [
        "message: the messages carry no link to the request; set [server] helpspot_url "
        "(HelpSpot's address, e.g. https://helpdesk.example.com)"
    ]
    assert make_target("http://127.0.0.1:9", message="{{ sTitle }}").check() == []


def test_an_admins_template_keeps_its_markup_and_helpspots_text_none(
    slack: tuple[FakeSlack, Running],
) -> None:
    state, running = slack
    message = (
        "*{{ sTitle | truncate(21, true, leeway=0) }}* <{{ request_url }}|open> <!here>\n"
        "{{ sTitle | striptags }}\n{% filter striptags %}{{ customer }}{% endfilter %}"
    )
    target = make_target(running.base_url, message=message, helpspot_url=HELPSPOT)
    target.push(PushRequest(PUSHED))
    assert state.messages[0]["text"].splitlines() == [
        "*Printer &lt;!channel&gt;...* "
        "<https://help.example.com/admin.php?pg=request&amp;reqid=12345|open> <!here>",
        "Printer &amp;",  # striptags took <!channel> for a tag; what is left is escaped
        "Zoë Núñez",
    ]


def test_the_documented_default_is_the_default() -> None:
    (documented,) = [
        table["message"]
        for table in readme_target_tables()
        if table.get("backend") == "slack" and "message" in table
    ]
    assert documented == DEFAULT_MESSAGE


def test_a_template_that_fails_or_says_nothing_is_a_clear_error() -> None:
    with pytest.raises(BackendError, match=r"^message: the template failed: .*; fix the"):
        make_target("http://127.0.0.1:9", message="{{ 1 / 0 }}").push(PushRequest(PUSHED))
    with pytest.raises(BackendError, match=r"^message: the template gave an empty message"):
        make_target("http://127.0.0.1:9", message="{{ Custom9 }}").push(PushRequest(PUSHED))


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


def test_an_answer_that_is_not_slacks_is_not_quoted(slack: tuple[FakeSlack, Running]) -> None:
    # a proxy's page may echo the request line, and the webhook's path is its secret
    state, running = slack
    state.error = (502, f"Cannot POST {HOOK_PATH}")
    with pytest.raises(BackendError) as caught:
        make_target(running.base_url).push(PushRequest(PUSHED))
    assert str(caught.value) == (
        "Slack refused the message (HTTP 502): Slack is having problems; "
        "try again later (an answer that is not Slack's)"
    )


@pytest.mark.parametrize(
    ("status", "body", "answer"),
    [
        (404, "no_service", "no_service"),
        (410, "channel_is_archived", "channel_is_archived"),
        # not Slack's: never kept, it may echo the webhook's secret path
        (502, f"<html>Cannot POST {HOOK_PATH}</html>", ""),
        (503, f"upstream {HOOK_PATH[1:]}", ""),
    ],
)
def test_a_refused_webhook_carries_slacks_status_and_only_its_own_code(
    slack: tuple[FakeSlack, Running], status: int, body: str, answer: str
) -> None:
    state, running = slack
    state.error = (status, body)
    with pytest.raises(DeliveryFailed) as caught:
        make_target(running.base_url).deliver(Webhook(1, "k", {"xRequest": "1"}))
    assert (caught.value.status, caught.value.answer) == (status, answer)


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
    problems = SlackTarget.validate(
        SlackTargetOptions(Secret("hooks.slack.com/x"), "h", "{{ sTitle"), settings
    )
    assert [key for key, _ in problems] == ["webhook_url", "request_url", "message"]
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
