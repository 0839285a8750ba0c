"""The Attention tab's layer ablation in the browser, on the real model and the shipped sentiment prefix (served
from a copy of prefixes/, as `make run` serves it): the figures' data against the table's rows."""

from __future__ import annotations

import pytest

from bench.driver import ROOT, plot_data, tab, wait_until

pytestmark = pytest.mark.real_model
SHOTS = ROOT / "artifacts" / "screenshots"
LAYERS = 30  # SmolLM2-135M
N = 3  # held-out examples: 91 variants score them all




def table_rows(page) -> dict[str, list[str]]:
    """The ablation table's rendered rows: {variant: its cells}."""
    rows = page.evaluate("""() => [...document.querySelectorAll('#abl-table [role=row]')]
                                  .map(tr => [...tr.querySelectorAll('[role=gridcell], td')].map(c => c.innerText.trim()))""")
    return {r[0]: r for r in rows if r}


def test_ablation_of_the_shipped_sentiment_prefix(page):
    tab(page, "Attention")
    picker = page.locator("#abl-prefix input")
    wait_until(lambda: picker.input_value() == "sentiment", what="the shipped sentiment prefix picked by default")
    page.locator("#abl-n input").fill(str(N))
    page.locator("#abl-run").click()
    traces = wait_until(lambda: plot_data(page, "abl-layers"), timeout=600, what="the per-layer ablation figure")
    depth = wait_until(lambda: plot_data(page, "abl-depth"), what="the depth figure")
    by_name: dict[str, list[dict]] = {}
    for t in traces:
        by_name.setdefault(t["name"], []).append(t)  # [metric panel, log-prob panel]

    metric, logp = by_name["without this layer"]
    assert metric["x"] == logp["x"] == list(range(LAYERS))  # one point per layer
    assert all(0 <= y <= 100 for y in metric["y"]) and all(y <= 0 for y in logp["y"])
    assert len(logp["error_y"]) == LAYERS and all(s >= 0 for s in logp["error_y"])  # the spread over examples
    refs = {name: by_name[name][0]["y"][0] for name in ("full prefix", "no prefix", "zero prefix")}
    assert all(0 <= v <= 100 for v in refs.values())

    rows = wait_until(lambda: table_rows(page).get("full prefix") and table_rows(page), what="the table's rows")
    full = rows["full prefix"]
    assert float(full[2]) == pytest.approx(refs["full prefix"], abs=0.05)  # the reference line is the table's row
    assert float(full[3]) == pytest.approx(by_name["full prefix"][1]["y"][0], abs=5e-4)
    assert full[5] == str(N) and full[6] in ("validation", "test")
    assert float(rows["no prefix (masked in every layer)"][2]) == pytest.approx(refs["no prefix"], abs=0.05)
    assert float(rows["without layer 0"][2]) == pytest.approx(metric["y"][0], abs=0.05)
    # the shipped prefix answers most validation reviews right; without it the chat model answers in sentences
    assert refs["full prefix"] > refs["no prefix"]

    depth_names = {t["name"]: t for t in depth}
    for name in ("only in layers below k", "only in layers from k up"):
        assert depth_names[name]["x"] == list(range(1, LAYERS))  # k = 1 .. L-1
    status = page.locator("#abl-status").inner_text()
    assert f"n = {N}" in status and "91 variants" in status
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "attention-ablation.png"), full_page=True)
