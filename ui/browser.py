"""Driving the demo page in Debian's headless Chromium (Playwright): shared by the tests and benchmarks.

Playwright is a dev dependency, imported only by `launch_chromium`; its own browser download is
never used.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

CHROMIUM = os.environ.get("SHOPLAB_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling out, and a closed network refuses it.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def launch_chromium() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, url: str, height: int = 1000):
    """A new browser context (a new demo session) on the demo, once its chat input is there."""
    page = browser.new_context(viewport={"width": 1400, "height": height}).new_page()
    page.goto(url)
    page.wait_for_selector("#chat-input textarea")
    return page


def send(page, text: str) -> None:
    page.fill("#chat-input textarea", text)
    page.click("#chat-send")


def cart_items(page) -> int:
    return int(page.get_attribute("#cart .sl-cart", "data-items"))
