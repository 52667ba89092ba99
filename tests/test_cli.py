"""The lookup-server command, run as HelpSpot's command-line mode runs it (HELPSPOT.md §2)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from lookup_server.cli import cli
from lookup_server.livelookup_command import split_own_options
from lookup_server.webhooks import TargetPolicy, open_outbox
from tests.conftest import write_csv
from tests.support.helpspot import assert_livelookup, helpspot_error
from tests.support.postgres import OUTBOX_KINDS, outbox_of_kind
from tests.webhooks.conftest import stored_entry, under_a_file

#: The installed console script, as an admin enters it in HelpSpot.
LOOKUP_SERVER = [str(Path(sys.executable).with_name("lookup-server"))]


@pytest.fixture
def config_file(tmp_path: Path, people_csv: Path) -> Path:
    file = tmp_path / "lookup.toml"
    file.write_text(f'[sources.people]\nbackend = "csv"\npath = "{people_csv.name}"\n')
    return file


def helpspot_runs(configured: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``configured`` through /bin/sh with HelpSpot's shell-quoted arguments appended."""
    command = configured + "".join(" " + shlex.quote(a) for a in args)
    env = {k: v for k, v in os.environ.items() if k != "LOOKUP_SERVER_CONFIG"}
    return subprocess.run(
        ["/bin/sh", "-c", command], capture_output=True, timeout=60, env=env, check=False
    )


def configured_command(config_file: Path, *extra: str) -> str:
    base = " ".join(shlex.quote(a) for a in LOOKUP_SERVER)
    return f"{base} livelookup --config {shlex.quote(str(config_file))} --source people" + (
        " " + " ".join(extra) if extra else ""
    )


def test_named_arguments_of_helpspot_5_3(config_file: Path) -> None:
    done = helpspot_runs(
        configured_command(config_file),
        "--customer_id=",
        "--first_name=Seán",
        "--last_name=O'Brien",
        "--email",
        "--phone",
        "--Custom7=x%20y",
    )
    assert done.returncode == 0, done.stderr
    view = assert_livelookup(done.stdout)
    assert [c["customer_id"] for c in view.customers] == ["1003"]


def test_positional_arguments_of_helpspot_5_0(config_file: Path) -> None:
    done = helpspot_runs(
        configured_command(config_file, "--"), "", "", "", "ADA@example.com", "", "gold", ""
    )
    assert [c["customer_id"] for c in assert_livelookup(done.stdout).customers] == ["1001"]


def test_no_match_is_exit_zero_and_an_empty_list(config_file: Path) -> None:
    done = helpspot_runs(configured_command(config_file), "--customer_id=nobody")
    assert done.returncode == 0
    assert assert_livelookup(done.stdout).customers == []


def test_errors_go_to_stdout_so_helpspot_shows_them(config_file: Path) -> None:
    done = helpspot_runs(
        configured_command(config_file).replace("people", "nope"), "--customer_id=1"
    )
    assert done.returncode == 1
    assert "no source named 'nope'" in helpspot_error(done.stdout) or b"nope" in done.stdout


