"""The third-party plugin example in docs/plugins.md, built, installed and used."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.backend_contract import PEOPLE
from tests.support.helpspot import assert_livelookup

DOC = Path(__file__).parent.parent / "docs" / "plugins.md"
EXAMPLE = re.compile(r"<!-- example-file: (\S+) -->\s*```\w*\n(.*?)```", re.DOTALL)
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The example package pip-installed into its own folder; the env that sees it."""
    source = tmp_path_factory.mktemp("example-src")
    files = EXAMPLE.findall(DOC.read_text(encoding="utf-8"))
    assert [name for name, _ in files] == ["pyproject.toml", "lookup_jsonfile.py"]
    for name, text in files:
        (source / name).write_text(text, encoding="utf-8")
    target = tmp_path_factory.mktemp("example-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {**os.environ, "PYTHONPATH": str(target)}


def test_example_plugin_is_registered(installed_example: dict[str, str]) -> None:
    done = subprocess.run(
        [str(BIN / "lookup-server"), "plugins"],
        env=installed_example,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "  jsonfile   lookup_jsonfile.JsonFileBackend  [livelookup]" in done.stdout


def test_example_plugin_answers_a_lookup(installed_example: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "people.json").write_text(json.dumps([p.as_fields() for p in PEOPLE]))
    config = tmp_path / "lookup.toml"
    config.write_text('[sources.people]\nbackend = "jsonfile"\npath = "people.json"\n')
    check = subprocess.run(
        [str(BIN / "lookup-server"), "check", "--config", str(config)],
        env=installed_example,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "ok   sources.people (jsonfile: livelookup)" in check.stdout, check.stderr
    done = subprocess.run(
        [
            str(BIN / "lookup-server"),
            "livelookup",
            "--config",
            str(config),
            "--source",
            "people",
            "--last_name=núñ",
        ],
        env=installed_example,
        capture_output=True,
        timeout=60,
        check=True,
    )
    (customer,) = assert_livelookup(done.stdout).customers
    assert customer["customer_id"] == "1002"
