"""A page of the Dagster UI in Debian's chromium, driven by Playwright (which cannot download its
own browser here; the `chromium` fixture in e2e/conftest.py installs it when it can)."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, sync_playwright

# Headless and offline: nothing may reach the internet from a test.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@contextmanager
def chromium_browser(chromium: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def ui_page(browser: Browser, **context_options: Any) -> Page:
    """A fresh page at 1400x1000 that dismisses the UI's community pop-up whenever it shows."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, **context_options)
    page = context.new_page()
    # The UI's "Join the Dagster community" pop-up may cover the page on a first visit. On a slow
    # machine it can open late, behind a dialog the test already opened, whose overlay then takes
    # every pointer click (seen here under load): the click event goes to the button directly.
    page.add_locator_handler(
        page.get_by_role("button", name="Skip"), lambda skip: skip.dispatch_event("click")
    )
    return page
