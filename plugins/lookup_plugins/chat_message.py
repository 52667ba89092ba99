"""The message a chat target (slack, campfire) posts for a push or a webhook.

Both targets take it from their ``message`` option, a template over
:func:`request_context` (README, "Templates") whose printed values the
target's own ``escape`` encodes: the admin's template may hold the room's
markup, HelpSpot's text never becomes any. Here is what they share: the
context with the link back to the request, the rendering, its errors, and
the check that a template asking for that link gets one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from lookup_server.plugin import (
    BackendError,
    TemplateProblem,
    TextTemplate,
    request_context,
    template_problem,
)


def render_message(
    template: TextTemplate, data: Mapping[str, object], link: Callable[[str], str]
) -> str:
    """The message for a pushed request or a webhook's payload; ``link`` makes ``request_url``."""
    context = request_context(data)
    context["request_url"] = link(context["request_id"])
    try:
        text = template.render(context)
    except TemplateProblem as exc:
        raise BackendError(f"message: {exc}; fix the target's message template") from None
    if not text:
        raise BackendError(
            f"message: the template gave an empty message for request "
            f"{context['request_id'] or '(none)'}; fix the target's message template"
        )
    return text


def message_problems(source: str) -> list[tuple[str, str]]:
    """The ``message`` option's problem, for a target's ``validate``."""
    problem = template_problem(source)
    return [("message", problem)] if problem else []


def missing_link_warnings(template: TextTemplate, has_link: bool) -> list[str]:
    """A warning for ``check`` when the template shows ``request_url`` but nothing sets it."""
    if "request_url" in template.names and not has_link:
        return [
            "message: the messages carry no link to the request; set [server] helpspot_url "
            "(HelpSpot's address, e.g. https://helpdesk.example.com)"
        ]
    return []