def test_broken_config_is_an_error_for_helpspot_and_details_on_stderr(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[sources.people]\nbackend = "csv"\n')
    done = helpspot_runs(configured_command(bad), "--customer_id=1")
    assert (
        done.stdout == b"lookup-server error: the configuration has problems "
        b"(run lookup-server check)\n"
    )
    assert b"sources.people.path: required" in done.stderr


@pytest.mark.parametrize("encoded", ["latin-1", "utf-8"])
def test_names_arrive_whatever_bytes_helpspots_shell_passed(
    config_file: Path, encoded: str
) -> None:
    # PHP data is often Latin-1, and a C locale mangles nothing here: "accept what
    # arrives" (HELPSPOT.md §2). Latin-1 bytes are not UTF-8, and were a lookup error.
    last = os.fsdecode("Núñez".encode(encoded))  # as Python hands such argv bytes on
    for args in (
        ("--customer_id", "--first_name", f"--last_name={last}", "--email"),
        ("", "", last, "", ""),
    ):
        done = helpspot_runs(configured_command(config_file, "--"), *args)
        assert done.returncode == 0, done.stdout + done.stderr
        assert [c["customer_id"] for c in assert_livelookup(done.stdout).customers] == ["1002"]


def test_an_unexpected_failure_is_an_error_for_helpspot_not_an_empty_list(tmp_path: Path) -> None:
    # A bug anywhere (here, lxml refusing a tag a plugin returned) must not leave
    # stdout empty: HelpSpot would read "No customers found".
    write_csv(tmp_path / "people.csv", ["customer_id", "last_name"], [["1", "Lovelace"]])
    config = tmp_path / "lookup.toml"
    config.write_text('[sources.people]\nbackend = "csv"\npath = "people.csv"\n')
    code = (
        "import sys\nfrom lookup_server.helpspot import render\n"
        "from lookup_server.cli import main\n"
        "def broken(*a, **k):\n    raise ValueError('Invalid tag name')\n"
        "render.render_livelookup = broken\n"
        f"sys.argv = ['lookup-server', 'livelookup', '--config', {str(config)!r}, "
        "'--source', 'people', '--customer_id=1']\nmain()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert helpspot_error(done.stdout) and b"internal error" in done.stdout
    assert b"Invalid tag name" in done.stderr and b"Invalid tag name" not in done.stdout


# After the configured "--" every argument is HelpSpot's, however it is spelled.
AFTER_DASHES = [
    pytest.param(["--config=/etc/passwd", "", "Lovelace", "", ""], id="5.0-value-like-our-option"),
    pytest.param(["--source=nope", "", "Lovelace", "", ""], id="5.0-value-like-our-source"),
    pytest.param(["--x=y", "", "Lovelace", "", ""], id="5.0-value-like-a-named-argument"),
    pytest.param(["--", "", "Lovelace", "", ""], id="5.0-value-that-is-dashes"),
    pytest.param(
        ["--customer_id=1001", "--first_name", "--email", "--config=/etc/passwd"], id="5.3-named"
    ),
    pytest.param(
        ["--customer_id", "--first_name=Ada", "--last_name=Lovelace"], id="5.3-named-empty-first"
    ),
    pytest.param(["--Custom3=x%20y", "--last_name=Lovelace"], id="5.3-named-custom-first"),
]


@pytest.mark.parametrize("helpspot_args", AFTER_DASHES)
def test_after_the_dashes_everything_is_helpspots(
    config_file: Path, runner: CliRunner, helpspot_args: list[str]
) -> None:
    result = runner.invoke(
        cli,
        ["livelookup", "--config", str(config_file), "--source", "people", "--", *helpspot_args],
    )
    assert result.exit_code == 0, result.output
    assert [c["customer_id"] for c in assert_livelookup(result.stdout_bytes).customers] == ["1001"]


@pytest.mark.parametrize("helpspot_args", AFTER_DASHES)
def test_after_the_dashes_everything_is_helpspots_through_the_shell(
    config_file: Path, helpspot_args: list[str]
) -> None:
    # as HelpSpot runs it: the configured line, then its shell-quoted arguments
    done = helpspot_runs(configured_command(config_file, "--"), *helpspot_args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [c["customer_id"] for c in assert_livelookup(done.stdout).customers] == ["1001"]


@pytest.mark.parametrize(
    "args,own,rest",
    [
        (["--source", "ad", "--customer_id=1"], {"source": "ad"}, ["--customer_id=1"]),
        (
            ["--source=ad", "--config=c.toml", "--source_id=0"],
            {"source": "ad", "config": "c.toml"},
            ["--source_id=0"],
        ),
        (["--sour", "ad"], {}, ["--sour", "ad"]),  # no abbreviations
        (["--source", "ad", "--", "--config=/etc/evil"], {"source": "ad"}, ["--config=/etc/evil"]),
        (["--source", "ad", "--source", "x"], {"source": "ad"}, ["--source", "x"]),
        (["--source", "ad", "", "Bob"], {"source": "ad"}, ["", "Bob"]),
    ],
)
def test_our_options_never_swallow_helpspots(
    args: list[str], own: dict[str, str], rest: list[str]
) -> None:
    assert split_own_options(args) == (own, rest)


def test_check_reports_ok_and_failures(config_file: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["check", "--config", str(config_file)])
    assert result.exit_code == 0, result.output
    assert "ok   sources.people (csv: ajax, livelookup)" in result.output
    broken = tmp_path / "broken.toml"
    broken.write_text('[sources.gone]\nbackend = "csv"\npath = "missing.csv"\n')
    result = runner.invoke(cli, ["check", "--config", str(broken)])
    assert result.exit_code == 1
    assert "FAIL sources.gone (csv: ajax, livelookup):" in result.output
    assert "missing.csv does not exist" in result.output


def test_check_probes_every_target(tmp_path: Path, people_csv: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    config = tmp_path / "lookup.toml"
    config.write_text(
        f'[sources.people]\nbackend = "csv"\npath = "{people_csv.name}"\n'
        '[targets.good]\nbackend = "http"\nurl = "https://crm.example.com/in"\n'
        'store = "pushes.sqlite3"\n'
        '[targets.broken]\nbackend = "http"\nurl = "https://crm.example.com/in"\n'
        'store = "not-a-folder/pushes.sqlite3"\n'
    )
    result = CliRunner().invoke(cli, ["check", "--config", str(config)])
    assert result.exit_code == 1
    assert "ok   targets.good (http: details, push, webhook)" in result.output
    assert (
        "FAIL targets.broken (http: details, push, webhook): cannot open the push "
        "record" in result.output
    )
    assert result.stderr.endswith("1 check(s) failed\n")


def test_check_indexes_a_large_csv_however_long_it_takes(tmp_path: Path) -> None:
    # as the server does: only backends that wait on a network run against the timeout
    write_csv(
        tmp_path / "big.csv",
        ["customer_id", "email"],
        ([str(i), f"user{i}@example.com"] for i in range(50_000)),
    )
    config = tmp_path / "lookup.toml"
    config.write_text('[sources.big]\nbackend = "csv"\npath = "big.csv"\ntimeout = 0.001\n')
    result = CliRunner().invoke(cli, ["check", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "ok   sources.big" in result.output


def test_check_lists_every_config_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[sources.a]\nbackend = "csv"\n[sources.b]\nbackend = "nope"\n')
    result = CliRunner().invoke(cli, ["check", "--config", str(bad)])
    assert result.exit_code == 2
    assert "2 problems" in result.output and "sources.a.path: required" in result.output


def test_plugins_lists_backends_and_capabilities() -> None:
    result = CliRunner().invoke(cli, ["plugins"])
    assert "csv        lookup_plugins.csv.backend.CsvBackend  [ajax, livelookup]" in result.output


def test_validate_reports_what_staff_would_see(tmp_path: Path) -> None:
    good = tmp_path / "good.xml"
    good.write_bytes(
        b'<?xml version="1.0" encoding="utf-8"?><livelookup><customer>'
        b"<customer_id>1</customer_id><first_name>Ada</first_name></customer>"
        b"</livelookup>"
    )
    result = CliRunner().invoke(cli, ["validate", str(good)])
    assert result.exit_code == 0 and "Customer id: 1\n  First name: Ada" in result.output
    bad = tmp_path / "bad.xml"
    bad.write_bytes(
        b"<livelookup><customer><customer_id>1</customer_id></customer>"
        b"<error>x</error></livelookup>"
    )
    result = CliRunner().invoke(cli, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "crashes HelpSpot" in result.output


def test_validate_shows_the_drop_down_helpspot_would_show(tmp_path: Path) -> None:
    good = tmp_path / "good.xml"
    good.write_bytes(
        "<?xml version='1.0' encoding='utf-8'?><ajaxfield><option><value>zh</value>"
        "<description>Zürich</description></option></ajaxfield>".encode()
    )
    result = CliRunner().invoke(cli, ["validate", str(good)])
    assert result.exit_code == 0, result.output
    # HelpSpot reads AJAX answers as ISO-8859-1 whatever they declare (HELPSPOT.md §4)
    assert result.output == "HelpSpot's drop-down shows 1 option(s):\n  'zh': ZÃ¼rich\n"
    zero = tmp_path / "zero.xml"
    zero.write_bytes(
        b"<ajaxfield><option><value>0</value><description>None</description></option>"
        b"<option><value>1</value></option></ajaxfield>"
    )
    result = CliRunner().invoke(cli, ["validate", str(zero)])
    assert result.exit_code == 1
    assert "  '': None\n" in result.output
    assert "option 1: HelpSpot reads an empty value" in result.output
    assert "Missing child element(s). Expected is ( description )" in result.output


@pytest.mark.parametrize(
    "module",
    ["flask", "prometheus_client", "click", "jinja2", "inscriptis", "lookup_server.webhooks"],
)
def test_livelookup_does_not_import_the_servers_libraries(config_file: Path, module: str) -> None:
    # HelpSpot starts a process per lookup: each import is paid at every one
    code = (
        "import sys; from lookup_server.console_script import main; "
        "sys.argv = ['x', 'livelookup', "
        f"'--config', {str(config_file)!r}, '--source', 'people', '--customer_id=1'];\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print('IMPORTED' if {module!r} in sys.modules else 'NOT-IMPORTED', file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, check=False
    )
    assert b"<livelookup" in done.stdout, done.stderr  # the lookup ran, not an early exit
    assert done.stderr.strip().endswith(b"NOT-IMPORTED"), done.stderr


def test_a_command_line_lookup_shows_in_the_consoles_recent_calls(
    tmp_path: Path, people_csv: Path
) -> None:
    from lookup_server.telemetry.activity import Activity, activity_file

    outbox = tmp_path / "outbox.sqlite3"
    config = tmp_path / "console.toml"
    config.write_text(
        f'[server]\noutbox = "{outbox}"\n\n'
        '[console]\npassword = "a console password"\nallowed_networks = ["127.0.0.1/32"]\n\n'
        f'[sources.people]\nbackend = "csv"\npath = "{people_csv.name}"\n'
    )
    found = helpspot_runs(configured_command(config, "--"), "--customer_id=1001", "--email")
    assert b"<customer_id>1001</customer_id>" in found.stdout, found.stderr
    again = helpspot_runs(configured_command(config, "--"), "--customer_id=1001").stdout
    assert b"<customer_id>1001</customer_id>" in again
    calls = Activity(activity_file(outbox)).recent()
    assert [(c.endpoint, c.name, c.outcome, c.count) for c in calls] == [
        ("livelookup", "people", "found", 1),
        ("livelookup", "people", "found", 1),
    ]
    assert calls[1].path == "command line: --customer_id=1001 --email"
    assert calls[0].remote_addr == "command line" and calls[0].duration_ms > 0


def test_without_a_console_the_command_line_keeps_no_record(
    config_file: Path, tmp_path: Path
) -> None:
    helpspot_runs(configured_command(config_file, "--"), "--customer_id=1001")
    assert not list(tmp_path.glob("*.activity.sqlite3"))


# -- lookup-server check and outbox: a bad outbox is one clear line, never a traceback ----------


def webhook_config(tmp_path: Path, outbox: Path) -> Path:
    """A config with one webhook target whose outbox is ``outbox``."""
    file = tmp_path / "hooks.toml"
    file.write_text(
        f'[server]\noutbox = "{outbox}"\n\n[targets.hooks]\nbackend = "http"\n'
        f'url = "http://127.0.0.1:9/in"\nstore = "{tmp_path / "pushes.sqlite3"}"\n'
    )
    return file


def used_outbox(tmp_path: Path) -> Path:
    from lookup_server.webhooks import Outbox

    path = tmp_path / "outbox.sqlite3"
    Outbox(path).store("hooks", {"xRequest": "1"})
    return path


def _damaged_header(tmp_path: Path) -> Path:
    from tests.webhooks.conftest import corrupt_header

    path = used_outbox(tmp_path)
    corrupt_header(path)
    return path


def _damaged_pages(tmp_path: Path) -> Path:
    from lookup_server.webhooks import Outbox
    from tests.webhooks.conftest import corrupt_pages

    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    for i in range(40):
        outbox.store("hooks", {"n": str(i), "text": "x" * 2000})
    corrupt_pages(path, first_page=3)
    return path


def _not_sqlite(tmp_path: Path) -> Path:
    path = tmp_path / "outbox.sqlite3"
    path.write_text("[server]\n" * 100)
    return path


def _missing_folder(tmp_path: Path) -> Path:
    return tmp_path / "no-such-folder" / "outbox.sqlite3"


_under_a_file = under_a_file


def _read_only_folder(tmp_path: Path) -> Path:
    from tests.webhooks.conftest import AS_ROOT

    if AS_ROOT:
        pytest.skip("running as root: chmod 0555 does not stop root (_under_a_file covers it)")
    folder = tmp_path / "ro"
    folder.mkdir()
    path = used_outbox(folder)
    folder.chmod(0o555)
    return path


BAD_OUTBOXES = [
    _damaged_header,
    _damaged_pages,
    _not_sqlite,
    _missing_folder,
    _under_a_file,
    _read_only_folder,
]


@pytest.mark.parametrize("make", BAD_OUTBOXES)
@pytest.mark.parametrize(
    "command",
    [
        ["list"],
        ["list", "--state", "failed"],
        ["show", "1"],
        ["retry", "1"],
        ["retry", "--failed", "--target", "hooks"],
        ["purge", "--older-than", "1"],
    ],
)
def test_every_outbox_command_gives_one_clear_line_on_a_bad_outbox(
    tmp_path: Path, make: Callable[[Path], Path], command: list[str]
) -> None:
    path = make(tmp_path)
    result = CliRunner().invoke(
        cli, ["outbox", *command, "--config", str(webhook_config(tmp_path, path))]
    )
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert result.stderr.count("\n") == 1 and str(path) in result.stderr


@pytest.mark.parametrize("make", [m for m in BAD_OUTBOXES if m is not _missing_folder])
def test_check_reports_an_unusable_outbox(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    path = make(tmp_path)  # (a missing folder is fine: the server creates it)
    result = CliRunner().invoke(cli, ["check", "--config", str(webhook_config(tmp_path, path))])
    assert result.exit_code == 1
    assert "ok   targets.hooks" in result.output and "FAIL server.outbox: " in result.output


def test_check_passes_a_good_or_new_outbox(tmp_path: Path) -> None:
    for path in (used_outbox(tmp_path), tmp_path / "new" / "outbox.sqlite3"):
        result = CliRunner().invoke(cli, ["check", "--config", str(webhook_config(tmp_path, path))])
        assert result.exit_code == 0, result.output
        assert f"ok   server.outbox {path}" in result.output


def test_outbox_list_shows_the_newest_and_says_how_many_more(tmp_path: Path) -> None:
    from lookup_server.webhooks import Outbox

    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    ids = [outbox.store("hooks", {"n": str(i)}).id for i in range(150)]
    outbox.record_refusal("hooks", 5_000_000, 65536, "12345")
    outbox.record_refusal("hooks", None, 65536)
    config = str(webhook_config(tmp_path, path))
    result = CliRunner().invoke(cli, ["outbox", "list", "--config", config])
    assert result.exit_code == 0, result.output
    listed = [
        int(line.split()[0]) for line in result.stdout.splitlines() if line.split()[0].isdigit()
    ]
    assert listed == ids[-100:]  # the newest 100, oldest first
    assert "100 webhook(s), and 50 older not shown (--limit 0 lists all)" in result.stderr
    assert "size=5000000 bytes  request=12345" in result.stdout
    assert "size=more than 65536 bytes  request=unknown" in result.stdout
    assert "2 refused webhook(s)\n" in result.stderr
    everything = CliRunner().invoke(cli, ["outbox", "list", "--limit", "0", "--config", config])
    assert everything.stdout.count(" pending ") == 150
    refused = CliRunner().invoke(
        cli, ["outbox", "list", "--state", "refused", "--limit", "1", "--config", config]
    )
    assert " pending " not in refused.stdout and "request=unknown" in refused.stdout
    assert "request=12345" not in refused.stdout and "1 older not shown" in refused.stderr


# -- outbox show, retry --failed, purge: what each attempt left -----------------------------------

#: In the stored payload only: outbox show must not print a ticket's body.
BODY_MARKER = "the-whole-ticket-thread"
#: When _tried_webhook's webhook was stored: in the past, so that a purge finds it.
TRIED = 1_700_000_000.0


def _tried_webhook(path: Path) -> int:
    """A webhook refused once (HTTP 503, with an answer) and then delivered."""
    from lookup_server.webhooks import Outbox

    outbox = Outbox(path)
    entry = outbox.store("hooks", {"xRequest": "12345", "note": BODY_MARKER * 1000}, now=TRIED)
    outbox.claim("w1", now=TRIED)
    outbox.mark_failed(
        entry.id,
        "127.0.0.1 refused the webhook (HTTP 503)",
        now=TRIED + 1,
        started_at=TRIED,
        duration_ms=1234,
        status=503,
        answer="maintenance\nback at noon",
    )
    outbox.claim("w1", now=TRIED + 3600)
    outbox.mark_delivered(entry.id, now=TRIED + 3600, duration_ms=56)
    return entry.id


def test_outbox_show_prints_the_webhook_and_each_attempt_but_not_its_body(
    tmp_path: Path,
) -> None:
    import json

    from lookup_server.webhooks import Outbox

    path = tmp_path / "outbox.sqlite3"
    webhook_id = _tried_webhook(path)
    entry = Outbox(path).get(webhook_id)
    assert entry is not None
    config = str(webhook_config(tmp_path, path))
    result = CliRunner().invoke(cli, ["outbox", "show", str(webhook_id), "--config", config])
    assert result.exit_code == 0, result.output
    assert BODY_MARKER not in result.output
    lines = result.output.splitlines()
    assert lines[:3] == [
        f"webhook          {webhook_id} for target 'hooks'",
        "state            delivered",
        f"created          {_local(TRIED)}",
    ]
    assert f"idempotency key  {entry.idempotency_key}" in lines
    assert "request          12345" in lines and "attempts         2" in lines
    size = len(json.dumps(entry.payload, ensure_ascii=False).encode())
    assert f"payload          {size} bytes (--payload prints it)" in lines
    assert lines[-5:] == [
        "2 recorded attempt(s):",
        f"  #1   {_local(TRIED)}  HTTP 503    1234 ms  failed: "
        "127.0.0.1 refused the webhook (HTTP 503)",
        "        answer: maintenance",
        "                back at noon",
        f"  #2   {_local(TRIED + 3600)}  -             56 ms  delivered",
    ]


def _local(timestamp: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def test_outbox_show_payload_prints_only_the_payload_as_json(tmp_path: Path) -> None:
    import json

    path = tmp_path / "outbox.sqlite3"
    webhook_id = _tried_webhook(path)
    config = str(webhook_config(tmp_path, path))
    result = CliRunner().invoke(
        cli, ["outbox", "show", str(webhook_id), "--payload", "--config", config]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"xRequest": "12345", "note": BODY_MARKER * 1000}


def test_outbox_show_of_an_unknown_webhook_is_one_line(tmp_path: Path) -> None:
    path = used_outbox(tmp_path)
    config = str(webhook_config(tmp_path, path))
    result = CliRunner().invoke(cli, ["outbox", "show", "99", "--config", config])
    assert result.exit_code == 2
    assert result.stderr == "no webhook with id 99 in the outbox\n"


def test_outbox_retry_failed_retries_every_failed_webhook_of_the_target(tmp_path: Path) -> None:
    from lookup_server.webhooks import Outbox

    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path, max_attempts=1)
    ids: dict[str, list[int]] = {}
    for target in ("hooks", "hooks", "other"):
        entry = outbox.store(target, {"xRequest": "1"})
        outbox.claim("w1")
        outbox.mark_failed(entry.id, "refused")
        ids.setdefault(target, []).append(entry.id)
    config = str(webhook_config(tmp_path, path))
    result = CliRunner().invoke(
        cli, ["outbox", "retry", "--failed", "--target", "hooks", "--config", config]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "2 failed webhook(s) for 'hooks' pending again\n"
    states = [stored_entry(outbox, i).state for i in [*ids["hooks"], *ids["other"]]]
    assert states == ["pending", "pending", "failed"]
    assert [len(outbox.attempts(i)) for i in ids["hooks"]] == [1, 1]  # kept


def test_outbox_retry_failed_in_a_time_range_replays_only_those(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    from lookup_server.webhooks import Outbox

    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path, max_attempts=1)
    hours = [datetime(2024, 5, 1, h, tzinfo=timezone.utc).timestamp() for h in (9, 10, 11, 12)]
    ids = []
    for moment in hours:
        entry = outbox.store("hooks", {"xRequest": "1"}, now=moment)
        outbox.claim("w1", now=moment)
        outbox.mark_failed(entry.id, "refused", now=moment)
        ids.append(entry.id)
    config = str(webhook_config(tmp_path, path))
    retry = ["outbox", "retry", "--failed", "--target", "hooks", "--config", config]
    # an offset is honoured; 10:00 is in, 12:00 (the end) is not
    result = CliRunner().invoke(
        cli, [*retry, "--since", "2024-05-01T10:00:00+00:00", "--until", "2024-05-01T14:00+02:00"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "2 failed webhook(s) for 'hooks' pending again\n"
    assert [stored_entry(outbox, i).state for i in ids] == [
        "failed",
        "pending",
        "pending",
        "failed",
    ]
    only_since = CliRunner().invoke(cli, [*retry, "--since", "2024-05-01T11:30Z"])
    assert only_since.stdout == "1 failed webhook(s) for 'hooks' pending again\n"
    assert stored_entry(outbox, ids[3]).state == "pending"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["retry", "--failed", "--target", "hooks", "--since", "May 1st"], "not an ISO 8601"),
        (["retry", "1", "--since", "2024-05-01"], "give a webhook ID, or --failed"),
        (["retry", "--until", "2024-05-01"], "give a webhook ID, or --failed"),
        (
            [
                "retry",
                "--failed",
                "--target",
                "hooks",
                "--since",
                "2024-05-02",
                "--until",
                "2024-05-01",
            ],
            "--since must come before --until",
        ),
        (["retry"], "give a webhook ID, or --failed --target NAME"),
        (["retry", "--failed"], "give a webhook ID, or --failed --target NAME"),
        (["retry", "--target", "hooks"], "give a webhook ID, or --failed --target NAME"),
        (["retry", "1", "--failed", "--target", "hooks"], "give a webhook ID, or --failed"),
        (["retry", "--failed", "--target", "nope"], "no [targets.nope]"),
    ],
)
def test_outbox_retry_says_what_it_needs(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    path = used_outbox(tmp_path)
    config = str(webhook_config(tmp_path, path))
    result = CliRunner().invoke(cli, ["outbox", *arguments, "--config", config])
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_outbox_purge_deletes_the_attempts_with_their_webhook(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "outbox.sqlite3"
    _tried_webhook(path)
    config = str(webhook_config(tmp_path, path))
    result = CliRunner().invoke(cli, ["outbox", "purge", "--older-than", "0", "--config", config])
    assert result.exit_code == 0 and "purged 1 webhook(s)" in result.output
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM attempts").fetchone() == (0,)
    finally:
        conn.close()


@pytest.mark.parametrize("kind", OUTBOX_KINDS)
def test_check_shows_a_paused_target_and_its_limits_with_its_records_in_the_store(
    tmp_path: Path, kind: str
) -> None:
    with outbox_of_kind(kind, tmp_path) as outbox:
        # with PostgreSQL, the target's push record lives in the same database as the outbox
        store = outbox if kind == "postgres" else str(tmp_path / "pushes.sqlite3")
        config = tmp_path / "lookup.toml"
        config.write_text(
            f'[server]\noutbox = "{outbox}"\n'
            '[targets.crm]\nbackend = "http"\nurl = "https://crm.example.com/in"\n'
            f'store = "{store}"\nbreaker_failures = 1\nmax_concurrent = 3\n'
        )
        box = open_outbox(outbox, policies={"crm": TargetPolicy(breaker_failures=1)})
        try:
            box.store("crm", {"xRequest": "1"})
            entry = box.claim("test")
            assert entry is not None
            assert box.mark_failed(entry.id, "HTTP 503", owner="test")
        finally:
            getattr(box, "close", lambda: None)()
        result = CliRunner().invoke(cli, ["check", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "ok   targets.crm (http: details, push, webhook)" in result.output
    paused = [line for line in result.output.splitlines() if "targets.crm: paused since" in line]
    assert len(paused) == 1 and paused[0].startswith("     warning: ")
    assert "after 1 consecutive failed attempts; next probe " in paused[0]
    assert paused[0].endswith("; limits: max_concurrent = 3")
