"""Switch streams: each row of the mixed batch is handed out the step it ends, equal to the collected batch.

The rows leave the batch as they end (continuous decoding), so a short answer reaches the page
while a long one is still being written. These tests check the streamed rows equal the
non-streamed ones, arrive in finishing order, carry their own latency, and that a row which ran
out of budget is marked as cut. The tiny random models never reach an end token on their own, so
rows end at their budgets unless a stop id is given.
"""

from __future__ import annotations

import pytest

from playground.generate import decode_rows, greedy_mixed, greedy_mixed_rows, mixed_prefill, ran_out
from playground.library import Library
from playground.methods import BareMethod, answer, prefix_method
from playground.prompts import PromptFormat
from playground.service import NO_PREFIX, Limits, Playground, SwitchOutput, SwitchResult

from .test_mixed_batch import _rows


def finishing_order(rows: list[list[int]]) -> list[int]:
    """Row indices by the step each row ends (its number of new ids), ties in row order."""
    return sorted(range(len(rows)), key=lambda i: (len(rows[i]), i))


def test_streamed_rows_equal_the_batch_and_arrive_in_finishing_order(tiny_llama):
    prompts, prefixes = _rows(tiny_llama)
    budgets = [10, 0, 3, 6]  # row 0 asks for the most: row order is not finishing order
    streamed = list(greedy_mixed_rows(tiny_llama, prompts, prefixes, budgets))
    collected = greedy_mixed(tiny_llama, prompts, prefixes, budgets)
    assert [i for i, _ in streamed] == [1, 2, 3, 0] == finishing_order(collected)
    assert {i: row for i, row in streamed} == dict(enumerate(collected))
    # With a stop id rows end early too; each still equals the same row decoded alone.
    free = greedy_mixed(tiny_llama, prompts, prefixes, 10)
    stops = (next(t for t in free[0] if t != free[0][0]),)
    streamed = list(greedy_mixed_rows(tiny_llama, prompts, prefixes, [3, 0, 10, 6], stops))
    alone = [greedy_mixed(tiny_llama, [q], [p], n, stops)[0] for q, p, n in zip(prompts, prefixes, [3, 0, 10, 6])]
    assert {i: row for i, row in streamed} == dict(enumerate(alone))
    assert [i for i, _ in streamed] == finishing_order(alone)
    with pytest.raises(ValueError, match="one max_new_tokens per prompt"):
        list(greedy_mixed_rows(tiny_llama, prompts, prefixes, [1, 2]))


def test_a_row_is_handed_out_the_step_it_ends(tiny_llama):
    prompts, prefixes = _rows(tiny_llama)
    budgets = [7, 2, 5, 4]
    out, mask, pos = mixed_prefill(tiny_llama, prompts, prefixes)
    steps: list[int] = []
    seen = []  # (row, its length, decoding steps taken when it was handed out)
    for r, row in decode_rows(tiny_llama, out, mask, pos, budgets, on_token=lambda: steps.append(1)):
        seen.append((r, len(row), len(steps)))
    assert [r for r, _, _ in seen] == [1, 3, 2, 0]
    assert all(n == b == taken for (r, n, taken), b in zip(seen, [2, 4, 5, 7]))  # not held for the longest row


def test_ran_out_means_the_whole_budget_without_an_end():
    assert ran_out([5, 6, 7], 3, (9,))
    assert not ran_out([5, 9], 2, (9,))  # the end token came with the last of the budget
    assert not ran_out([5, 9], 4, (9,))  # ended early
    assert not ran_out([], 0)  # nothing asked, nothing cut


@pytest.fixture
def pg(tiny_llama, tmp_path) -> Playground:
    _, prefixes = _rows(tiny_llama)
    p = Playground(tiny_llama, Library(tmp_path), Limits(max_new_tokens=24))
    for i, task in {0: "sentiment", 2: "fr_en", 3: "shout"}.items():  # budgets 4, 16 and 40 (24 after the cap)
        p.library.save(f"p{i}", prefixes[i], {"task": task, "base_fingerprint": tiny_llama.fingerprint})
    return p


NAMES = [NO_PREFIX, "p0", "p2", "p3"]
TEXT = "  a warm and funny film "


