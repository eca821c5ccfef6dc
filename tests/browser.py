"""A real headless Chromium for the console's browser tests: Debian's `chromium` driven by its
`chromium-driver` through selenium. Nothing is downloaded: the driver's path is given, so
selenium-manager never runs, and Chromium's own background connections are turned off (a
closed network would otherwise stall it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("LEDGER_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LEDGER_CHROMEDRIVER", "/usr/bin/chromedriver")
ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
    "--metrics-recording-only",
    "--password-store=basic",
)


def browser_required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("LEDGER_REQUIRE_BROWSER") == "1"


def missing(reason: str) -> None:
    """No browser: a failure where one is required (CI, LEDGER_REQUIRE_BROWSER), else a skip."""
    if browser_required():
        pytest.fail(f"{reason} (a browser is required here: CI or LEDGER_REQUIRE_BROWSER)")
    pytest.skip(reason)


def start_chromium(profile: Path, downloads: Path, width: int = 1280, height: int = 900) -> Any:
    """A headless Chromium with a fresh profile, saving downloads into `downloads`."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed (scripts/test installs it)")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.exists(path) or shutil.which(path)):
            missing(f"{path} is missing (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ARGUMENTS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        },
    )
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as exc:
        missing(f"Chromium could not be started: {exc}")
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.set_page_load_timeout(60)
    return driver
