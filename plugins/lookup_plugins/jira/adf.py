"""Atlassian Document Format from plain text, for Jira Cloud's v3 descriptions.

ADF ("Atlassian Document Format", developer.atlassian.com/cloud/jira/platform/
apis/document/structure) is a tree of nodes: a ``doc`` of ``paragraph``
blocks holding ``text`` nodes, which may carry marks (``link`` with
``attrs.href``), and ``hardBreak`` nodes. Its text is literal: nothing in it
is markup, so text from HelpSpot needs no escaping.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..issue_tracker import cut

#: Jira Cloud's limit for a text field; the description's ADF, as JSON, stays below it.
MAX_DESCRIPTION_JSON = 32_767


def description_adf(text: str, link: str) -> dict[str, Any]:
    """The ADF of ``text``, cut until its JSON fits Jira's text field limit."""
    document = adf_document(text, link)
    while len(json.dumps(document, ensure_ascii=False)) > MAX_DESCRIPTION_JSON:
        text = cut(text, len(text) * 2 // 3)
        document = adf_document(text, link)
    return document


def adf_document(text: str, link: str = "") -> dict[str, Any]:
    """ADF of plain text: a paragraph per blank-line block, a hardBreak per line break.

    Each occurrence of ``link`` (the request's address) is a text node with a
    link mark; everything else is literal text.
    """
    blocks = [b.strip("\n") for b in re.split(r"\n[ \t]*\n", text) if b.strip()]
    return {"version": 1, "type": "doc", "content": [_paragraph(b, link) for b in blocks]}


def _paragraph(block: str, link: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for number, line in enumerate(block.split("\n")):
        if number:
            content.append({"type": "hardBreak"})
        content += _inline(line, link)
    return {"type": "paragraph", "content": content}


def _inline(line: str, link: str) -> list[dict[str, Any]]:
    parts = line.split(link) if link else [line]
    nodes: list[dict[str, Any]] = []
    for number, part in enumerate(parts):
        if number:
            mark = {"type": "link", "attrs": {"href": link}}
            nodes.append({"type": "text", "text": link, "marks": [mark]})
        if part:  # ADF has no empty text node
            nodes.append({"type": "text", "text": part})
    return nodes
