"""Fixtures for the container tests: the container that `make test-docker` (.ci/docker.sh) built and
started, named by PLAYGROUND_DOCKER_CONTAINER and reached at PLAYGROUND_DOCKER_URL (its port 7860,
published on 127.0.0.1), and one Chromium page on it."""

from __future__ import annotations

import os

import pytest

from bench.driver import launch_chromium

CONTAINER_ENV, URL_ENV = "PLAYGROUND_DOCKER_CONTAINER", "PLAYGROUND_DOCKER_URL"


@pytest.fixture(scope="session")
def container() -> str:
    name = os.environ.get(CONTAINER_ENV)
    if not name or not os.environ.get(URL_ENV):
        pytest.fail(f"{CONTAINER_ENV} and {URL_ENV} name a running container of the image: `make test-docker` "
                    "builds it, runs it and sets both")
    return name


@pytest.fixture(scope="session")
def url(container) -> str:
    return os.environ[URL_ENV]


@pytest.fixture(scope="module")
def page(url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(60_000)
        pg.goto(url)
        pg.wait_for_selector("#header")
        yield pg
        browser.close()
