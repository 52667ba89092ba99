"""Text from HelpSpot as literal GitHub Markdown, for an issue's body.

An issue's body is GitHub Flavored Markdown: a customer's ``# title``,
``[link](url)`` or ``<img>`` would be rendered. Every value a template
inserts is therefore escaped (CommonMark lets a backslash escape any ASCII
punctuation). Escaping does not stop GitHub's ``@name`` mentions or ``#123``
references, which GitHub finds after rendering (github/markup#1168,
cmark-gfm#181): a zero-width space after their first character does.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from lookup_server.plugin import Note

#: What could start markup: CommonMark's punctuation, and ``$`` (GitHub renders math).
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&=$])")
#: ``@name`` after a non-word character: GitHub notifies that account, escaped or not.
_MENTION = re.compile(r"(?<![\w.+\-\\])@(?=\w)")
#: ``#123``, ``owner/repo#123``, escaped already: GitHub links (and notifies) that issue.
_ISSUE_REFERENCE = re.compile(r"\\#(?=\d)")
#: A request's address as request_link builds it: nothing in it can end a Markdown link.
_SAFE_URL = re.compile(r"https?://[A-Za-z0-9.:\-]+/[A-Za-z0-9/._\-?=&%]*")


def markdown_text(text: str) -> str:
    """``text`` as literal Markdown: punctuation escaped, mentions and references inert."""
    escaped = _MARKDOWN.sub(r"\\\1", text)
    return _ISSUE_REFERENCE.sub("\\\\#\u200b", _MENTION.sub("@\u200b", escaped))


def markdown_context(context: dict[str, Any]) -> dict[str, Any]:
    """A template context whose every text from HelpSpot reads literally in Markdown."""
    escaped = {k: markdown_text(v) if isinstance(v, str) else v for k, v in context.items()}
    escaped["notes"] = [
        dataclasses.replace(n, text=markdown_text(n.text), when=markdown_text(n.when))
        for n in context.get("notes", [])
        if isinstance(n, Note)
    ]
    url = str(context.get("request_url", ""))
    # built from [server] helpspot_url and a request number: a plain address GitHub links
    escaped["request_url"] = url if _SAFE_URL.fullmatch(url) else markdown_text(url)
    return escaped
