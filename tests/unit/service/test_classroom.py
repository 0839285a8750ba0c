"""The class: runs that go on without their page, records on disk, names, the teacher's actions, forks, reset."""

from __future__ import annotations

import csv
import json
import shlex
import zipfile

import pytest
import torch

from playground.classdesk import ClassDesk
from playground.cli import build_parser
from playground.errors import PlaygroundError
from playground.library import Library
from playground.service import JUST_TRAINED, Limits, Playground
from playground.tasks import get_task

from .support import LIMITS, ps, save_random, ts

TEACHER = "user:ms-t"


@pytest.fixture
def pg(tiny_llama, tmp_path) -> Playground:
    p = Playground(tiny_llama, Library(tmp_path / "lib", shipped=tmp_path / "shipped"), Limits(**LIMITS),
                   teachers={"ms-t": "s3cret"})
    p._downloads = tmp_path / "downloads"
    return p


def train(pg: Playground, key: str, steps: int = 4, **kw):
    """Press Train as the web app does: the run goes on in its own thread; wait for its end."""
    run = pg.start_run(key, get_task("sentiment"), ps(4), ts(steps), **kw)
    pg.launch(run)
    assert run.done.wait(120), "the run did not end"
    return run


def test_a_run_goes_on_without_its_page_and_is_recorded_step_by_step(pg):
    pg.set_name("browser:a", "Alex B.")
    run = train(pg, "browser:a")
    assert run.state == "finished" and run.phase == "done" and not run.error, run.error
    assert run.rows and run.strongest is not None  # compared, as the page shows it
    assert pg.current_run("browser:a") is run  # what a reload or a second tab follows
    rec = pg.runs.get(run.run_id)
    assert rec.author == "Alex B." and rec.owner == "browser:a" and rec.state == "finished"
    assert rec.steps_done == 4 and rec.final_metric == run.metric and rec.start_metric == run.start_metric
    assert rec.held_out == {"split": "validation", "n": 4} and rec.summary and rec.examples and rec.has_prefix
    steps = pg.runs.steps(run.run_id)
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    assert [s["loss"] for s in steps] == [r.loss for r in run.records]
    assert [s["metric"] for s in steps] == [r.metric for r in run.records]
    # the trained prefix, in PEFT's format, equal to the run's
    assert torch.allclose(pg.runs.load_prefix(run.run_id, pg.base).embeddings(), run.prefix.embeddings().detach())


def test_the_recorded_command_parses_back_to_the_run(pg):
    run = train(pg, "browser:a", steps=3)
    cmd = shlex.split(pg.runs.get(run.run_id).command)
    assert cmd[:4] == ["python", "-m", "playground", "train"]
    a = build_parser().parse_args(cmd[3:])
    assert (a.task, a.num_virtual_tokens, a.init, a.steps, a.batch_size, a.seed, a.eval_every, a.eval_examples,
            a.lr) == ("sentiment", 4, "task", 3, 4, 0, 2, 4, run.train_settings.learning_rate)
    assert a.library == str(pg.library.root)


def test_two_pages_of_one_learner_follow_one_run_and_a_closed_last_tab_stops_it_after_the_grace(pg):
    now = [0.0]
    pg.sessions.clock = lambda: now[0]
    pg.attach("browser:a", "tab1")
    pg.attach("browser:a", "tab2")
    run = pg.start_run("browser:a", get_task("sentiment"), ps(4), ts(10, eval_every=0))
    pg.launch(run)
    assert pg.close_tab("browser:a", "tab1") is True  # a reload: the other tab (or the new page) still follows
    pg.sessions.sweep()
    assert pg.current_run("browser:a") is run and not run.cancel.is_set()
    assert pg.close_tab("browser:a", "tab2") is True  # the last page closed: the grace starts
    now[0] += pg.limits.reload_grace_seconds - 1
    pg.sessions.sweep()
    assert not run.cancel.is_set()
    pg.attach("browser:a", "tab3")  # a reload within the grace: the run was never stopped
    now[0] += 10 * pg.limits.reload_grace_seconds
    pg.sessions.sweep()
    assert not run.cancel.is_set() and pg.current_run("browser:a") is run
    stopped = []
    pg.sessions.on_stop = stopped.append
    pg.close_tab("browser:a", "tab3")
    now[0] += pg.limits.reload_grace_seconds + 1
    pg.sessions.sweep()  # no tab came back in time
    assert run.done.wait(120) and run.state == "stopped" and run.discarded
    assert stopped == (["browser:a"] if run.steps_done < 10 else [])
    assert pg.runs.get(run.run_id).state == "stopped"


