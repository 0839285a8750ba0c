"""The Attention tab's logit lens and nearest words in the browser, on the real model and the shipped sentiment
prefixes (served from a copy of prefixes/, as `make run` serves it): the figure's data against the status line,
and both nearest-words tables with each prefix's held-out accuracy."""

from __future__ import annotations

import re

import pytest

from bench.driver import ROOT, plot_data, tab, wait_until

pytestmark = pytest.mark.real_model
SHOTS = ROOT / "artifacts" / "screenshots"
LAYERS = 30  # SmolLM2-135M
P = 20  # virtual tokens of both shipped sentiment prefixes




def table_rows(page, elem_id: str) -> list[list[str]]:
    """A Dataframe's rendered rows, as cell texts (gradio 6 draws its body as virtual rows: [role=row] divs)."""
    return page.evaluate("""(id) => [...document.querySelectorAll('#' + id + ' [role=row]')]
                                  .map(r => [...r.querySelectorAll('[role=gridcell], td')].map(c => c.innerText.trim()))
                                  .filter(r => r.length && r.some(c => c))""", elem_id)


def test_logit_lens_on_the_shipped_sentiment_prefix(page):
    tab(page, "Attention")
    picker, prompt = page.locator("#lens-prefix input"), page.locator("#lens-prompt textarea")
    wait_until(lambda: picker.input_value() == "sentiment", what="the shipped sentiment prefix picked by default")
    wait_until(lambda: prompt.input_value().strip(), what="a held-out input of the sentiment task in the box")
    page.locator("#lens-run").click()
    traces = wait_until(lambda: plot_data(page, "lens-figure"), timeout=300, what="the logit lens figure")
    by_name = {t["name"]: t for t in traces}
    assert set(by_name) == {"without prefix: probability", "without prefix: rank", "with sentiment: probability",
                            "with sentiment: rank"}
    for t in traces:
        assert t["x"] == list(range(LAYERS))  # one point per layer
    for run in ("without prefix", "with sentiment"):
        assert all(0 <= y <= 1 for y in by_name[f"{run}: probability"]["y"])
        assert all(y >= 1 and y == int(y) for y in by_name[f"{run}: rank"]["y"])
    status = page.locator("#lens-status").inner_text()
    assert "gold answer of this validation input of sentiment" in status, status
    m = re.search(r"with sentiment p = ([0-9.]+) \(rank ([0-9,]+)\); without it p = ([0-9.]+) \(rank ([0-9,]+)\)",
                  status)
    assert m, status
    with_p, with_rank, without_p, without_rank = float(m[1]), int(m[2].replace(",", "")), float(m[3]), \
        int(m[4].replace(",", ""))
    # the last layer's point is what the status line states (the model's own output)
    assert by_name["with sentiment: probability"]["y"][-1] == pytest.approx(with_p, abs=6e-5)
    assert by_name["without prefix: probability"]["y"][-1] == pytest.approx(without_p, abs=6e-5)
    assert by_name["with sentiment: rank"]["y"][-1] == with_rank
    assert by_name["without prefix: rank"]["y"][-1] == without_rank
    # the trained prefix makes the gold label the model's answer; without it the chat model starts a sentence
    assert with_rank == 1 and with_p > without_p


def test_nearest_words_of_the_two_sentiment_prefixes(page):
    tab(page, "Attention")
    a, b = page.locator("#lens-near-a input"), page.locator("#lens-near-b input")
    wait_until(lambda: a.input_value() == "sentiment" and b.input_value() == "sentiment_wayward",
               what="the two sentiment prefixes picked by default")
    page.locator("#lens-near-run").click()
    wait_until(lambda: len(table_rows(page, "lens-table-a")) == P and len(table_rows(page, "lens-table-b")) == P,
               timeout=300, what=f"{P} rows in each nearest-words table")
    for elem in ("lens-table-a", "lens-table-b"):
        rows = table_rows(page, elem)
        assert [r[0] for r in rows] == [str(j) for j in range(P)]  # one row per virtual token, in slot order
        cosines = [float(c) for r in rows for c in re.findall(r"' (-?[01]\.\d\d)", r[1])]
        assert len(cosines) == 5 * P and all(-1 <= c <= 1 for c in cosines)
    for elem, name in (("lens-score-a", "sentiment"), ("lens-score-b", "sentiment_wayward")):
        text = page.locator(f"#{elem}").inner_text()
        assert name in text and re.search(r"test \d+\.\d% exact match \(n = 60\)", text), text
        assert re.search(r"validation \d+\.\d% .*\(n = 50\)", text), text
    assert re.search(r"Overlap of the two word lists: \d+%", page.locator("#lens-overlap").inner_text())
    # the instruction-initialized prefix still sits next to its instruction's words, the wayward one next to baking
    words_a = " ".join(r[1] for r in table_rows(page, "lens-table-a")).lower()
    words_b = " ".join(r[1] for r in table_rows(page, "lens-table-b")).lower()
    assert "review" in words_a and "review" not in words_b
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "attention-lens.png"), full_page=True)
