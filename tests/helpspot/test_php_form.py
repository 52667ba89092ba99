"""parse_form against PHP's own parse_str (php-cli), plus limits and robustness."""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lookup_server.helpspot.php_form import FormError, FormValue, parse_form
from tests.support.requirements import need

#: Reads base64 bodies from stdin (JSON list), prints one json_encode((object)$r) per line.
PHP_PARSE_STR = r"""
$bodies = json_decode(stream_get_contents(STDIN), true);
foreach ($bodies as $body) {
    $r = [];
    parse_str(base64_decode($body), $r);
    echo json_encode((object)$r, JSON_INVALID_UTF8_SUBSTITUTE), "\n";
}
"""

TRICKY = [
    # plain, repeated, empty
    "a=1",
    "a=1&a=2",
    "a",
    "a=",
    "=1",
    "&&a=1&&",
    "a=1&b=2&c=3",
    "",
    # nesting and appends
    "a[b][c]=v",
    "a[]=1&a[]=2",
    "a[]=1&a[5]=2&a[]=3",
    "a[x]=1&a[]=2",
    "a[0]=x&a[1]=y",
    "a[1]=x&a[0]=y",
    "a[0]=1&a[x]=2&a[]=3",
    "a[b][]=1&a[b][]=2&a[c]=3",
    "a[][]=1&a[][]=2",
    "a[][x]=1&a[][x]=2",
    "0=a&1=b",
    "a[-5]=x&a[]=y",
    "a[-3]=1&a[2]=2&a[]=3",
    "a[9223372036854775807]=1&a[]=2",
    "a[9223372036854775808]=1&a[]=2",
    "a[-9223372036854775808]=1&a[]=2",
    "a[05]=1&a[5]=2",
    "a[-0]=1&a[]=2",
    "a[1.5]=1&a[]=2",
    # replacing values by arrays and back
    "a=1&a[]=2",
    "a[]=1&a=2",
    "a[b]=1&a[b][c]=2",
    "a[b][c]=2&a[b]=1",
    # malformed brackets
    "a[b=1",
    "a]b=1",
    "[x]=1",
    "[]=1",
    "a[b][c=1",
    "a[b]c=1",
    "a[ ]=1",
    "a[  ]=1",
    "a[ x]=1",
    "a[[b]=1",
    "a[b[c]=1",
    "a[b.c=1",
    "a[b c[d=1",
    "a[=1",
    "a[][=1",
    "a[b]]=1",
    "a[x][=1",
    "a[]x=1",
    "a[b] [c]=1",
    "a[b][ c]=1",
    "a%5Bb%5D=1",
    "a[b]%5Bc%5D=1",
    # top-level name mangling
    " a=1",
    "+.a b=1",
    "a.b[c.d]=1",
    "a [b]=1",
    "a.[b]=1",
    "%20=1",
    "a%00b=1",
    "a[x%00y]=1",
    # decoding
    "a=%zz%4",
    "a=x+y%2By",
    "a=caf%C3%A9",
    "a=%00b",
    "a[%C3%A9]=%E2%82%AC",
    "a=b=c",
    # HelpSpot's webhook shape
    "xRequest=12345&sTitle=Printer+on+fire&request_history[item][678][tNote]=%3Cp%3EHi%3C%2Fp%3E"
    "&request_history[item][678][files][0][sFilename]=a.pdf&request_history[item][679][tNote]=x",
]


def php_parse_str(bodies: list[bytes]) -> list[str]:
    """PHP's json_encode((object)$r) of parse_str for each body, via php-cli."""
    need(
        shutil.which("php") is not None, "php-cli not installed (apt-get install php-cli php-curl)"
    )
    payload = json.dumps([base64.b64encode(b).decode() for b in bodies])
    done = subprocess.run(
        ["php", "-d", "max_input_vars=100000", "-d", "display_errors=stderr", "-r", PHP_PARSE_STR],
        input=payload,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    lines = done.stdout.splitlines()
    assert len(lines) == len(bodies), done.stderr
    return lines


def same_as_php(ours: dict[str, FormValue], php_line: str) -> bool:
    # Compare serialised forms: dict equality would ignore key order, PHP's keeps it.
    return json.dumps(ours) == json.dumps(json.loads(php_line))


@pytest.mark.parametrize("body", TRICKY)
def test_tricky_inputs_parse_as_php_does(body: str) -> None:
    (php,) = php_parse_str([body.encode()])
    assert same_as_php(parse_form(body), php), (parse_form(body), php)


def test_random_bodies_parse_as_php_does() -> None:
    # A fixed seed keeps the run reproducible; one php process checks them all.
    rng = random.Random(20261121)
    pieces = [
        "a",
        "b",
        "0",
        "1",
        "-1",
        "[",
        "]",
        "[]",
        "[0]",
        "[x]",
        " ",
        ".",
        "+",
        "=",
        "&",
        "%5B",
        "%5D",
        "%20",
        "%2E",
        "%00",
        "%C3%A9",
        "é",
        "%",
        "x",
    ]
    bodies = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 24))) for _ in range(2000)]
    results = php_parse_str([b.encode() for b in bodies])
    # Invalid UTF-8 (a stray "%a0") is Latin-1 here and U+FFFD in PHP's JSON: by design.
    compared = [
        (body, php) for body, php in zip(bodies, results, strict=True) if "\\ufffd" not in php
    ]
    assert len(compared) > 1500
    mismatches = [
        (body, parse_form(body), php)
        for body, php in compared
        if not same_as_php(parse_form(body), php)
    ]
    assert mismatches == []