def test_names_belong_to_one_browser(pg):
    assert pg.name("browser:a") == "anonymous" and pg.name("user:jo") == "jo"
    pg.set_name("browser:a", "  Alex   B. ")
    assert pg.name("browser:a") == "Alex B."
    with pytest.raises(PlaygroundError, match="already goes by 'Alex B.'"):
        pg.set_name("browser:b", "alex b.")
    with pytest.raises(PlaygroundError, match="teacher's login"):
        pg.set_name("browser:b", "MS-T")
    with pytest.raises(PlaygroundError, match="1 to 32 letters"):
        pg.set_name("browser:b", "<script>")
    with pytest.raises(PlaygroundError, match="logged in as jo"):
        pg.set_name("user:jo", "someone else")
    pg.roster.max_names = 1
    with pytest.raises(PlaygroundError, match="1 names already"):
        pg.set_name("browser:c", "Cy")
    pg.set_name("browser:a", "Alex")  # one who has a name may change it
    pg.set_name("browser:a", "Alex B.")
    # kept in the class folder: a restarted server knows the name
    again = Playground(pg.base, pg.library, pg.limits)
    assert again.name("browser:a") == "Alex B."


def test_only_the_teacher_sees_the_class_and_acts_on_it(pg):
    desk = ClassDesk(pg)
    run = train(pg, "browser:a", steps=2)
    for act in (lambda: desk.runs("browser:a", everyone=True), lambda: desk.push_run("browser:a", run.run_id),
                lambda: desk.export("browser:a"), lambda: desk.reset("browser:a"), lambda: desk.live("browser:a"),
                lambda: desk.set_exercise("browser:a", "sentiment", {})):
        with pytest.raises(PlaygroundError, match="Only the teacher"):
            act()
    assert [r["run_id"] for r in desk.runs("browser:a")] == [run.run_id]  # one's own runs
    assert desk.runs("browser:b") == []
    with pytest.raises(PlaygroundError, match="No run"):
        desk.with_steps("browser:b", [run.run_id])  # another student's run is not theirs to read
    assert pg.is_teacher(TEACHER) and not pg.is_teacher("browser:t")
    with pytest.raises(PlaygroundError, match="not the teacher's login"):
        pg.teacher_sign_in("browser:t", "ms-t", "wrong")
    pg.teacher_sign_in("browser:t", "ms-t", "s3cret")  # the sign-in inside the app (no student logins)
    assert pg.is_teacher("browser:t") and len(desk.runs("browser:t", everyone=True)) == 1


def test_sign_ins_are_limited_per_minute(pg):
    for _ in range(5):
        with pytest.raises(PlaygroundError, match="not the teacher's login"):
            pg.teacher_sign_in("browser:x", "ms-t", "guess")
    with pytest.raises(PlaygroundError, match="Too many"):
        pg.teacher_sign_in("browser:x", "ms-t", "s3cret")


def test_the_live_view_has_each_students_latest_run_with_its_log(pg):
    desk = ClassDesk(pg)
    for k in ("browser:a", "browser:b"):
        pg.set_name(k, k[-1])
    train(pg, "browser:a", steps=2)
    last_a = train(pg, "browser:a", steps=3)
    b = train(pg, "browser:b", steps=2)
    live = desk.live(TEACHER)
    assert [r["run_id"] for r in live] == [last_a.run_id, b.run_id]
    assert [len(r["steps"]) for r in live] == [3, 2] and [r["author"] for r in live] == ["a", "b"]
    assert len(desk.runs(TEACHER, everyone=True)) == 3


