r"""The PHP class HelpSpot's Request Push calls: ``custom_code/RequestPush-NAME.php``.

Request Push is not HTTP: HelpSpot ``require``s a PHP file and calls a class in
it (HELPSPOT.md §5). ``lookup-server bridge`` writes that file from
``bridge_template.php``; its ``push()`` POSTs the request as JSON to
``/push/TARGET`` and ``details()`` GETs ``/push/TARGET/ID``.

Every value goes into the PHP source as a single-quoted string literal (in
which only ``\`` and ``'`` are special), so a key holding ``'``, ``$`` or
``?>`` stays data. Names are restricted to what makes a valid PHP class name.

The file holds the shared key, so it is written as a new file (mode 0640)
that replaces the old one in one step: never in place, where an old file
would keep its mode (0666 stays 0666), and never through a symbolic link,
which would put the key wherever the link points.
"""

from __future__ import annotations

import os
import re
import tempfile
from importlib import resources
from pathlib import Path
from urllib.parse import quote, urlsplit

#: HelpSpot lists letters, digits, "_" and "-"; a PHP class name cannot hold "-".
_NAME = re.compile(r"[A-Za-z0-9_]{1,64}\Z")
_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
#: Characters that would end or split an HTTP header line.
_HEADER_BREAKERS = re.compile(r"[\x00-\x1f\x7f]")


class BridgeError(ValueError):
    """An argument that cannot make a working bridge; the message says what to use."""


def php_string(value: str) -> str:
    """``value`` as a PHP single-quoted string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_name(name: str) -> str:
    """``name`` when it can name a bridge, else BridgeError saying why."""
    if "-" in name:
        raise BridgeError(
            f"--name {name!r}: HelpSpot calls class RequestPush_NAME with the dashes of the "
            "file name kept, and a dash cannot be part of a PHP class name, so such a "
            "push target could never load; use an underscore instead"
        )
    if not _NAME.match(name):
        raise BridgeError(
            f"--name {name!r}: use 1 to 64 letters (A-Z, a-z), digits and underscores; "
            "it becomes part of the file name RequestPush-NAME.php and the PHP class name"
        )
    return name


def bridge_filename(name: str) -> str:
    """The file name HelpSpot looks for in ``custom_code/``: ``RequestPush-NAME.php``."""
    return f"RequestPush-{check_name(name)}.php"


def bridge_class(name: str) -> str:
    """The PHP class HelpSpot instantiates: ``RequestPush_NAME``."""
    return f"RequestPush_{check_name(name)}"


def push_url(base_url: str, target: str) -> str:
    """``BASE_URL/push/TARGET`` with the target percent-encoded."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BridgeError(
            f"--url {base_url!r}: give lookup-server's address as HelpSpot's web server "
            "reaches it, starting with https:// (or http://), e.g. https://lookup.example.com"
        )
    if parts.query or parts.fragment or _HEADER_BREAKERS.search(base_url) or " " in base_url:
        raise BridgeError(
            f"--url {base_url!r}: no query string, fragment, spaces or control characters; "
            "the bridge adds /push/TARGET itself"
        )
    if not target:
        raise BridgeError("the push target's name is empty")
    return base_url.rstrip("/") + "/push/" + quote(target, safe="")


def render_bridge(
    target: str, base_url: str, key: str | None, name: str, verify_tls: bool = True
) -> str:
    """The PHP source of ``RequestPush-NAME.php`` for push target ``target``."""
    if key is not None and _HEADER_BREAKERS.search(key):
        raise BridgeError(
            "the shared key holds a control character (a line break?); "
            "it travels in an HTTP header, so it cannot"
        )
    if key is not None and key != key.strip():
        # Header values lose surrounding blanks in transit: the key would never match.
        raise BridgeError(
            "the shared key starts or ends with a space; remove it from the "
            "key in the config and in --key"
        )
    values = {
        "NAME": check_name(name),
        "CLASS": bridge_class(name),
        "PUSH_URL": php_string(push_url(base_url, target)),
        "KEY": php_string(key or ""),
        "VERIFY_TLS": "true" if verify_tls else "false",
    }
    template = resources.files("lookup_server.helpspot").joinpath("bridge_template.php")
    # One pass: a value that happens to contain "{{KEY}}" is never expanded again.
    return _PLACEHOLDER.sub(
        lambda match: values[match.group(1)], template.read_text(encoding="utf-8")
    )


#: Owner reads and writes, the web server's group reads: PHP must ``require`` it.
BRIDGE_MODE = 0o640


def write_bridge(file: Path, text: str) -> None:
    """Put ``text`` at ``file`` atomically, mode 0640, refusing a symbolic link there."""
    if file.is_symlink():
        raise BridgeError(
            f"{file} is a symbolic link; the bridge holds the shared key and "
            "is never written through one: remove the link and run this again"
        )
    try:
        temporary = _write_temporary(file, text)
        try:
            os.replace(temporary, file)  # renames over a link or file, never writes through
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _sync_folder(file.parent)
    except OSError as exc:
        raise BridgeError(
            f"cannot write {file}: {exc.strerror or exc}; check that the "
            "--output folder exists and is writable"
        ) from None


def _write_temporary(file: Path, text: str) -> Path:
    """``text`` in a new file beside ``file``, on disk, with the bridge's mode."""
    descriptor, name = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), BRIDGE_MODE)  # not mkstemp's 0600: PHP must read it
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
