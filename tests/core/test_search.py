"""Search helpers every backend shares."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from lookup_server.plugin import phone_digits


@given(st.text())
def test_phone_digits_are_exactly_the_ascii_digits(text: str) -> None:
    # the fast path (str.translate) against the plain definition
    assert phone_digits(text) == re.sub("[^0-9]+", "", text)
