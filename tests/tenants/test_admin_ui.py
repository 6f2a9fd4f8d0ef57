"""The admin page in a real browser: Debian's chromium, headless, driven by Selenium
through Debian's chromedriver (``make system-deps`` installs both; no browser is
downloaded). Sign in with the master key, create a key, see it listed with its secret
shown once, make a request with it, and see its spend on the page."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import GatewayProc
from tests.tenants.conftest import MASTER, GatewayMaker, chat

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("chromium and chromedriver are not installed (make system-deps)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests may run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    log = Path(tmp_path_factory.mktemp("chromedriver")) / "chromedriver.log"
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(log)), options=opts)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def gw(make_gateway: GatewayMaker) -> GatewayProc:
    return make_gateway(None)  # in-process state: one gateway process is enough here


def test_sign_in_create_a_key_and_see_its_spend(
    browser: Any, gw: GatewayProc, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 10)
    browser.get(gw.url + "/admin/ui")
    # not signed in: the login form, and a wrong key is refused
    browser.find_element(By.ID, "key").send_keys("not the key")
    browser.find_element(By.ID, "signin").click()
    wait.until(ec.visibility_of_element_located((By.ID, "failed")))
    browser.find_element(By.ID, "key").send_keys(MASTER)
    browser.find_element(By.ID, "signin").click()
    wait.until(ec.presence_of_element_located((By.ID, "create-key")))

    # a team, then a key in it with a budget
    browser.find_element(By.ID, "team-id").send_keys("research")
    browser.find_element(By.ID, "team-usd").send_keys("2")
    browser.find_element(By.ID, "create-team-button").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#teams tr[data-team='research']"))
    browser.find_element(By.ID, "key-name").send_keys("ui-made key")
    Select(browser.find_element(By.ID, "key-team")).select_by_value("research")
    browser.find_element(By.ID, "key-usd").send_keys("1.5")
    browser.find_element(By.ID, "create-key-button").click()
    secret_box = wait.until(ec.visibility_of_element_located((By.ID, "new-secret-value")))
    secret = secret_box.text
    assert secret.startswith("sk-gw-")
    row = wait.until(
        lambda d: next(
            (r for r in d.find_elements(By.CSS_SELECTOR, "#keys tbody tr")
             if "ui-made key" in r.text), None,
        )
    )  # fmt: skip
    assert "research" in row.text and "active" in row.text and "$0 of $1.5" in row.text
    assert secret not in row.text

    # a request with the new key costs 0.028 (8 prompt + 10 output tokens)
    r = chat(gw, secret, max_tokens=10)
    assert r.status_code == 200 and r.headers["x-gateway-cost-usd"] == "0.028"
    browser.refresh()  # the page also refreshes itself every 15 s
    wait.until(
        lambda d: any(
            "$0.028" in r.find_element(By.CSS_SELECTOR, "td.spend").text
            for r in d.find_elements(By.CSS_SELECTOR, "#keys tbody tr")
            if "ui-made key" in r.text
        )
    )
    row_text = next(
        r.text for r in browser.find_elements(By.CSS_SELECTOR, "#keys tbody tr")
        if "ui-made key" in r.text
    )  # fmt: skip
    assert "$0.028 of $1.5" in row_text  # the budget bar, about 2 % full
    bar = browser.find_element(By.CSS_SELECTOR, "#keys tbody tr .bar")
    fill = bar.find_element(By.CSS_SELECTOR, ".fill")
    assert 0 < fill.size["width"] < 0.1 * bar.size["width"]
    wait.until(lambda d: "$0.028" in d.find_element(By.ID, "spend-total").text)
    assert browser.find_elements(By.CSS_SELECTOR, "#chart svg rect.day")
    browser.save_screenshot(str(tmp_path / "admin.png"))
    if os.environ.get("ADMIN_UI_SCREENSHOT"):
        shutil.copy(tmp_path / "admin.png", os.environ["ADMIN_UI_SCREENSHOT"])
