"""Sources' result caches, and the one several servers share in a real Redis."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from lookup_server.config.settings import ConfigError
from lookup_server.core.models import Customer, LookupQuery, Option
from lookup_server.runtime.cache import CUSTOMERS, OPTIONS
from lookup_server.runtime.service import Sources
from tests.support.fake_backends import FakeBackend, fake_config
from tests.support.requirements import need

REDIS = "redis://127.0.0.1:6379/15"


def redis_running() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def name() -> str:
    """A source name of this test's own, so runs never read each other's entries."""
    return f"s{uuid.uuid4().hex[:12]}"


def sources(tmp_path: Path, name: str, cache: str = REDIS, **options: object) -> Sources:
    config = fake_config(
        {name: {"backend": "fake", "cache_ttl": 60, **options}}, tmp_path, {"cache": cache}
    )
    return Sources(config)


def test_a_second_server_answers_from_what_the_first_cached(tmp_path: Path, name: str) -> None:
    need(redis_running(), "no Redis on 127.0.0.1:6379")
    FakeBackend.calls.clear()
    first = sources(tmp_path, name)[name].lookup(LookupQuery(email="ada@example.com"))
    assert len(FakeBackend.calls) == 1
    second = sources(tmp_path, name)[name].lookup(LookupQuery(email="ada@example.com"))
    assert second == first and len(FakeBackend.calls) == 1  # not asked again
    sources(tmp_path, name)[name].lookup(LookupQuery(email="bob@example.com"))
    assert len(FakeBackend.calls) == 2  # another lookup is another entry


def test_a_changed_configuration_never_reads_the_old_entries(tmp_path: Path, name: str) -> None:
    need(redis_running(), "no Redis on 127.0.0.1:6379")
    FakeBackend.calls.clear()
    sources(tmp_path, name)[name].lookup(LookupQuery(email="ada@example.com"))
    sources(tmp_path, name, max_results=3)[name].lookup(LookupQuery(email="ada@example.com"))
    assert len(FakeBackend.calls) == 2


def test_a_redis_that_is_down_costs_the_lookup_nothing_but_the_cache(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    FakeBackend.calls.clear()
    source = sources(tmp_path, name, cache=dead)[name]
    for _ in range(3):
        assert source.lookup(LookupQuery(email="ada@example.com"))[0].customer_id == "42"
    assert len(FakeBackend.calls) == 3
    warnings = [r for r in caplog.records if "shared result cache" in r.getMessage()]
    assert len(warnings) == 1 and dead not in warnings[0].getMessage()


def test_values_are_json_and_come_back_as_they_were() -> None:
    found = [Customer({"customer_id": "7", "first_name": "Zoë", "Custom3": "<b>"})]
    text = CUSTOMERS.encode(found)
    assert text.startswith("[") and CUSTOMERS.decode(text) == found
    assert list(CUSTOMERS.decode(text)[0].fields) == ["customer_id", "first_name", "Custom3"]
    options = [Option("0", "Zero"), Option("cafe", "Café")]
    assert OPTIONS.decode(OPTIONS.encode(options)) == options


def test_the_cache_must_be_a_redis_address(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.cache: must be a Redis address"):
        fake_config({"x": {"backend": "fake"}}, tmp_path, {"cache": "memcached://x"})
