"""The layers of lookup-server, read from its imports: what ruff's banned-api cannot say.

ruff (TID251) keeps Flask and werkzeug in the web package and lxml in the
renderer, but it bans a library for whole files and knows nothing of our own
packages. These rules do: each names the modules it covers and what those may
not import. Every import counts, also one inside a function or under
TYPE_CHECKING. Each rule is shown to catch a bad import (BREAKS) and to let the
good ones through (KEEPS), so a rule that silently matches nothing fails here.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]


def within(name: str, package: str) -> bool:
    """True when ``name`` is ``package`` or inside it (``lookup_server.webhooks`` is not web)."""
    return name == package or name.startswith(package + ".")


def module_of(file: str) -> tuple[str, bool]:
    """The import name of a source file (relative to the repository), and whether it is a package.

    Plugins are imported as ``lookup_plugins`` from the ``plugins`` folder.
    """
    path = PurePosixPath(file)
    parts = list(path.with_suffix("").parts)
    if parts[0] == "plugins":
        parts = parts[1:]
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


@dataclass(frozen=True)
class Import:
    """One name a module imports, made absolute, and the statement that imports it."""

    line: int
    name: str  # a module, or ``module.attribute`` for ``from module import attribute``
    statement: str


def imports(file: str, source: str) -> Iterator[Import]:
    """Every import in ``source``, at any depth, relative ones resolved against ``file``."""
    module, is_package = module_of(file)
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source, file)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(node.lineno, alias.name, ast.unparse(node))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                name = base if alias.name == "*" else f"{base}.{alias.name}"
                yield Import(node.lineno, name, ast.unparse(node))


@dataclass(frozen=True)
class Rule:
    """Modules that ``covers`` accepts may not import a name that ``forbids`` accepts."""

    name: str
    covers: Callable[[str], bool]  # the importing module's name
    forbids: Callable[[str, str], bool]  # (importing module, imported name)
    why: str

    def problems(self, file: str, source: str) -> list[str]:
        """One line per forbidden import in ``source``, naming the file and the import."""
        module, _ = module_of(file)
        if not self.covers(module):
            return []
        return [
            f"{file}:{found.line}: {found.statement} (imports {found.name}): {self.why}"
            for found in imports(file, source)
            if self.forbids(module, found.name)
        ]


#: What builds on the core. config.settings and plugin import the core, so the core
#: importing them would be a cycle; config.schema (Secret, Problem) imports nothing
#: of ours and stays open to it.
ABOVE_CORE = (
    "lookup_server.web",
    "lookup_server.helpspot",
    "lookup_server.webhooks",
    "lookup_server.runtime",
    "lookup_server.telemetry",
    "lookup_server.cli",
    "lookup_server.__main__",
    "lookup_server.config.settings",
    "lookup_server.plugin",
)

#: The modules that may build the Flask app: ``lookup-server serve`` and gunicorn's wsgi:app.
WEB_USERS = ("lookup_server.cli", "wsgi")


def _library_misplaced(module: str, name: str) -> bool:
    if within(name, "lxml"):
        return module != "lookup_server.helpspot.render"
    if within(name, "flask") or within(name, "werkzeug"):
        return not within(module, "lookup_server.web")
    return False


PLUGIN_API = Rule(
    "plugins-use-the-plugin-api",
    covers=lambda module: within(module, "lookup_plugins"),
    forbids=lambda _, name: (
        within(name, "lookup_server") and not within(name, "lookup_server.plugin")
    ),
    why="a plugin reaches lookup_server only through lookup_server.plugin, the public API",
)
CORE_AT_THE_BOTTOM = Rule(
    "core-is-the-bottom-layer",
    covers=lambda module: within(module, "lookup_server.core"),
    forbids=lambda _, name: any(within(name, above) for above in ABOVE_CORE),
    why="lookup_server.core is the bottom layer: it imports nothing that builds on it",
)
WEB_ON_TOP = Rule(
    "only-the-entry-points-import-web",
    covers=lambda module: not within(module, "lookup_server.web") and module not in WEB_USERS,
    forbids=lambda _, name: within(name, "lookup_server.web"),
    why="the web layer is the top: only cli.py (serve) and wsgi.py (gunicorn) build on it",
)
LIBRARIES = Rule(
    "flask-in-web-lxml-in-render",
    # per module, which ruff's per-file-ignores cannot say: web/ may not use lxml
    covers=lambda module: within(module, "lookup_server"),
    forbids=_library_misplaced,
    why="Flask and werkzeug belong in lookup_server/web/, lxml in lookup_server/helpspot/render.py",
)
#: What the work reported to telemetry is done in: a report never reaches back into it.
REPORTERS = ("lookup_server.runtime", "lookup_server.helpspot", "lookup_server.cli")
TELEMETRY_HEARS = Rule(
    "telemetry-only-hears",
    covers=lambda module: within(module, "lookup_server.telemetry"),
    forbids=lambda _, name: any(within(name, reporter) for reporter in REPORTERS),
    why="telemetry is told of the work (runtime, helpspot, cli report to it) and never calls it",
)
RULES = (PLUGIN_API, CORE_AT_THE_BOTTOM, WEB_ON_TOP, LIBRARIES, TELEMETRY_HEARS)


def source_files() -> list[str]:
    """Every module of the server and of the built-in plugins, and wsgi.py."""
    found = [
        *ROOT.joinpath("lookup_server").rglob("*.py"),
        *ROOT.joinpath("plugins", "lookup_plugins").rglob("*.py"),
        ROOT / "wsgi.py",
    ]
    return sorted(path.relative_to(ROOT).as_posix() for path in found)


def test_every_layer_is_scanned() -> None:
    modules = {module_of(file)[0] for file in source_files()}
    for expected in (
        "lookup_server.core.models",
        "lookup_server.web.blueprints.livelookup",
        "lookup_plugins.csv.backend",
        "lookup_plugins.csv",
        "wsgi",
    ):
        assert expected in modules


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_the_source_tree_keeps_the_layers(rule: Rule) -> None:
    problems = [
        problem
        for file in source_files()
        for problem in rule.problems(file, (ROOT / file).read_text(encoding="utf-8"))
    ]
    assert not problems, "\n".join(problems)


#: (rule, file, source, the import the problem must name): each must be caught.
BREAKS = [
    (
        PLUGIN_API,
        "plugins/lookup_plugins/x.py",
        "from lookup_server.core.models import Customer",
        "lookup_server.core.models.Customer",
    ),
    (PLUGIN_API, "plugins/lookup_plugins/csv/x.py", "import lookup_server", "lookup_server"),
    (
        PLUGIN_API,
        "plugins/lookup_plugins/x.py",
        "from lookup_server import core",
        "lookup_server.core",
    ),
    (
        PLUGIN_API,
        "plugins/lookup_plugins/x.py",
        "def f():\n    from lookup_server.runtime.service import Sources",
        "lookup_server.runtime.service.Sources",
    ),
    (
        CORE_AT_THE_BOTTOM,
        "lookup_server/core/x.py",
        "from lookup_server.helpspot.render import render_livelookup",
        "lookup_server.helpspot.render.render_livelookup",
    ),
    (
        CORE_AT_THE_BOTTOM,
        "lookup_server/core/x.py",
        "if TYPE_CHECKING:\n    from lookup_server.webhooks import Outbox",
        "lookup_server.webhooks.Outbox",
    ),
    (
        CORE_AT_THE_BOTTOM,
        "lookup_server/core/__init__.py",
        "from ..runtime import service",
        "lookup_server.runtime.service",
    ),
    (
        CORE_AT_THE_BOTTOM,
        "lookup_server/core/x.py",
        "import lookup_server.cli",
        "lookup_server.cli",
    ),
    (
        CORE_AT_THE_BOTTOM,
        "lookup_server/core/x.py",
        "from lookup_server.config.settings import Config",
        "lookup_server.config.settings.Config",
    ),
    (
        CORE_AT_THE_BOTTOM,
        "lookup_server/core/x.py",
        "from lookup_server import plugin",
        "lookup_server.plugin",
    ),
    (
        WEB_ON_TOP,
        "lookup_server/helpspot/x.py",
        "from lookup_server.web.auth import redact",
        "lookup_server.web.auth.redact",
    ),
    (WEB_ON_TOP, "lookup_server/webhooks/x.py", "from ..web import app", "lookup_server.web.app"),
    (
        WEB_ON_TOP,
        "plugins/lookup_plugins/x.py",
        "import lookup_server.web.app",
        "lookup_server.web.app",
    ),
    (LIBRARIES, "lookup_server/web/x.py", "from lxml import etree", "lxml.etree"),
    (LIBRARIES, "lookup_server/helpspot/render.py", "from flask import Response", "flask.Response"),
    (LIBRARIES, "lookup_server/core/x.py", "import werkzeug.serving", "werkzeug.serving"),
    (
        TELEMETRY_HEARS,
        "lookup_server/telemetry/x.py",
        "from lookup_server.runtime.service import Sources",
        "lookup_server.runtime.service.Sources",
    ),
    (
        TELEMETRY_HEARS,
        "lookup_server/telemetry/x.py",
        "from ..helpspot import answers",
        "lookup_server.helpspot.answers",
    ),
    (
        CORE_AT_THE_BOTTOM,
        "lookup_server/core/x.py",
        "from lookup_server.telemetry import Telemetry",
        "lookup_server.telemetry.Telemetry",
    ),
]


@pytest.mark.parametrize(("rule", "file", "source", "imported"), BREAKS)
def test_a_bad_import_is_caught(rule: Rule, file: str, source: str, imported: str) -> None:
    (problem,) = rule.problems(file, source)
    assert problem.startswith(f"{file}:") and f"(imports {imported})" in problem


#: (rule, file, source): each must pass.
KEEPS = [
    (PLUGIN_API, "plugins/lookup_plugins/x.py", "from lookup_server.plugin import Customer"),
    (PLUGIN_API, "plugins/lookup_plugins/x.py", "from lookup_server import plugin"),
    (
        PLUGIN_API,
        "plugins/lookup_plugins/x.py",
        "from . import http_client\nimport lookup_plugins.csv",
    ),
    (PLUGIN_API, "plugins/lookup_plugins/csv/backend.py", "from .index import CsvIndex"),
    (
        CORE_AT_THE_BOTTOM,
        "lookup_server/core/x.py",
        "from lookup_server.core.models import Customer",
    ),
    (
        CORE_AT_THE_BOTTOM,
        "lookup_server/core/x.py",
        "from lookup_server.config.schema import Secret",
    ),
    (
        CORE_AT_THE_BOTTOM,
        "lookup_server/plugin.py",
        "from lookup_server.config.schema import Secret",
    ),
    (WEB_ON_TOP, "lookup_server/cli.py", "from lookup_server.web.app import create_app"),
    (WEB_ON_TOP, "wsgi.py", "from lookup_server.web.app import create_app"),
    (WEB_ON_TOP, "lookup_server/web/blueprints/x.py", "from ..auth import redact"),
    (WEB_ON_TOP, "lookup_server/runtime/x.py", "from lookup_server.webhooks import Outbox"),
    (LIBRARIES, "lookup_server/helpspot/render.py", "from lxml import etree"),
    (LIBRARIES, "lookup_server/web/x.py", "from flask import Flask\nfrom werkzeug import serving"),
    (LIBRARIES, "plugins/lookup_plugins/x.py", "from lxml import etree"),
    (TELEMETRY_HEARS, "lookup_server/telemetry/x.py", "from lookup_server.webhooks import Outbox"),
    (
        TELEMETRY_HEARS,
        "lookup_server/runtime/x.py",
        "from lookup_server.telemetry import Telemetry",
    ),
]


@pytest.mark.parametrize(("rule", "file", "source"), KEEPS)
def test_an_allowed_import_passes(rule: Rule, file: str, source: str) -> None:
    assert rule.problems(file, source) == []
