"""The configuration in effect, as TOML-like text with every secret masked (the console).

Defaults are shown filled in, paths resolved, secrets as where they come from
(``<secret from env NAME>``). A plain string that holds a credential anyway —
a password in a URL, a ``token=`` in a query — is masked too.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lookup_server.config.schema import Secret, StoreLocation
from lookup_server.config.settings import Config

#: Query parameters whose values are credentials.
_CREDENTIAL_PARAM = re.compile(
    r"(?i)((?:^|[?&;])[^=&;]*(?:key|token|secret|passw|pwd|sig|auth)[^=&;]*=)[^&;#]*"
)
MASK = "***"


def effective_config(config: Config) -> str:
    """The whole configuration as text: ``[server]``, ``[console]``, each source and target."""
    lines = [f"# {config.origin}"]
    lines += _table("server", _fields(config.server))
    if config.console.enabled:
        lines += _table("console", _fields(config.console, skip={"enabled"}))
    for kind, items in (("sources", config.sources), ("targets", config.targets)):
        for name, item in items.items():
            values = {**_fields(item.settings, skip={"name"}), **_fields(item.options)}
            lines += _table(f"{kind}.{name}", values)
    return "\n".join(lines) + "\n"


def _fields(obj: Any, skip: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    if not dataclasses.is_dataclass(obj):
        return {}
    return {
        f.name: getattr(obj, f.name)
        for f in dataclasses.fields(obj)
        if f.name not in skip and not f.name.startswith("_")
    }


def _table(name: str, values: Mapping[str, Any]) -> Iterator[str]:
    yield ""
    yield f"[{name}]"
    for key, value in values.items():
        yield f"{key} = {shown(value)}"


def shown(value: Any) -> str:
    """One value as TOML would write it, with credentials masked."""
    if isinstance(value, Secret | StoreLocation):  # a store's URL is a secret
        return json.dumps(str(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path | ipaddress.IPv4Network | ipaddress.IPv6Network):
        return json.dumps(str(value))
    if isinstance(value, str):
        return json.dumps(masked(value))
    if isinstance(value, Mapping):
        return (
            "{ " + ", ".join(f"{json.dumps(str(k))} = {shown(v)}" for k, v in value.items()) + " }"
        )
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return "[" + ", ".join(shown(v) for v in items) + "]"
    if value is None:
        return '""  # not set'
    if dataclasses.is_dataclass(value):
        return shown(_fields(value))
    return json.dumps(masked(str(value)))


def masked(text: str) -> str:
    """``text`` with a URL's password and credential-like query values replaced by ***."""
    text = _CREDENTIAL_PARAM.sub(lambda m: m.group(1) + MASK, text)
    if "://" in text:
        try:
            parts = urlsplit(text)
            password = parts.password
        except ValueError:
            return text
        if password:
            text = text.replace(f":{password}@", f":{MASK}@", 1)
    return text
