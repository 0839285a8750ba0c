"""The Compare tab's layout at two common screen sizes, measured in the browser: no legend over a plot's
title, the table without a horizontal scroll bar and its metric column in view.

One short comparison (2 steps; prompt tuning, prefix tuning and the instruction prompt; 4 held-out
examples) runs at 1280 x 800; the same page is then measured again at 1920 x 1080.
"""

from __future__ import annotations

import pytest

from bench.driver import ROOT, launch_chromium, start_app, stop_app, tab, wait_until

SHOTS = ROOT / "artifacts" / "screenshots"
PLOTS = ("cmp-by-step", "cmp-by-time", "cmp-loss")

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    library = tmp_path_factory.mktemp("library")
    proc, url, _ = start_app(["--library", str(library)], library.parent / "server.log")
    yield url
    stop_app(proc)


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        ctx = browser.new_context(viewport={"width": 1280, "height": 800})
        pg = ctx.new_page()
        pg.set_default_timeout(60_000)
        pg.goto(server)
        pg.wait_for_selector("#header")
        yield pg
        browser.close()


def set_slider(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")
    box.blur()
    wait_until(lambda: page.locator(f"#{elem_id} input[type=range]").first.input_value() == str(value), timeout=10,
               what=f"{elem_id} = {value}")


def boxes(page, elem_id: str) -> dict:
    """The bounding boxes of a plot's title, legend and drawing (plotly's own elements)."""
    return page.evaluate("""(id) => {
        const root = document.querySelector('#' + id);
        const box = (sel) => { const e = root && root.querySelector(sel);
                               if (!e) return null; const r = e.getBoundingClientRect();
                               return {x: r.x, y: r.y, w: r.width, h: r.height}; };
        return {title: box('.g-gtitle .gtitle') || box('.gtitle'), legend: box('.legend'),
                svg: box('.main-svg'), xtitle: box('.g-xtitle')}; }""", elem_id)


def overlap(a: dict, b: dict) -> bool:
    return a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]


def table_scroll(page) -> list[dict]:
    """Every element inside the compare table that scrolls sideways, with its widths."""
    return page.evaluate("""() => [...document.querySelectorAll('#cmp-table, #cmp-table *')]
        .filter(e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX))
        .map(e => ({cls: e.className && e.className.baseVal === undefined ? e.className : e.tagName,
                    scroll: e.scrollWidth, client: e.clientWidth}))""")


def metric_header(page) -> dict:
    return page.evaluate("""() => {
        const th = [...document.querySelectorAll('#cmp-table th, #cmp-table [role=columnheader]')]
            .find(e => e.innerText.includes('held-out metric'));
        if (!th) return {};
        const r = th.getBoundingClientRect();
        return {left: r.left, right: r.right, width: window.innerWidth, index: th.cellIndex}; }""")


def check_layout(page, size: str) -> None:
    for elem_id in PLOTS:
        b = wait_until(lambda: (lambda v: v if v["title"] and v["legend"] else None)(boxes(page, elem_id)),
                       timeout=30, what=f"{elem_id}'s title and legend")
        assert not overlap(b["legend"], b["title"]), f"{size}: {elem_id}'s legend covers its title: {b}"
        assert b["legend"]["y"] > b["title"]["y"] + b["title"]["h"], f"{size}: {elem_id}'s legend is not below: {b}"
        svg = b["svg"]
        assert b["legend"]["y"] + b["legend"]["h"] <= svg["y"] + svg["h"] + 1, f"{size}: {elem_id}'s legend is cut: {b}"
        if b["xtitle"]:
            assert not overlap(b["legend"], b["xtitle"]), f"{size}: {elem_id}'s legend covers the x-axis title: {b}"
    scrolls = table_scroll(page)
    assert scrolls, "the table's scroll container was not found"
    assert all(s["scroll"] <= s["client"] + 1 for s in scrolls), f"{size}: the table scrolls sideways: {scrolls}"
    h = metric_header(page)
    assert h and h["index"] in (1, -1) and 0 <= h["left"] and h["right"] <= h["width"], f"{size}: {h}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"compare-layout-{size}.png"), full_page=True)


def test_no_legend_covers_a_title_and_the_table_fits_at_1280_and_1920(page):
    tab(page, "Compare")
    boxes_ = page.locator("#cmp-methods")
    keep = ("Prefix tuning", "Prompt tuning", "Instruction prompt (no training)")
    for label in page.locator("#cmp-methods label").all_inner_texts():
        box = boxes_.get_by_label(label.strip(), exact=True)
        box.check() if label.strip() in keep else box.uncheck()
    set_slider(page, "cmp-steps", 2)
    set_slider(page, "cmp-every", 1)
    set_slider(page, "cmp-n-eval", 4)
    page.locator("#cmp-run").click()
    # something is said within the first seconds: what runs now
    wait_until(lambda: "…" in page.locator("#cmp-progress").inner_text(), timeout=15, what="a first status")
    wait_until(lambda: page.locator("#cmp-progress").get_attribute("data-state") == "finished", timeout=600,
               what="the comparison")
    assert page.locator("#cmp-progress").get_attribute("data-done") == "3"
    text = page.locator("#cmp-table").inner_text()
    assert "(n = 4, validation; 95% interval" in text and "median of 5" in text
    check_layout(page, "1280x800")
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.wait_for_timeout(1500)  # plotly redraws at the new width
    check_layout(page, "1920x1080")