def test_list_and_map_representation() -> None:
    data = parse_form("a[]=1&a[]=2&m[x]=1&m[0]=2&o[1]=a&o[0]=b&s=t")
    assert data == {"a": ["1", "2"], "m": {"x": "1", "0": "2"}, "o": {"1": "a", "0": "b"}, "s": "t"}
    assert list(data["o"]) == ["1", "0"]  # PHP's insertion order is kept
    assert json.loads(json.dumps(data)) == data


def test_top_level_is_always_a_dict() -> None:
    assert parse_form("0=a&1=b") == {"0": "a", "1": "b"}


def test_helpspot_webhook_shape() -> None:
    body = (
        "xRequest=12345&sTitle=Printer+on+fire&fOpen=1"
        "&request_history[item][678][tNote]=%3Cp%3EHi+%26+bye%3C%2Fp%3E"
        "&request_history[item][678][files][0][sFilename]=a+b.pdf"
        "&request_history[item][678][files][1][sFilename]=c.png"
        "&request_history[item][679][tNote]=second"
    )
    assert parse_form(body) == {
        "xRequest": "12345",
        "sTitle": "Printer on fire",
        "fOpen": "1",
        "request_history": {
            "item": {
                "678": {
                    "tNote": "<p>Hi & bye</p>",
                    "files": [{"sFilename": "a b.pdf"}, {"sFilename": "c.png"}],
                },
                "679": {"tNote": "second"},
            }
        },
    }


def test_bytes_and_text_bodies_agree() -> None:
    assert parse_form(b"a[b]=caf%C3%A9") == parse_form("a[b]=caf%C3%A9") == {"a": {"b": "café"}}


def test_invalid_utf8_falls_back_to_latin1_without_losing_bytes() -> None:
    data = parse_form(b"name=Jos%E9&raw=\xe9t\xe9")
    assert data == {"name": "José", "raw": "été"}
    assert isinstance(data["name"], str) and data["name"].encode("latin-1") == b"Jos\xe9"


def test_depth_limit_is_a_form_error() -> None:
    assert parse_form("a" + "[x]" * 5 + "=1", max_depth=5)
    with pytest.raises(FormError, match="nested more than 5 levels deep"):
        parse_form("a" + "[x]" * 6 + "=1", max_depth=5)


def test_depth_limit_default_matches_php() -> None:
    parse_form("a" + "[x]" * 64 + "=1")
    with pytest.raises(FormError):
        parse_form("a" + "[x]" * 65 + "=1")


def test_field_limit_is_a_form_error() -> None:
    assert len(parse_form("&".join(f"f{i}=1" for i in range(10)), max_fields=10)) == 10
    with pytest.raises(FormError, match="11 fields; at most 10"):
        parse_form("&".join(f"f{i}=1" for i in range(11)), max_fields=10)


def test_empty_pairs_do_not_count_towards_the_field_limit() -> None:
    assert parse_form("&&&a=1&&&", max_fields=1) == {"a": "1"}


def test_a_megabyte_of_brackets_is_refused_early() -> None:
    # Reading every bracket before counting them would take quadratic time.
    with pytest.raises(FormError, match="more than 64 levels"):
        parse_form("a" + "[]" * 500_000 + "=1")


def test_form_error_is_a_value_error_with_a_short_message() -> None:
    with pytest.raises(ValueError) as caught:
        parse_form("x" * 5000 + "[a]" * 100, max_depth=3)
    assert len(str(caught.value)) < 200


def test_append_after_the_largest_php_integer_is_dropped_as_in_php() -> None:
    assert parse_form("a[9223372036854775807]=1&a[]=2&a[][x]=3") == {
        "a": {"9223372036854775807": "1"}
    }


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_form_error(body: bytes) -> None:
    try:
        data = parse_form(body, max_depth=8, max_fields=50)
    except FormError:
        return
    json.dumps(data)


@settings(max_examples=500)
@given(st.text(alphabet="ab0[] .=&%+-", max_size=80))
def test_bracket_soup_parses_or_raises_form_error(body: str) -> None:
    try:
        data = parse_form(body, max_depth=3, max_fields=10)
    except FormError:
        return
    assert all(isinstance(key, str) and key for key in data)
    json.dumps(data)


def test_skipped_fields_are_left_out_unread() -> None:
    body = b"a[1][blobFile]=%FF%00bytes&a[1][sFilename]=x.pdf&blobFile=top&b[]=1"
    assert parse_form(body, skip=frozenset({b"blobFile"})) == {
        "a": {"1": {"sFilename": "x.pdf"}},
        "b": ["1"],
    }
