"""``log_format = "json"``: one JSON line per HelpSpot call, every other line JSON, no key."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from lookup_server.telemetry import CallRecord
from lookup_server.telemetry.json_log import CALL_LOGGER, JsonFormatter
from lookup_server.web.access_log import formatter_for
from tests.conftest import MakeApp, free_port
from tests.support.prometheus import CONSOLE, PASSWORD
from tests.web.test_worker import KEY as GUNICORN_KEY
from tests.web.test_worker import lookup_path, serve
from tests.webhooks.conftest import HANG_GUARD

KEY = "json-log-key_0123456789abcdef"
RECORD_FIELDS = {f.name for f in dataclasses.fields(CallRecord)}
LINE_FIELDS = {"time", "level", "logger", "message"}

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def json_lines() -> Iterator[Lines]:
    """The root logger writing JSON, as configure_logging("json") sets it up; its lines so far.

    Installed before the app is built, so that the app's key filter goes on it too.
    """
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter_for("json"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def config(people_csv: Path, log_format: str) -> dict[str, Any]:
    return {
        "server": {"shared_key": KEY, "log_format": log_format},
        "sources": {"people": {"backend": "csv", "path": str(people_csv)}},
    }


def test_each_call_is_one_line_of_exactly_its_record(
    make_app: MakeApp, people_csv: Path, json_lines: Lines
) -> None:
    client = make_app(config(people_csv, "json")).test_client()
    client.get(f"/livelookup/people?customer_id=1001&ll_key={KEY}")
    client.get("/livelookup/people?customer_id=1001&ll_key=wrong-key-0123456789")
    client.get("/healthz")  # not one of HelpSpot's calls
    calls = [line for line in json_lines() if "endpoint" in line]
    assert [(c["outcome"], c["status"]) for c in calls] == [("found", 200), ("refused", 403)]
    for call in calls:
        assert set(call) == RECORD_FIELDS | {"time", "level"}
        assert call["level"] == "INFO" and datetime.fromisoformat(call["time"]).tzinfo
    found, refused = calls
    assert found["name"] == "people" and found["count"] == 1 and found["remote_addr"]
    assert found["path"] == "/livelookup/people?customer_id=1001&ll_key=***"
    assert refused["detail"] == "missing or wrong shared key (ll_key)"


def test_no_line_shows_a_key_wherever_the_caller_put_it(
    make_app: MakeApp, people_csv: Path, json_lines: Lines
) -> None:
    client = make_app(config(people_csv, "json")).test_client()
    # the key as the source's name: in the record's name, its reason and its path
    assert client.get(f"/livelookup/{KEY}?ll_key={KEY}").status_code == 404
    assert client.get(f"/livelookup/people?customer_id={KEY}&ll_key={KEY}").status_code == 200
    lines = json_lines()
    assert len([line for line in lines if "endpoint" in line]) == 2
    assert lines and not [line for line in lines if KEY in json.dumps(line)]
    unknown = next(line for line in lines if line.get("outcome") == "unknown")
    assert unknown["name"] == "(unknown)" and "***" in unknown["detail"]


def test_the_console_password_is_hidden_like_a_key(make_app: MakeApp, json_lines: Lines) -> None:
    make_app({"console": CONSOLE, "server": {"log_format": "json"}})
    logging.getLogger("some.library").warning("login failed for %r", PASSWORD)
    (line,) = [line for line in json_lines() if line.get("logger") == "some.library"]
    assert line["message"] == "login failed for '***'"


def test_every_other_line_is_json_with_time_level_logger_and_message(
    make_app: MakeApp, people_csv: Path, json_lines: Lines
) -> None:
    make_app(config(people_csv, "json")).test_client().get(f"/livelookup/nowhere?ll_key={KEY}")
    others = [line for line in json_lines() if "endpoint" not in line]
    assert others, "an unknown source is logged as a warning"
    for line in others:
        assert set(line) == LINE_FIELDS
        assert datetime.fromisoformat(line["time"]).tzinfo
    warnings = [line["message"] for line in others if line["level"] == "WARNING"]
    assert any("nowhere" in message for message in warnings), others


def test_a_traceback_stays_inside_its_one_line() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = JsonFormatter().format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert set(line) == LINE_FIELDS and line["level"] == "ERROR"
    message = line["message"]
    assert message.startswith("failed\nTraceback") and "ValueError: broken" in message


def test_text_logs_get_no_call_lines(
    make_app: MakeApp, people_csv: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the access log already has a line per call
    client = make_app(config(people_csv, "text")).test_client()
    with caplog.at_level(logging.INFO):
        assert client.get(f"/livelookup/people?customer_id=1001&ll_key={KEY}").status_code == 200
    assert not [r for r in caplog.records if r.name == CALL_LOGGER]


# -- real servers: lookup-server serve, and gunicorn's master, worker and access log ----------


def test_lookup_server_serve_writes_json_lines(tmp_path: Path, people_csv: Path) -> None:
    file = tmp_path / "lookup.toml"
    file.write_text(
        f'[server]\nshared_key = "{KEY}"\nlog_format = "json"\n'
        f'[sources.people]\nbackend = "csv"\npath = "{people_csv}"\n'
    )
    port, log = free_port(), tmp_path / "serve.log"
    with open(log, "wb") as output:
        command = [str(Path(sys.executable).parent / "lookup-server"), "serve"]
        process = subprocess.Popen(
            [*command, "--config", str(file), "--port", str(port)],
            stdout=output,
            stderr=output,
        )
    try:
        url = f"http://127.0.0.1:{port}/livelookup/people/{KEY}?customer_id=1001"
        deadline = time.monotonic() + HANG_GUARD
        while True:
            try:
                with urllib.request.urlopen(url, timeout=10) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, log.read_text()
                time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    calls = [line for line in lines if "endpoint" in line]
    assert [c["outcome"] for c in calls] == ["found"]
    assert {line["logger"] for line in lines if "endpoint" not in line} == {"werkzeug"}
    assert KEY not in text


def test_under_gunicorn_every_line_is_json(tmp_path: Path) -> None:
    for server in serve(tmp_path, 'log_format = "json"'):
        for customer_id in ("1001", "1002", "no-such-id"):
            assert server.get(lookup_path(customer_id=customer_id))[0] == 200
        log = server.log
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    calls = [line for line in lines if "endpoint" in line]
    assert [c["outcome"] for c in calls] == ["found", "found", "none"]
    assert all(set(c) == RECORD_FIELDS | {"time", "level"} for c in calls)
    others = [line for line in lines if "endpoint" not in line]
    assert all(set(line) == LINE_FIELDS for line in others)
    loggers = {line["logger"] for line in others}
    # gunicorn's master says it started; the access log keeps its line, now as a message
    assert {"gunicorn.error", "gunicorn.access"} <= loggers
    assert any("Booting worker" in line["message"] for line in others)
    access = [line["message"] for line in others if line["logger"] == "gunicorn.access"]
    assert sum("/livelookup/demo" in message for message in access) == 3
    assert GUNICORN_KEY not in log.read_text()
