"""The watching-cost benchmark (``bench/watch_cost.py``) without a server: its teacher's on/off pattern, the
steps it counts, and the ratios and intervals it reports. No model."""

from __future__ import annotations

import json

import pytest

from bench.load_test import LoadConfig
from bench.watch_cost import WATCHED, ratio_interval, steps_written, summary, watched

pytestmark = pytest.mark.unit


def test_the_teacher_watches_half_the_blocks_and_a_linear_drift_weighs_on_both_sides_alike():
    blocks = range(4 * len(WATCHED))
    on = [b for b in blocks if watched(b)]
    off = [b for b in blocks if not watched(b)]
    assert len(on) == len(off)
    assert sum(on) == sum(off)  # a drift proportional to the block's index adds the same to both sides
    assert LoadConfig().teacher_every == 3.0  # the Class tab's own timer (test_load_teacher checks it)


def test_steps_are_counted_as_the_lines_of_every_runs_steps_file(tmp_path):
    for run, n in (("a", 3), ("b", 2)):
        d = tmp_path / "class" / "runs" / run
        d.mkdir(parents=True)
        (d / "steps.jsonl").write_text("".join(json.dumps({"step": i}) + "\n" for i in range(n)))
    (tmp_path / "class" / "runs" / "a" / "attention.jsonl").write_text("{}\n{}\n")  # not a training step
    assert steps_written(tmp_path) == 5


def test_the_ratio_interval_holds_the_ratio_and_narrows_with_n():
    a = [1.0 + 0.01 * i for i in range(100)]
    b = [x / 1.1 for x in a]  # a is exactly 1.1x b
    lo, hi = ratio_interval(a, b, 0.5)
    assert lo <= 1.1 <= hi
    wide = ratio_interval(a[::10], b[::10], 0.5)
    assert wide[1] - wide[0] > hi - lo


def test_the_summary_compares_watched_with_unwatched_calls_and_the_class_steps():
    calls = [{"action": "switch", "watched": w, "latency": lat, "server_s": lat - 0.1}
             for w, lat in [(True, 2.0), (True, 4.0), (True, 6.0), (False, 1.0), (False, 2.0), (False, 3.0)]]
    calls += [{"action": "attention", "watched": w, "latency": 1.0, "server_s": None} for w in (True, False)]
    steps = [{"watched": True, "steps_per_min": 10.0}, {"watched": False, "steps_per_min": 20.0}]
    rep = summary(calls, steps, [0.1, 0.2])
    assert rep["switch"]["watched"] == {"n": 3, "p50_s": 4.0, "p95_s": 6.0}
    assert rep["switch"]["p50_ratio"] == 2.0 and rep["switch"]["p95_ratio"] == 2.0
    assert rep["switch_server"]["not_watched"]["p50_s"] == 1.9
    assert rep["attention"]["p50_ratio"] == 1.0
    assert rep["training"] == {"watched_steps_per_min": 10.0, "not_watched_steps_per_min": 20.0, "ratio": 2.0}
    assert rep["teacher_views"] == 2
