"""The shipped prefixes in the browser: the app as `make run` serves it (prefixes/ as its shipped,
read-only set beside an empty class library), switching live between task prefixes on one
frozen model. Runs on a copy of prefixes/ so a failing test can never touch the real folder.
"""

from __future__ import annotations

import pytest

from bench.driver import ROOT, tab, wait_until
from playground.recipes import RECIPES

pytestmark = pytest.mark.real_model
SHOTS = ROOT / "artifacts" / "screenshots"




def outputs(page, n: int) -> dict[str, str]:
    """The n output cards once every one has finished (cards stream in as their rows end)."""
    cards = page.locator("#pp-switch .pp-card")
    finished = page.locator('#pp-switch .pp-card:not([data-state="pending"])')
    wait_until(lambda: cards.count() == n and finished.count() == n, what=f"{n} finished output cards")
    return dict(zip(page.locator(".pp-card-name").all_inner_texts(), page.locator(".pp-card-out").all_inner_texts()))


def test_library_lists_every_shipped_prefix_protected(page):
    tab(page, "Library")
    grid = page.locator("#lib-table")
    wait_until(lambda: all(name in grid.inner_text() for name in RECIPES), what="the shipped prefixes listed")
    text = grid.inner_text()
    assert text.count("shipped") >= len(RECIPES)  # the owner column: shipped prefixes are read-only


def test_switch_between_shipped_task_prefixes(page):
    tab(page, "Switch")
    picker = page.locator("#sw-choice")
    want = ("(no prefix)", "sentiment", "topic", "shout")  # (no prefix) is not ticked by default: tick it here
    for tick in picker.get_by_role("checkbox").all():
        tick.set_checked(tick.evaluate("e => e.closest('label').innerText.trim()") in want)
    box = page.locator("#sw-input textarea")
    box.fill("The acting was wooden and the plot made no sense at all.")
    box.press("Enter")
    outs = outputs(page, 4)  # (no prefix) + three task prefixes, same input, same frozen model
    assert outs["sentiment"].strip().lower() == "negative", outs
    assert outs["topic"].strip().lower() in {"world", "sports", "business", "science"}, outs
    letters = [c for c in outs["shout"] if c.isalpha()]
    assert letters and sum(c.isupper() for c in letters) / len(letters) > 0.9 and outs["shout"].endswith("!"), outs
    assert outs["(no prefix)"] not in {outs["sentiment"], outs["topic"], outs["shout"]}
    lat = dict(zip(outs, page.locator(".pp-card-lat").all_inner_texts()))
    for name, text in outs.items():  # an answer cut at its budget ends with "…" and its card says so
        assert text.endswith("…") == ("the answer budget" in lat[name]), (name, text, lat[name])
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "switch-shipped.png"), full_page=True)
