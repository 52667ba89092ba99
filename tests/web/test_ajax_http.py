"""/ajax/<source>: AJAX selection fields, called and read as HelpSpot does (HELPSPOT.md §4)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask

from lookup_server.cli import cli
from lookup_server.helpspot.render import schema_errors
from lookup_server.helpspot.view import read_ajaxfield
from lookup_server.web.app import create_app
from tests.conftest import write_csv
from tests.support.helpspot import ajax_params, double_encode

KEY = "ajax-key_0123456789abcdef"
OPTIONS = [
    ["value", "description", "xCategory", "Custom4"],
    ["gold", "Gold support", "", ""],
    ["hw-1", "Laptop repair", "3", ""],
    ["hw-2", "Desktop repair", "3", "yes"],
    ["sw-1", "Office licence", "4", ""],
    ["zoe", "Zoë's café", "", ""],
]


@pytest.fixture
def ajax_app(tmp_path: Path) -> Flask:
    write_csv(tmp_path / "options.csv", OPTIONS[0], OPTIONS[1:])
    return create_app(
        {
            "server": {"shared_key": KEY},
            "sources": {
                "support": {"backend": "csv", "path": "options.csv", "ascii": True},
                "raw": {"backend": "csv", "path": "options.csv", "max_results": 2},
            },
        },
        base_dir=tmp_path,
    )


def helpspot_ajax(app: Flask, source: str, **params: str) -> list[tuple[str, str]]:
    """Call as HelpSpot does (key in the path) and return what the drop-down shows."""
    response = app.test_client().get(f"/ajax/{source}/{KEY}", query_string=params)
    assert response.status_code == 200, response.text
    assert response.content_type == "text/xml; charset=utf-8"
    assert schema_errors(response.data, "ajaxfield") == []
    return read_ajaxfield(response.data)


def test_helpspots_calling_field_names_the_field_whose_text_is_searched(ajax_app: Flask) -> None:
    # HelpSpot sends callingField=Custom5 and the typed text as Custom5, encoded twice
    shown = helpspot_ajax(
        ajax_app, "support", **ajax_params("Custom5", "REPAIR", xCategory="3", Custom4="yes")
    )
    assert shown == [("hw-1", "Laptop repair"), ("hw-2", "Desktop repair")]
    shown = helpspot_ajax(ajax_app, "raw", **ajax_params("Custom5", "Zoë's", Custom4=""))
    assert shown == [("zoe", "ZoÃ«'s cafÃ©")]


def test_an_empty_field_lists_every_option_that_applies(ajax_app: Flask) -> None:
    shown = helpspot_ajax(ajax_app, "support", **ajax_params("Custom5", "", xCategory="4"))
    assert [value for value, _ in shown] == ["gold", "sw-1", "zoe"]


def test_a_calling_field_that_is_no_field_id_is_the_search_text(ajax_app: Flask) -> None:
    shown = helpspot_ajax(
        ajax_app,
        "support",
        xCategory=double_encode("3"),
        callingField="REPAIR",
        sUserId="",
        Custom4="null",
    )
    assert shown == [("hw-1", "Laptop repair")]
    shown = helpspot_ajax(
        ajax_app, "support", xCategory="3", Custom4=double_encode("yes"), callingField="repair"
    )
    assert shown == [("hw-1", "Laptop repair"), ("hw-2", "Desktop repair")]


def test_ascii_descriptions_survive_helpspots_latin1_reading(ajax_app: Flask) -> None:
    assert helpspot_ajax(ajax_app, "support", callingField="zo") == [("zoe", "Zoe's cafe")]
    # without ascii = true staff would see UTF-8 bytes read as Latin-1
    assert helpspot_ajax(ajax_app, "raw", callingField="zo") == [("zoe", "ZoÃ«'s cafÃ©")]


def test_results_are_capped(ajax_app: Flask) -> None:
    assert len(helpspot_ajax(ajax_app, "raw")) == 2


def test_key_is_required_in_path_or_query(ajax_app: Flask) -> None:
    client = ajax_app.test_client()
    assert client.get("/ajax/support").status_code == 403
    assert client.get("/ajax/support/wrong-key-0123456789").status_code == 403
    assert client.get("/ajax/support", query_string={"ll_key": KEY}).status_code == 200


def test_unknown_source_and_lookup_only_source(
    ajax_app: Flask, tmp_path: Path, people_csv: Path
) -> None:
    assert ajax_app.test_client().get(f"/ajax/nope/{KEY}").status_code == 404
    app = create_app(
        {"sources": {"people": {"backend": "csv", "path": str(people_csv)}}}, base_dir=tmp_path
    )
    response = app.test_client().get("/ajax/people")
    assert response.status_code == 502
    assert "no 'value' and 'description' columns" in response.text
    assert read_ajaxfield(response.data) == []  # HelpSpot: "No results returned"


def test_check_warns_about_options_helpspot_mangles(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "o.csv",
        ["value", "description"],
        [["0", "Zero"], ["café", "Café"], ["ok", "Fine"]],
    )
    (tmp_path / "c.toml").write_text('[sources.o]\nbackend = "csv"\npath = "o.csv"\n')
    result = CliRunner().invoke(cli, ["check", "--config", str(tmp_path / "c.toml")])
    assert result.exit_code == 0
    assert "option 'Zero' has the value 0" in result.output
    assert "option value 'café' is not ASCII" in result.output
    assert "set ascii = true" in result.output


def test_check_warns_when_the_ajax_key_opens_everything(tmp_path: Path) -> None:
    write_csv(tmp_path / "o.csv", ["value", "description"], [["a", "A"]])
    config = tmp_path / "c.toml"
    table = '[sources.o]\nbackend = "csv"\npath = "o.csv"\n'
    config.write_text(f'[server]\nshared_key = "{KEY}"\n' + table)
    result = CliRunner().invoke(cli, ["check", "--config", str(config)])
    assert result.exit_code == 0 and "set [server] ajax_key" in result.output
    config.write_text(f'[server]\nshared_key = "{KEY}"\najax_key = "{KEY}-ajax"\n' + table)
    result = CliRunner().invoke(cli, ["check", "--config", str(config)])
    assert result.exit_code == 0 and "ajax_key" not in result.output


def test_options_with_xml_special_characters_reach_the_drop_down_whole(tmp_path: Path) -> None:
    # expat reports "1" ">" "0" for 1&gt;0, and HelpSpot drops the piece "0"
    write_csv(
        tmp_path / "o.csv", ["value", "description"], [["1>0", "More than 0"], ["A&0", "R&D <0>"]]
    )
    app = create_app({"sources": {"o": {"backend": "csv", "path": "o.csv"}}}, base_dir=tmp_path)
    shown = helpspot_ajax(app, "o", **ajax_params("Custom5", ""))
    assert shown == [("1>0", "More than 0"), ("A&0", "R&D <0>")]
