"""Web-app latency, measured from a real browser: cold start, Switch, and the Attention figures.

    .venv/bin/python bench/app_latency.py [--repeats 5]

1. Start to ready page: ``python app.py`` launched (model already in the cache) until the
   page answers, and until Chromium shows the header.
2. Attention: a click on "Show attention" for a 30-token prompt until all four plotly
   figures are drawn (first click on a fresh server, then the next click); and the same
   computation in-process (engine + figures, no browser).
3. Switch: with an input typed and the prefixes used once, ticking one more prefix and a
   click on Run until every output card has finished on screen (2 and 3 trained prefixes,
   without "no prefix", whose chatty answers run to the token budget), plus the engine-side
   time to fetch the prefixes that the app reports.

Prefixes: three short trainings (sentiment, topic, capitals; 8 steps each) into a temporary
library, so their answers have realistic lengths. Medians over --repeats.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.driver import launch_chromium, start_app, stop_app, tab, wait_until  # noqa: E402

PROMPT_30 = "The long-awaited sequel finally arrived this weekend, and despite a slow start the second half " \
            "was clever and moving."


def make_library(root: Path) -> None:
    from playground.library import Library
    from playground.methods import prefix_method
    from playground.models import load_model
    from playground.peft_folder import make_card
    from playground.prefix import PrefixSettings, create_prefix
    from playground.tasks import get_task
    from playground.training import TrainSettings, train

    base = load_model(device="cpu")
    lib = Library(root)
    for name in ("sentiment", "topic", "capitals"):
        task = get_task(name)
        prefix = create_prefix(base, PrefixSettings(), task.instruction)
        for _ in train(base, prefix_method(prefix), task, TrainSettings(steps=8, eval_every=0, eval_examples=4)):
            pass
        lib.save(name, prefix, make_card(base, name, {}, {}))
    from playground.prompts import PromptFormat

    n = len(PromptFormat.for_tokenizer(base.tokenizer).encode_prompt(PROMPT_30, "prefix"))
    print(f"attention prompt: {n} tokens with the chat template", file=sys.stderr)
    return base


def in_process_attention(base, library: Path, repeats: int) -> list[float]:
    from playground.figures import head_figure, layer_figure, query_token_figure, virtual_token_figure
    from playground.library import Library
    from playground.service import Playground

    pg = Playground(base, Library(library))
    out = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        att = pg.attention("bench", PROMPT_30, ["sentiment"])
        a = att["sentiment"]
        layer_figure(att), head_figure(a), virtual_token_figure(a), query_token_figure(a)
        out.append(time.perf_counter() - t0)
    return out[1:]  # the first call also loads the prefix from disk


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="bench-app-"))
    lib = tmp / "library"
    base = make_library(lib)
    engine_att = in_process_attention(base, lib, args.repeats)
    del base

    results: dict[str, list[float]] = {k: [] for k in (
        "start_http", "start_page", "attention_cold", "attention_warm", "switch_2", "switch_3", "switch_engine_ms")}

    ids = ["att-layers", "att-heads", "att-vt", "att-query"]
    remember = """(ids) => { window.__old = ids.map(id => {
                     const d = document.querySelector('#' + id + ' .js-plotly-plot'); return d ? d.data : null; }); }"""
    redrawn = """(ids) => ids.every((id, i) => { const d = document.querySelector('#' + id + ' .js-plotly-plot');
                                              return d && d.data && d.data !== window.__old[i]; })"""

    def attention_click(page) -> float:
        """Click until all four figures hold new data (plotly replaces gd.data on every draw)."""
        page.evaluate(remember, ids)
        t = time.perf_counter()
        page.locator("#att-run").click()
        wait_until(lambda: page.evaluate(redrawn, ids), timeout=60, what="four figures", poll=0.005)
        return time.perf_counter() - t

    with sync_playwright() as p:
        browser = launch_chromium(p)
        for i in range(args.repeats):
            t0 = time.perf_counter()
            proc, url, http_s = start_app(["--library", str(lib)], tmp / f"server{i}.log")
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector("#header")
            results["start_page"].append(time.perf_counter() - t0)
            results["start_http"].append(http_s)
            # Attention, 30-token prompt: the first click on a fresh server (prefix read from disk,
            # first forward), then a second click.
            tab(page, "Attention")
            page.locator("#att-prompt textarea").fill(PROMPT_30)
            results["attention_cold"].append(attention_click(page))
            page.locator("#att-prompt textarea").fill(PROMPT_30.replace("clever", "funny"))  # new figures to draw
            results["attention_warm"].append(attention_click(page))
            # Switch: run all three once (prefixes now cached), then time adding the 2nd and 3rd.
            tab(page, "Switch")
            for box in page.locator("#sw-choice").get_by_role("checkbox").all():
                box.set_checked(False)  # from none: the shipped defaults off; Switch runs on Run, not on a tick
            page.locator("#sw-input textarea").fill("Kenya")
            cards = page.locator("#pp-switch .pp-card")
            finished = page.locator('#pp-switch .pp-card:not([data-state="pending"])')

            def run(n: int, poll: float = 0.25) -> None:  # Run, until n cards have all finished
                page.locator("#sw-run").click()
                wait_until(lambda: cards.count() == n and finished.count() == n, timeout=60, what=f"{n} cards",
                           poll=poll)

            for n, name in ((1, "sentiment"), (2, "topic"), (3, "capitals")):
                page.locator("#sw-choice").get_by_label(name, exact=True).check()
                run(n)
            for name in ("capitals", "topic"):
                page.locator("#sw-choice").get_by_label(name, exact=True).uncheck()
            run(1)
            for n, name in ((2, "topic"), (3, "capitals")):
                page.locator("#sw-choice").get_by_label(name, exact=True).check()
                t1 = time.perf_counter()
                run(n, poll=0.005)
                results[f"switch_{n}"].append(time.perf_counter() - t1)
            txt = page.locator(".pp-switch-time b").inner_text()  # "x.y ms"
            results["switch_engine_ms"].append(float(txt.split()[0]))
            page.close()
            stop_app(proc)
        browser.close()

    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\n| measure (median of {args.repeats}) | value |\n|---|---|")
    print(f"| start to HTTP 200 (cached model) | {med['start_http']:.2f} s |")
    print(f"| start to page shown in Chromium | {med['start_page']:.2f} s |")
    print(f"| Switch Run click to every output on screen, 2 prefixes | {1000 * med['switch_2']:.0f} ms |")
    print(f"| Switch Run click to every output on screen, 3 prefixes | {1000 * med['switch_3']:.0f} ms |")
    print(f"| of which fetching the 3 prefixes (engine, cached) | {med['switch_engine_ms']:.1f} ms |")
    print(f"| Attention click to 4 figures drawn, first click on a fresh server | {1000 * med['attention_cold']:.0f} ms |")
    print(f"| Attention click to 4 figures drawn, next click | {1000 * med['attention_warm']:.0f} ms |")
    print(f"| Attention computed + 4 figures built, in-process | {1000 * statistics.median(engine_att):.0f} ms |")
    print("raw:", {k: [round(x, 3) for x in v] for k, v in results.items()}, "engine_att:",
          [round(x, 3) for x in engine_att])


if __name__ == "__main__":
    main()
