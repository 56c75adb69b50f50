"""Headless Chromium (Debian's chromium + chromium-driver) driven by selenium, for the report tests."""

from __future__ import annotations

import os
import shutil

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _find(*names: str) -> str | None:
    for n in names:
        path = shutil.which(n) or (f"/usr/bin/{n}" if os.path.exists(f"/usr/bin/{n}") else None)
        if path:
            return path
    return None


def chromium(user_data_dir):
    """A selenium Chrome driver on headless Chromium with a fresh profile; skips the test where Chromium is
    missing, except in CI (``CI`` set), where .ci/run installs it and its absence is a failure."""
    browser, driver = _find("chromium", "chromium-browser"), _find("chromedriver", "chromium-driver")
    if not (browser and driver):
        if os.environ.get("CI"):
            pytest.fail("chromium / chromedriver not installed; .ci/run installs them")
        pytest.skip("headless Chromium not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in [*FLAGS, f"--user-data-dir={user_data_dir}", "--window-size=1280,2000"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def leaked_requests(driver, page_url: str) -> list[str]:
    """Requests that left the file (from the DevTools performance log): any request to a network scheme, and
    any request made by the page other than the page itself and ``data:`` URIs. The browser's own start page
    (``chrome://`` resources before navigation) is not the report's doing and is ignored."""
    import json

    leaks = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") != "Network.requestWillBeSent":
            continue
        url = msg["params"]["request"]["url"]
        by_page = msg["params"].get("documentURL") == page_url
        if url.split(":", 1)[0] in ("http", "https", "ws", "wss", "ftp") or (
                by_page and url != page_url and not url.startswith("data:")):
            leaks.append(url)
    return leaks