def test_the_teachers_view_is_drawn_again_only_when_a_run_changes(pg):
    desk = ClassDesk(pg)
    with pytest.raises(PlaygroundError, match="Only the teacher"):
        desk.view("browser:a")
    empty = desk.view(TEACHER)
    assert empty.everyone == [] and empty.live == [] and "No runs yet" in empty.loss.layout.title.text
    run = train(pg, "browser:a", steps=2)
    first = desk.view(TEACHER)
    assert first is not empty and [r["run_id"] for r in first.live] == [run.run_id]
    assert len(first.loss.data) == 1 and list(first.loss.data[0].y) == [s["loss"] for s in pg.runs.steps(run.run_id)]
    assert first.board[1][0][1] == first.everyone[0]["author"]
    assert desk.view(TEACHER) is first  # nothing changed: the same view, nothing read or drawn
    pg.runs.step(run.run_id, {"step": 3, "loss": 0.5, "metric": None, "elapsed": 1.0})  # a step appended
    stepped = desk.view(TEACHER)
    assert stepped is not first and list(stepped.loss.data[0].y)[-1] == 0.5
    rec = pg.runs.get(run.run_id)
    rec.note = "x"  # run.json rewritten, same size and maybe the same clock tick: a new file all the same
    pg.runs.update(rec)
    assert desk.view(TEACHER) is not stepped


def test_push_shows_a_run_to_everyone_and_a_classmate_forks_it(pg):
    desk = ClassDesk(pg)
    pg.set_name("browser:a", "alex")
    run = train(pg, "browser:a", steps=3)
    shared = desk.push_run(TEACHER, run.run_id)
    assert shared.name == "alex-sentiment" and shared.author == "alex"
    assert pg.library_card("alex-sentiment")["author"] == "alex"
    # first in everyone's pickers (Switch, Attention), starred with its author, and ticked in Switch
    assert pg.prefix_choices("browser:b")[0] == "alex-sentiment"
    assert dict(pg.prefix_picks("browser:b"))["★ alex-sentiment (shared: alex)"] == "alex-sentiment"
    assert pg.switch_defaults()[0] == "alex-sentiment"
    assert torch.allclose(pg.get_prefix("browser:b", "alex-sentiment").embeddings(), run.prefix.embeddings().detach())
    # the author still owns it: a classmate can't delete it, the author and the teacher can
    with pytest.raises(PlaygroundError):
        pg.delete("alex-sentiment", owner="browser:b")
    # fork: the same settings, and the prefix starts from the shared one's weights
    f = desk.fork("alex-sentiment")
    assert f["task"] == "sentiment" and f["train_settings"]["steps"] == 3 and f["author"] == "alex"
    fork = pg.start_run("browser:b", get_task("sentiment"), ps(4), ts(2), start_from="alex-sentiment")
    assert torch.allclose(fork.start_prefix.embeddings(), run.prefix.embeddings().detach())
    assert pg.runs.get(fork.run_id).forked_from == run.run_id
    assert "--start-from" in pg.runs.get(fork.run_id).command
    pg.launch(fork)
    assert fork.done.wait(120) and fork.state == "finished"
    with pytest.raises(PlaygroundError, match="not a prefix the teacher shared"):
        pg.start_run("browser:b", get_task("sentiment"), ps(4), ts(2), start_from="not-shared")
    desk.unpush(TEACHER, "alex-sentiment")
    assert desk.shared() == [] and "alex-sentiment" in pg.library.names()


