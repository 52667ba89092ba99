"""Loading and validating the TOML configuration.

Every problem in a configuration is reported at once, each with its key path
and what to do, and the load aborts once (like mkdocs). Relative paths resolve
against the config file's folder; secrets may be ``{ env = "NAME" }``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from lookup_server.config import schema as config_schema
from lookup_server.config.schema import Context, Problem, Secret
from lookup_server.core.backend import Backend
from lookup_server.core.models import element_name_problem
from lookup_server.core.paths import state_dir
from lookup_server.core.registry import Group, PluginError, Registry
from lookup_server.core.sources import SourceBackend, SourceSettings
from lookup_server.core.targets import TargetBackend, TargetSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_VAR = "LOOKUP_SERVER_CONFIG"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KEY = re.compile(r"[A-Za-z0-9._~-]{16,}")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """The configuration has problems; ``problems`` lists all of them."""

    def __init__(self, origin: str, problems: list[Problem]) -> None:
        self.origin = origin
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"{origin}: {count}:\n{lines}")


#: HelpSpot's calls, each of which may have a key of its own (``[server] <kind>_key``).
ENDPOINT_KINDS = ("livelookup", "ajax", "push", "webhook")
#: Measured with PHP's http_build_query, as HelpSpot sends webhooks: a thread of 25
#: replies of 40 KB is 1.5 MB, and one attachment of 10 MB (HelpSpot's default cap
#: on e-mail attachments) stored in its database makes it 26 MB. 64 MiB holds two.
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
#: HelpSpot puts every custom field in the Live Lookup URL, encoded twice, and after
#: a trigger's Webhook action the whole thread too (HELPSPOT.md §1).
DEFAULT_MAX_REQUEST_LINE = 256 * 1024
MIN_MAX_REQUEST_LINE = 64 * 1024


@dataclass(frozen=True)
class ServerKeys:
    """The ``[server]`` table as written."""

    shared_key: Secret | None = None
    livelookup_key: Secret | None = None
    ajax_key: Secret | None = None
    push_key: Secret | None = None
    webhook_key: Secret | None = None
    allowed_ips: tuple[str, ...] = ()
    #: A file path, or a postgresql:// URL (with a password: only from the environment).
    outbox: Secret | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_request_line: int = DEFAULT_MAX_REQUEST_LINE
    outbox_retention_days: float = 30.0
    log_format: Literal["text", "json"] = "text"
    helpspot_url: str = ""
    cache: Secret | None = None


@dataclass(frozen=True)
class ConsoleKeys:
    """The ``[console]`` table as written."""

    password: Secret | None = None
    allowed_networks: tuple[str, ...] = ()
    metrics_networks: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConsoleSettings:
    """The ``[console]`` table, validated: the operator console and ``/metrics``.

    The console is off when the table is absent. Only the built-in demo may go
    without a password, and then only loopback callers are let in, whatever
    ``allowed_networks`` says.
    """

    enabled: bool = False
    password: Secret | None = None
    #: Who may reach the console (and ``/metrics`` with the console's credentials).
    allowed_networks: tuple[IPNetwork, ...] = ()
    #: Who may scrape ``/metrics`` without credentials (a Prometheus server).
    metrics_networks: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class ServerSettings:
    """The ``[server]`` table, validated."""

    #: The key of every call that has no key of its own in ``endpoint_keys``.
    shared_key: Secret | None = None
    allowed_ips: tuple[IPNetwork, ...] = ()
    #: The webhook outbox's SQLite file (default: next to the config file); with
    #: ``outbox_url`` the folder of this host's own state (activity, console secret).
    outbox: Path = Path("lookup-server-outbox.sqlite3")
    #: Larger request bodies are refused with 413 and nothing is stored.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: Delivered and failed webhooks, and refusals, are purged after this many
    #: days; 0 keeps them forever.
    outbox_retention_days: float = 30.0
    #: Longer request lines (Live Lookup URLs) are answered with an error naming the field.
    max_request_line: int = DEFAULT_MAX_REQUEST_LINE
    #: Endpoint kind (livelookup, ajax, push, webhook) -> its own key.
    endpoint_keys: Mapping[str, Secret] = field(default_factory=dict)
    #: "json": one JSON line per HelpSpot call, and every other log line as JSON too.
    log_format: str = "text"
    #: HelpSpot's address as staff open it (https://helpdesk.example.com), for the
    #: links back to a request that targets put into what they create.
    helpspot_url: str = ""
    #: A Redis server (redis://, rediss://, unix://) that every process of every
    #: server shares for sources' result caches; None: each process its own.
    cache: Secret | None = None
    #: ``[server] outbox`` as a postgresql:// URL: one outbox for servers on several hosts.
    outbox_url: Secret | None = None

    @property
    def outbox_location(self) -> str | Path:
        """Where the webhook outbox is: the PostgreSQL URL (a secret), else the file."""
        return self.outbox_url.reveal() if self.outbox_url is not None else self.outbox

    def key_for(self, kind: str) -> Secret | None:
        """The one key that opens calls of ``kind``: its own, else the shared key."""
        return self.endpoint_keys.get(kind, self.shared_key)


@dataclass(frozen=True)
class SourceConfig:
    """One ``[sources.NAME]``: its settings, backend class and backend options."""

    settings: SourceSettings
    backend_class: type[SourceBackend[Any]]
    options: Any

    def create_backend(self) -> SourceBackend[Any]:
        """A new backend instance for this source."""
        return self.backend_class(self.options, self.settings)


@dataclass(frozen=True)
class TargetConfig:
    """One ``[targets.NAME]``: its settings, backend class and backend options."""

    settings: TargetSettings
    backend_class: type[TargetBackend[Any]]
    options: Any

    def create_backend(self) -> TargetBackend[Any]:
        """A new backend instance for this target."""
        return self.backend_class(self.options, self.settings)


@dataclass(frozen=True)
class Config:
    """A whole, valid configuration."""

    origin: str
    base_dir: Path
    server: ServerSettings = field(default_factory=ServerSettings)
    sources: Mapping[str, SourceConfig] = field(default_factory=dict)
    #: Request Push and webhook targets.
    targets: Mapping[str, TargetConfig] = field(default_factory=dict)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)


def demo_config_path() -> Path:
    """The built-in demo configuration, used when no config is given."""
    # Beside the demo package's own file, not through importlib.resources: every
    # load_config asks whether it loads the demo, and importing importlib.resources
    # cost a command-line lookup 10 ms (bench/README.md).
    import lookup_server.demo

    return Path(lookup_server.demo.__file__).with_name("config.toml")


def resolve_config_path(
    path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> Path:
    """``--config``, else ``$LOOKUP_SERVER_CONFIG``, else the demo."""
    env = os.environ if environ is None else environ
    chosen = path or env.get(ENV_VAR)
    return Path(chosen) if chosen else demo_config_path()


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    registry: Registry | None = None,
) -> Config:
    """Read, parse and validate a config file; raise ConfigError listing every problem."""
    file = resolve_config_path(path, environ)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(file), [Problem("(file)", "not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(file), [Problem("(file)", f"cannot read: {exc}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(file), [Problem("(file)", f"not valid TOML: {exc}")]) from None
    return config_from_mapping(
        raw,
        file.resolve().parent,
        origin=str(file),
        environ=environ,
        registry=registry,
        builtin_demo=file.resolve() == demo_config_path().resolve(),
    )


def config_from_mapping(
    raw: Mapping[str, Any],
    base_dir: Path,
    origin: str = "config",
    environ: Mapping[str, str] | None = None,
    registry: Registry | None = None,
    builtin_demo: bool = False,
) -> Config:
    """Validate an already-parsed configuration (what tests and load_config use).

    ``builtin_demo`` is for the demo shipped in the package: the one
    configuration whose console may go without a password.
    """
    ctx = Context(base_dir, dict(os.environ if environ is None else environ))
    registry = registry or Registry()
    for key in raw:
        if key not in ("server", "sources", "targets", "console"):
            ctx.problem(
                key,
                "unknown table (expected [server], [console], [sources.NAME], [targets.NAME])",
            )
    server = _server(_table(raw, "server", ctx), ctx)
    console = _console(raw, ctx, builtin_demo)
    helpspot_url = server.helpspot_url if server is not None else ""
    sources = {
        name: _source(name, table, ctx, registry)
        for name, table in _table(raw, "sources", ctx).items()
    }
    targets = {
        name: _target(name, table, ctx, registry, helpspot_url)
        for name, table in _table(raw, "targets", ctx).items()
    }
    if ctx.problems:
        raise ConfigError(origin, ctx.problems)
    assert server is not None and console is not None
    return Config(
        origin,
        base_dir,
        server,
        {k: v for k, v in sources.items() if v is not None},
        {k: v for k, v in targets.items() if v is not None},
        console,
    )


def _table(raw: Mapping[str, Any], key: str, ctx: Context) -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        ctx.problem(key, "must be a table")
        return {}
    return value


def _server(table: Mapping[str, Any], ctx: Context) -> ServerSettings | None:
    keys = config_schema.build(ServerKeys, table, "server", ctx)
    if keys is None:
        return None
    endpoint_keys = {
        kind: key for kind in ENDPOINT_KINDS if (key := getattr(keys, f"{kind}_key")) is not None
    }
    for name, secret in (
        ("shared_key", keys.shared_key),
        *((f"{kind}_key", key) for kind, key in endpoint_keys.items()),
    ):
        if secret is not None and not _KEY.fullmatch(secret.reveal()):
            # It travels in a URL query, a URL path, and after HelpSpot's http-post quirk
            # everything from a "?" on is cut off: only URL-unreserved characters survive all.
            ctx.problem(
                f"server.{name}",
                "must be at least 16 characters of A-Z a-z 0-9 - _ . ~ "
                "(generate one: python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')",
            )
    networks = _networks(keys.allowed_ips, "server.allowed_ips", ctx)
    if keys.max_body_bytes < 1024:
        ctx.problem("server.max_body_bytes", "must be at least 1024")
    if keys.max_request_line < MIN_MAX_REQUEST_LINE:
        ctx.problem(
            "server.max_request_line",
            f"must be at least {MIN_MAX_REQUEST_LINE} "
            "(HelpSpot puts every custom field in the Live Lookup URL)",
        )
    if keys.helpspot_url and not _is_web_address(keys.helpspot_url):
        ctx.problem(
            "server.helpspot_url",
            "must be HelpSpot's address as staff open it, e.g. https://helpdesk.example.com",
        )
    if keys.cache is not None and urlsplit(keys.cache.reveal()).scheme not in (
        "redis",
        "rediss",
        "unix",
    ):
        ctx.problem(
            "server.cache",
            'must be a Redis address: "redis://HOST:6379/0", "rediss://..." or "unix:///PATH"',
        )
    if not keys.outbox_retention_days >= 0:  # also NaN
        ctx.problem("server.outbox_retention_days", "must be 0 (keep forever) or more days")
    outbox, outbox_url = _outbox(keys.outbox, ctx)
    settings = ServerSettings(
        keys.shared_key,
        tuple(networks),
        outbox,
        max_body_bytes=keys.max_body_bytes,
        outbox_retention_days=keys.outbox_retention_days,
        max_request_line=keys.max_request_line,
        endpoint_keys=endpoint_keys,
        log_format=keys.log_format,
        helpspot_url=keys.helpspot_url.rstrip("/"),
        cache=keys.cache,
        outbox_url=outbox_url,
    )
    _check_ajax_key(settings, ctx)
    return settings


def _is_web_address(text: str) -> bool:
    parts = urlsplit(text)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query


def _networks(cidrs: tuple[str, ...], path: str, ctx: Context) -> tuple[IPNetwork, ...]:
    networks = []
    for i, cidr in enumerate(cidrs):
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            ctx.problem(f"{path}[{i}]", f"{cidr!r} is not an IP address or CIDR")
    return tuple(networks)


def _console(raw: Mapping[str, Any], ctx: Context, builtin_demo: bool) -> ConsoleSettings | None:
    if "console" not in raw:
        return ConsoleSettings()
    keys = config_schema.build(ConsoleKeys, _table(raw, "console", ctx), "console", ctx)
    if keys is None:
        return None
    if keys.password is None and not builtin_demo:
        ctx.problem(
            "console.password",
            'required: { env = "LOOKUP_SERVER_CONSOLE_PASSWORD" } (only the built-in demo '
            "may go without one); remove [console] to turn the console off",
        )
    elif keys.password is not None and len(keys.password.reveal()) < 12:
        ctx.problem("console.password", "must be at least 12 characters")
    if not keys.allowed_networks:
        ctx.problem(
            "console.allowed_networks",
            'required: the networks the console may be reached from, e.g. ["127.0.0.1/32"]',
        )
    return ConsoleSettings(
        True,
        keys.password,
        _networks(keys.allowed_networks, "console.allowed_networks", ctx),
        _networks(keys.metrics_networks, "console.metrics_networks", ctx),
    )


def _check_ajax_key(server: ServerSettings, ctx: Context) -> None:
    """An AJAX field's key is in every request page's HTML: it must open nothing else."""
    ajax = server.endpoint_keys.get("ajax")
    if ajax is None:
        return
    others = [
        kind
        for kind in ENDPOINT_KINDS
        if kind != "ajax"
        and (key := server.key_for(kind)) is not None
        and key.reveal() == ajax.reveal()
    ]
    if others:
        ctx.problem(
            "server.ajax_key",
            "must differ from the key of "
            + ", ".join(others)
            + ": HelpSpot writes the AJAX field's URL, key included, into every request "
            "page, so every staff member can read it",
        )


def _outbox(value: Secret | None, ctx: Context) -> tuple[Path, Secret | None]:
    """``[server] outbox``: the SQLite file, or the local state folder's file and the URL."""
    if value is None:
        return default_outbox(ctx.base_dir), None
    # the one test of which store; not before it is needed: the webhooks package
    # takes 7 ms to import, which a command-line lookup would pay (bench/README.md)
    from lookup_server.webhooks.interface import is_postgres

    text = value.reveal()
    if not is_postgres(text):
        if not text:
            ctx.problem("server.outbox", "must be a file path or a postgresql:// URL")
        return (ctx.base_dir / os.path.expanduser(text or ".")).resolve(), None
    parts = urlsplit(text)
    if value.origin == "literal" and (parts.password or "password=" in parts.query.lower()):
        ctx.problem(
            "server.outbox",
            "holds a password in the config file: put the whole URL in an environment "
            'variable (outbox = { env = "LOOKUP_SERVER_OUTBOX" }), or the password in '
            "PGPASSWORD or ~/.pgpass",
        )
    return default_outbox(ctx.base_dir), value


