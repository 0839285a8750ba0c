"""The load test's teacher (``bench/load_test.py``), without a server: the login it starts the app with and keeps
out of its reports, finding the Class tab's timer in an app config, reading a Class view built by the app's own
status line and loss plot, and what its summary and checks make of a run's views. No model."""

from __future__ import annotations

import math

import pytest

from bench.load_test import (
    LoadConfig,
    class_view_endpoint,
    hide_passwords,
    read_class_view,
    teacher_login,
    teacher_problems,
    teacher_summary,
    teacher_text,
)
from playground.runfigures import runs_figure
from tests.unit.test_runfigures import T0, make_run
from ui.classroom import REFRESH_S, status_line

pytestmark = pytest.mark.unit


def test_the_teacher_polls_at_the_class_tabs_own_rate():
    assert LoadConfig().teacher_every == REFRESH_S
    assert LoadConfig().teacher


def test_a_fresh_login_is_added_and_its_password_never_printed():
    flags, (user, password) = teacher_login(["--library", "/tmp/lib"])
    assert flags[:2] == ["--library", "/tmp/lib"] and flags[2:] == ["--teacher-auth", f"{user}:{password}"]
    assert user == "loadtest-teacher" and len(password) >= 16
    assert teacher_login([])[1][1] != password  # random each run
    assert hide_passwords(flags) == ["--library", "/tmp/lib", "--teacher-auth", "loadtest-teacher:***"]


@pytest.mark.parametrize("given", [["--teacher-auth", "ms:s3cr:et"], ["--teacher-auth=ms:s3cr:et"]])
def test_the_callers_own_login_is_used_as_it_is(given):
    flags, login = teacher_login(["--concurrent-trainings", "4", *given])
    assert flags == ["--concurrent-trainings", "4", *given] and login == ("ms", "s3cr:et")
    assert "s3cr" not in " ".join(hide_passwords(flags))


def config(*deps) -> dict:
    comps = [{"id": 1, "props": {"elem_id": "class-status-box"}}, {"id": 2, "props": {"elem_id": "ex-status"}}]
    return {"components": comps, "dependencies": [
        {"api_name": name, "outputs": outputs, "targets": [[9, event]]} for name, outputs, event in deps]}


def test_the_class_view_is_the_timer_that_updates_the_class_status():
    # the Train tab's own "class_view" (the exercise) updates other components: it is not the teacher's view
    cfg = config(("class_view", [2], "tick"), ("refresh", [1, 2], "click"), ("class_view_1", [1, 2], "tick"))
    assert class_view_endpoint(cfg) == "/class_view_1"
    assert class_view_endpoint(config(("refresh", [1], "click"))) == "/refresh"  # no timer: any refresh of it
    assert class_view_endpoint(config(("class_view", [2], "tick"))) is None


def test_a_class_view_is_read_from_the_apps_status_line_and_loss_plot():
    live = [make_run("alex", T0), make_run("sam", T0 + 60, state="running")]  # 20 steps and 12 steps logged
    everyone = live + [make_run("alex", T0 - 600)]
    out = (status_line(live, everyone), {"type": "plotly", "plot": runs_figure(live, "loss").to_json()}, None, None)
    assert read_class_view(out) == {"students": 2, "running": 1, "runs": 3, "loss_points": 32}
    empty = (status_line([], []), {"type": "plotly", "plot": runs_figure([], "loss").to_json()})
    assert read_class_view(empty) == {"students": 0, "running": 0, "runs": 0, "loss_points": 0}
    skipped = tuple({"__type__": "update"} for _ in range(7))  # what a page that is not the teacher's gets
    assert read_class_view(skipped) is None


SAMPLES = [[0.3, 0, 0, 0, 0], [3.2, 3, 3, 3, 0], [6.4, 3, 3, 3, 3], [9.1, 3, 2, 3, 3], [12.0, 3, 1, 3, 6]]


def test_the_summary_counts_growth_gaps_and_when_everyone_was_seen():
    t = teacher_summary(True, SAMPLES, [0.1, 0.2, 0.3, 0.4, 0.5, 0.2], 0, 3, 2, final=[15.0, 3, 0, 3, 6])
    assert (t["polls"], t["errors"], t["latency_p50_s"], t["latency_p95_s"]) == (6, 0, 0.2, 0.5)
    assert t["all_students_seen_at_s"] == 3.2 and t["loss_points_increases"] == 2
    assert t["max_gap_s"] == 3.2 and t["loss_points_possible"] == 6 and t["max_loss_points"] == 6
    assert teacher_problems(t, steps=2, trained=3) == []
    assert "all 3 students seen 3.2 s after they pressed Train" in teacher_text(t)


def test_a_view_that_never_showed_everyone_or_never_grew_fails():
    stuck = [[s[0], 2, 2, 2, 2] for s in SAMPLES]
    got = teacher_problems(teacher_summary(True, stuck, [0.1] * 5, 1, 3, 2, final=[15.0, 2, 2, 2, 2]), 2, 3)
    assert len(got) == 4, got  # a failed view, never all 3 students, no growth, a wrong view after the class
    assert any("1 of 6 Class views failed" in p for p in got)
    too_many = [[0.5, 4, 0, 4, 7], [3.5, 4, 0, 4, 8]]  # more students and points than the class has
    assert any("showed 4 students and 8 loss points" in p
               for p in teacher_problems(teacher_summary(True, too_many, [0.1, 0.1], 0, 3, 2), 2, 3))
    nobody = teacher_summary(False, [], [], 0, 3, 2)
    assert teacher_problems(nobody, 2, 3) == ["teacher: the teacher could not sign in, so nobody watched the class"]
    assert math.isnan(nobody["max_gap_s"]) and nobody["all_students_seen_at_s"] is None
    assert teacher_problems(None, 2, 3) == [] and "--no-teacher" in teacher_text(None)


def test_the_hostile_students_own_run_is_one_more_learner_the_teacher_may_see():
    # 3 students of 2 steps, and the hostile student's run of 3 steps: 4 learners, 9 points, all correct
    seen = [[0.3, 0, 0, 0, 0], [3.2, 4, 4, 4, 2], [6.4, 4, 1, 4, 9]]
    t = teacher_summary(True, seen, [0.1] * 3, 0, 3, 2, final=[9.0, 4, 0, 4, 9])
    assert teacher_problems(t, 2, 3, others=1, other_steps=3) == []
    assert any("showed 4 students and 9 loss points" in p for p in teacher_problems(t, 2, 3))  # not counted: too many
