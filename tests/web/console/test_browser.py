"""The console driven in a real headless browser (Debian's chromium and chromedriver).

A person logs in, tries a lookup and reads the staff view, sees a broken
source's error, retries a failed webhook and sees it delivered, and logs out;
the Content-Security-Policy and the CSRF token hold, and every page's
screenshot shows something.
"""

from __future__ import annotations

import io
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from lookup_server.web.app import create_app
from tests.conftest import write_csv
from tests.support.requirements import need
from tests.web.console.conftest import KEY, PASSWORD, console_config

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
HOSTILE = "Hacker<img src=x onerror=\"this.setAttribute('data-ran','yes')\">"


@dataclass
class Receiver:
    """A webhook receiver that fails until told to succeed."""

    status: int = 500
    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if state.status == 200:
                state.received.append(json.loads(body))
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/in"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()


@pytest.fixture
def base_url(tmp_path: Path, receiver: Receiver) -> Iterator[str]:
    with serving(tmp_path, receiver) as url:
        yield url


@contextmanager
def serving(tmp_path: Path, receiver: Receiver, **target: object) -> Iterator[str]:
    """The console served on a free port; crm (options ``target``) posts to ``receiver``."""
    config = console_config(tmp_path)
    crm = write_csv(
        tmp_path / "crm.csv",
        ["customer_id", "first_name", "last_name", "email", "profile"],
        [
            ["7001", HOSTILE, "Intruder", "intruder@example.com", "<b>VIP</b> customer"],
            ["7002", "Grace", "Hopper", "grace@example.com", "<i>navy</i>"],
        ],
    )
    config["sources"]["crm"] = {"backend": "csv", "path": str(crm), "html_fields": ["profile"]}
    config["targets"]["crm"] |= {"url": receiver.url, **target}
    app = create_app(config, base_dir=tmp_path)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        app.extensions["lookup_server"].webhooks.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    need(
        shutil.which(CHROMIUM) is not None and shutil.which(CHROMEDRIVER) is not None,
        "Debian's chromium and chromium-driver are not installed",
    )
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_until(
    driver: WebDriver, condition: Callable[[WebDriver], Any], timeout: float = 15
) -> Any:
    """What ``condition`` returns once it is truthy (the page may still be loading)."""
    # a page replaced while it is read leaves stale elements: read it again
    return WebDriverWait(
        driver, timeout, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
    ).until(condition)


def screenshot(driver: WebDriver, name: str, folder: Path) -> None:
    """Save the page's screenshot and check it is not blank (many shades, not one)."""
    from PIL import Image

    png = driver.get_screenshot_as_png()
    (folder / f"{name}.png").write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("L")
    colours = image.getcolors(maxcolors=256 * 256) or []
    assert len(colours) > 16, f"{name}: the screenshot is blank ({len(colours)} shades)"
    assert min(image.tobytes()) < 100, f"{name}: nothing dark (no text) on the page"


