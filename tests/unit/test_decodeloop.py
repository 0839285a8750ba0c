"""The continuous decode loop: rows that join at different steps get exactly what each gets alone, and plain PEFT.

Tiny Llama (rotary positions) and GPT-2 (absolute positions) models: a row that joins a batch whose
cache is already long sits far right of its own position, so a position taken from the cache column
instead of the row's own count would change its tokens.
"""

from __future__ import annotations

import pytest

from playground.decodeloop import DecodeLoop
from playground.generate import greedy_mixed
from tests.unit.test_mixed_batch import _peft_references, _rows

INPUTS = ["hi", "the cat is black", "a much longer sentence about the weather in the hills today", "le chat",
          "rain again in the north"]
LENGTHS = [3, None, 12, 7, None]  # virtual tokens per row; None: no prefix


def _run(loop, joins, steps=60):
    """Drive the loop: joins maps a step number to the join calls made just before it, (tag, rows) each.

    Returns (ended: (step, tag, index, ids) in the order step() handed them out, rows and positions after each step).
    """
    ended, after = [], []
    for s in range(steps):
        for tag, args in joins.get(s, []):
            loop.join(tag, *args)
        ended += [(s, *e) for e in loop.step()]
        after.append((loop.rows, loop.positions))
    return ended, after


def _stops(base, prompts, prefixes):
    """A stop id that ends some rows early: row 0's first new token that differs from its first."""
    free = greedy_mixed(base, prompts, prefixes, max_new_tokens=10)
    return (next(t for t in free[0] if t != free[0][0]),)


def test_staggered_joins_equal_each_row_alone(tiny):
    prompts, prefixes = _rows(tiny, LENGTHS, INPUTS)
    stops = _stops(tiny, prompts, prefixes)
    budgets = [6, 9, 0, 8, 1]
    # "a" at step 0 (rows 0, 1); "b" after 2 steps (row 2, budget 0, and row 3); "c" after 5 (row 4, budget 1).
    calls = {"a": [0, 1], "b": [2, 3], "c": [4]}
    at = {"a": 0, "b": 2, "c": 5}
    joins = {s: [(t, ([prompts[i] for i in calls[t]], [prefixes[i] for i in calls[t]], [budgets[i] for i in calls[t]],
                      stops))] for t, s in at.items()}
    ended, after = _run(DecodeLoop(tiny), joins)
    got = {(tag, k): ids for _, tag, k, ids in ended}
    alone = [greedy_mixed(tiny, [q], [p], n, stops)[0] for q, p, n in zip(prompts, prefixes, budgets)]
    assert len(got) == len(ended) == len(prompts)  # every row ended once
    for t, rows in calls.items():
        for k, i in enumerate(rows):
            assert got[t, k] == alone[i], f"row {i}"
    assert any(0 < len(a) < n and a[-1] in stops for a, n in zip(alone, budgets))  # some row stops at a stop id
    assert any(len(a) == n > 1 and a[-1] not in stops for a, n in zip(alone, budgets))  # some at its budget
    # Finishing order: a row ends in the step it joins plus its length minus one (budget 0: the step it joins,
    # first); rows ending in one step come in batch order, that is join order, then row index.
    order = {i: (at[t], t, k) for t, rows in calls.items() for k, i in enumerate(rows)}
    want = sorted(range(len(prompts)), key=lambda i: (order[i][0] + max(len(alone[i]), 1) - 1, budgets[i] > 0,
                                                      order[i][0], order[i][2]))
    assert [(tag, k) for _, tag, k, _ in ended] == [(order[i][1], order[i][2]) for i in want]
    assert [s for s, *_ in ended] == [order[i][0] + max(len(alone[i]), 1) - 1 for i in want]
    assert after[-1] == (0, 0)  # nothing kept once every row ended


def test_staggered_joins_equal_plain_peft(tiny, tmp_path):
    prompts, prefixes = _rows(tiny, LENGTHS, INPUTS)
    budgets = [6, 9, 4, 8, 1]
    joins = {0: [(0, ([prompts[0]], [prefixes[0]], [budgets[0]]))],
             2: [(1, (prompts[1:3], prefixes[1:3], budgets[1:3]))],
             5: [(2, (prompts[3:], prefixes[3:], budgets[3:]))]}
    first = {0: 0, 1: 1, 2: 3}  # the first prompt of each tag
    ended, _ = _run(DecodeLoop(tiny), joins)
    got = {first[tag] + k: ids for _, tag, k, ids in ended}
    for i, ref in enumerate(_peft_references(tiny, tmp_path, prompts, prefixes, budgets)):
        assert got[i] == ref, f"row {i} (P={LENGTHS[i]})"
    assert len({tuple(r) for r in got.values()}) == len(got)  # the prefixes steer the rows apart


