"""Debian's Chromium driven by Playwright, kept on 127.0.0.1: other requests are aborted."""

import contextlib
from pathlib import Path
from urllib.parse import urlparse

from conftest import ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
# Without these flags Chromium keeps trying background connections (updates, sync, safe browsing).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def _local_only(route):
    if urlparse(route.request.url).hostname == "127.0.0.1" or route.request.url.startswith(
        ("data:", "blob:")
    ):
        route.continue_()
    else:
        route.abort()


@contextlib.contextmanager
def chromium():
    "A browser context on Debian's Chromium; yields it and closes everything on exit."
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "Debian's Chromium is missing: run `sudo apt-get install -y chromium`"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.route("**/*", _local_only)
            yield context
            context.close()
        finally:
            browser.close()