def test_switch_stream_fills_one_card_per_finished_row_in_finishing_order(pg):
    fmt = PromptFormat.for_tokenizer(pg.base.tokenizer)
    budgets = [24, 4, 16, 24]
    stream = pg.switch_stream("k", NAMES, TEXT)
    first = next(stream)
    assert [o.name for o in first.outputs] == NAMES and first.input == TEXT.strip() and not first.done
    assert all(o.pending and o.text == "" for o in first.outputs)
    assert [o.budget for o in first.outputs] == budgets
    # the scheduler's decode loop holds the rows' memory (sized by its own budget), not this caller: a caller
    # that held memory while queued for the model would starve the batches it waits for
    assert pg.budget.used == 0
    snaps = [first, *stream]
    assert pg.budget.used == 0
    assert len(snaps) == len(NAMES) + 1 and snaps[-1].done
    order = []  # the row that finished in each snapshot
    for before, after in zip(snaps, snaps[1:]):
        new = [i for i, (a, b) in enumerate(zip(before.outputs, after.outputs)) if a.pending and not b.pending]
        assert len(new) == 1 and after.input == TEXT.strip()
        assert all(a == b for a, b in zip(before.outputs, after.outputs) if not a.pending)  # a card never changes
        order.append(new[0])
    # The same rows as each prefix answering alone, in the order their rows ended.
    chosen = [None if n == NO_PREFIX else pg.get_prefix("k", n) for n in NAMES]
    prompts = [fmt.encode_prompt(TEXT.strip(), "base" if p is None else "prefix") for p in chosen]
    rows = [greedy_mixed(pg.base, [q], [p], b, fmt.stop_ids)[0] for q, p, b in zip(prompts, chosen, budgets)]
    assert order == finishing_order(rows)
    assert order.index(1) < order.index(0)  # the 4-token sentiment answer does not wait for (no prefix)
    final = snaps[-1].outputs
    methods = [BareMethod() if p is None else prefix_method(p) for p in chosen]
    for o, m, b, row in zip(final, methods, budgets, rows):
        alone = answer(pg.base, m, [TEXT.strip()], max_new_tokens=b)[0]
        assert o.cut == ran_out(row, b, fmt.stop_ids)
        assert o.text == (alone + "…" if o.cut else alone)
    assert any(o.cut for o in final)  # the tiny model never ends on its own: rows run to their budgets
    # Each card's latency is its own row's: later rows took longer, all within the whole call.
    secs = [final[i].seconds for i in order]
    assert secs == sorted(secs) and secs[0] > 0 and secs[-1] <= snaps[-1].total_seconds
    # switch() is the stream's last snapshot.
    res = pg.switch("k", NAMES, TEXT)
    assert [(o.name, o.text, o.cut, o.budget, o.pending) for o in res.outputs] == \
        [(o.name, o.text, o.cut, o.budget, o.pending) for o in final]


def test_the_last_snapshot_says_when_the_machine_was_busy(pg, monkeypatch):
    import playground.service as service_mod
    from playground.busy import Load

    monkeypatch.setattr(service_mod, "machine_load", lambda: Load(9.0, 2))
    snaps = list(pg.switch_stream("k", NAMES, TEXT))
    assert [bool(s.busy_note) for s in snaps] == [False] * len(NAMES) + [True]  # once every timing is in
    assert "load 9.0 on 2 cores" in snaps[-1].busy_note
    monkeypatch.setattr(service_mod, "machine_load", lambda: Load(0.1, 2))
    assert pg.switch("k", NAMES, TEXT).busy_note == ""


def test_switch_stream_refuses_before_any_snapshot(pg):
    with pytest.raises(Exception, match="prompt is empty"):
        next(pg.switch_stream("k", NAMES, "   "))
    with pytest.raises(Exception, match="Pick at least one"):
        next(pg.switch_stream("k", [], "hello"))
    assert pg.budget.used == 0


def test_cards_say_what_they_answer_and_when_they_were_cut():
    from ui.switch import cards_html

    res = SwitchResult([SwitchOutput("a", "Nairobi", 0.25, budget=8),
                        SwitchOutput("(no prefix)", "Kenya is a country in…", 1.5, cut=True, budget=32),
                        SwitchOutput("b", "", 0.0, budget=16, pending=True)],
                       0.001, 1.6, input="<Kenya>")
    html = cards_html(res)
    assert html.count("answering: «&lt;Kenya&gt;»") == 3 and "<Kenya>" not in html  # escaped, on every card
    assert "250 ms" in html and "cut at 32 tokens (the answer budget)" in html and html.count("cut at") == 1
    assert 'data-state="pending"' in html and "generating…" in html and "2 of 3 finished" in html
    assert "s in all" not in html  # the call has not ended yet
    res.outputs[2] = SwitchOutput("b", "hello", 1.2, budget=16)
    done = cards_html(res)
    assert "generating" not in done and "1.60 s in all" in done and 'data-state="cut"' in done
    assert "busy" not in done
    res.busy_note = "The machine was busy <load 9.0>."
    assert "The machine was busy &lt;load 9.0&gt;." in cards_html(res)


def test_switch_opens_with_shipped_task_prefixes_not_no_prefix(tiny_llama, tmp_path):
    import gradio as gr

    from playground.cli import DEFAULT_LIBRARY
    from ui import switch

    pg = Playground(tiny_llama, Library(tmp_path / "class", shipped=DEFAULT_LIBRARY))  # as the app opens it
    defaults = pg.switch_defaults()
    assert defaults == ["fr_en", "headline", "sentiment"]  # the first shipped ones that are not lessons
    assert NO_PREFIX not in defaults and not set(defaults) & set(pg.lessons())
    with gr.Blocks() as demo:
        refresh, _, _ = switch.build(pg)
    picker = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "sw-choice")
    assert picker.value == defaults
    assert refresh(picker.value, None)["value"] == defaults  # the refresh on page load keeps them
    # It runs on Enter or Run only: no event of the tab fires on a keystroke or a tick.
    ids = {b._id: getattr(b, "elem_id", None) for b in demo.blocks.values()}
    deps = demo.get_config_file()["dependencies"]
    run = [d for d in deps if d.get("api_name") == "switch"]
    assert len(run) == 1 and sorted((ids[t], e) for t, e in run[0]["targets"]) == [("sw-input", "submit"),
                                                                                   ("sw-run", "click")]
    assert not [d for d in deps if any(e == "change" and ids[t] in ("sw-input", "sw-choice") for t, e in d["targets"])]