def default_outbox(base_dir: Path) -> Path:
    """Next to the config file, or in the user's state folder when that one is read-only.

    State, not cache: the outbox holds webhooks that exist nowhere else.
    """
    if os.access(base_dir, os.W_OK):
        return base_dir / "lookup-server-outbox.sqlite3"
    return state_dir() / "outbox.sqlite3"


B = TypeVar("B", bound=Backend[Any])


def _backend_class(path: str, table: Any, ctx: Context, group: Group[B]) -> type[B] | None:
    """The backend class a source or target table names, or None after a problem."""
    if not _NAME.fullmatch(path.split(".", 1)[1]):
        ctx.problem(path, "a name may only use letters, digits, '_' and '-'")
    if not isinstance(table, dict):
        ctx.problem(path, "must be a table")
        return None
    backend_name = table.get("backend")
    if not isinstance(backend_name, str):
        ctx.problem(
            f"{path}.backend", "required: the name of a backend (see lookup-server plugins)"
        )
        return None
    try:
        return group.load(backend_name)
    except PluginError as exc:
        ctx.problem(f"{path}.backend", str(exc))
        return None


def _target(
    name: str, table: Any, ctx: Context, registry: Registry, helpspot_url: str
) -> TargetConfig | None:
    return _plugged(
        f"targets.{name}",
        table,
        ctx,
        registry.targets,
        TargetSettings,
        TargetConfig,
        _check_target_values,
        given={"helpspot_url": helpspot_url},
    )


