"""Who may use the console: networks, the password, the session cookie, CSRF, login limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from lookup_server.config.settings import ConfigError, config_from_mapping
from lookup_server.web.app import create_app
from lookup_server.web.console.access import LoginLimiter
from lookup_server.web.console.blueprint import CONTENT_SECURITY_POLICY
from tests.web.console.conftest import KEY, LOCAL, PASSWORD, console_config, csrf_of, log_in


def test_the_console_needs_a_login_and_a_login_opens_it(client: FlaskClient) -> None:
    before = client.get("/", environ_base=LOCAL)
    assert before.status_code == 302 and "/console/login" in before.headers["Location"]
    assert log_in(client).status_code == 302
    after = client.get("/", environ_base=LOCAL)
    assert after.status_code == 200 and b"Sources and targets" in after.data


def test_a_wrong_password_is_refused_and_says_so(client: FlaskClient) -> None:
    answer = log_in(client, "not the password")
    assert answer.status_code == 401 and b"Wrong password" in answer.data
    assert client.get("/", environ_base=LOCAL).status_code == 302


def test_the_helpspot_key_is_not_the_console_password(client: FlaskClient) -> None:
    assert log_in(client, KEY).status_code == 401


def test_callers_outside_the_allowed_networks_never_reach_the_login(
    client: FlaskClient,
) -> None:
    outside = {"REMOTE_ADDR": "10.9.8.7"}
    for path in ("/", "/console/login", "/console/calls", "/console/static/console.css"):
        assert client.get(path, environ_base=outside).status_code == 403, path


def test_the_session_cookie_is_httponly_samesite_strict_and_secure_behind_tls(
    app: Flask,
) -> None:
    plain = log_in(app.test_client()).headers.getlist("Set-Cookie")
    assert any("HttpOnly" in c and "SameSite=Strict" in c for c in plain), plain
    assert not any("Secure" in c for c in plain)
    client = app.test_client()
    form = client.get("/console/login", environ_base=LOCAL, headers={"X-Forwarded-Proto": "https"})
    secure = client.post(
        "/console/login",
        data={"password": PASSWORD, "csrf_token": csrf_of(form.data)},
        environ_base=LOCAL,
        headers={"X-Forwarded-Proto": "https"},
    ).headers.getlist("Set-Cookie")
    assert any("Secure" in c for c in secure), secure


def test_every_action_needs_the_csrf_token(client: FlaskClient) -> None:
    log_in(client)
    for path in ("/console/check", "/console/logout", "/console/webhooks/purge", "/console/try"):
        assert client.post(path, data={}, environ_base=LOCAL).status_code == 400, path
        wrong = client.post(path, data={"csrf_token": "forged"}, environ_base=LOCAL)
        assert wrong.status_code == 400, path
    # the session survived: nothing was done
    assert client.get("/", environ_base=LOCAL).status_code == 200


def test_a_form_posted_from_another_site_is_refused_even_with_the_token(
    client: FlaskClient,
) -> None:
    log_in(client)
    token = csrf_of(client.get("/", environ_base=LOCAL).data)
    answer = client.post(
        "/console/logout",
        data={"csrf_token": token},
        environ_base=LOCAL,
        headers={"Origin": "https://evil.example"},
    )
    assert answer.status_code == 400
    same = client.post(
        "/console/logout",
        data={"csrf_token": token},
        environ_base=LOCAL,
        headers={"Origin": "http://localhost"},
    )
    assert same.status_code == 302


def test_logout_ends_the_session(client: FlaskClient) -> None:
    log_in(client)
    token = csrf_of(client.get("/", environ_base=LOCAL).data)
    client.post("/console/logout", data={"csrf_token": token}, environ_base=LOCAL)
    assert client.get("/", environ_base=LOCAL).status_code == 302


def test_a_changed_password_ends_the_old_sessions(tmp_path: Path) -> None:
    first = create_app(console_config(tmp_path), base_dir=tmp_path).test_client()
    log_in(first)
    cookie = first.get_cookie("lookup_console")
    assert cookie is not None
    changed = create_app(
        console_config(tmp_path, password="another password 123"), base_dir=tmp_path
    )
    second = changed.test_client()
    second.set_cookie("lookup_console", cookie.value)
    assert second.get("/", environ_base=LOCAL).status_code == 302


def test_every_worker_accepts_every_other_workers_session(tmp_path: Path) -> None:
    one = create_app(console_config(tmp_path), base_dir=tmp_path).test_client()
    log_in(one)
    cookie = one.get_cookie("lookup_console")
    assert cookie is not None
    other = create_app(console_config(tmp_path), base_dir=tmp_path).test_client()
    other.set_cookie("lookup_console", cookie.value)
    assert other.get("/", environ_base=LOCAL).status_code == 200


def test_login_attempts_are_limited_per_address(client: FlaskClient) -> None:
    for _ in range(5):
        assert log_in(client, "guess").status_code == 401
    limited = log_in(client, PASSWORD)  # even the right one, until the window passes
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0


def test_the_limiter_forgets_after_its_window_and_counts_all_addresses() -> None:
    limiter = LoginLimiter(per_address=2, overall=3, window=10)
    limiter.failed("a", now=0)
    limiter.failed("a", now=1)
    assert limiter.wait_seconds("a", now=2) == pytest.approx(8)
    assert limiter.wait_seconds("b", now=2) == 0
    limiter.failed("b", now=3)
    assert limiter.wait_seconds("c", now=4) == pytest.approx(6)  # three failures in all
    assert limiter.wait_seconds("a", now=11) == 0


def test_pages_carry_a_strict_content_security_policy(client: FlaskClient) -> None:
    log_in(client)
    for path in ("/", "/console/login", "/console/try", "/console/calls", "/console/config"):
        headers = client.get(path, environ_base=LOCAL).headers
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, path
        assert "script-src" not in CONTENT_SECURITY_POLICY  # default-src 'none' covers it
        assert headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY


def test_a_login_only_goes_back_to_a_page_of_this_server(client: FlaskClient) -> None:
    form = client.get("/console/login", environ_base=LOCAL)
    answer = client.post(
        "/console/login",
        data={"password": PASSWORD, "csrf_token": csrf_of(form.data), "next": "//evil.example/"},
        environ_base=LOCAL,
    )
    assert answer.headers["Location"] == "/"


def test_only_the_builtin_demo_may_go_without_a_password(tmp_path: Path) -> None:
    raw = console_config(tmp_path)
    del raw["console"]["password"]
    with pytest.raises(ConfigError, match=r"console\.password"):
        config_from_mapping(raw, tmp_path)
    config = config_from_mapping(raw, tmp_path, builtin_demo=True)
    assert config.console.enabled and config.console.password is None


def test_a_passwordless_console_is_for_loopback_callers_only(tmp_path: Path) -> None:
    raw = console_config(tmp_path, allowed_networks=["0.0.0.0/0"])
    del raw["console"]["password"]
    client = create_app(config_from_mapping(raw, tmp_path, builtin_demo=True)).test_client()
    assert client.get("/", environ_base=LOCAL).status_code == 200
    assert client.get("/", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 403


def test_without_a_console_table_the_console_is_off(tmp_path: Path) -> None:
    raw = console_config(tmp_path)
    del raw["console"]
    client = create_app(raw, base_dir=tmp_path).test_client()
    answer = client.get("/", environ_base=LOCAL)
    assert answer.status_code == 200 and b"console is off" in answer.data
    assert client.get("/console/login", environ_base=LOCAL).status_code == 404
