"""One rule for every target: which refusals of a webhook are final and which are retried."""

from __future__ import annotations

import pytest

from lookup_server.plugin import DeliveryFailed


@pytest.mark.parametrize(
    ("status", "final"),
    [
        (400, True),
        (401, True),
        (404, True),
        (410, True),
        (422, True),
        (408, False),  # the peer timed out
        (429, False),  # too many requests: later
        (500, False),
        (503, False),
        (302, False),  # redirects are not followed: a fixed url delivers it
        (None, False),  # no answer at all: the network
    ],
)
def test_a_refusal_is_final_by_its_status(status: int | None, final: bool) -> None:
    assert DeliveryFailed("refused", status=status).final is final


def test_a_target_that_knows_better_says_so() -> None:
    assert DeliveryFailed("plan limit", status=402, final=True).final
    assert not DeliveryFailed("HelpSpot is busy", status=400, final=False).final
