"""The page a class reads: layout rules checked in a real browser at a laptop, a projector and a phone.

The app serves a copy of the shipped prefixes beside an empty class library. Each viewport gets
its own browser session, trains a short prefix on it and opens every tab; the rules are checked
with the elements' bounding boxes, as the browser laid them out:

- at 1280x800 no table scrolls sideways, and the Train curves are in view after pressing Train,
  also once the controls beside them are scrolled;
- no table header breaks inside a word;
- no plot's legend (or toolbar) overlaps its title, in presentation mode too, at 1920x1080 and
  at 150 % zoom.

Screenshots of every tab at every viewport go to ``artifacts/screenshots/viewports/``
(``make screenshots`` copies them to ``docs/screenshots/``).
"""

from __future__ import annotations

import shutil

import pytest

from bench.driver import ROOT, launch_chromium, plot_data, set_number, start_app, stop_app, tab, wait_until
from playground.cli import DEFAULT_LIBRARY

pytestmark = pytest.mark.real_model
SHOTS = ROOT / "artifacts" / "screenshots" / "viewports"
TABS = ("Learn", "Train", "Attention", "Switch", "Library", "Compare")
# name: (viewport, device scale factor, presentation mode)
VIEWPORTS = {"laptop-1280x800": ((1280, 800), 1, False), "projector-1920x1080": ((1920, 1080), 1, True),
             "projector-150pct-zoom": ((1280, 720), 1.5, True), "phone-390x844": ((390, 844), 2, False)}

# Every table's scroll box whose content is wider than the box: a table the reader must scroll sideways.
SIDEWAYS = """() => [...document.querySelectorAll('.virtual-table-viewport, .prose table')]
  .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1)
  .map(e => ({id: (e.closest('[id]') || {}).id || '?', scroll: e.scrollWidth, box: e.clientWidth}))"""

# Table headers and headings whose words wrap inside a word (a word on two lines) or stick out of their box.
BROKEN_HEADERS = """() => {
  const out = [];
  for (const th of document.querySelectorAll('th, h1, h2, h3')) {
    if (th.offsetParent === null) continue;
    const cell = th.getBoundingClientRect();
    const walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const re = /[^\\s-]+/g; let m;  // a break at a hyphen is a break between words
      while ((m = re.exec(n.data))) {
        const r = document.createRange(); r.setStart(n, m.index); r.setEnd(n, m.index + m[0].length);
        const rects = [...r.getClientRects()].filter(x => x.width > 0);
        const right = Math.max(...rects.map(x => x.right));
        if (rects.length > 1 || right > cell.right + 1)
          out.push({id: (th.closest('[id]') || {}).id || '?', word: m[0], lines: rects.length});
      }
    }
  }
  return out;
}"""

# Each rendered plot: its title's box and its legend's and toolbar's, where shown.
PLOT_BOXES = """() => [...document.querySelectorAll('.js-plotly-plot')].filter(d => d.offsetParent !== null).map(d => {
  const box = s => { const e = d.querySelector(s); if (!e) return null; const r = e.getBoundingClientRect();
                     return r.width > 0 && r.height > 0 ? {l: r.left, r: r.right, t: r.top, b: r.bottom} : null; };
  const bar = d.querySelector('.modebar-container');
  return {id: (d.closest('[id]') || {}).id || '?', title: box('.g-gtitle'), legend: box('.legend'),
          toolbar: bar && getComputedStyle(bar).display !== 'none' && getComputedStyle(bar.firstElementChild || bar).opacity !== '0'
                   ? box('.modebar') : null};
})"""


def overlap(a: dict | None, b: dict | None) -> bool:
    return bool(a and b) and a["l"] < b["r"] - 1 and b["l"] < a["r"] - 1 and a["t"] < b["b"] - 1 and b["t"] < a["b"] - 1


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    lib = tmp_path_factory.mktemp("layout") / "prefixes"
    shutil.copytree(DEFAULT_LIBRARY, lib)
    proc, url, _ = start_app(["--library", str(lib.parent / "class"), "--shipped", str(lib)], lib.parent / "server.log")
    yield url
    stop_app(proc)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


def open_tab(page, name: str) -> None:
    """A tab by its name; on a phone the last tabs sit behind Gradio's "More tabs" menu."""
    t = page.get_by_role("tab", name=name, exact=True)
    if t.count() and t.first.is_visible():
        t.first.click()
        return
    page.get_by_role("button", name="More tabs").click()
    page.locator(f".overflow-dropdown button:text-is('{name}')").click()


def open_page(browser, server: str, name: str):
    (w, h), scale, present = VIEWPORTS[name]
    ctx = browser.new_context(viewport={"width": w, "height": h}, device_scale_factor=scale)
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    page.goto(server + ("?present=1" if present else ""))
    page.wait_for_selector("#header")
    if present:
        wait_until(lambda: page.evaluate("() => document.documentElement.classList.contains('pp-present')"),
                   timeout=30, what="presentation mode from the address")
    return page



def state(page) -> str:
    return page.evaluate("() => (document.querySelector('#pp-progress') || {dataset: {}}).dataset.state || ''")


def in_view(page, elem_id: str, min_height: float = 100) -> bool:
    """The element's box lies inside the viewport (for a plot: drawn there, at least min_height tall)."""
    vh = page.viewport_size["height"]
    box = page.locator(f"#{elem_id}").bounding_box()
    return bool(box) and box["y"] >= 0 and box["y"] + box["height"] <= vh + 1 and box["height"] >= min_height


