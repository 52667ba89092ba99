"""The effective configuration the console shows: complete, and no secret in it."""

from __future__ import annotations

from pathlib import Path

from lookup_server.config.effective import effective_config, masked
from lookup_server.config.settings import config_from_mapping
from tests.conftest import DEMO_CSV


def test_every_table_is_shown_with_defaults_and_no_secret(tmp_path: Path) -> None:
    config = config_from_mapping(
        {
            "server": {"shared_key": "abcdefghijklmnop-secret", "allowed_ips": ["10.0.0.0/8"]},
            "console": {"password": {"env": "CONSOLE_PW"}, "allowed_networks": ["127.0.0.1/32"]},
            "sources": {"crm": {"backend": "csv", "path": str(DEMO_CSV)}},
            "targets": {
                "hook": {
                    "backend": "http",
                    "url": "https://user:hunter2@hooks.example/in?token=tok-123&x=1",
                    "store": str(tmp_path / "s.sqlite3"),
                }
            },
        },
        tmp_path,
        environ={"CONSOLE_PW": "console-password-value"},
    )
    text = effective_config(config)
    for section in ("[server]", "[console]", "[sources.crm]", "[targets.hook]"):
        assert section in text
    assert "max_results = " in text and "timeout = " in text  # defaults filled in
    assert '"10.0.0.0/8"' in text
    for secret in ("abcdefghijklmnop-secret", "console-password-value", "hunter2", "tok-123"):
        assert secret not in text
    assert "<secret from env CONSOLE_PW>" in text and "x=1" in text


def test_masking_keeps_what_is_not_a_credential() -> None:
    assert masked("https://a.example/p?page=2") == "https://a.example/p?page=2"
    assert (
        masked("https://a.example/p?api_key=abc&page=2") == "https://a.example/p?api_key=***&page=2"
    )
    assert masked("ldaps://svc:pw@dc.example") == "ldaps://svc:***@dc.example"


def test_a_store_in_postgresql_is_shown_as_where_its_url_comes_from(tmp_path: Path) -> None:
    url = "postgresql://lookup:hunter2@db.example/helpspot"
    targets = {
        "crm": {"backend": "http", "url": "https://crm.example/in", "store": {"env": "STORE"}},
        "erp": {"backend": "http", "url": "https://erp.example/in", "store": "erp.sqlite3"},
    }
    config = config_from_mapping({"targets": targets}, tmp_path, environ={"STORE": url})
    text = effective_config(config)
    assert 'store = "<secret from env STORE>"' in text
    assert f'store = "{tmp_path / "erp.sqlite3"}"' in text
    assert "hunter2" not in text and "db.example" not in text
