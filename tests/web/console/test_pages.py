"""The console's pages through Flask's test client: what each shows, and what it never shows."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lookup_server.web.console.blueprint import EXTENSION
from tests.web.console.conftest import KEY, LOCAL, csrf_of, log_in

SECRETS = (KEY, "directory-secret-value")


@pytest.fixture
def admin(client: FlaskClient) -> FlaskClient:
    log_in(client)
    return client


def post(client: FlaskClient, path: str, **form: str) -> bytes:
    token = csrf_of(client.get("/", environ_base=LOCAL).data)
    answer = client.post(path, data={"csrf_token": token, **form}, environ_base=LOCAL)
    assert answer.status_code in (200, 302), (answer.status_code, answer.data[:300])
    body: bytes = answer.data
    return body


def assert_no_secret(body: bytes) -> None:
    assert not [s for s in SECRETS if s.encode() in body]


def test_the_overview_shows_health_figures_and_the_last_error(
    admin: FlaskClient, app: Flask
) -> None:
    admin.get(f"/livelookup/people?ll_key={KEY}&last_name=lovelace", environ_base=LOCAL)
    admin.get(f"/livelookup/directory?ll_key={KEY}&last_name=lovelace", environ_base=LOCAL)
    app.extensions[EXTENSION].activity.flush()
    page = admin.get("/", environ_base=LOCAL).data.decode()
    people = page[page.index('id="source-people"') :][:3000]
    assert "healthy" in people and "<dt>calls</dt><dd>1</dd>" in people
    directory = page[page.index('id="source-directory"') :][:4000]
    assert "failing" in directory and "cannot connect" in directory
    assert "<dt>errors</dt><dd>1</dd>" in directory
    assert "<svg" in people and "1 in 60 minutes" in people
    assert_no_secret(page.encode())


def test_check_again_runs_the_check_anew(admin: FlaskClient, app: Flask) -> None:
    admin.get("/", environ_base=LOCAL)
    before = app.extensions[EXTENSION].health[("source", "people")].at
    post(admin, "/console/check", kind="source", name="people")
    assert app.extensions[EXTENSION].health[("source", "people")].at > before
    assert (
        app.extensions[EXTENSION].health[("source", "directory")].at
        < app.extensions[EXTENSION].health[("source", "people")].at
    )


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("request_page", "One customer"),
        ("automation", "one customer: these request fields are set"),
        ("command_line", "--last_name=lovelace"),
    ],
)
def test_try_a_lookup_in_each_mode(admin: FlaskClient, mode: str, expected: str) -> None:
    body = post(admin, "/console/try", source="people", mode=mode, last_name="lovelace").decode()
    assert expected in body
    assert "name: last &#39;lovelace&#39;" in body and "this strategy matched" in body


def test_the_address_book_lists_people_with_an_email(admin: FlaskClient) -> None:
    body = post(
        admin, "/console/try", source="people", mode="address_book", last_name="smith"
    ).decode()
    assert "smith2@example.com" in body and "John Smith" in body


def test_a_broken_source_shows_helpspots_error_box(admin: FlaskClient) -> None:
    body = post(
        admin, "/console/try", source="directory", mode="request_page", email="ada@example.com"
    ).decode()
    assert "An Error Occurred" in body and "lookup-server error:" in body
    assert_no_secret(body.encode())


def test_the_form_says_what_is_wrong_with_it(admin: FlaskClient) -> None:
    body = post(
        admin, "/console/try", source="nope", mode="x", custom_name_0="Notes", custom_value_0="a"
    ).decode()
    assert "choose a source" in body and "choose how HelpSpot calls" in body
    assert "&#39;Notes&#39; is not a custom field id" in body


def test_try_an_ajax_field_shows_the_dropdown_as_helpspot_reads_it(admin: FlaskClient) -> None:
    body = post(admin, "/console/try-ajax", source="products", field="Custom5", typed="").decode()
    assert "Gold plan" in body
    assert "CafÃ© plan" in body  # HelpSpot reads the answer as ISO-8859-1
    assert "empty: HelpSpot stores nothing" in body  # the value 0


def test_setup_shows_every_value_with_the_key_only_on_request(admin: FlaskClient) -> None:
    hidden = admin.get("/console/setup?url=https://lookup.example.com", environ_base=LOCAL).data
    assert b"https://lookup.example.com/livelookup/people?ll_key=KEY-HIDDEN" in hidden
    assert b"https://lookup.example.com/ajax/products/KEY-HIDDEN" in hidden
    assert b"RequestPush-crm.php" in hidden
    assert_no_secret(hidden)
    shown = post(admin, "/console/setup", reveal="1", url="https://lookup.example.com")
    assert f"https://lookup.example.com/livelookup/people?ll_key={KEY}".encode() in shown


def test_the_bridge_download_is_the_php_class_helpspot_loads(admin: FlaskClient) -> None:
    answer = admin.get(
        "/console/setup/bridge/crm?url=https://lookup.example.com", environ_base=LOCAL
    )
    assert answer.status_code == 200
    assert 'filename="RequestPush-crm.php"' in answer.headers["Content-Disposition"]
    assert (
        b"class RequestPush_crm" in answer.data
        and b"https://lookup.example.com/push/crm" in answer.data
    )
    assert admin.get("/console/setup/bridge/nope", environ_base=LOCAL).status_code == 404


def test_the_configuration_page_lists_problems_and_masks_secrets(admin: FlaskClient) -> None:
    body = admin.get("/console/config", environ_base=LOCAL).data
    assert b"sources.directory: " in body and b"cannot connect" in body
    assert b"[sources.people]" in body and b"&lt;secret from literal&gt;" in body
    assert_no_secret(body)


def test_recent_calls_are_listed_and_filtered(admin: FlaskClient, app: Flask) -> None:
    admin.get(f"/livelookup/people?ll_key={KEY}&last_name=lovelace", environ_base=LOCAL)
    admin.get(f"/ajax/products/{KEY}?callingField=Custom1&Custom1=gold", environ_base=LOCAL)
    app.extensions[EXTENSION].activity.flush()
    every = admin.get("/console/calls", environ_base=LOCAL).data
    assert (
        b"/livelookup/people?ll_key=***&amp;last_name=lovelace" in every
        and b"/ajax/products/***" in every
    )
    ajax_only = admin.get("/console/calls?endpoint=ajax", environ_base=LOCAL).data
    assert b"/ajax/products" in ajax_only and b"/livelookup/people" not in ajax_only
    assert_no_secret(every)


def test_a_console_failure_shows_a_page_and_helpspot_goes_on(
    admin: FlaskClient, app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire at /secret/path")

    monkeypatch.setattr(app.extensions[EXTENSION].activity, "recent", broken)
    page = admin.get("/console/calls", environ_base=LOCAL)
    assert page.status_code == 500 and b"The console failed" in page.data
    assert b"disk on fire" not in page.data and b"Traceback" not in page.data
    lookup = admin.get(f"/livelookup/people?ll_key={KEY}&last_name=lovelace", environ_base=LOCAL)
    assert lookup.status_code == 200 and b"<customer>" in lookup.data