def _source(name: str, table: Any, ctx: Context, registry: Registry) -> SourceConfig | None:
    return _plugged(
        f"sources.{name}",
        table,
        ctx,
        registry.sources,
        SourceSettings,
        SourceConfig,
        _check_source_values,
    )


P = TypeVar("P", SourceConfig, TargetConfig)


def _plugged(
    path: str,
    table: Any,
    ctx: Context,
    group: Group[Any],
    settings_class: type[Any],
    config_class: type[P],
    check_values: Callable[[Mapping[str, Any], str, Context], None],
    given: Mapping[str, Any] | None = None,
) -> P | None:
    """One ``[sources.NAME]`` or ``[targets.NAME]`` table, every problem reported.

    ``given`` are settings that come from elsewhere in the configuration (the
    server's helpspot_url), never from the table itself.
    """
    backend_class = _backend_class(path, table, ctx, group)
    if not isinstance(table, dict):
        return None
    # unknown keys are reported once, by the backend's build below, which knows both sets
    name = path.split(".", 1)[1]
    given = {"name": name, **(given or {})}
    for key in given.keys() & table.keys():
        ctx.problem(f"{path}.{key}", "unknown key (it is set elsewhere, not per table)")
    settings = config_schema.build(
        settings_class, {**table, **given}, path, ctx, also_known=frozenset(table)
    )
    check_values(table, path, ctx)
    if backend_class is None:
        return None
    core_keys = frozenset(f.name for f in dataclasses.fields(settings_class))
    options = config_schema.build(backend_class.Options, table, path, ctx, also_known=core_keys)
    if settings is None or options is None:
        return None
    problems = backend_class.validate(options, settings)
    for key, message in problems:
        ctx.problem(f"{path}.{key}" if key else path, message)
    return None if problems else config_class(settings, backend_class, options)


