"""The console in Debian's chromium (Selenium, headless): an operator's day, and a hostile
letter that must run no script — proven from the browser's side, with a sanity check that
the same markup rendered as HTML would have set off the probe."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import HOSTILE_MARKUP, OPERATOR, Console
from support.services import require_service

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PROBE = "return [window.__pwned || null, document.title]"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless chromium for the module (starting one takes a second or two)."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        require_service("chromium", "install Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1000", "--lang=en-US"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("MAILROUTE_ARTEFACTS")
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def alert_text(driver: object) -> str | None:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        alert = driver.switch_to.alert  # type: ignore[attr-defined]
        text: str = alert.text
        alert.accept()
        return text
    except NoAlertPresentException:
        return None


def log_in(driver: object, console: Console) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(console.url + "/login")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "name").send_keys(OPERATOR[0])  # type: ignore[attr-defined]
    driver.find_element(By.ID, "password").send_keys(OPERATOR[1])  # type: ignore[attr-defined]
    driver.find_element(By.ID, "login").click()  # type: ignore[attr-defined]
    WebDriverWait(driver, 10).until(lambda d: not d.current_url.endswith("/login"))
    assert driver.find_element(By.ID, "queue")  # type: ignore[attr-defined]


def test_the_probe_fires_when_the_markup_is_rendered_as_html(browser: object) -> None:
    """Sanity: the hostile markup, rendered unescaped, does trip the probe the other test
    reads; so that test would fail if the console rendered a letter as HTML."""
    def rendered(markup: str) -> tuple[object, str, str]:
        page = f"<html><head><title>clean</title></head><body>{markup}</body></html>"
        browser.get("data:text/html;charset=utf-8," + quote(page))  # type: ignore[attr-defined]
        pwned, title = browser.execute_script(PROBE)  # type: ignore[attr-defined]
        return pwned, title, browser.current_url  # type: ignore[attr-defined]

    # whole: the <meta refresh> takes the page away at once (the URL check catches it)
    pwned, title, url = rendered(HOSTILE_MARKUP)
    assert pwned is not None or title != "clean" or not url.startswith("data:")
    # without the refresh, the scripts and handlers themselves trip the probe
    pwned, title, url = rendered(HOSTILE_MARKUP.replace("http-equiv", "data-x"))
    assert pwned is not None and title == "pwned"


def test_an_operators_day_and_a_hostile_letter(
    browser: object, console: Console, artefacts: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver: object = browser
    log_in(driver, console)
    Select(driver.find_element(By.ID, "f-status")).select_by_value("new")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "f-q").send_keys("Ошибка в отчёте")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "f-apply").click()  # type: ignore[attr-defined]
    WebDriverWait(driver, 10).until(lambda d: "status=new" in d.current_url)
    rows = driver.find_elements(By.CSS_SELECTOR, "#queue tbody tr")  # type: ignore[attr-defined]
    assert rows and all(r.find_element(By.CLASS_NAME, "status").text == "new" for r in rows)
    queue_shot = artefacts / "console-queue.png"
    driver.save_screenshot(str(queue_shot))  # type: ignore[attr-defined]

    number = rows[0].find_element(By.CLASS_NAME, "number").text
    rows[0].find_element(By.CLASS_NAME, "number").click()
    WebDriverWait(driver, 10).until(lambda d: "/requests/" in d.current_url)
    Select(driver.find_element(By.ID, "new-status")).select_by_value("in_progress")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "status-note").send_keys("called the customer")  # type: ignore[attr-defined]
    driver.find_element(By.ID, "status-save").click()  # type: ignore[attr-defined]
    WebDriverWait(driver, 10).until(lambda d: "done=1" in d.current_url)
    assert driver.find_element(By.ID, "status").text == "in_progress"  # type: ignore[attr-defined]
    history = driver.find_element(By.ID, "history").text  # type: ignore[attr-defined]
    assert "status" in history and "by=olga" in history and "called the customer" in history
    assert number in driver.current_url  # type: ignore[attr-defined]

    driver.get(f"{console.url}/requests/{quote(console.hostile)}")  # type: ignore[attr-defined]
    title = driver.title  # type: ignore[attr-defined]
    url = driver.current_url  # type: ignore[attr-defined]
    driver.implicitly_wait(0)  # type: ignore[attr-defined]
    import time
    time.sleep(1.5)  # a <meta refresh> or a late handler would have acted by now
    assert alert_text(driver) is None
    pwned, title_now = driver.execute_script(PROBE)  # type: ignore[attr-defined]
    assert pwned is None and title_now == title and "pwned" not in title_now
    assert driver.current_url == url  # type: ignore[attr-defined]
    injected = driver.execute_script(  # type: ignore[attr-defined]
        "return [document.scripts.length, document.querySelectorAll("
        "'#injected, img[src=x], svg, style, meta[http-equiv], a[href^=javascript]').length,"
        " getComputedStyle(document.body).display]")
    assert injected == [0, 0, "block"]
    letter_text = driver.find_element(By.CSS_SELECTOR, "pre.text").text  # type: ignore[attr-defined]
    assert "<script>window.__pwned" in letter_text and 'onerror="window.__pwned' in letter_text
    page_text = driver.find_element(By.TAG_NAME, "body").text  # type: ignore[attr-defined]
    assert "<img src=x onerror=" in page_text  # the subject, as text
    assert "<svg onload=alert(1)>" in page_text  # the display name, as text
    request_shot = artefacts / "console-request.png"
    driver.save_screenshot(str(request_shot))  # type: ignore[attr-defined]
    print(f"screenshots: {queue_shot} {request_shot}")
