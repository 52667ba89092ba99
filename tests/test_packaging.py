"""setup.cfg lists every package: a plain ``pip install .`` installs only those listed."""

from __future__ import annotations

import configparser

from tests.conftest import ROOT


def listed_packages() -> set[str]:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg", encoding="utf-8")
    return {line.strip() for line in setup["options"]["packages"].splitlines() if line.strip()}


def packages_in_the_tree() -> set[str]:
    found = set()
    for top, folder in (
        ("lookup_server", ROOT / "lookup_server"),
        ("lookup_plugins", ROOT / "plugins" / "lookup_plugins"),
    ):
        for init in folder.rglob("__init__.py"):
            parts = init.parent.relative_to(folder).parts
            found.add(".".join((top, *parts)))
    return found


def test_every_package_is_listed_in_setup_cfg() -> None:
    missing = packages_in_the_tree() - listed_packages()
    assert not missing, f"add to setup.cfg [options] packages: {sorted(missing)}"
