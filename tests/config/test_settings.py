"""Configuration: every problem at once, with its key path and what to do."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from lookup_server.config.settings import ConfigError, config_from_mapping, load_config
from lookup_server.core.registry import SOURCES_GROUP as GROUP
from lookup_server.core.registry import Registry
from lookup_server.plugin import Secret, StoreLocation
from tests.support.fake_backends import fake_registry


def problems(
    raw: Mapping[str, object], tmp_path: Path, environ: Mapping[str, str] | None = None
) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(raw, tmp_path, environ=environ, registry=fake_registry())
    return [str(p) for p in info.value.problems]


def test_every_problem_is_reported_at_once_with_its_key_path(tmp_path: Path) -> None:
    found = problems(
        {
            "server": {"allowed_ips": ["10.0.0.0/8", "not-an-ip"], "shared_key": "short"},
            "sources": {
                "a": {"backend": "csv"},
                "b": {"backend": "nope"},
                "c": {
                    "backend": "csv",
                    "path": "x.csv",
                    "max_results": "ten",
                    "pth": 1,
                    "search": ["email", "fax"],
                    "timeout": 0,
                    "columns": ["bad name"],
                },
                "d e": {"backend": "csv", "path": "x.csv"},
                # a trailing line break once passed the name checks ("$" matches before it)
                "f\n": {
                    "backend": "csv",
                    "path": "x.csv",
                    "delimiter": ";;",
                    "html_fields": ["notes\n"],
                },
                "g": {"backend": "csv", "path": "x.csv", "fields": {"customer": "cust"}},
            },
            "extra": {},
        },
        tmp_path,
    )
    expected = [
        "extra: unknown table",
        "server.shared_key: must be at least 16 characters",
        "server.allowed_ips[1]: 'not-an-ip' is not an IP address or CIDR",
        "sources.a.path: required",
        "sources.b.backend: no backend named 'nope' is installed",
        "sources.c.max_results: must be a whole number",
        "sources.c.pth: unknown key (did you mean 'path'?)",
        "sources.c.search[1]: must be one of 'customer_id', 'email', 'phone', 'name'",
        "sources.c.timeout: must be more than 0",
        "sources.c.columns: 'bad name' is not a valid XML element name",
        "sources.d e: a name may only use letters, digits",
        "sources.f\n: a name may only use letters, digits",
        "sources.f\n.html_fields: 'notes\\n' is not a valid XML element name",
        "sources.f\n.delimiter: must be one character",
        "sources.g.fields: 'customer' is reserved: <customer> is part of the livelookup",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in found), (start, found)
    assert len(found) == len(expected)


def test_secrets_from_environment(tmp_path: Path) -> None:
    raw = {"server": {"shared_key": {"env": "LL_KEY"}}}
    config = config_from_mapping(raw, tmp_path, environ={"LL_KEY": "x" * 20})
    assert config.server.shared_key == Secret("x" * 20, "env LL_KEY")
    assert "xxxx" not in repr(config) and "xxxx" not in str(config.server.shared_key)
    assert problems(raw, tmp_path, environ={}) == [
        "server.shared_key: environment variable LL_KEY is not set"
    ]


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    file = tmp_path / "conf" / "lookup.toml"
    file.write_text('[sources.a]\nbackend = "csv"\npath = "data/c.csv"\n')
    config = load_config(file, environ={})
    assert config.sources["a"].options.path == tmp_path / "conf" / "data" / "c.csv"


def test_config_file_from_environment_variable(tmp_path: Path) -> None:
    file = tmp_path / "x.toml"
    file.write_text("[sources]\n")
    assert load_config(None, environ={"LOOKUP_SERVER_CONFIG": str(file)}).origin == str(file)


def test_no_config_means_the_demo() -> None:
    config = load_config(None, environ={})
    assert list(config.sources) == ["demo", "products"]
    assert config.sources["demo"].options.path.is_file()


@pytest.mark.parametrize(
    "text,message",
    [
        ("[sources.a\n", "not valid TOML"),
        ("sources = 3\n", "sources: must be a table"),
    ],
)
def test_unreadable_files_are_reported(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "bad.toml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(file)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.toml")


def test_broken_plugin_is_an_error_only_when_used(tmp_path: Path) -> None:
    eps = [
        *fake_registry().entry_points(),
        EntryPoint("broken", "tests.no_such_module:Backend", GROUP),
    ]
    registry = Registry(eps)
    config_from_mapping({"sources": {"a": {"backend": "fake"}}}, tmp_path, registry=registry)
    with pytest.raises(
        ConfigError,
        match=r"sources.b.backend: backend 'broken' .* failed to "
        r"import: ModuleNotFoundError",
    ):
        config_from_mapping({"sources": {"b": {"backend": "broken"}}}, tmp_path, registry=registry)


def test_outbox_retention_days(tmp_path: Path) -> None:
    assert config_from_mapping({}, tmp_path).server.outbox_retention_days == 30
    forever = config_from_mapping({"server": {"outbox_retention_days": 0}}, tmp_path)
    assert forever.server.outbox_retention_days == 0
    assert (
        config_from_mapping(
            {"server": {"outbox_retention_days": 7.5}}, tmp_path
        ).server.outbox_retention_days
        == 7.5
    )
    for bad, message in (
        (-1, "must be 0 (keep forever) or more days"),
        (float("nan"), "must be 0 (keep forever) or more days"),
        ("30", "must be a number"),
    ):
        assert problems({"server": {"outbox_retention_days": bad}}, tmp_path) == [
            f"server.outbox_retention_days: {message}"
        ]


def test_outbox_is_a_file_or_a_postgresql_url(tmp_path: Path) -> None:
    assert config_from_mapping({}, tmp_path).server.outbox_location == (
        tmp_path / "lookup-server-outbox.sqlite3"
    )
    relative = config_from_mapping({"server": {"outbox": "state/o.sqlite3"}}, tmp_path)
    assert relative.server.outbox_location == tmp_path / "state" / "o.sqlite3"
    for url in ("postgresql://lookup@db.example/outbox", "postgres://db.example/o"):
        server = config_from_mapping({"server": {"outbox": url}}, tmp_path).server
        assert server.outbox_location == url
        # this host's own state (activity, console secret) stays in a local folder
        assert server.outbox == tmp_path / "lookup-server-outbox.sqlite3"


def test_an_outbox_password_comes_only_from_the_environment(tmp_path: Path) -> None:
    url = "postgresql://lookup:hunter2@db.example/outbox"
    for written in (url, "postgresql://lookup@db.example/outbox?password=hunter2"):
        (problem,) = problems({"server": {"outbox": written}}, tmp_path)
        assert problem.startswith("server.outbox: holds a password in the config file")
        assert "hunter2" not in problem
    raw = {"server": {"outbox": {"env": "OUTBOX_URL"}}}
    server = config_from_mapping(raw, tmp_path, environ={"OUTBOX_URL": url}).server
    assert server.outbox_location == url
    assert "hunter2" not in repr(server) and "hunter2" not in str(server.outbox_url)


def test_a_targets_store_is_a_file_or_a_postgresql_url_its_password_from_the_environment(
    tmp_path: Path,
) -> None:
    def store_of(store: object, environ: Mapping[str, str] | None = None) -> StoreLocation:
        target = {"backend": "http", "url": "https://crm.example/in", "store": store}
        config = config_from_mapping({"targets": {"crm": target}}, tmp_path, environ=environ)
        location = config.targets["crm"].options.store
        assert isinstance(location, StoreLocation)
        return location

    assert store_of("state/pushes.sqlite3") == StoreLocation(
        path=tmp_path / "state" / "pushes.sqlite3"
    )
    shared = store_of("postgresql://lookup@db.example/helpspot")
    assert shared.path is None and shared.url is not None
    assert shared.url.reveal() == "postgresql://lookup@db.example/helpspot"
    secret = "postgresql://lookup:hunter2@db.example/helpspot"
    from_env = store_of({"env": "CRM_STORE"}, {"CRM_STORE": secret})
    assert from_env.url is not None and from_env.url.reveal() == secret
    assert "hunter2" not in repr(from_env) and "hunter2" not in str(from_env)
    hook = {"backend": "http", "url": "https://crm.example/in"}
    for written, said in (
        (secret, "holds a password in the config file"),
        ("", "must be a file path or a postgresql:// URL"),
        (7, 'must be a string or { env = "VARIABLE" }'),
    ):
        (problem,) = problems({"targets": {"crm": {**hook, "store": written}}}, tmp_path)
        assert problem.startswith(f"targets.crm.store: {said}") and "hunter2" not in problem


def test_breaker_settings_of_a_target_are_checked(tmp_path: Path) -> None:
    hook = {"backend": "http", "url": "https://hooks.example/in"}
    raw = {
        "targets": {
            "a": {**hook, "breaker_failures": -1, "breaker_probe_seconds": 0},
            "b": {**hook, "breaker_failures": "five", "max_concurrent": -2},
        }
    }
    with pytest.raises(ConfigError) as info:
        config_from_mapping(raw, tmp_path)
    found = [str(p) for p in info.value.problems]
    for start in (
        "targets.a.breaker_failures: must be 0 (never pause) or more",
        "targets.a.breaker_probe_seconds: must be at least 1 and at most 86400",
        "targets.b.breaker_failures: must be a whole number",
        "targets.b.max_concurrent: must be 0 (no limit) or more",
    ):
        assert any(p.startswith(start) for p in found), (start, found)
    ok = config_from_mapping({"targets": {"c": {**hook, "breaker_failures": 5}}}, tmp_path)
    assert ok.targets["c"].settings.breaker_failures == 5
    assert ok.targets["c"].settings.breaker_probe_seconds == 60


def test_delivery_rate_and_order_of_a_target_are_checked(tmp_path: Path) -> None:
    hook = {"backend": "http", "url": "https://hooks.example/in"}
    raw = {
        "targets": {
            "a": {**hook, "max_per_second": -1},
            "b": {**hook, "max_per_second": "x", "ordered": "yes"},
        }
    }
    with pytest.raises(ConfigError) as info:
        config_from_mapping(raw, tmp_path)
    found = [str(p) for p in info.value.problems]
    for start in (
        "targets.a.max_per_second: must be 0 (no limit) or more",
        "targets.b.max_per_second: must be a number",
        "targets.b.ordered: must be true or false",
    ):
        assert any(p.startswith(start) for p in found), (start, found)
    ok = config_from_mapping(
        {"targets": {"c": {**hook, "max_per_second": 1, "ordered": True}}}, tmp_path
    )
    assert ok.targets["c"].settings.max_per_second == 1.0
    assert ok.targets["c"].settings.ordered
