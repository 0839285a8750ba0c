"""The class benchmark's harness (``bench/class_load.py``) on a tiny model: a small class in each mode.

Nothing here times anything (the timings are the benchmark's job): it checks that every run finished
with every step, the counts add up, Switch was clicked meanwhile, nothing failed, and that a deadline
stops the class and says so.
"""

from __future__ import annotations

import math

import pytest

from bench.class_load import MODES, ClassConfig, goals, goals_line, ratio_line, ratios, run_mode
from playground.library import Library
from playground.prefix import PrefixSettings, create_prefix

STUDENTS, STEPS, BATCH = 3, 2, 2


@pytest.fixture
def shipped(tiny_llama, tmp_path):
    """Two shipped prefixes for the tiny model, as prefixes/ holds for the real one."""
    root = tmp_path / "shipped"
    for i, (name, task) in enumerate((("sentiment", "sentiment"), ("topic", "topic"))):
        prefix = create_prefix(tiny_llama, PrefixSettings(num_virtual_tokens=3, init="random"), seed=i)
        Library(root).save(name, prefix, {"task": task, "base_model": tiny_llama.name,
                                          "base_fingerprint": tiny_llama.fingerprint})
    return root


def small_class(**kw) -> ClassConfig:
    return ClassConfig(**{"students": STUDENTS, "steps": STEPS, "batch_size": BATCH, "eval_examples": 2,
                          "switchers": 1, "press_window": 0.2, "switch_pause": 0.05, "timeout": 300, **kw})


@pytest.mark.parametrize("mode", MODES)
def test_every_student_finishes_and_the_counts_add_up(tiny_llama, shipped, mode):
    rep = run_mode(tiny_llama, shipped, small_class(), mode, say=lambda *_: None)
    assert rep["errors"] == [] and not rep["timed_out"] and rep["stragglers"] == 0
    assert rep["runs_finished"] == STUDENTS and rep["steps_done"] == STUDENTS * STEPS
    assert rep["first_point"]["n"] == rep["finished"]["n"] == STUDENTS
    for s in rep["student_logs"]:  # each pressed, saw its first point, then finished, in that order
        assert s["steps"] == STEPS and s["error"] is None
        assert 0 <= s["pressed"] < s["first_point"] <= s["finished"]
    assert rep["switch_names"] == ["sentiment", "topic", "(no prefix)"]
    assert rep["switch"]["n"] == len(rep["switch_latencies_s"]) >= 1  # clicked while the class trained
    assert all(x > 0 for x in rep["switch_latencies_s"])
    assert 0 < rep["first_point"]["p50_s"] <= rep["first_point"]["p95_s"] <= rep["first_point"]["max_s"]
    assert math.isfinite(rep["examples_per_s"]) and rep["examples_per_s"] > 0
    assert rep["peak_rss_mb"] > 0 and rep["mode"] == mode
    assert rep["sessions_left"] == 0  # every student's and switcher's session was closed


def test_a_deadline_stops_the_class_and_reports_it(tiny_llama, shipped):
    # presses spread over 5 s, a 0.5 s deadline: some students had not even pressed when it came
    rep = run_mode(tiny_llama, shipped, small_class(press_window=5.0, timeout=0.5), "workers", say=lambda *_: None)
    assert rep["timed_out"] and rep["stragglers"] == 0 and rep["sessions_left"] == 0
    assert rep["runs_finished"] < STUDENTS
    assert sum(s["pressed"] is None for s in rep["student_logs"]) >= 1


def test_goals_and_ratios_read_the_right_way_round():
    def mode(first, finished, switch, rate, rss):
        return {"first_point": {"p95_s": first}, "finished": {"p95_s": finished}, "switch": {"p95_s": switch},
                "examples_per_s": rate, "peak_rss_mb": rss}

    workers, sched = mode(20.0, 120.0, 4.0, 10.0, 3000.0), mode(5.0, 40.0, 4.0, 20.0, 5000.0)
    r = ratios(workers, sched)
    assert r == {"throughput": 2.0, "first_point p95": 0.25, "finished p95": 40 / 120, "switch p95": 1.0}
    g = goals(workers, sched)
    assert {k: ok for k, (_, ok) in g.items()} == {"first point p95 s": True, "finished p95 s": True,
                                                   "switch p95 s": False, "peak RSS MB": False,
                                                   "throughput ratio": True}
    line = goals_line(30, g)
    assert "switch p95 s 4.00 (<= 3): missed" in line and "throughput ratio 2.00 (>= 1.5): met" in line
    assert "(the goals are set for 30)" in goals_line(100, g)
    assert ratio_line(30, r).startswith("scheduler/workers at 30 students: throughput 2.00x")
