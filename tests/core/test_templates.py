"""The template mechanism every target's text comes from, and the context it sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookup_server.config.settings import ConfigError, config_from_mapping
from lookup_server.core.templates import (
    TemplateProblem,
    TextTemplate,
    html_to_text,
    request_context,
    template_problem,
)

PUSH = {
    "xRequest": "12345",
    "sTitle": "Printer on fire",
    "sFirstName": "Ada",
    "sLastName": "Lovelace",
    "sEmail": "ada@example.com",
    "Custom3": "Gold",
    "staff_comment": "Please look at this",
    "acting_person_fname": "Ian",
    "acting_person_lname": "Staff",
    "request_history": {
        "902": {
            "xRequestHistory": "902",
            "tNote": "<p>Second <b>note</b></p>",
            "fNoteIsHTML": "1",
            "fPublic": "0",
        },
        "901": {
            "xRequestHistory": "901",
            "tNote": "<p>It smokes.</p><ul><li>tray 1</li><li>tray 2</li></ul>",
            "fNoteIsHTML": "1",
            "fPublic": "1",
            "fInitial": "1",
            "dtGMTChange": "1700000000",
        },
        "903": {"xRequestHistory": "903", "tLog": "status changed"},
    },
}


def test_the_context_names_what_helpspot_sent_and_what_is_derived() -> None:
    context = request_context(PUSH, "https://help.example.com/")
    assert context["sTitle"] == "Printer on fire" and context["Custom3"] == "Gold"
    assert context["request_url"] == "https://help.example.com/admin.php?pg=request&reqid=12345"
    assert context["customer"] == "Ada Lovelace" and context["staff"] == "Ian Staff"
    assert context["staff_comment"] == "Please look at this"
    assert context["first_note"] == "It smokes.\n\n  * tray 1\n  * tray 2"
    assert context["last_note"] == "Second note"
    assert [n.public for n in context["notes"]] == [True, False]  # oldest first, log lines out


def test_a_webhooks_nested_history_reads_the_same() -> None:
    webhook = {**PUSH, "request_history": {"item": PUSH["request_history"]}}
    assert request_context(webhook)["first_note"].startswith("It smokes.")
    assert request_context(webhook)["request_url"] == ""  # no helpspot_url: no link


def test_a_template_renders_text_and_missing_names_are_empty() -> None:
    template = TextTemplate("{{ sTitle }} for {{ customer }}{{ nothing_sent }} <{{ sEmail }}>")
    assert (
        template.render(request_context(PUSH))
        == "Printer on fire for Ada Lovelace <ada@example.com>"
    )


def test_text_is_never_escaped_as_html() -> None:
    rendered = TextTemplate("{{ sTitle }}").render({"sTitle": "R&D <Lead>"})
    assert rendered == "R&D <Lead>"


def test_a_bad_template_says_where() -> None:
    assert "line 2" in (template_problem("ok\n{{ sTitle ") or "")
    assert template_problem("{{ sTitle }}") is None


@pytest.mark.parametrize("source", ["{{ 1 / 0 }}", "{{ sTitle + 1 }}", "{{ range(10**9) }}"])
def test_any_failure_while_rendering_is_a_template_problem(source: str) -> None:
    with pytest.raises(TemplateProblem, match=r"^the template failed: "):
        TextTemplate(source).render({"sTitle": "t", "notes": []})


def test_the_sandbox_keeps_python_out_of_reach() -> None:
    with pytest.raises(TemplateProblem):
        TextTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}").render({})


def test_notes_are_made_readable_by_a_real_html_parser() -> None:
    assert html_to_text("<p>a &amp; b</p><script>alert(1)</script><p>c<br>d</p>") == "a & b\n\nc\nd"
    assert html_to_text("   ") == ""


def test_helpspot_url_reaches_every_target(tmp_path: Path) -> None:
    config = config_from_mapping(
        {
            "server": {"helpspot_url": "https://help.example.com/"},
            "targets": {
                "t": {
                    "backend": "http",
                    "url": "https://x.example/in",
                    "store": str(tmp_path / "s"),
                }
            },
        },
        tmp_path,
    )
    assert config.targets["t"].settings.request_link("7") == (
        "https://help.example.com/admin.php?pg=request&reqid=7"
    )
    with pytest.raises(ConfigError, match=r"server\.helpspot_url"):
        config_from_mapping({"server": {"helpspot_url": "help.example.com"}}, tmp_path)
    with pytest.raises(ConfigError, match=r"targets\.t\.helpspot_url: unknown key"):
        config_from_mapping(
            {
                "targets": {
                    "t": {
                        "backend": "http",
                        "url": "https://x.example/in",
                        "helpspot_url": "https://a.b",
                    }
                }
            },
            tmp_path,
        )


def _brackets(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def test_with_escape_what_is_printed_is_escaped_and_the_template_is_not() -> None:
    template = TextTemplate("<b>{{ sTitle }}</b> {{ missing }}{{ n }}", escape=_brackets)
    assert (
        template.render({"sTitle": "<i>R&D</i>", "n": 7}) == "<b>&lt;i&gt;R&amp;D&lt;/i&gt;</b> 7"
    )


def test_with_escape_filters_and_tests_see_the_text_itself() -> None:
    # escaping the context's values beforehand would cut "&amp;" and fail the test
    template = TextTemplate(
        "{{ sTitle | truncate(5, true, '', 0) }}|{{ sTitle | length }}|{{ sTitle == 'R&D <x>' }}",
        escape=_brackets,
    )
    assert template.render({"sTitle": "R&D <x>"}) == "R&amp;D &lt;|7|True"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # the value's tags are stripped, then what it said is escaped, "&lt;" included
        ("{{ sTitle | striptags }}", "&lt;b&gt; x"),
        # the block holds the escaped value: striptags finds no tag in it, decodes it,
        # and it is escaped again, as it was; only the template's own tags go
        (
            "{% filter striptags %}<u>{{ sTitle }}</u>{% endfilter %}",
            "&amp;lt;b&amp;gt; &lt;i&gt;x&lt;/i&gt;",
        ),
    ],
)
def test_with_escape_striptags_cannot_decode_text_back_into_markup(
    source: str, expected: str
) -> None:
    # Jinja's striptags decodes entities: it would turn escaped text into markup
    rendered = TextTemplate(source, escape=_brackets).render({"sTitle": "&lt;b&gt; <i>x</i>"})
    assert rendered == expected
    assert TextTemplate(source).render({"sTitle": "&lt;b&gt;"}) == "<b>"  # without: plain text


def test_a_template_says_which_names_it_uses() -> None:
    template = TextTemplate(
        "{% for n in notes %}{{ n.text }}{% endfor %}{{ request_url or sTitle }}"
    )
    assert template.names == {"notes", "request_url", "sTitle"}
