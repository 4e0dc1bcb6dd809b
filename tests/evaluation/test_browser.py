"""The HTML report in a real headless browser (Debian chromium + chromedriver): images load, runs listed."""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip(
            "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        )
    return browser, driver


@pytest.fixture
def browser(tmp_path):
    browser_path, driver_path = _chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_report_renders_with_every_image_and_run(browser, report, runs):
    offline = report.parent.parent / "offline_copy.html"  # alone in its folder: nothing beside it to load
    shutil.copyfile(report, offline)
    browser.get(offline.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt]);"
    )
    assert len(images) >= 10
    for complete, width, height, alt in images:
        assert complete and width > 0 and height > 0, f"image not loaded: {alt}"
    table = browser.execute_script("return document.querySelector('#runs + table').innerText;")
    for run in runs:
        assert run.run_dir.name in table
    verdict = browser.execute_script("return document.querySelector('.verdict').innerText;")
    assert "baseline" in verdict
    assert browser.title == "cellformer: model comparison"
