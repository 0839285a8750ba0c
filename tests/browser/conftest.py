"""Fixtures for browser tests against an app that serves a copy of prefixes/ as its shipped set (read-only),
with an empty class library beside it, and one Chromium page on it. A module that needs another app defines
its own `server` and `page`, which take precedence here."""

from __future__ import annotations

import shutil

import pytest

from bench.driver import launch_chromium, start_app, stop_app
from playground.cli import DEFAULT_LIBRARY


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    lib = tmp_path_factory.mktemp("shipped") / "prefixes"
    shutil.copytree(DEFAULT_LIBRARY, lib)
    proc, url, _ = start_app(["--library", str(lib.parent / "class"), "--shipped", str(lib)],
                             lib.parent / "server.log")
    yield url
    stop_app(proc)


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(60_000)
        pg.goto(server)
        pg.wait_for_selector("#header")
        yield pg
        browser.close()
