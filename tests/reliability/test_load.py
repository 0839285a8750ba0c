"""A classroom in miniature: 6 students on one real app at once, through its API.

The harness is ``bench/load_test.py`` (imported, not copied), at a smaller scale: 6 students,
2 training steps each, all in the one scheduler's line (Gradio's queue hands them straight on), while
the teacher watches the Class tab. One run serves every test below; it took 83 to 132 s on 2 cores
before the teacher watched, and 149 and 207 s (two runs) with the teacher, on a shared machine.
Nothing here times anything (speed is the benchmarks' job): the run's deadline is only there to end
a hang.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import bench.load_test as load_test
from bench.load_test import ACTIONS, LoadConfig, passed, report_text, run_load

pytestmark = pytest.mark.real_model

STUDENTS, STEPS = 6, 2
# Deadlines that only a hang reaches: the whole run took 83 to 132 s on 2 cores (the most with other jobs sharing
# them), and the server frees closed sessions within seconds (the harness stops waiting once all are freed).
RUN_TIMEOUT_S, CLEANUP_WAIT_S = 600, 120
# The server's resident high-water mark (VmHWM: every byte it ever held at once, model loading included, not
# a sample). Measured with 6 students on a busy 2-core machine: 2,274 and 2,145 MB in two runs (RSS sampled every
# 0.5 s peaked at 2,209 and 2,134 MB; before the app capped glibc's malloc arenas, playground/memory.py, sampling
# saw 3.9 GB). The bound fails if the cap is lost, or if each session kept a copy of the model (6 x 0.54 GB on top).
RSS_BOUND_MB = 3500


def high_water_mb(pid: int) -> float:
    """The most resident memory the process ever had (Linux's VmHWM), in MB; NaN once it has exited."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return math.nan  # a zombie (killed by the harness's watchdog after a hang): the hang is the failure to read


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    cfg = LoadConfig(students=STUDENTS, steps=STEPS, timeout=RUN_TIMEOUT_S, replay=2, cleanup_wait=CLEANUP_WAIT_S)
    hwm, stop = {}, load_test.stop_app

    def read_then_stop(proc):  # the harness stops the server at the end of the run: read its peak first
        hwm["mb"] = high_water_mb(proc.pid)
        stop(proc)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(load_test, "stop_app", read_then_stop)
        rep = run_load(cfg, tmp_path_factory.mktemp("load"), say=lambda *_: None)
    rep["rss_high_water_mb"] = hwm["mb"]
    print(report_text(rep), f"\nserver VmHWM {hwm['mb']:.0f} MB")
    return rep


def test_every_student_completes_without_errors(report):
    assert not report["deadline_hit"]  # only a hang gets there
    assert report["errors"] == []
    assert report["completed"] == STUDENTS
    for action in ACTIONS:
        a = report["actions"][action]
        assert a["errors"] == 0 and a["n"] >= STUDENTS, (action, a)
    assert passed(report)


def test_no_session_sees_another_ones_prefix(report):
    assert report["isolation_problems"] == []
    seen = report["seen"]
    for s in report["students"]:  # each saw its own prefix length in Attention, its own steps in Train
        mine = seen[str(s["index"])]
        assert mine["attention"]["virtual_tokens"] == s["num_virtual_tokens"]
        assert mine["train"]["step"] == STEPS and len(mine["train"]["loss"]) == STEPS
    curves = {tuple(v["train"]["loss"]) for v in seen.values()}
    assert len(curves) == STUDENTS  # distinct seeds and tasks: nobody got someone else's curve
    assert report["intruder"]["refused"], report["intruder"]
    assert len(report["replay"]) == 2 and not any(r["problem"] for r in report["replay"])


def test_waiting_students_see_their_place_in_line(report):
    """Gradio's queue hands every Train click straight on (its concurrency limit is the queue's size): the
    scheduler orders the model's work, and a run waiting for a step shows its place in that line."""
    q = report["queue"]
    trains = [c for c in report["calls"] if c["action"] == "train"]
    assert q["shown_a_position"] == STUDENTS  # every Train click was told where it stands in Gradio's queue
    waited = [c for c in trains if c["places"]]
    assert waited, q  # six runs in one model's line: some waited for a step and were told so
    assert q["max_ahead"] >= 1, q  # ... with other learners ahead of them
    assert all(eta >= 1 for c in waited for _, eta in c["places"])  # always with an estimated wait


def test_memory_is_bounded_and_sessions_are_freed(report):
    assert report["rss_high_water_mb"] < RSS_BOUND_MB, report["rss_high_water_mb"]
    # every session (students, observer, teacher, replays) is freed once its client disconnects
    assert report["sessions_freed"] == STUDENTS + 2 + len(report["replay"])


def test_the_teachers_view_follows_the_class_live(report):
    """The teacher signed in and refreshed the Class tab as its timer does while the class trained: a view
    showed every student, the loss curves grew from view to view, and the last view holds every step."""
    t = report["teacher"]
    assert t["signed_in"] and t["errors"] == 0, t
    assert t["all_students_seen_at_s"] is not None, t["samples"]
    assert t["loss_points_increases"] >= 2, t["samples"]
    assert all(s[1] <= STUDENTS and s[4] <= STUDENTS * STEPS for s in t["samples"]), t["samples"]
    assert t["final"][1:] == [STUDENTS, 0, STUDENTS, STUDENTS * STEPS], t["final"]  # students, running, runs, points
    assert report["app_flags"][-1] == "loadtest-teacher:***"  # the password stays inside the harness