def browser_log(driver: WebDriver) -> list[dict[str, Any]]:
    """The browser's console messages since the last call (reading them empties the log)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return entries


def no_console_errors(driver: WebDriver) -> None:
    """Nothing the page loads is refused by its own Content-Security-Policy, nothing fails."""
    severe = [e["message"] for e in browser_log(driver) if e["level"] == "SEVERE"]
    assert severe == []


def log_in(driver: WebDriver, base_url: str, password: str = PASSWORD) -> None:
    driver.get(base_url + "/")
    wait_until(driver, lambda d: d.find_element(By.NAME, "password"))
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()


def test_log_in_see_health_try_a_lookup_and_log_out(
    browser: WebDriver, base_url: str, tmp_path: Path
) -> None:
    browser.get(base_url + "/")
    assert "/console/login" in browser.current_url
    screenshot(browser, "login", tmp_path)
    log_in(browser, base_url, "wrong password")
    assert (
        "Wrong password"
        in wait_until(browser, lambda d: d.find_element(By.CLASS_NAME, "error")).text
    )
    browser_log(browser)  # the 401 of the wrong password is logged as an error
    log_in(browser, base_url)
    row = wait_until(browser, lambda d: d.find_element(By.ID, "source-people"))
    assert "healthy" in row.text
    broken = browser.find_element(By.ID, "source-directory")
    assert "failing" in broken.text and "cannot connect" in broken.text
    assert KEY not in browser.page_source and "directory-secret-value" not in browser.page_source
    screenshot(browser, "overview", tmp_path)
    no_console_errors(browser)

    browser.find_element(By.LINK_TEXT, "Try a lookup").click()
    wait_until(browser, lambda d: d.find_element(By.NAME, "last_name")).send_keys("lovelace")
    browser.find_element(By.CSS_SELECTOR, "select[name=source] option[value=people]").click()
    browser.find_element(By.CSS_SELECTOR, "form.trial button").click()
    verdict = wait_until(browser, lambda d: d.find_element(By.CLASS_NAME, "verdict"))
    assert "One customer" in verdict.text
    assert (
        "name: last 'lovelace'"
        in browser.find_element(By.ID, "how").find_element(By.XPATH, "..").text
    )
    browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, "iframe.staff"))
    staff = browser.find_element(By.TAG_NAME, "body").text
    assert "Ada" in staff and "ada@example.com" in staff and "Analyst" in staff
    browser.switch_to.default_content()
    screenshot(browser, "try", tmp_path)
    no_console_errors(browser)

    browser.find_element(By.CSS_SELECTOR, "form.logout button").click()
    wait_until(browser, lambda d: d.find_element(By.NAME, "password"))
    browser.get(base_url + "/console/calls")
    assert "/console/login" in browser.current_url


def test_the_staff_view_shows_markup_as_text_and_runs_no_script(
    browser: WebDriver, base_url: str, tmp_path: Path
) -> None:
    log_in(browser, base_url)
    wait_until(browser, lambda d: d.find_element(By.ID, "source-people"))
    browser.get(base_url + "/console/try")
    browser.find_element(By.CSS_SELECTOR, "select[name=source] option[value=crm]").click()
    browser.find_element(By.NAME, "customer_id").send_keys("7001")
    browser.find_element(By.CSS_SELECTOR, "form.trial button").click()
    wait_until(browser, lambda d: d.find_element(By.CLASS_NAME, "verdict"))
    browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, "iframe.staff"))
    body = browser.find_element(By.TAG_NAME, "body")
    # The hostile name reaches staff as the text it is; the deliberate HTML field as HTML.
    assert "Hacker<img" in body.text
    assert browser.find_elements(By.CSS_SELECTOR, "img") == []
    assert browser.find_element(By.TAG_NAME, "b").text == "VIP"
    browser.switch_to.default_content()
    screenshot(browser, "staff-view", tmp_path)


def test_the_content_security_policy_stops_injected_script(
    browser: WebDriver, base_url: str
) -> None:
    log_in(browser, base_url)
    wait_until(browser, lambda d: d.find_element(By.ID, "source-people"))
    # Whatever slipped into a page, an inline script or handler would not run.
    browser.execute_script(
        "const s = document.createElement('script');"
        "s.textContent = 'document.body.dataset.ran = \"yes\"';"
        "document.body.appendChild(s);"
        "const i = document.createElement('img');"
        "i.setAttribute('onerror', 'document.body.dataset.handler = \"yes\"');"
        "i.src = 'data:,x'; document.body.appendChild(i);"
    )
    with pytest.raises(TimeoutException):
        wait_until(
            browser,
            lambda d: d.execute_script(
                "return document.body.dataset.ran || document.body.dataset.handler"
            ),
            timeout=2,
        )
    violations = [e for e in browser_log(browser) if "Content Security Policy" in e["message"]]
    assert violations, "the browser reported no refused script"


def test_a_form_without_its_csrf_token_does_nothing(browser: WebDriver, base_url: str) -> None:
    log_in(browser, base_url)
    wait_until(browser, lambda d: d.find_element(By.ID, "source-people"))
    browser.execute_script(
        "document.querySelector('form.logout input[name=csrf_token]').value = 'forged'"
    )
    browser.find_element(By.CSS_SELECTOR, "form.logout button").click()
    assert wait_until(browser, lambda d: "out of date" in d.find_element(By.TAG_NAME, "body").text)
    browser.get(base_url + "/")
    assert wait_until(browser, lambda d: d.find_element(By.ID, "source-people"))  # still logged in


def test_retry_a_failed_webhook_and_see_it_delivered(
    browser: WebDriver, base_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    import requests

    answer = requests.post(
        f"{base_url}/webhook/crm/{KEY}", data={"xRequest": "12345", "sTitle": "Printer"}, timeout=10
    )
    assert answer.status_code == 202
    webhook_id = answer.json()["id"]
    log_in(browser, base_url)
    wait_until(browser, lambda d: d.find_element(By.ID, "source-people"))

    def state_shown(d: WebDriver) -> str:
        """The webhook's state once its first attempt failed, else ""."""
        d.get(f"{base_url}/console/webhooks")
        row = d.find_element(By.ID, f"webhook-{webhook_id}")
        cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        return cells[3] if cells[4] == "1" else ""

    assert wait_until(browser, state_shown, timeout=30) == "pending"  # failed once, waiting
    screenshot(browser, "webhooks", tmp_path)
    receiver.status = 200
    browser.find_element(By.ID, f"webhook-{webhook_id}").find_element(By.TAG_NAME, "button").click()
    assert (
        "pending again"
        in wait_until(browser, lambda d: d.find_element(By.CLASS_NAME, "notice")).text
    )

    def delivered(d: WebDriver) -> bool:
        d.get(f"{base_url}/console/webhooks")
        return (
            d.find_element(By.ID, f"webhook-{webhook_id}").find_element(By.CLASS_NAME, "state").text
            == "delivered"
        )

    assert wait_until(browser, delivered, timeout=30)
    assert [w.get("xRequest") for w in receiver.received] == ["12345"]
    browser.find_element(By.CSS_SELECTOR, f"#webhook-{webhook_id} a").click()
    attempts = wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "table.attempts"))
    outcomes = [row.text for row in attempts.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert len(outcomes) == 2 and "failed" in outcomes[0] and "500" in outcomes[0]
    assert "delivered" in outcomes[1]
    screenshot(browser, "webhook", tmp_path)
    no_console_errors(browser)


def test_a_target_paused_by_its_breaker_shows_so_and_resumes_after_a_retry(
    browser: WebDriver, receiver: Receiver, tmp_path: Path
) -> None:
    import requests

    breaker = {"breaker_failures": 1, "breaker_probe_seconds": 1, "max_concurrent": 1}
    with serving(tmp_path, receiver, **breaker) as base_url:
        answer = requests.post(f"{base_url}/webhook/crm/{KEY}", data={"xRequest": "1"}, timeout=10)
        assert answer.status_code == 202
        webhook_id = answer.json()["id"]
        log_in(browser, base_url)
        wait_until(browser, lambda d: d.find_element(By.ID, "source-people"))

        def breaker_shown(d: WebDriver) -> str:
            d.get(f"{base_url}/console/webhooks")
            return str(d.find_element(By.CSS_SELECTOR, "#delivery-crm .breaker").text)

        paused = wait_until(browser, lambda d: breaker_shown(d).startswith("paused since"), 30)
        assert paused
        row = browser.find_element(By.ID, "delivery-crm")
        assert row.find_element(By.CLASS_NAME, "failures").text == "1"
        assert row.find_element(By.CLASS_NAME, "limits").text == "max_concurrent = 1"
        assert "next probe" in row.find_element(By.CLASS_NAME, "breaker").text
        screenshot(browser, "webhooks-paused", tmp_path)
        receiver.status = 200
        browser.find_element(By.ID, f"webhook-{webhook_id}").find_element(
            By.TAG_NAME, "button"
        ).click()  # due now: the next probe delivers it
        assert wait_until(browser, lambda d: breaker_shown(d).startswith("closed"), 30)
        assert browser.find_element(By.CSS_SELECTOR, "#delivery-crm .failures").text == "0"
        assert [w.get("xRequest") for w in receiver.received] == ["1"]
        no_console_errors(browser)


def test_every_page_renders_under_its_policy(
    browser: WebDriver, base_url: str, tmp_path: Path
) -> None:
    log_in(browser, base_url)
    wait_until(browser, lambda d: d.find_element(By.ID, "source-people"))
    for name, path in (
        ("try-ajax", "/console/try-ajax"),
        ("setup", "/console/setup"),
        ("calls", "/console/calls"),
        ("config", "/console/config"),
    ):
        browser.get(base_url + path)
        wait_until(browser, lambda d: d.find_element(By.TAG_NAME, "h1"))
        screenshot(browser, name, tmp_path)
        no_console_errors(browser)
        assert KEY not in browser.page_source, path
        assert "directory-secret-value" not in browser.page_source, path
