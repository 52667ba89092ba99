"""Backends found through entry points: one group for sources, one for targets."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import EntryPoint

import pytest

from lookup_server.core.registry import SOURCES_GROUP, TARGETS_GROUP, PluginError, Registry
from lookup_server.plugin import (
    Customer,
    NoOptions,
    PushRequest,
    SearchTerm,
    SourceBackend,
    TargetBackend,
)

HERE = "tests.core.test_registry"


class GoodSource(SourceBackend[NoOptions]):
    Options = NoOptions

    def find(self, term: SearchTerm, limit: int) -> Sequence[Customer]:
        return []


class GoodTarget(TargetBackend[NoOptions]):
    Options = NoOptions

    def push(self, request: PushRequest) -> str:
        return "1"


class WrongSignature(SourceBackend[NoOptions]):
    Options = NoOptions

    def find(self, term):  # type: ignore[override]  # the mistake under test
        return []


class OptionsNotADataclass(SourceBackend[NoOptions]):
    Options = dict  # the mistake under test

    def find(self, term: SearchTerm, limit: int) -> Sequence[Customer]:
        return []


class NoCapability(TargetBackend[NoOptions]):
    Options = NoOptions


def registry(*cases: tuple[str, str, str]) -> Registry:
    return Registry(EntryPoint(name, f"{HERE}:{cls}", group) for name, cls, group in cases)


def test_the_built_in_backends_are_registered_in_their_groups() -> None:
    installed = Registry()
    assert installed.sources.names() == [
        "csv",
        "highrise",
        "ldap",
        "msgraph",
        "odbc",
        "shopify",
        "thermostat",
    ]
    assert installed.targets.names() == [
        "activecollab",
        "campfire",
        "fogbugz",
        "github",
        "helpspot",
        "highrise",
        "http",
        "jira",
        "slack",
        "thermostat",
    ]
    # the same name may be a source and a target: they are different classes
    source: type = installed.sources.load("highrise")
    assert source is not installed.targets.load("highrise")


def test_a_group_loads_its_own_base_class_and_keeps_it() -> None:
    reg = registry(("s", "GoodSource", SOURCES_GROUP), ("t", "GoodTarget", TARGETS_GROUP))
    assert reg.sources.names() == ["s"] and reg.targets.names() == ["t"]
    assert reg.sources.load("s") is GoodSource is reg.sources.load("s")
    assert reg.targets.load("t").capabilities() == {"push"}


def test_an_unknown_name_lists_what_is_installed_in_that_group() -> None:
    reg = registry(("s", "GoodSource", SOURCES_GROUP), ("t", "GoodTarget", TARGETS_GROUP))
    with pytest.raises(PluginError, match=r"no backend named 't' .* for sources \(installed: s\)"):
        reg.sources.load("t")
    with pytest.raises(PluginError, match=r"for targets \(installed: t\)"):
        reg.targets.load("nope")


def test_a_source_registered_as_a_target_is_rejected() -> None:
    reg = registry(("s", "GoodSource", TARGETS_GROUP))
    with pytest.raises(
        PluginError, match=r"must be a subclass of lookup_server.plugin.TargetBackend"
    ):
        reg.targets.load("s")


@pytest.mark.parametrize(
    "cls,group,message",
    [
        ("WrongSignature", SOURCES_GROUP, "method find(self, term) must take (self, term, limit)"),
        ("OptionsNotADataclass", SOURCES_GROUP, "Options must be a dataclass"),
        ("NoCapability", TARGETS_GROUP, "implements no capability (override push, ...)"),
    ],
)
def test_a_malformed_plugin_is_rejected_when_it_loads(cls: str, group: str, message: str) -> None:
    reg = registry(("bad", cls, group))
    which = reg.sources if group == SOURCES_GROUP else reg.targets
    loaded, failures = which.load_all()
    assert loaded == {}
    assert [f.name for f in failures] == ["bad"] and message in failures[0].error


@pytest.mark.parametrize(
    "value,fix",
    [
        ("lookup_plugins.no_such_module:X", "pip install 'lookup-server[all]'"),
        ("someone_elses_plugin:X", "install or repair the package that provides it"),
    ],
)
def test_an_import_failure_names_the_backend_and_the_fix(value: str, fix: str) -> None:
    reg = Registry([EntryPoint("gone", value, SOURCES_GROUP)])
    with pytest.raises(PluginError) as raised:
        reg.sources.load("gone")
    message = str(raised.value)
    assert message.startswith(f"backend 'gone' ({value}, group {SOURCES_GROUP}) failed to import")
    assert "ModuleNotFoundError" in message and message.endswith(fix)


def test_load_all_keeps_the_good_and_reports_the_bad() -> None:
    reg = registry(("good", "GoodSource", SOURCES_GROUP), ("bad", "WrongSignature", SOURCES_GROUP))
    loaded, failures = reg.sources.load_all()
    assert loaded == {"good": GoodSource}
    assert str(failures[0]).startswith(f"bad ({HERE}:WrongSignature): backend 'bad'")


def test_entry_points_extend_a_registry_with_both_groups() -> None:
    reg = registry(("s", "GoodSource", SOURCES_GROUP), ("t", "GoodTarget", TARGETS_GROUP))
    again = Registry(reg.entry_points())
    assert again.sources.names() == ["s"] and again.targets.names() == ["t"]
