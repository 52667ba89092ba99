"""The campfire target against a stand-in for ONCE Campfire's bot API.

The stand-in (tests/plugins/emulators/campfire.py) answers as Campfire does and
says what a room would make of each body: the tags it renders, its text, a
sound. At the end, one push goes all the way from the PHP bridge, as HelpSpot
runs it, through a running lookup-server, to the stand-in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from click.testing import CliRunner
from lookup_plugins.campfire_target import (
    DEFAULT_MESSAGE,
    MAX_MESSAGE_CHARS,
    ZERO_WIDTH_SPACE,
    CampfireTarget,
    CampfireTargetOptions,
    campfire_escape,
)
from werkzeug.serving import make_server

from lookup_server.cli import cli
from lookup_server.config.settings import load_config
from lookup_server.helpspot.bridge import bridge_filename
from lookup_server.plugin import (
    BackendError,
    DeliveryFailed,
    PushRequest,
    Secret,
    TargetSettings,
    Webhook,
)
from lookup_server.web.app import create_app
from lookup_server.webhooks import Outbox
from tests.helpspot.test_bridge import run_bridge
from tests.plugins.emulators import Running, readme_target_tables, serve
from tests.plugins.emulators.campfire import RENDERED_TAGS, CampfireEmulator, PostedMessage
from tests.support.hanging import wait_for
from tests.support.target_contract import CONTRACT_SECRET, HttpPeer, MakeTarget, TargetContract

#: A key the way Campfire makes them: the bot's user id, a dash, 12 letters and digits.
BOT_KEY = "7-Xy3kP9qL2mZa"
ROOM = 1
HELPSPOT = "https://help.example.com"
LINK = "https://help.example.com/admin.php?pg=request&reqid="
#: HelpSpot text that would be markup, a mention, an entity or a link with a label.
HOSTILE = (
    '<b>bold</b> <a href="https://evil.example/">click</a> &amp; &lt;i&gt; '
    '<action-text-attachment sgid="BAh7CEkiCG" content-type="application/vnd.actiontext.mention">'
    "</action-text-attachment><script>alert(1)</script> \"q\" 'a' <br>"
)


@pytest.fixture
def campfire() -> Iterator[tuple[CampfireEmulator, Running]]:
    state = CampfireEmulator(bots={BOT_KEY: {ROOM, 2}})
    with serve(state.app()) as running:
        yield state, running


def make_target(
    url: str,
    *,
    room: int = ROOM,
    bot_key: str = BOT_KEY,
    message: str = DEFAULT_MESSAGE,
    helpspot_url: str = HELPSPOT,
    timeout: float = 5,
) -> CampfireTarget:
    options = CampfireTargetOptions(url, room, Secret(bot_key), message)
    settings = TargetSettings("room", "campfire", timeout=timeout, helpspot_url=helpspot_url)
    return CampfireTarget(options, settings)


PUSHED = {
    "xRequest": "12345",
    "sTitle": "Printer <on> fire & smoke",
    "sFirstName": "Zoë",
    "sLastName": "Núñez",
    "sEmail": "zoe@example.com",
    "acting_person_fname": "Ada",
    "acting_person_lname": "Lovelace",
    "staff_comment": "Please call back\ntoday",
    "request_history": {"678": {"tNote": "<p>Hi</p>", "fNoteIsHTML": "1"}},
}


def posted(state: CampfireEmulator) -> PostedMessage:
    (message,) = state.messages
    return message


# -- the shared contract -----------------------------------------------------------------

#: The contract's key: Campfire's shape, the contract's secret as the token.
CONTRACT_KEY = f"7-{CONTRACT_SECRET}"
_OPTIONS = CampfireTargetOptions("https://chat.example.com", 1, Secret(CONTRACT_KEY))


class TestCampfireTargetContract(TargetContract):
    """The shared target behaviour, against the Campfire stand-in."""

    backend_name = "campfire"
    invalid_options = (
        (replace(_OPTIONS, url="chat.example.com"), {"url"}),
        (replace(_OPTIONS, url=f"https://chat.example.com/rooms/1/{CONTRACT_KEY}"), {"url"}),
        (replace(_OPTIONS, room=0), {"room"}),
        (
            replace(_OPTIONS, bot_key=Secret(f"https://c.example/rooms/1/{CONTRACT_KEY}/messages")),
            {"bot_key"},
        ),
        (replace(_OPTIONS, message="{% for %}"), {"message"}),
    )

    @pytest.fixture
    def contract_peer(self) -> Iterator[HttpPeer]:
        with HttpPeer(CampfireEmulator(bots={CONTRACT_KEY: {1}}).app()) as peer:
            yield peer

    @pytest.fixture
    def make_contract_target(self) -> MakeTarget:
        def make(address: str, timeout: float) -> CampfireTarget:
            return make_target(address, bot_key=CONTRACT_KEY, timeout=timeout)

        return make


def test_it_offers_no_details() -> None:
    # a bot can read a room's newest messages, not one message by its id
    assert CampfireTarget.capabilities() == {"push", "webhook"}


# -- the message -------------------------------------------------------------------------


def test_push_posts_the_comment_and_the_link_and_returns_the_message_id(
    campfire: tuple[CampfireEmulator, Running],
) -> None:
    state, running = campfire
    push_id = make_target(running.base_url).push(PushRequest(PUSHED))
    message = posted(state)
    assert push_id == str(message.id)
    assert state.seen == [("POST", f"/rooms/1/{BOT_KEY}/messages")]
    assert message.content_type == "text/plain; charset=utf-8"
    assert message.body == (
        "Please call back<br>today<br>"
        "HelpSpot request #12345: Printer &lt;on&gt; fire &amp; smoke (Zoë Núñez)<br>"
        f"{LINK.replace('&', '&amp;')}12345"
    )
    assert message.plain_text.splitlines() == [
        "Please call back",
        "today",
        "HelpSpot request #12345: Printer <on> fire & smoke (Zoë Núñez)",
        f"{LINK}12345",
    ]
    assert message.tags == ["br"] * 3


def test_deliver_announces_the_request(campfire: tuple[CampfireEmulator, Running]) -> None:
    # an automation rule's webhook: no staff comment
    state, running = campfire
    payload = {"xRequest": "77", "sTitle": "Refund", "sStatus": "Active", "fullname": "Bob Jones"}
    make_target(running.base_url, room=2).deliver(Webhook(1, "key", payload))
    message = posted(state)
    assert message.room == 2
    assert message.plain_text.splitlines() == [
        "HelpSpot request #77: Refund (Bob Jones)",
        f"{LINK}77",
    ]


def test_without_helpspot_url_there_is_no_link_and_check_says_so(
    campfire: tuple[CampfireEmulator, Running],
) -> None:
    state, running = campfire
    target = make_target(running.base_url, helpspot_url="")
    target.push(PushRequest({"xRequest": "7"}))
    assert posted(state).body == "HelpSpot request #7"
    assert target.check() == [
        "message: the messages carry no link to the request; set [server] helpspot_url "
        "(HelpSpot's address, e.g. https://helpdesk.example.com)"
    ]


@pytest.mark.parametrize(
    "message",
    [
        DEFAULT_MESSAGE,
        "<strong>{{ sTitle }}</strong>: {{ staff_comment }} ({{ customer | upper }})",
        "{{ sTitle | striptags }} {% filter striptags %}{{ staff_comment }}{% endfilter %}",
    ],
)
def test_helpspot_text_never_becomes_markup_a_mention_or_a_link(
    campfire: tuple[CampfireEmulator, Running], message: str
) -> None:
    state, running = campfire
    hostile = {**PUSHED, "sTitle": HOSTILE, "staff_comment": HOSTILE, "sFirstName": HOSTILE}
    make_target(running.base_url, message=message).push(PushRequest(hostile))
    shown = posted(state)
    assert set(shown.tags) <= {"br", "strong"}, shown.body  # only the template's own
    assert "action-text-attachment" not in shown.tags and "a" not in shown.tags
    assert HOSTILE.replace("<br>", "") in shown.plain_text.replace("\n", "")


def test_an_admins_template_keeps_its_markup(campfire: tuple[CampfireEmulator, Running]) -> None:
    state, running = campfire
    message = '<strong>{{ sTitle }}</strong> <a href="{{ request_url }}">open #{{ request_id }}</a>'
    make_target(running.base_url, message=message).push(PushRequest(PUSHED))
    shown = posted(state)
    assert shown.tags == ["strong", "a"] and set(shown.tags) <= RENDERED_TAGS
    assert f'<a href="{LINK.replace("&", "&amp;")}12345">open #12345</a>' in shown.body
    assert shown.plain_text == "Printer <on> fire & smoke open #12345"


def test_a_title_cannot_play_a_sound_but_the_template_may(
    campfire: tuple[CampfireEmulator, Running],
) -> None:
    state, running = campfire
    titled = PushRequest({"xRequest": "7", "sTitle": "  /play trombone"})
    make_target(running.base_url, message="{{ sTitle }}").push(titled)
    make_target(running.base_url, message="/play tada").push(titled)
    title, admins = state.messages
    assert title.sound is None and title.plain_text == f"{ZERO_WIDTH_SPACE}  /play trombone"
    assert admins.sound == "tada"
    assert campfire_escape("see /play x") == "see /play x"  # only at the start it would play


def test_control_characters_are_dropped_and_line_breaks_kept() -> None:
    assert campfire_escape("a\x00b\x07c\x1b\u0085d\te\nf") == "abcd\te\nf"
    target = make_target("http://127.0.0.1:9")
    comment = PushRequest({"xRequest": "7", "staff_comment": "one\r\ntwo\rthree"})
    assert target.message_for(comment.data).startswith("one<br>two<br>three<br>")


def test_a_huge_message_is_cut_without_a_broken_tag(
    campfire: tuple[CampfireEmulator, Running],
) -> None:
    state, running = campfire
    message = "{{ staff_comment }}<strong>end</strong>"
    cut_in_tag = "x" * (MAX_MESSAGE_CHARS - 4)  # the limit falls inside "<strong>"
    make_target(running.base_url, message=message).push(
        PushRequest({"xRequest": "7", "staff_comment": cut_in_tag})
    )
    shown = posted(state)
    assert shown.body == cut_in_tag + "…" and len(shown.body) == MAX_MESSAGE_CHARS - 3
    entity = "&" * MAX_MESSAGE_CHARS
    assert (
        make_target("http://127.0.0.1:9", message="{{ sTitle }}")
        .message_for({"sTitle": entity})
        .endswith("&amp;…")
    )


def test_the_documented_default_is_the_default() -> None:
    (documented,) = [
        table["message"]
        for table in readme_target_tables()
        if table.get("backend") == "campfire" and "message" in table
    ]
    assert documented == DEFAULT_MESSAGE


def test_a_template_that_fails_is_a_clear_error() -> None:
    with pytest.raises(BackendError, match=r"^message: the template failed: .*; fix the"):
        make_target("http://127.0.0.1:9", message="{{ 1 / 0 }}").push(PushRequest(PUSHED))


# -- what Campfire answers ----------------------------------------------------------------


def test_a_201_without_the_messages_address_gets_a_made_up_id(
    campfire: tuple[CampfireEmulator, Running],
) -> None:
    # a proxy that drops Location: the message is posted, HelpSpot still needs an id
    state, running = campfire
    state.fail_next(201)
    push_id = make_target(running.base_url).push(PushRequest(PUSHED))
    assert push_id.startswith("campfire-1-12345-") and push_id.split("-")[-1].isdigit()


def _refusal(target: CampfireTarget, operation: str) -> DeliveryFailed:
    with pytest.raises(DeliveryFailed) as caught:
        if operation == "push":
            target.push(PushRequest(PUSHED))
        else:
            target.deliver(Webhook(1, "k", {"xRequest": "1"}))
    assert caught.value.answer == ""  # Campfire's refusals have no body; others are not kept
    text = f"{caught.value} {caught.value!r}"
    assert BOT_KEY not in text and BOT_KEY.split("-")[1] not in text
    return caught.value


@pytest.mark.parametrize("operation", ["push", "webhook"])
def test_a_wrong_key_is_told_from_its_sign_in_page(
    campfire: tuple[CampfireEmulator, Running], operation: str
) -> None:
    _, running = campfire
    refused = _refusal(make_target(running.base_url, bot_key="7-WrongWrong12"), operation)
    assert refused.status == 302
    assert str(refused) == (
        "Campfire did not post the message (HTTP 302): Campfire does not know the bot key "
        "(it answered with its sign-in page); copy bot_key again from the bot's page: "
        "a new key replaces the old one"
    )


def test_a_room_the_bot_is_not_in_is_a_404(campfire: tuple[CampfireEmulator, Running]) -> None:
    state, running = campfire
    refused = _refusal(make_target(running.base_url, room=9), "push")
    assert refused.status == 404 and "no room 9, or the bot is not a member of it" in str(refused)
    assert state.messages == []


def test_an_older_campfire_answers_200_for_a_room_the_bot_is_not_in(
    campfire: tuple[CampfireEmulator, Running],
) -> None:
    state, running = campfire
    state.legacy = True
    refused = _refusal(make_target(running.base_url, room=9), "webhook")
    assert refused.status == 200
    assert "not Campfire's 201 Created: the bot may not be a member of room 9" in str(refused)


@pytest.mark.parametrize(
    ("status", "headers", "meaning"),
    [
        (401, {}, "refused the bot; check bot_key"),
        (403, {}, "refused the bot; check bot_key"),
        (413, {}, "too large"),
        (422, {}, "found the message empty"),
        (429, {}, "address may be banned by a Campfire admin"),
        (500, {}, "having problems"),
        (503, {"Retry-After": "30"}, "having problems"),
        (301, {"Location": f"https://chat.example.com/rooms/1/{BOT_KEY}/messages"}, "redirects"),
    ],
)
def test_each_refusal_is_explained_without_the_key(
    campfire: tuple[CampfireEmulator, Running],
    status: int,
    headers: dict[str, str],
    meaning: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state, running = campfire
    caplog.set_level(logging.INFO)
    state.fail_next(status, f"<html>Cannot POST /rooms/1/{BOT_KEY}/messages</html>", headers)
    refused = _refusal(make_target(running.base_url), "webhook")
    assert refused.status == status and meaning in str(refused)
    assert BOT_KEY not in caplog.text


def test_a_redirect_names_only_where_it_goes(campfire: tuple[CampfireEmulator, Running]) -> None:
    state, running = campfire
    state.fail_next(308, "", {"Location": f"https://chat.example.com/rooms/1/{BOT_KEY}/messages"})
    refused = _refusal(make_target(running.base_url), "push")
    assert str(refused).endswith(
        "url redirects to https://chat.example.com; set url to Campfire's own"
    )


def test_a_banned_address_is_a_429(campfire: tuple[CampfireEmulator, Running]) -> None:
    state, running = campfire
    state.banned = True
    assert _refusal(make_target(running.base_url), "push").status == 429


def test_an_unreachable_campfire_is_a_clear_error_without_the_key() -> None:
    with pytest.raises(BackendError) as caught:
        make_target("http://127.0.0.1:9").push(PushRequest(PUSHED))
    assert "cannot connect to Campfire" in str(caught.value)
    assert BOT_KEY not in str(caught.value)


# -- check ---------------------------------------------------------------------------------


def test_check_reads_the_room_and_posts_nothing(campfire: tuple[CampfireEmulator, Running]) -> None:
    state, running = campfire
    assert make_target(running.base_url).check() == []
    assert state.seen == [("GET", f"/rooms/1/{BOT_KEY}/messages")] and state.messages == []


def test_check_finds_a_wrong_key_and_a_wrong_room(
    campfire: tuple[CampfireEmulator, Running],
) -> None:
    _, running = campfire
    with pytest.raises(BackendError, match=r"\(HTTP 302\): Campfire does not know the bot key"):
        make_target(running.base_url, bot_key="7-WrongWrong12").check()
    with pytest.raises(BackendError, match=r"\(HTTP 404\): no room 9, or the bot is not"):
        make_target(running.base_url, room=9).check()


def test_check_on_an_older_campfire_says_what_it_could_not_check(
    campfire: tuple[CampfireEmulator, Running],
) -> None:
    state, running = campfire
    state.legacy = True
    assert make_target(running.base_url).check() == [
        "room: could not check bot_key and room 1 without posting: Campfire has no bot API "
        "to read a room here (older than 2026), or url is not its address"
    ]
    assert state.messages == []


def test_check_refuses_an_answer_that_is_not_campfires(
    campfire: tuple[CampfireEmulator, Running],
) -> None:
    state, running = campfire
    state.fail_next(200, '{"ok": true}', {"Content-Type": "application/json"})
    with pytest.raises(BackendError, match="not its list of messages; check url"):
        make_target(running.base_url).check()


def test_check_warns_that_http_carries_the_key_unencrypted() -> None:
    target = make_target("http://chat.example.com")
    assert target._setup_warnings() == [
        "url: the bot key travels to chat.example.com unencrypted (http://), "
        "in every message's address"
    ]


def test_validate() -> None:
    settings = TargetSettings("room", "campfire")
    good = CampfireTargetOptions("https://chat.example.com/", 3, Secret(BOT_KEY))
    assert CampfireTarget.validate(good, settings) == []
    bad = CampfireTargetOptions(
        "https://chat.example.com/?x=1", -1, Secret(f"https://c/rooms/3/{BOT_KEY}"), "{{ x"
    )
    problems = CampfireTarget.validate(bad, settings)
    assert [key for key, _ in problems] == ["url", "room", "bot_key", "message"]
    assert BOT_KEY not in str(problems)
    for key in ("", "7", "7-", "abc-def", "7-a b", "7-a/b"):
        assert CampfireTarget.validate(replace(good, bot_key=Secret(key)), settings), key


# -- end to end: HelpSpot's PHP bridge and webhooks, a running lookup-server, Campfire -------

PUSH_KEY = "campfire-push-key_0123456789"


@pytest.fixture
def serving(
    tmp_path: Path, campfire: tuple[CampfireEmulator, Running], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Path]]:
    """lookup-server with a campfire target ``room``, from a config file, on a free port."""
    _, running = campfire
    monkeypatch.setenv("CAMPFIRE_BOT_KEY", BOT_KEY)
    config = tmp_path / "lookup.toml"
    config.write_text(f"""