def _check_timeout(table: Mapping[str, Any], path: str, ctx: Context) -> None:
    """The timeout of a source or target (on the raw value, like every range check)."""
    timeout = table.get("timeout", 1)
    if isinstance(timeout, int | float) and not 0 < timeout <= 300:
        ctx.problem(f"{path}.timeout", "must be more than 0 and at most 300 seconds")


def _check_target_values(table: Mapping[str, Any], path: str, ctx: Context) -> None:
    """The ranges of a target's keys (on the raw values, like every range check)."""
    _check_timeout(table, path, ctx)
    failures = table.get("breaker_failures", 0)
    if isinstance(failures, int) and failures < 0:
        ctx.problem(f"{path}.breaker_failures", "must be 0 (never pause) or more")
    concurrent = table.get("max_concurrent", 0)
    if isinstance(concurrent, int) and concurrent < 0:
        ctx.problem(f"{path}.max_concurrent", "must be 0 (no limit) or more")
    rate = table.get("max_per_second", 0)
    if isinstance(rate, int | float) and not 0 <= rate <= 1000:
        ctx.problem(f"{path}.max_per_second", "must be 0 (no limit) or more, at most 1000")
    probe = table.get("breaker_probe_seconds", 60)
    if isinstance(probe, int | float) and not 1 <= probe <= 86400:
        ctx.problem(f"{path}.breaker_probe_seconds", "must be at least 1 and at most 86400")


def _check_source_values(table: Mapping[str, Any], path: str, ctx: Context) -> None:
    """Range and name checks the types cannot express.

    They read the raw values, so that they are reported even when another key
    of the same source has the wrong type.
    """
    max_results = table.get("max_results", 1)
    if isinstance(max_results, int) and max_results < 1:
        ctx.problem(f"{path}.max_results", "must be at least 1")
    _check_timeout(table, path, ctx)
    for key in ("columns", "labels", "html_fields", "fields"):
        for element in table.get(key) or ():
            problem = element_name_problem(element) if isinstance(element, str) else None
            if problem:
                ctx.problem(f"{path}.{key}", f"{element!r} {problem}")
