"""Sources' result caches: in the process, or shared by every server in Redis.

A source with ``cache_ttl`` keeps what its backend answered for that long.
By default each process keeps its own; with ``[server] cache`` naming a Redis
server, every process of every server behind a load balancer reads and
writes one cache, so that they all give the same answer for the same lookup.

The shared cache never makes a lookup fail: when Redis is slow or down, the
lookup asks the backend, and the trouble is logged once when it starts and
once when it is over. Values are stored as JSON of the customers' fields (or
the options), never pickled: whoever can write to Redis must not be able to
make the server run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from lookup_server.core.models import Customer, Option

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds a cache read or write may take before the lookup goes on without it.
REDIS_TIMEOUT = 0.25


@dataclass(frozen=True)
class Codec(Generic[T]):
    """How a cached value is written as text and read back."""

    encode: Callable[[T], str]
    decode: Callable[[str], T]


CUSTOMERS: Codec[list[Customer]] = Codec(
    lambda found: json.dumps([list(c.fields.items()) for c in found], ensure_ascii=False),
    lambda text: [Customer(dict(pairs)) for pairs in json.loads(text)],
)
OPTIONS: Codec[list[Option]] = Codec(
    lambda found: json.dumps([[o.value, o.description] for o in found], ensure_ascii=False),
    lambda text: [Option(value, description) for value, description in json.loads(text)],
)


class ResultCache:
    """Results kept for ``ttl`` seconds in this process, at most ``size`` of them."""

    def __init__(
        self, ttl: float, size: int = 1024, on_lookup: Callable[[bool], None] | None = None
    ) -> None:
        self.ttl, self.size = ttl, size
        #: Told of each lookup while caching is on: True for a hit.
        self.on_lookup = on_lookup
        self._items: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_compute(
        self, make_key: Callable[[], Hashable], compute: Callable[[], T], codec: Codec[T]
    ) -> T:
        """The cached value for ``make_key()``, computed and stored when absent or stale.

        The key is built only when caching is on: lookups are hot, caching is opt-in.
        """
        if self.ttl <= 0:
            return compute()
        key, now = make_key(), time.monotonic()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] <= now:
                hit = None
            if hit is not None:
                self._items.move_to_end(key)
        self._told(hit is not None)
        if hit is not None:
            return hit[1]  # type: ignore[no-any-return]
        value = compute()
        with self._lock:
            self._items[key] = (now + self.ttl, value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def _told(self, hit: bool) -> None:
        if self.on_lookup is not None:
            self.on_lookup(hit)


class SharedResultCache(ResultCache):
    """Results kept for ``ttl`` seconds in Redis, for every process of every server.

    ``namespace`` names the source and what its answers depend on, so that a
    changed configuration never reads what the old one cached.
    """

    def __init__(
        self,
        ttl: float,
        url: str,
        namespace: str,
        on_lookup: Callable[[bool], None] | None = None,
    ) -> None:
        super().__init__(ttl, on_lookup=on_lookup)
        import redis  # only a server that shares its cache needs it

        # redis-py's pool notices a fork and opens new connections in the child.
        self._redis = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError, ValueError)
        self._prefix = f"lookup-server:cache:v1:{namespace}:"
        self._failing = False

    def get_or_compute(
        self, make_key: Callable[[], Hashable], compute: Callable[[], T], codec: Codec[T]
    ) -> T:
        """The value Redis holds for ``make_key()``; else computed, and stored there."""
        if self.ttl <= 0:
            return compute()
        key = self._prefix + hashlib.sha256(repr(make_key()).encode()).hexdigest()
        try:
            held = self._redis.get(key)
            text = held.decode("utf-8") if isinstance(held, bytes) else held
            found = None if text is None else codec.decode(text)
            self._ok()
        except self._errors as exc:
            self._failed(exc)
            found = None
        self._told(found is not None)
        if found is not None:
            return found
        value = compute()
        try:
            self._redis.set(key, codec.encode(value), px=max(1, int(self.ttl * 1000)))
        except self._errors as exc:
            self._failed(exc)
        return value

    def _failed(self, exc: BaseException) -> None:
        if not self._failing:
            log.warning(
                "the shared result cache ([server] cache) is unusable (%s); lookups ask "
                "their backends until it works again",
                type(exc).__name__,
            )
        self._failing = True

    def _ok(self) -> None:
        if self._failing:
            log.warning("the shared result cache ([server] cache) works again")
        self._failing = False


def namespace_of(name: str, settings: object, options: object) -> str:
    """The source's name and a digest of everything its answers depend on."""
    digest = hashlib.sha256(repr((settings, options)).encode()).hexdigest()[:16]
    return f"{name}:{digest}"
