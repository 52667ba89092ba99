"""The generated RequestPush bridge, loaded and called by real php-cli.

A small HTTP server plays lookup-server's ``/push/<target>`` endpoints; a PHP
harness requires the generated file the way HelpSpot does, passes it a
request array shaped like HelpSpot's, and prints one JSON line of results. Any
other output (an echo, a warning, a notice) fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from lookup_server.cli import cli
from lookup_server.helpspot.bridge import (
    BridgeError,
    bridge_class,
    bridge_filename,
    check_name,
    php_string,
    push_url,
    render_bridge,
)
from tests.conftest import self_signed_certificate
from tests.support.requirements import need

NASTY_KEY = "k'e\\y$x?>\"{{KEY}}"

#: Loads the bridge like HelpSpot (require + new), pushes, asks for details, prints JSON.
HARNESS = r"""<?php
require $argv[1];
$class = $argv[2];
$doc = new stdClass();
$doc->handle = fopen('php://memory', 'r');  // json_encode cannot represent this
$request = array(
    'xRequest' => $argv[3], 'fOpenedVia' => 1, 'xOpenedViaId' => 0, 'xPersonOpenedBy' => 2,
    'xPersonAssignedTo' => 3, 'fOpen' => 1, 'xStatus' => 1, 'fUrgent' => 0, 'xCategory' => 2,
    'dtGMTOpened' => 1700000000, 'dtGMTClosed' => 0, 'iLastReplyBy' => 0,
    'iLastReadCount' => 0, 'fTrash' => 0, 'dtGMTTrashed' => 0, 'sRequestPassword' => 'pw',
    'sTitle' => 'Printer <on> "fire"', 'sUserId' => '1001', 'sFirstName' => 'Zoë',
    'sLastName' => "N\xfa\xf1ez", 'sEmail' => 'zoe@example.com', 'sPhone' => '555-0100',
    'sRequestHash' => 'abc123', 'Custom1' => 'gold', 'fullname' => 'Zoë Núñez',
    'staff_comment' => 'Please check', 'assigned_person_fname' => 'Ada',
    'assigned_person_lname' => 'Lovelace', 'assigned_person_email' => 'ada@example.com',
    'acting_person_xperson' => -1, 'acting_person_fusertype' => 1,
    'acting_person_fname' => '', 'acting_person_lname' => '', 'acting_person_email' => '',
    'request_history' => array(
        678 => array('xRequestHistory' => 678, 'xRequest' => $argv[3], 'xPerson' => 0,
            'dtGMTChange' => 1700000000, 'fPublic' => 1, 'fInitial' => 1, 'fNoteIsHTML' => 1,
            'tLog' => '', 'tNote' => '<p>It is on fire</p>', 'tEmailHeaders' => '',
            'files' => array(array('sFilename' => 'photo.jpg', 'sFileMimeType' => 'image/jpeg',
                'xDocumentId' => 55, 'public_url' => 'https://hs/p/55',
                'private_url' => 'https://hs/x/55')),
            // every entry carries its attachments, with their bytes when HelpSpot keeps
            // files in its database (HELPSPOT.md §5)
            'documents' => array(array('xDocumentId' => 55, 'sFilename' => 'photo.jpg',
                'sFileMimeType' => 'image/jpeg', 'sCID' => '',
                'blobFile' => str_repeat(random_bytes(1024), (int) $argv[5])))),
    ),
    'documents' => array($doc),
);
$bridge = new $class();
$id = $bridge->push($request);
$result = array('id' => $id, 'errorMsg' => $bridge->errorMsg);
if ($argv[4] !== '') {
    $result['details'] = $bridge->details($argv[4]);
}
echo json_encode($result), "\n";
"""


@dataclass
class Seen:
    """One request the fake lookup-server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeServer:
    """Answers like lookup-server's /push endpoints; records every request."""

    base_url: str = ""
    seen: list[Seen] = field(default_factory=list)