[server]
shared_key = "{PUSH_KEY}"
outbox = "{tmp_path / "outbox.sqlite3"}"
helpspot_url = "{HELPSPOT}/"

[targets.room]
backend = "campfire"
url = "{running.base_url}"
room = 1
bot_key = {{ env = "CAMPFIRE_BOT_KEY" }}
""")
    app = create_app(load_config(config))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", config
    finally:
        server.shutdown()
        app.extensions["lookup_server"].webhooks.close()


def _bridge(url: str, config: Path, folder: Path) -> str:
    arguments = ["bridge", "room", "--url", url, "--config", str(config), "--name", "Room"]
    result = CliRunner().invoke(cli, [*arguments, "--output", str(folder)])
    assert result.exit_code == 0, result.output
    return (folder / bridge_filename("Room")).read_text()


def test_a_push_through_the_php_bridge_becomes_a_message_in_the_room(
    tmp_path: Path, campfire: tuple[CampfireEmulator, Running], serving: tuple[str, Path]
) -> None:
    state, _ = campfire
    url, config = serving
    result = run_bridge(tmp_path, _bridge(url, config, tmp_path), "Room", "12345")
    message = posted(state)
    assert result == {"id": str(message.id), "errorMsg": ""}
    # the harness's request: sTitle 'Printer <on> "fire"', staff_comment 'Please check'
    assert message.plain_text.splitlines() == [
        "Please check",
        'HelpSpot request #12345: Printer <on> "fire" (Zoë Núñez)',
        f"{LINK}12345",
    ]
    assert message.tags == ["br", "br"]


def test_a_refused_push_reaches_staff_without_the_key(
    tmp_path: Path, campfire: tuple[CampfireEmulator, Running], serving: tuple[str, Path]
) -> None:
    state, _ = campfire
    state.bots = {}  # the bot was deleted, or its key replaced
    url, config = serving
    result = run_bridge(tmp_path, _bridge(url, config, tmp_path), "Room", "12345")
    assert result["id"] is False
    assert result["errorMsg"].startswith("target \u2019room\u2019 failed: Campfire did not post")
    assert "does not know the bot key" in result["errorMsg"]
    assert BOT_KEY.split("-")[1] not in result["errorMsg"]


def test_a_webhook_from_an_automation_rule_is_announced_in_the_room(
    campfire: tuple[CampfireEmulator, Running], serving: tuple[str, Path]
) -> None:
    state, _ = campfire
    url, _config = serving
    form: list[tuple[str, Any]] = [
        ("xRequest", "12346"),
        ("sTitle", "Toner <low>"),
        ("sStatus", "Active"),
        ("fullname", "Grace Hopper"),
        ("request_history[item][1][tNote]", "<p>Out of toner</p>"),
    ]
    answer = requests.post(
        f"{url}/webhook/room/{PUSH_KEY}",
        data=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert answer.status_code == 202
    wait_for(lambda: len(state.messages) == 1, "the webhook was delivered", 20)
    assert posted(state).plain_text.splitlines() == [
        "HelpSpot request #12346: Toner <low> (Grace Hopper)",
        f"{LINK}12346",
    ]
    webhook_id = answer.json()["id"]
    outbox = Outbox(serving[1].parent / "outbox.sqlite3")
    wait_for(
        lambda: any(a.delivered for a in outbox.attempts(webhook_id)), "the delivery recorded", 20
    )
