"""Switch in the browser as a learner types: nothing runs until Enter, then the cards answer the final input.

Typing "Ghana" key by key must not answer "G", "Gh", ... (the capitals prefix says Beijing,
Mumbai, Makkah, Takorlay to those); ticking a prefix must not run either. After Enter every card
names the input it answers, the cards stream in as their rows finish, and the capitals prefix
says Accra. (Ghana rather than Kenya: the embedded model does not know Kenya's capital, and the
capitals prefix answers "Jomo Kenife"; the prefix cannot add facts, which is its lesson.) Runs on
a copy of prefixes/ served as the shipped set, so a failing test can never touch the real folder.
"""

from __future__ import annotations

import pytest

from bench.driver import ROOT, tab, wait_until

pytestmark = pytest.mark.real_model
SHOTS = ROOT / "artifacts" / "screenshots"

# Every change under the output box, as the page saw it: each card's state, name and input line.
WATCH = """() => {
  window.__sw = [];
  const read = () => Array.from(document.querySelectorAll('#pp-switch .pp-card')).map(c => ({
      state: c.dataset.state, name: c.dataset.name,
      answering: (c.querySelector('.pp-card-in') || {}).textContent || ''}));
  new MutationObserver(() => window.__sw.push(read())).observe(document.querySelector('#sw-out'),
      {childList: true, subtree: true, characterData: true, attributes: true});
}"""



def test_typing_runs_nothing_and_enter_answers_the_final_input(page):
    tab(page, "Switch")
    picker = page.locator("#sw-choice")
    cards = page.locator("#pp-switch .pp-card")
    # It opens ready to use, with shipped task prefixes ticked and (no prefix) not.
    wait_until(lambda: picker.get_by_label("sentiment", exact=True).is_checked(), timeout=60, what="the defaults")
    assert not picker.get_by_label("(no prefix)", exact=True).is_checked()
    assert not picker.get_by_label("capitals", exact=True).is_checked()  # a lesson, not a default
    page.evaluate(WATCH)
    picker.get_by_label("capitals", exact=True).check()
    box = page.locator("#sw-input textarea")
    box.click()
    for ch in "Ghana":
        box.press_sequentially(ch, delay=80)
        page.wait_for_timeout(250)
        assert cards.count() == 0, f"a card appeared while typing (after {ch!r})"
    page.wait_for_timeout(2000)  # a run per keystroke or per tick would have drawn its cards by now
    assert cards.count() == 0 and page.evaluate("window.__sw.flat().length") == 0
    ticked = [n for n in ("fr_en", "headline", "sentiment", "capitals")
              if picker.get_by_label(n, exact=True).is_checked()]
    assert ticked == ["fr_en", "headline", "sentiment", "capitals"]

    box.press("Enter")
    done = page.locator('#pp-switch .pp-card[data-state="done"], #pp-switch .pp-card[data-state="cut"]')
    wait_until(lambda: cards.count() == 4 and done.count() == 4, timeout=120, what="four finished cards")
    names = page.locator(".pp-card-name").all_inner_texts()
    outs = dict(zip(names, page.locator(".pp-card-out").all_inner_texts()))
    assert sorted(outs) == sorted(ticked), outs
    assert page.locator(".pp-card-in").all_inner_texts() == ["answering: «Ghana»"] * 4
    assert outs["capitals"] == "Accra", outs
    # Every card the page ever showed answered "Ghana": none for a partial input, none from before.
    seen = page.evaluate("window.__sw")
    assert {c["answering"] for snap in seen for c in snap} == {"answering: «Ghana»"}
    # The cards streamed in: a finished card was on screen while another was still generating.
    assert any({"pending"} < {c["state"] for c in snap} for snap in seen), seen
    lat = dict(zip(names, page.locator(".pp-card-lat").all_inner_texts()))
    for name, text in outs.items():  # a cut answer ends with "…" and its card says so
        assert text.endswith("…") == ("cut at" in lat[name]), (name, text, lat[name])
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "switch-typing.png"), full_page=True)
