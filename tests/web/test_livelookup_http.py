"""/livelookup over HTTP, called and read the way HelpSpot does (HELPSPOT.md §1, §3)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lookup_server.plugin import ByEmail, ById, SourceSettings
from lookup_server.runtime.service import MAX_IN_FLIGHT
from lookup_server.web.app import create_app
from tests.conftest import MakeApp
from tests.support.backend_contract import PEOPLE
from tests.support.fake_backends import FakeBackend, FakeOptions, fake_config
from tests.support.helpspot import (
    address_book_params,
    assert_livelookup,
    automation_params,
    browser_reads,
    double_encode,
    helpspot_error,
    insert_data,
    request_page_params,
)

KEY = "k3y-with_unreserved.chars~0123"


def test_request_page_lookup_by_double_encoded_email(client: FlaskClient) -> None:
    params = request_page_params(sEmail=double_encode("sean.obrien@example.com"))
    response = client.get("/livelookup/people", query_string=params)
    assert response.status_code == 200
    assert response.content_type == "text/xml; charset=utf-8"
    view = assert_livelookup(response.data)
    assert [c["customer_id"] for c in view.customers] == ["1003"]
    assert view.customers[0]["last_name"] == "O'Brien"


def test_http_post_mode_sends_parameters_in_url_and_body(client: FlaskClient) -> None:
    params = request_page_params(customer_id="1001")
    response = client.post("/livelookup/people", query_string=params, data=params)
    assert [c["customer_id"] for c in assert_livelookup(response.data).customers] == ["1001"]


def test_address_book_sends_only_names(client: FlaskClient) -> None:
    response = client.get("/livelookup/people", query_string=address_book_params("Jo", "Núñ"))
    view = assert_livelookup(response.data)
    assert [c["email"] for c in view.customers] == ["jose.nunez@example.com"]


def test_address_book_is_not_escaped_twice(client: FlaskClient) -> None:
    # HelpSpot HTML-escapes names, e-mail, title and description there itself
    view = assert_livelookup(
        client.get("/livelookup/people", query_string=address_book_params("", "Núñez")).data
    )
    assert view.customers[0]["title"] == "R&D <Lead>"
    page = assert_livelookup(
        client.get("/livelookup/people", query_string=request_page_params(last_name="Núñez")).data
    )
    assert browser_reads(page.customers[0]["title"]) == ("R&D <Lead>", [])


def test_empty_custom_fields_are_left_out_so_rules_keep_what_staff_entered(
    make_app: MakeApp, tmp_path: Path
) -> None:
    from tests.conftest import write_csv

    write_csv(
        tmp_path / "c.csv",
        ["customer_id", "email", "Custom3", "Custom4"],
        [["7", "x@example.com", "", "Gold"]],
    )
    for clear, expected in (
        (False, {"Custom4": "Gold"}),
        (True, {"Custom3": "", "Custom4": "Gold"}),
    ):
        app = make_app(
            {
                "sources": {
                    "c": {
                        "backend": "csv",
                        "path": "c.csv",
                        "clear_empty": clear,
                    }
                }
            }
        )
        call = automation_params(sEmail="x@example.com", Custom3="what staff typed")
        view = assert_livelookup(app.test_client().post("/livelookup/c", data=call).data)
        (applied,) = insert_data(view)
        assert {k: v for k, v in applied.items() if k.startswith("Custom")} == expected


def test_automation_rule_sends_the_request_row(client: FlaskClient) -> None:
    response = client.post(
        "/livelookup/people",
        data=automation_params(fullname="Ada Lovelace", sUserId="1001", sEmail="ada@example.com"),
    )
    (customer,) = assert_livelookup(response.data).customers
    assert customer["first_name"] == "Ada"


def test_one_match_shows_every_field_and_many_show_a_table(client: FlaskClient) -> None:
    one = assert_livelookup(
        client.get("/livelookup/people", query_string=request_page_params(customer_id="1002")).data
    )
    assert "Title: R&amp;D &lt;Lead&gt;" in one.summary()
    many = assert_livelookup(
        client.get("/livelookup/people", query_string=request_page_params(last_name="Smith")).data
    )
    assert many.summary().splitlines()[0] == "customer_id | first_name | last_name | email"


def test_no_input_is_no_customers_never_the_whole_table(client: FlaskClient) -> None:
    view = assert_livelookup(client.get("/livelookup/people").data)
    assert view.summary() == "No customers found"


def test_columns_and_labels_and_html_fields(make_app: MakeApp, people_csv: Path) -> None:
    app = make_app(
        {
            "sources": {
                "people": {
                    "backend": "csv",
                    "path": str(people_csv),
                    "columns": ["email", "title"],
                    "labels": {"title": "Job title"},
                    "html_fields": ["title"],
                }
            }
        }
    )
    body = (
        app.test_client()
        .get("/livelookup/people", query_string=request_page_params(last_name="smith"))
        .data
    )
    view = assert_livelookup(body)
    assert view.columns == ["email", "title"]
    assert view.labels[0]["title"] == "Job title"
    assert view.customers[0]["title"] == "Sales"
    assert b'<title label="Job title"><![CDATA[Sales]]></title>' in body


def test_unknown_source_is_an_error_staff_see(client: FlaskClient) -> None:
    response = client.get("/livelookup/nope?customer_id=1")
    assert response.status_code == 404
    assert "no source named 'nope'" in response.text
    helpspot_error(response.data)


def test_unknown_route_is_plain_text_not_html(client: FlaskClient) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.text.startswith("lookup-server error:")


def test_huge_request_is_refused_cleanly(make_app: MakeApp, people_csv: Path) -> None:
    app = make_app(
        {
            "server": {"max_body_bytes": 100_000},
            "sources": {"people": {"backend": "csv", "path": str(people_csv)}},
        }
    )
    response = app.test_client().post("/livelookup/people", data={"last_name": "x" * 200_000})
    assert response.status_code == 413
    helpspot_error(response.data)


def test_long_custom_fields_in_the_url_are_served(client: FlaskClient) -> None:
    # HelpSpot puts every custom field in the URL, encoded twice: 3,000 characters of
    # German are 30 KB there, and a trigger's Webhook action adds the whole thread
    notes = double_encode("Größenänderung der Übersicht " * 100)
    history = double_encode("<p>Sehr geehrte Damen und Herren, …</p>" * 1500)
    params = request_page_params(customer_id="1001", Custom7=notes, Custom8=history)
    view = assert_livelookup(client.get("/livelookup/people", query_string=params).data)
    assert [c["customer_id"] for c in view.customers] == ["1001"]


def test_a_url_past_max_request_line_names_the_field_to_shorten(client: FlaskClient) -> None:
    params = request_page_params(customer_id="1001", Custom9=double_encode("ü" * 60_000))
    response = client.get("/livelookup/people", query_string=params)
    assert response.status_code == 414
    message = helpspot_error(response.data)
    assert "Custom9" in response.text and "max_request_line" in response.text, message


def test_huge_value_finds_nobody(client: FlaskClient) -> None:
    view = assert_livelookup(
        client.get("/livelookup/people", query_string={"last_name": "Smith" * 1000}).data
    )
    assert view.customers == []


def test_healthz(client: FlaskClient) -> None:
    assert client.get("/healthz").text == "ok\n"


# -- failures ---------------------------------------------------------------------------


@pytest.fixture
def fake_app(tmp_path: Path) -> Iterator[Flask]:
    FakeBackend.calls.clear()
    FakeBackend.release.clear()
    config = fake_config(
        {
            "ok": {"backend": "fake"},
            "fail": {"backend": "fake", "behaviour": "fail"},
            "crash": {"backend": "fake", "behaviour": "crash"},
            "hang": {"backend": "fake", "behaviour": "hang", "timeout": 0.2},
            "quiet": {"backend": "fake", "behaviour": "fail", "on_error": "empty"},
        },
        tmp_path,
    )
    yield create_app(config)
    FakeBackend.release.set()


@pytest.mark.parametrize(
    "source,status,reason",
    [
        ("fail", 502, "source 'fail' failed: directory said no"),
        ("crash", 502, "source 'crash' failed (details in the server log)"),
        ("hang", 504, "source 'hang' did not answer within 0.2 s"),
    ],
)
def test_backend_failures_are_errors_helpspot_shows(
    fake_app: Flask, source: str, status: int, reason: str
) -> None:
    response = fake_app.test_client().get(f"/livelookup/{source}?customer_id=1")
    assert response.status_code == status
    assert response.text == f"lookup-server error: {reason}\n"
    assert "hunter2" not in response.text and "Traceback" not in response.text
    assert "An Error" not in helpspot_error(response.data)  # a parser error, not customers


def test_a_source_whose_every_slot_is_stuck_answers_busy_at_once(fake_app: Flask) -> None:
    # The fake's hang cannot be aborted: each timed-out call keeps its slot. Past
    # MAX_IN_FLIGHT, staff get an error at once instead of another 0.2 s wait.
    client = fake_app.test_client()
    for _ in range(MAX_IN_FLIGHT):
        assert client.get("/livelookup/hang?customer_id=1").status_code == 504
    started = time.monotonic()
    response = client.get("/livelookup/hang?customer_id=1")
    assert time.monotonic() - started < 0.2
    assert response.status_code == 503
    assert response.text == (
        "lookup-server error: source 'hang' is busy: earlier lookups have not returned yet\n"
    )
    assert "An Error" not in helpspot_error(response.data)


def test_on_error_empty_answers_no_customers(fake_app: Flask) -> None:
    response = fake_app.test_client().get("/livelookup/quiet?customer_id=1")
    assert response.status_code == 200
    assert assert_livelookup(response.data).customers == []


def test_strategies_run_in_order_and_stop_at_the_first_hit(fake_app: Flask) -> None:
    fake_app.test_client().get("/livelookup/ok?customer_id=9&email=a@b.c&last_name=Smith")
    assert FakeBackend.calls == [ById("9")]


def test_source_search_order_is_configurable(tmp_path: Path) -> None:
    FakeBackend.calls.clear()
    app = create_app(
        fake_config({"s": {"backend": "fake", "search": ["email", "customer_id"]}}, tmp_path)
    )
    app.test_client().get("/livelookup/s?customer_id=9&email=a@b.c")
    assert FakeBackend.calls == [ByEmail("a@b.c")]


# -- who may call -------------------------------------------------------------------------


@pytest.fixture
def keyed_app(tmp_path: Path) -> Flask:
    FakeBackend.calls.clear()
    return create_app(
        fake_config({"ok": {"backend": "fake"}}, tmp_path, server={"shared_key": KEY})
    )


@pytest.mark.parametrize("how", ["query", "post-quirk", "bearer", "path"])
def test_shared_key_is_accepted_in_every_form(keyed_app: Flask, how: str) -> None:
    client = keyed_app.test_client()
    if how == "query":
        response = client.get("/livelookup/ok", query_string={"ll_key": KEY, "customer_id": "1"})
    elif how == "post-quirk":  # configured URL ...?ll_key=KEY in http-post mode
        response = client.post(
            "/livelookup/ok",
            query_string={"ll_key": KEY + "?source_id=0", "customer_id": "1"},
            data={"source_id": "0", "customer_id": "1"},
        )
    elif how == "bearer":
        response = client.get(
            "/livelookup/ok?customer_id=1", headers={"Authorization": f"Bearer {KEY}"}
        )
    else:
        from urllib.parse import quote

        response = client.get(f"/livelookup/ok/{quote(KEY, safe='')}?customer_id=1")
    assert response.status_code == 200, response.text
    assert len(assert_livelookup(response.data).customers) == 1


@pytest.mark.parametrize("key", [None, "", "wrong", KEY[:-1], KEY + "x"])
def test_wrong_key_is_refused_before_any_backend_runs(
    keyed_app: Flask, key: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    query = {"customer_id": "1"} if key is None else {"customer_id": "1", "ll_key": key}
    with caplog.at_level(logging.DEBUG):
        response = keyed_app.test_client().get("/livelookup/ok", query_string=query)
    assert response.status_code == 403
    assert FakeBackend.calls == []
    helpspot_error(response.data)
    assert KEY not in response.text and KEY not in caplog.text


def test_refused_even_for_an_unknown_source(keyed_app: Flask) -> None:
    # a wrong key must not reveal which sources exist
    assert keyed_app.test_client().get("/livelookup/secret-source").status_code == 403


def test_allowed_ips(tmp_path: Path) -> None:
    app = create_app(
        fake_config(
            {"ok": {"backend": "fake"}}, tmp_path, server={"allowed_ips": ["10.0.0.0/8", "::1"]}
        )
    )
    client = app.test_client()
    ok = client.get("/livelookup/ok?customer_id=1", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert ok.status_code == 200
    refused = client.get(
        "/livelookup/ok?customer_id=1", environ_base={"REMOTE_ADDR": "192.168.1.1"}
    )
    assert refused.status_code == 403
    # a server bound to [::] sees IPv4 callers as IPv4-mapped IPv6 addresses
    for address, status in (("::ffff:10.1.2.3", 200), ("::ffff:192.168.1.1", 403)):
        answer = client.get("/livelookup/ok?customer_id=1", environ_base={"REMOTE_ADDR": address})
        assert answer.status_code == status, address


def test_people_fixture_is_what_the_contract_expects() -> None:
    assert len({p.customer_id for p in PEOPLE}) == len(PEOPLE)


def test_a_backend_that_cannot_be_built_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = fake_config({"ok": {"backend": "fake"}, "bad": {"backend": "fake"}}, tmp_path)
    real_init = FakeBackend.__init__

    def picky(self: FakeBackend, options: FakeOptions, source: SourceSettings) -> None:
        if source.name == "bad":
            raise RuntimeError("password=hunter2 in a constructor")
        real_init(self, options, source)

    monkeypatch.setattr(FakeBackend, "__init__", picky)
    client = create_app(config).test_client()
    assert client.get("/livelookup/ok?customer_id=1").status_code == 200
    response = client.get("/livelookup/bad?customer_id=1")
    assert response.status_code == 502
    assert "hunter2" not in response.text
    assert "could not be created" in response.text


# -- one key per use -------------------------------------------------------------------

AJAX_KEY = "ajax-only-key_0123456789"


def test_an_ajax_key_opens_ajax_fields_and_nothing_else(tmp_path: Path) -> None:
    from tests.conftest import write_csv

    write_csv(tmp_path / "o.csv", ["value", "description"], [["a", "A"]])
    app = create_app(
        {
            "server": {"shared_key": KEY, "ajax_key": AJAX_KEY},
            "sources": {"o": {"backend": "csv", "path": "o.csv"}},
        },
        base_dir=tmp_path,
    )
    client = app.test_client()
    # HelpSpot writes the AJAX field's URL, key included, into every request page
    assert client.get(f"/ajax/o/{AJAX_KEY}").status_code == 200
    assert client.get(f"/ajax/o/{KEY}").status_code == 403
    for path in (f"/livelookup/o/{AJAX_KEY}", f"/livelookup/o?ll_key={AJAX_KEY}"):
        assert client.get(path + "&customer_id=1" if "?" in path else path).status_code == 403
    assert client.post(f"/webhook/o/{AJAX_KEY}", data={"x": "1"}).status_code == 403
    assert (
        client.post("/push/o", json={}, headers={"Authorization": f"Bearer {AJAX_KEY}"}).status_code
        == 403
    )
    assert client.get(f"/livelookup/o?ll_key={KEY}&customer_id=1").status_code != 403


def test_an_ajax_key_that_opens_more_is_a_config_problem(tmp_path: Path) -> None:
    from lookup_server.config.settings import ConfigError, config_from_mapping

    with pytest.raises(ConfigError) as error:
        config_from_mapping({"server": {"shared_key": KEY, "ajax_key": KEY}}, tmp_path)
    assert "server.ajax_key: must differ from the key of livelookup, push, webhook" in str(
        error.value
    )
    with pytest.raises(ConfigError) as error:
        config_from_mapping({"server": {"webhook_key": "short"}}, tmp_path)
    assert "server.webhook_key: must be at least 16 characters" in str(error.value)


def test_the_address_book_never_gets_an_email_that_would_break_its_links(
    make_app: MakeApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.conftest import write_csv

    # HelpSpot writes the address into href="javascript:...value='EMAIL'..."
    write_csv(
        tmp_path / "c.csv",
        ["customer_id", "first_name", "last_name", "email"],
        [
            ["1", "Sean", "Obrien", "sean@example.com"],
            ["2", "Evil", "Obrien", "x'-alert(document.cookie)-'@evil.com"],
            ["3", "Pct", "Obrien", "x%27y@evil.com"],
        ],
    )
    app = make_app({"sources": {"c": {"backend": "csv", "path": "c.csv"}}})
    with caplog.at_level(logging.WARNING):
        view = assert_livelookup(
            app.test_client()
            .get("/livelookup/c", query_string=address_book_params("", "Obrien"))
            .data
        )
    assert [c["email"] for c in view.customers] == ["sean@example.com"]
    assert "left out of the address book" in caplog.text
    page = assert_livelookup(
        app.test_client()
        .get("/livelookup/c", query_string=request_page_params(last_name="Obrien"))
        .data
    )
    assert len(page.customers) == 3  # elsewhere the address is only text


def test_fields_named_like_custom_fields_get_their_own_label(
    make_app: MakeApp, tmp_path: Path
) -> None:
    from tests.conftest import write_csv

    # HelpSpot takes any name holding "Custom" for a custom field's: CustomerType
    # would be labelled with custom field "erType", which does not exist
    write_csv(
        tmp_path / "c.csv",
        ["customer_id", "email", "CustomerType", "Custom3"],
        [["1", "a@example.com", "Reseller", "Gold"]],
    )
    app = make_app({"sources": {"c": {"backend": "csv", "path": "c.csv"}}})
    view = assert_livelookup(
        app.test_client()
        .get("/livelookup/c", query_string=request_page_params(customer_id="1"))
        .data
    )
    assert view.labels[0] == {"CustomerType": "CustomerType"}  # Custom3: HelpSpot's own name


def test_automation_values_are_decoded_once(client: FlaskClient) -> None:
    from lookup_server.helpspot.decode import decode_params

    # the request page encodes twice (browser code); rules build the query once, in PHP
    assert decode_params(automation_params(Custom4="Code%20X").items())["Custom4"] == "Code%20X"
    assert decode_params(request_page_params(Custom4="Code%2520X").items())["Custom4"] == "Code%20X"