def test_late_join_far_right_of_its_position(tiny):
    """A short row joins after a long-prefix, long-prompt row has run for a while: its keys sit past column
    30 of the cache, padded on the left, while its positions start after its own 3 virtual tokens (GPT-2
    reads them as absolute positions)."""
    prompts, prefixes = _rows(tiny, LENGTHS, INPUTS)
    loop = DecodeLoop(tiny)
    loop.join("long", [prompts[2]], [prefixes[2]], [30])
    for _ in range(10):
        assert loop.step() == []
    k_pos = loop.positions
    assert k_pos == 12 + len(prompts[2]) + 10 > 30
    loop.join("short", [prompts[0]], [prefixes[0]], [12])
    loop.step()
    assert loop.positions == 2 * (k_pos + 1)  # the short row padded on the left to the long row's length
    ended, _ = _run(loop, {}, steps=30)
    got = {tag: ids for _, tag, _, ids in ended}
    assert got["short"] == greedy_mixed(tiny, [prompts[0]], [prefixes[0]], 12)[0]
    assert got["long"] == greedy_mixed(tiny, [prompts[2]], [prefixes[2]], 30)[0]


def test_rows_and_positions_accounting(tiny_llama):
    """One row per join call: the batch holds running rows x the longest row's keys (prefix, prompt, new ids
    fed back), nothing of the rows that ended; a long row leaving cuts the columns only it used."""
    prompts, prefixes = _rows(tiny_llama, LENGTHS, INPUTS)
    budgets = [9, 7, 3, 12, 5]
    at = [0, 1, 1, 4, 6]
    loop, running, waiting = DecodeLoop(tiny_llama), {}, set()
    span = {i: (LENGTHS[i] or 0) + len(prompts[i]) for i in range(len(prompts))}
    shrunk = False
    for s in range(20):
        for i, a in enumerate(at):
            if a == s:
                loop.join(i, [prompts[i]], [prefixes[i]], [budgets[i]])
                waiting.add(i)
        assert loop.rows == len(running) + len(waiting)
        before = loop.positions
        ended = loop.step()
        running.update({i: 0 for i in waiting})
        waiting.clear()
        for i in running:
            running[i] += 1
        for tag, k, ids in ended:
            assert k == 0 and len(ids) == budgets[tag] == running.pop(tag)  # no stop ids: each ends at its budget
        assert loop.rows == len(running)
        assert loop.positions == len(running) * max((span[i] + n for i, n in running.items()), default=0)
        shrunk |= bool(ended) and not waiting and 0 < loop.positions < before
    assert shrunk and loop.positions == 0 and loop.rows == 0


def test_drop_removes_a_tag_running_or_waiting(tiny_llama):
    prompts, prefixes = _rows(tiny_llama, LENGTHS, INPUTS)
    loop = DecodeLoop(tiny_llama)
    loop.join("keep", [prompts[0], prompts[1]], [prefixes[0], prefixes[1]], [10, 4])
    loop.join("gone", [prompts[2], prompts[3]], [prefixes[2], prefixes[3]], [10, 10])
    loop.step()
    loop.step()
    assert loop.rows == 4
    one = loop.positions // 4
    loop.drop("gone")  # running: its cache rows leave, and the long row's columns with them
    assert loop.rows == 2 and 0 < loop.positions < 2 * one
    loop.join("late", [prompts[4]], [None], [3])
    loop.join("never", [prompts[2]], [prefixes[2]], [5])
    loop.drop("never")  # waiting: it never enters
    assert loop.rows == 3
    ended, _ = _run(loop, {}, steps=12)
    got = {(tag, k): ids for _, tag, k, ids in ended}
    assert set(got) == {("keep", 0), ("keep", 1), ("late", 0)}
    assert got["keep", 0] == greedy_mixed(tiny_llama, [prompts[0]], [prefixes[0]], 10)[0]
    assert got["keep", 1] == greedy_mixed(tiny_llama, [prompts[1]], [prefixes[1]], 4)[0]
    assert got["late", 0] == greedy_mixed(tiny_llama, [prompts[4]], [None], 3)[0]
    loop.drop("nobody")  # an unknown tag is nothing to drop
    assert loop.rows == 0 and loop.positions == 0


def test_zero_budgets_and_empty_loop(tiny_llama):
    prompts, prefixes = _rows(tiny_llama, LENGTHS, INPUTS)
    loop = DecodeLoop(tiny_llama)
    assert loop.step() == [] and loop.rows == 0 and loop.positions == 0
    loop.join("z", prompts[:2], prefixes[:2], [0, 0])
    assert loop.rows == 2
    assert loop.step() == [("z", 0, []), ("z", 1, [])]  # no forward for them: they end at once
    assert loop.rows == 0 and loop.positions == 0
    loop.join("one", prompts[2:4], prefixes[2:4], [1, 0])
    assert loop.step() == [("one", 1, []), ("one", 0, greedy_mixed(tiny_llama, [prompts[2]], [prefixes[2]], 1)[0])]
    assert loop.rows == 0 and loop.positions == 0


def test_join_checks_its_rows(tiny_llama):
    prompts, prefixes = _rows(tiny_llama, LENGTHS, INPUTS)
    loop = DecodeLoop(tiny_llama)
    with pytest.raises(ValueError, match="one prefix .* and one budget per prompt"):
        loop.join("x", prompts[:2], prefixes[:1], [3, 3])
    with pytest.raises(ValueError, match="one prefix .* and one budget per prompt"):
        loop.join("x", prompts[:2], prefixes[:2], [3])
    with pytest.raises(ValueError, match="at least one token"):
        loop.join("x", [[]], [None], [3])
    assert loop.rows == 0