def train_short(page) -> None:
    """A 2-step run on 4 held-out examples: curves, both tables, a just-trained prefix."""
    tab(page, "Train")
    set_number(page, "steps", 2)
    page.get_by_text("Held-out evaluation").click()
    set_number(page, "eval-every", 1)
    set_number(page, "eval-n", 4)
    page.locator("#train-btn").scroll_into_view_if_needed()
    page.locator("#train-btn").click()
    wait_until(lambda: state(page) in ("finished", "stopped"), timeout=600, what="the short run")
    wait_until(lambda: page.locator("#compare-table [role=grid]").first.get_attribute("aria-rowcount") == "6",
               what="the before/after table")  # header, the score row, 4 examples


def problems(page, viewport: str, where: str) -> list:
    """What breaks the rules on the tab showing now; on the laptop, tables scrolling sideways too."""
    page.wait_for_timeout(500)  # the last re-layout (fonts, plot relayout) settles
    out = [(where, "header broken", h) for h in page.evaluate(BROKEN_HEADERS)]
    for p in page.evaluate(PLOT_BOXES):
        if overlap(p["legend"], p["title"]) or overlap(p["toolbar"], p["title"]):
            out.append((where, "legend or toolbar on the title", p))
    if viewport == "laptop-1280x800":
        out += [(where, "table scrolls sideways", t) for t in page.evaluate(SIDEWAYS)]
    return out


def walk(page, name: str) -> None:
    """Train a short prefix, show its attention, then check and photograph every tab."""
    train_short(page)
    tab(page, "Attention")
    page.locator("#att-run").click()
    wait_until(lambda: plot_data(page, "att-query"), timeout=120, what="the attention figures")
    SHOTS.mkdir(parents=True, exist_ok=True)
    found = []
    for t in TABS:
        open_tab(page, t)
        page.wait_for_timeout(800)
        found += problems(page, name, f"{name}: {t}")
        page.screenshot(path=str(SHOTS / f"{name}-{t.lower()}.jpg"), type="jpeg", quality=70)
    assert not found, "\n".join(map(str, found))


def test_laptop_train_curves_stay_in_view_and_tables_fit(browser, server):
    page = open_page(browser, server, "laptop-1280x800")
    tab(page, "Train")
    # PEFT's names keep a plain label beside them and a hover hint (assets/glossary.md)
    hint = page.locator("#n-tokens .pp-hint").first
    wait_until(lambda: hint.count() == 1, timeout=30, what="the hover hint on num_virtual_tokens")
    assert "Virtual tokens" in hint.inner_text() and "in every layer" in hint.get_attribute("title")
    set_number(page, "steps", 3)
    page.get_by_text("Held-out evaluation").click()
    set_number(page, "eval-every", 1)
    set_number(page, "eval-n", 4)
    page.locator("#train-btn").scroll_into_view_if_needed()
    page.locator("#train-btn").click()
    # The curves are in view right after the click, and stay there with the controls scrolled to their end.
    wait_until(lambda: plot_data(page, "loss-plot") or plot_data(page, "metric-plot"), what="the curves")
    assert in_view(page, "loss-plot") and in_view(page, "metric-plot")
    page.locator("#param-summary").scroll_into_view_if_needed()
    page.mouse.wheel(0, 300)
    page.wait_for_timeout(300)
    assert page.evaluate("() => window.scrollY") > 300  # the page did scroll
    assert in_view(page, "loss-plot") and in_view(page, "metric-plot") and in_view(page, "pp-progress", 10)
    wait_until(lambda: state(page) in ("finished", "stopped"), timeout=600, what="the run")
    metric = plot_data(page, "metric-plot")[0]
    assert metric["x"][0] == 0 and metric["x"][1:] == [1, 2, 3]  # step 0: the initialized prefix, before training
    page.context.close()


@pytest.mark.parametrize("name", list(VIEWPORTS))
def test_every_tab_at_every_viewport(browser, server, name):
    page = open_page(browser, server, name)
    walk(page, name)
    if VIEWPORTS[name][2]:  # presentation mode really is larger: text and plot fonts
        size = page.evaluate("() => parseFloat(getComputedStyle(document.querySelector('#train-intro p, #train-intro'))"
                             ".fontSize)")
        tab(page, "Train")
        fonts = page.evaluate("() => document.querySelector('#loss-plot .js-plotly-plot').layout.font.size")
        assert size >= 19 and fonts >= 18, (size, fonts)
    page.context.close()


def test_presentation_mode_is_a_toggle_kept_in_the_address(browser, server):
    page = open_page(browser, server, "laptop-1280x800")
    body = "() => parseFloat(getComputedStyle(document.querySelector('#train-intro p, #train-intro')).fontSize)"
    tab(page, "Train")
    small = page.evaluate(body)
    page.locator("#present-toggle input").check()
    wait_until(lambda: "present=1" in page.url, timeout=10, what="the address to keep the mode")
    assert page.evaluate(body) > small * 1.25
    page.goto(page.url)  # a reload, or the link sent to the projector's machine, opens in the mode
    page.wait_for_selector("#header")
    wait_until(lambda: page.locator("#present-toggle input").is_checked(), timeout=30, what="the toggle ticked")
    page.locator("#present-toggle input").uncheck()
    wait_until(lambda: "present" not in page.url, timeout=10, what="the mode off")
    tab(page, "Train")
    assert abs(page.evaluate(body) - small) < 0.5
    page.context.close()