def test_an_exercise_fixes_settings_and_names_what_to_put_back(pg):
    desk = ClassDesk(pg)
    desk.set_exercise(TEACHER, "sentiment", {"num_virtual_tokens": 4, "learning_rate": 0.02}, "pick your seed")
    with pytest.raises(PlaygroundError, match=r"virtual tokens = 4 \(not 3\).*learning rate = 0.02"):
        pg.start_run("browser:a", get_task("sentiment"), ps(3), ts(2))
    with pytest.raises(PlaygroundError, match=r"task = sentiment \(not topic\)"):
        pg.start_run("browser:a", get_task("topic"), ps(4), ts(2, learning_rate=0.02))
    run = pg.start_run("browser:a", get_task("sentiment"), ps(4), ts(2, learning_rate=0.02, seed=7))
    assert run.train_settings.seed == 7
    pg.stop("browser:a")
    desk.clear_exercise(TEACHER)
    pg.start_run("browser:a", get_task("topic"), ps(3), ts(2))  # free again
    with pytest.raises(PlaygroundError, match="can't fix"):
        desk.set_exercise(TEACHER, "sentiment", {"init_text": "x"})


def test_export_then_reset_keeps_the_shipped_set(pg, tmp_path):
    desk = ClassDesk(pg)
    shipped = Library(tmp_path / "shipped")
    save_random(Playground(pg.base, shipped, pg.limits), "ship-one")
    pg.set_name("browser:a", "alex")
    run = train(pg, "browser:a", steps=2)
    desk.push_run(TEACHER, run.run_id)
    save_random(pg, "mine")
    csv_path, zip_path = desk.export(TEACHER)
    rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    assert len(rows) == 1 and rows[0]["student"] == "alex" and rows[0]["pushed_as"] == "alex-sentiment"
    assert rows[0]["command"].startswith("python -m playground train")
    with zipfile.ZipFile(zip_path) as z:
        assert sorted(z.namelist()) == ["alex-sentiment/adapter_config.json", "alex-sentiment/adapter_model.safetensors",
                                        "alex-sentiment/card.json"]
        assert json.loads(z.read("alex-sentiment/adapter_config.json"))["peft_type"] == "PREFIX_TUNING"
    running = pg.start_run("browser:b", get_task("sentiment"), ps(4), ts(10, eval_every=0))
    pg.launch(running)
    got = desk.reset(TEACHER)
    assert running.done.is_set() and running.state == "stopped"
    assert got == {"runs": 2, "prefixes": 2}
    assert pg.library.names() == ["ship-one"] and pg.runs.records() == [] and desk.shared() == []
    assert pg.name("browser:a") == "anonymous" and pg.current_run("browser:b") is None
    assert JUST_TRAINED not in pg.prefix_choices("browser:a")
    assert csv_path.is_file() and zip_path.is_file()  # the export outlives the reset


def test_a_saved_prefix_records_its_author_and_only_they_or_the_teacher_change_it(pg):
    pg.set_name("browser:a", "alex")
    train(pg, "browser:a", steps=2)
    pg.save_trained("browser:a", "mine", owner="browser:a")
    assert pg.library_card("mine")["author"] == "alex"
    with pytest.raises(PlaygroundError):
        pg.rename("mine", "theirs", owner="browser:b")
    with pytest.raises(PlaygroundError):
        pg.delete("mine", owner="browser:b")
    pg.rename("mine", "mine-2", owner="browser:a")
    pg.delete("mine-2", owner=None)  # what the web app passes for the teacher (ui.common.editor)
    assert "mine-2" not in pg.library.names()


def test_a_full_class_folder_refuses_a_new_run_with_the_fix(pg):
    train(pg, "browser:a", steps=1)
    pg.limits.class_max_runs = 1
    with pytest.raises(PlaygroundError, match="class folder is full.*export and reset"):
        pg.start_run("browser:a", get_task("sentiment"), ps(4), ts(2))


def test_a_run_cut_off_by_a_restart_is_marked_stopped(pg):
    run = pg.start_run("browser:a", get_task("sentiment"), ps(4), ts(2))  # begun, never launched: as if killed
    assert pg.runs.get(run.run_id).state == "running"
    again = Playground(pg.base, pg.library, pg.limits)
    rec = again.runs.get(run.run_id)
    assert rec.state == "stopped" and rec.note == "the server stopped while it trained"
