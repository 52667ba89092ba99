"""HelpSpot's input quirks, decoded in one place (HELPSPOT.md §1, §2)."""

from __future__ import annotations

import pytest

from lookup_server.helpspot.decode import (
    KEY_PARAM,
    InputError,
    cli_params,
    decode_params,
    lookup_query,
    options_query,
    parsed_body,
    shared_key,
)
from tests.support.helpspot import double_encode


def test_request_page_fields_are_decoded_once_more() -> None:
    params = decode_params(
        [("sEmail", double_encode("a+b@c.com")), ("Custom3", "x%20y"), ("xCategory", "%33")]
    )
    assert params == {"sEmail": "a+b@c.com", "Custom3": "x y", "xCategory": "3"}


def test_standard_names_arrive_clean_and_are_not_decoded_again() -> None:
    params = decode_params([("email", "50%25@example.com"), ("last_name", "100%41")])
    assert params["email"] == "50%25@example.com"
    assert params["last_name"] == "100%41"


def test_standard_names_win_over_request_page_names() -> None:
    q = lookup_query(
        decode_params(
            [("customer_id", "7"), ("sUserId", "8"), ("email", ""), ("sEmail", "b%40c.com")]
        )
    )
    assert (q.customer_id, q.email) == ("7", "b@c.com")


def test_manual_spelling_suserid_is_accepted() -> None:
    assert lookup_query(decode_params([("sUserID", "99")])).customer_id == "99"


def test_null_means_empty() -> None:
    q = lookup_query(decode_params([("customer_id", "null"), ("Custom4", "null")]))
    assert q.customer_id == "" and q.fields["Custom4"] == ""


def test_control_characters_are_dropped() -> None:
    assert decode_params([("last_name", "Sm\x00ith\x1b")])["last_name"] == "Smith"


def test_first_occurrence_wins() -> None:
    assert decode_params([("a", "1"), ("a", "2")]) == {"a": "1"}


def test_http_post_quirk_key_loses_the_junk_after_question_mark() -> None:
    assert shared_key("s3cret?source_id=0") == "s3cret"
    assert shared_key(None) == ""


def test_the_key_is_not_kept_among_request_fields() -> None:
    assert "ll_key" not in lookup_query({"ll_key": "x", "email": "a@b"}).fields


def test_ajax_calling_field_is_the_search_text() -> None:
    q = options_query(decode_params([("callingField", "lap top "), ("xCategory", "3")]))
    assert q.search == "lap top" and q.fields["xCategory"] == "3"


def test_cli_named_form() -> None:
    params = cli_params(
        [
            "--customer_id=123456",
            "--first_name=Bob",
            "--last_name=Jones",
            "--email",
            "--phone",
            "--Custom3=a%20b",
            "--unknown_thing=1",
        ]
    )
    q = lookup_query(params)
    assert (q.customer_id, q.first_name, q.last_name, q.email) == ("123456", "Bob", "Jones", "")
    assert q.fields["Custom3"] == "a b"


def test_cli_named_values_keep_equals_signs_and_spaces() -> None:
    assert cli_params(["--last_name=a=b c"])["last_name"] == "a=b c"


def test_cli_positional_form_with_empty_values_and_custom_fields() -> None:
    q = lookup_query(cli_params(["", "Bob", "Jones", "bob@example.com", "", "gold", "x"]))
    assert (q.customer_id, q.first_name, q.email, q.phone) == ("", "Bob", "bob@example.com", "")


@pytest.mark.parametrize(
    "first",
    [
        "--customer_id=1",
        "--customer_id",
        "--source_id=0",
        "--Custom12=a",
        "--xRequest=5",
        "--acting_person_email",
    ],
)
def test_cli_named_form_begins_with_a_name_helpspot_sends(first: str) -> None:
    assert cli_params([first, "--last_name=Jones"])["last_name"] == "Jones"


@pytest.mark.parametrize(
    "first",
    [
        "--x=y",
        "--config=/etc/passwd",
        "--customer_idx=1",
        "--custom3=a",
        "--Custom=a",
        "-customer_id=1",
        "--",
        "",
    ],
)
def test_cli_positional_form_whatever_the_first_value_looks_like(first: str) -> None:
    q = lookup_query(cli_params([first, "Bob", "Jones"]))
    assert (q.customer_id, q.first_name, q.last_name) == (first, "Bob", "Jones")


def test_cli_positional_value_that_looks_like_an_option_is_a_value() -> None:
    q = lookup_query(cli_params(["", "--weird", "Jones"]))
    assert q.first_name == "--weird" and q.last_name == "Jones"


FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    "body,content_type",
    [
        (b"ll_key=s3cret&xRequest=1", FORM),
        (b"xRequest=1&ll.key=s3cret", FORM),  # PHP's parse_str reads "ll.key" as ll_key
        (b"xRequest=1&ll%5Fkey=s3cret", FORM),
        (b"xRequest=1&ll_key[]=s3cret&ll_key[x]=s3cret", FORM),
        (b'{"xRequest": "1", "ll_key": "s3cret"}', "application/json"),
        (b'{"xRequest": "1", "ll_key": {"nested": "s3cret"}}', "application/json; charset=utf-8"),
    ],
)
def test_the_key_in_a_push_or_webhook_body_is_dropped(body: bytes, content_type: str) -> None:
    data = parsed_body(body, content_type).data
    assert KEY_PARAM not in data and "s3cret" not in repr(data)
    assert data["xRequest"] == "1"


def test_only_the_top_level_key_is_the_shared_key() -> None:
    # deeper down, a field of that name is HelpSpot's data, not a credential
    data = parsed_body(b"request_history[1][ll_key]=x&ll_key=s3cret", FORM).data
    assert data == {"request_history": {"1": {"ll_key": "x"}}}


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1.5e400"])
def test_json_numbers_that_strict_json_cannot_carry_are_refused(number: str) -> None:
    # Python's json would read them (1e999 as inf) and write them back as NaN or
    # Infinity, which the target's parser refuses: retried for a day, never delivered
    with pytest.raises(InputError, match="not valid JSON"):
        parsed_body(f'{{"xRequest": "1", "h": {{"1": [{number}]}}}}'.encode(), "application/json")


def test_ordinary_json_numbers_are_kept() -> None:
    data = parsed_body(
        b'{"a": 1.5, "b": -0.0, "c": 1e308, "d": 123456789012345678901234567890}',
        "application/json",
    ).data
    assert data == {"a": 1.5, "b": -0.0, "c": 1e308, "d": 123456789012345678901234567890}
