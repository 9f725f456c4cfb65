"""Headless Chromium (Debian's `chromium` + `chromium-driver`) driven by Selenium, on the live test server.

Nothing is downloaded: the driver and the browser are the system's, given by path (Selenium Manager is never
asked). Without them a local run skips with the reason; under CI (`CI=true`) it fails, loudly. A failing test
leaves a screenshot and the page source in `var/browser-screenshots/` (or $BROWSER_SCREENSHOTS)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOTS = Path(
    os.environ.get("BROWSER_SCREENSHOTS", Path(__file__).resolve().parents[2] / "var" / "browser-screenshots")
)
INSTALL_HINT = "apt-get install -y chromium chromium-driver"


def _missing() -> list[str]:
    return [path for path in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(path) and os.access(path, os.X_OK))]


@pytest.fixture(scope="session")
def chromium_paths() -> tuple[str, str]:
    missing = _missing()
    if missing:
        message = f"headless Chromium is needed for the admin browser tests: {missing} not found ({INSTALL_HINT})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message, pytrace=False)  # CI installs it: its absence is a broken setup, not a skip
        pytest.skip(message)
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture(scope="module")
def browser(chromium_paths: tuple[str, str]) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # belt and braces: Selenium Manager must never reach the network
    binary, driver_path = chromium_paths
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--autoplay-policy=no-user-gesture-required",  # the audio test presses play from a script
        "--mute-audio",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[object]:
    report = yield
    driver = getattr(item, "funcargs", {}).get("browser")
    if report.when == "call" and report.failed and driver is not None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        stem = SCREENSHOTS / item.name.replace("/", "_")
        try:
            driver.save_screenshot(f"{stem}.png")
            stem.with_suffix(".html").write_text(driver.page_source)
            report.sections.append(("browser", f"screenshot: {stem}.png, page: {stem}.html, url: {driver.current_url}"))
        except Exception as exc:  # noqa: BLE001 - a dead browser must not hide the real failure
            report.sections.append(("browser", f"no screenshot: {exc}"))
    return report