class FakePushEndpoints(BaseHTTPRequestHandler):
    """Answers like lookup-server's /push endpoints, recording each request in ``state``."""

    state: FakeServer  # set by _handler, one per server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self) -> Seen:
        length = int(self.headers.get("Content-Length") or 0)
        seen = Seen(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
        self.state.seen.append(seen)
        return seen

    def _answer(self, status: int, body: str, kind: str = "application/json") -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        request = json.loads(self._record().body)
        number = request["xRequest"]
        if number == "refuse":
            self._answer(422, json.dumps({"error": "CRM refused it: <no title>"}))
        elif number == "crash":
            self._answer(502, "<html>Bad Gateway</html>", "text/html")
        elif number == "long":
            self._answer(201, json.dumps({"id": "é" * 300}))
        elif number == "noid":
            self._answer(200, json.dumps({"ok": True}))
        else:
            self._answer(201, json.dumps({"id": f"crm-{number}"}))

    def do_GET(self) -> None:
        seen = self._record()
        if seen.path.endswith("/missing"):
            self._answer(404, json.dumps({"error": "no push <missing>"}))
        else:
            self._answer(200, f"<p>Details of {seen.path}</p>", "text/html; charset=utf-8")


def _handler(server_state: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(FakePushEndpoints):
        state = server_state

    return Handler


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    yield from _serve(None)


def _serve(context: ssl.SSLContext | None) -> Iterator[FakeServer]:
    state = FakeServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    scheme = "http"
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    state.base_url = f"{scheme}://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def need_php() -> None:
    need(
        shutil.which("php") is not None, "php-cli not installed (apt-get install php-cli php-curl)"
    )


def run_bridge(
    tmp_path: Path,
    source: str,
    name: str,
    request_id: str,
    details_id: str = "",
    attachment_kib: int = 2,
) -> dict[str, Any]:
    """Run the harness; stdout must be exactly the harness's one JSON line."""
    need_php()
    bridge = tmp_path / bridge_filename(name)
    bridge.write_text(source, encoding="utf-8")
    harness = tmp_path / "harness.php"
    harness.write_text(HARNESS, encoding="utf-8")
    done = subprocess.run(
        [
            "php",
            "-d",
            "display_errors=stdout",
            "-d",
            "error_reporting=-1",
            "-d",
            "log_errors=0",
            str(harness),
            str(bridge),
            bridge_class(name),
            request_id,
            details_id,
            str(attachment_kib),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == 1, (done.stdout, done.stderr)
    result: dict[str, Any] = json.loads(lines[0])
    return result


# -- generated source ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key", "verify"),
    [
        ("Crm", "secret", True),
        ("CRM_2", None, False),
        ("9lives", NASTY_KEY, True),
        ("x", "'" * 10 + "\\" * 10, True),
    ],
)
def test_generated_files_pass_php_lint(
    tmp_path: Path, name: str, key: str | None, verify: bool
) -> None:
    need_php()
    path = tmp_path / bridge_filename(name)
    path.write_text(
        render_bridge("crm", "https://lookup.example.com", key, name, verify), encoding="utf-8"
    )
    done = subprocess.run(["php", "-l", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_php_reads_the_embedded_values_back_exactly(tmp_path: Path) -> None:
    need_php()
    path = tmp_path / "b.php"
    path.write_text(
        render_bridge("my crm/x", "https://h.example:8443/base/", NASTY_KEY, "Crm"),
        encoding="utf-8",
    )
    done = subprocess.run(
        [
            "php",
            "-r",
            f"require {php_string(str(path))}; echo json_encode(array("
            "RequestPush_Crm::KEY, RequestPush_Crm::PUSH_URL, "
            "RequestPush_Crm::VERIFY_TLS));",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == [
        NASTY_KEY,
        "https://h.example:8443/base/push/my%20crm%2Fx",
        True,
    ]


def test_requiring_the_file_twice_is_harmless(tmp_path: Path) -> None:
    need_php()
    path = tmp_path / "b.php"
    path.write_text(render_bridge("crm", "https://h.example", "k", "Crm"), encoding="utf-8")
    quoted = php_string(str(path))
    done = subprocess.run(
        [
            "php",
            "-d",
            "display_errors=stdout",
            "-r",
            f"require {quoted}; require {quoted}; echo 'ok';",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout == "ok"


def test_names_and_file_names() -> None:
    assert bridge_filename("Crm_2") == "RequestPush-Crm_2.php"
    assert bridge_class("Crm_2") == "RequestPush_Crm_2"
    with pytest.raises(BridgeError, match="a dash cannot be part of a PHP class name"):
        check_name("my-crm")
    for bad in ("", "a b", "crm.php", "../x", "é", "x" * 65):
        with pytest.raises(BridgeError, match="letters"):
            check_name(bad)


def test_php_string_escapes_only_what_single_quotes_need() -> None:
    assert php_string("a'b\\c$d?>") == "'a\\'b\\\\c$d?>'"


@pytest.mark.parametrize(
    "url",
    [
        "lookup.example.com",
        "ftp://h",
        "https://",
        "https://h/?k=1",
        "https://h/#x",
        "https://h/a b",
        "https://h/\nx",
    ],
)
def test_bad_base_urls_are_refused(url: str) -> None:
    with pytest.raises(BridgeError, match="--url"):
        push_url(url, "crm")


def test_keys_that_would_break_the_header_are_refused() -> None:
    with pytest.raises(BridgeError, match="control character"):
        render_bridge("crm", "https://h", "abc\r\nX-Evil: 1", "Crm")
    with pytest.raises(BridgeError, match="starts or ends with a space"):
        render_bridge("crm", "https://h", " abc", "Crm")


def test_the_default_is_tls_verification_on() -> None:
    assert "const VERIFY_TLS = true;" in render_bridge("crm", "https://h", None, "Crm")
    assert "const VERIFY_TLS = false;" in render_bridge("crm", "https://h", None, "Crm", False)


# -- the written file -------------------------------------------------------------------------

BRIDGE_KEY = "bridge-file-key_0123456789"


def write_bridge_file(folder: Path) -> Result:
    """``lookup-server bridge`` as an admin runs it, the key on the command line."""
    return CliRunner().invoke(
        cli,
        [
            "bridge",
            "crm",
            "--url",
            "https://lookup.example.com",
            "--key",
            BRIDGE_KEY,
            "--output",
            str(folder),
        ],
        env={"LOOKUP_SERVER_CONFIG": None},
    )


def test_an_old_world_readable_bridge_is_replaced_by_one_of_mode_640(tmp_path: Path) -> None:
    old = tmp_path / "RequestPush-crm.php"
    old.write_text("<?php // an earlier bridge")
    old.chmod(0o666)  # rewritten in place, the key would be readable by every user
    result = write_bridge_file(tmp_path)
    assert result.exit_code == 0, result.output
    assert old.stat().st_mode & 0o777 == 0o640
    assert BRIDGE_KEY in old.read_text()
    assert os.listdir(tmp_path) == [old.name]  # no temporary file left behind


@pytest.mark.parametrize("existing", [True, False])
def test_a_symlink_planted_at_the_destination_is_refused(tmp_path: Path, existing: bool) -> None:
    custom_code, elsewhere = tmp_path / "custom_code", tmp_path / "elsewhere"
    custom_code.mkdir()
    elsewhere.mkdir()
    victim = elsewhere / "victim.txt"
    if existing:
        victim.write_text("left alone")
    (custom_code / "RequestPush-crm.php").symlink_to(victim)
    result = write_bridge_file(custom_code)
    assert result.exit_code == 2
    assert "is a symbolic link" in result.output and "remove the link" in result.output
    assert (victim.read_text() == "left alone") if existing else not victim.exists()
    assert os.listdir(custom_code) == ["RequestPush-crm.php"]


def test_a_destination_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "RequestPush-crm.php").mkdir()
    result = write_bridge_file(tmp_path)
    assert result.exit_code == 2 and "cannot write" in result.output
    assert os.listdir(tmp_path) == ["RequestPush-crm.php"]
    missing = write_bridge_file(tmp_path / "nope")
    assert missing.exit_code == 2 and "--output folder exists" in missing.output


# -- push() and details() against a server ------------------------------------------------------


def test_push_sends_the_request_and_returns_the_id(tmp_path: Path, fake_server: FakeServer) -> None:
    source = render_bridge("crm", fake_server.base_url + "/", NASTY_KEY, "Crm")
    result = run_bridge(tmp_path, source, "Crm", "12345")
    assert result == {"id": "crm-12345", "errorMsg": ""}
    (seen,) = fake_server.seen
    assert (seen.method, seen.path) == ("POST", "/push/crm")
    assert seen.headers["Authorization"] == f"Bearer {NASTY_KEY}"
    assert seen.headers["Content-Type"].startswith("application/json")
    sent = json.loads(seen.body)
    assert "documents" not in sent
    assert sent["sTitle"] == 'Printer <on> "fire"' and sent["sFirstName"] == "Zoë"
    assert sent["sLastName"] == "Núñez"  # Latin-1 bytes arrive as UTF-8 text
    assert sent["acting_person_xperson"] == -1
    history = sent["request_history"]["678"]
    assert history["tNote"] == "<p>It is on fire</p>"
    assert history["files"][0]["sFilename"] == "photo.jpg"
    # the attachment's metadata, never its bytes (which arrived as garbled text)
    assert history["documents"] == [
        {"xDocumentId": 55, "sFilename": "photo.jpg", "sFileMimeType": "image/jpeg", "sCID": ""}
    ]


def test_a_push_with_a_large_attachment_sends_only_its_metadata(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    source = render_bridge("crm", fake_server.base_url, "k", "Crm")
    result = run_bridge(tmp_path, source, "Crm", "12345", attachment_kib=600)
    assert result == {"id": "crm-12345", "errorMsg": ""}
    assert len(fake_server.seen[0].body) < 10_000


def test_push_without_a_key_sends_no_authorization(tmp_path: Path, fake_server: FakeServer) -> None:
    result = run_bridge(
        tmp_path, render_bridge("crm", fake_server.base_url, None, "Crm"), "Crm", "7"
    )
    assert result["id"] == "crm-7"
    assert "Authorization" not in fake_server.seen[0].headers


def test_push_error_sets_the_servers_message(tmp_path: Path, fake_server: FakeServer) -> None:
    result = run_bridge(
        tmp_path, render_bridge("crm", fake_server.base_url, "k", "Crm"), "Crm", "refuse"
    )
    # HelpSpot shows errorMsg raw in the request page and HTML-escaped in an automation
    # rule's log note: text without HTML's special characters reads the same in both
    assert result == {"id": False, "errorMsg": "CRM refused it: \u2039no title\u203a"}


def test_push_error_without_a_message_names_the_status(
    tmp_path: Path, fake_server: FakeServer
) -> None:
    result = run_bridge(
        tmp_path, render_bridge("crm", fake_server.base_url, "k", "Crm"), "Crm", "crash"
    )
    assert result == {"id": False, "errorMsg": "lookup-server answered HTTP 502"}


def test_an_answer_without_an_id_is_an_error(tmp_path: Path, fake_server: FakeServer) -> None:
    result = run_bridge(
        tmp_path, render_bridge("crm", fake_server.base_url, "k", "Crm"), "Crm", "noid"
    )
    assert result["id"] is False and "without an id" in result["errorMsg"]


def test_a_long_id_is_cut_to_255_characters(tmp_path: Path, fake_server: FakeServer) -> None:
    result = run_bridge(
        tmp_path, render_bridge("crm", fake_server.base_url, "k", "Crm"), "Crm", "long"
    )
    assert result["id"] == "é" * 255


def test_an_unreachable_server_is_a_clear_error(tmp_path: Path, fake_server: FakeServer) -> None:
    # Port 9 (discard) on 127.0.0.1: nothing listens there in the test environment.
    result = run_bridge(
        tmp_path, render_bridge("crm", "http://127.0.0.1:9", "k", "Crm"), "Crm", "1", "1"
    )
    assert result["id"] is False
    assert result["errorMsg"].startswith("cannot reach lookup-server: ")
    assert result["details"].startswith("<p>cannot reach lookup-server: ")


def test_details_returns_the_servers_html(tmp_path: Path, fake_server: FakeServer) -> None:
    result = run_bridge(
        tmp_path,
        render_bridge("crm", fake_server.base_url, "k", "Crm"),
        "Crm",
        "12345",
        "crm/12 345&x",
    )
    get = fake_server.seen[1]
    assert (get.method, get.path) == ("GET", "/push/crm/crm%2F12%20345%26x")
    assert get.headers["Authorization"] == "Bearer k"
    assert result["details"] == "<p>Details of /push/crm/crm%2F12%20345%26x</p>"


def test_details_error_is_an_escaped_paragraph(tmp_path: Path, fake_server: FakeServer) -> None:
    result = run_bridge(
        tmp_path, render_bridge("crm", fake_server.base_url, "k", "Crm"), "Crm", "12345", "missing"
    )
    assert result["details"] == "<p>no push &lt;missing&gt;</p>"  # shown raw: escaped once


# -- TLS -------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[FakeServer]:
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    yield from _serve(context)


def test_tls_is_verified_unless_turned_off(tmp_path: Path, tls_server: FakeServer) -> None:
    checked = run_bridge(
        tmp_path, render_bridge("crm", tls_server.base_url, "k", "Crm"), "Crm", "1"
    )
    assert checked["id"] is False and "cannot reach lookup-server" in checked["errorMsg"]
    assert tls_server.seen == []  # nothing (not even the key) went to an unverified server
    unchecked = run_bridge(
        tmp_path,
        render_bridge("crm", tls_server.base_url, "k", "Crm", verify_tls=False),
        "Crm",
        "1",
    )
    assert unchecked == {"id": "crm-1", "errorMsg": ""}
