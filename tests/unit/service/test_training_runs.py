"""Training runs through the Playground facade."""

from __future__ import annotations

import json

import pytest
import torch

import playground.service as service_mod
from playground.errors import PlaygroundError
from playground.library import Library
from playground.peft_folder import CARD_FILE
from playground.service import JUST_TRAINED, Limits, Playground
from playground.tasks import get_task

from .support import LIMITS, emb, ps, rec, trained, ts


def test_a_run_records_every_step_and_finishes(pg):
    run = pg.start_run("k", get_task("sentiment"), ps(), ts(steps=4))
    assert pg.sessions.get("k").run is run and run.state == "running"
    assert run.held_out_n == 4
    assert pg.prefix_choices("k") == []  # nothing trained yet
    steps = [r.step for r in pg.run_steps(run)]
    assert steps == [1, 2, 3, 4] and [r.step for r in run.records] == steps
    assert run.state == "finished" and run.steps_done == 4
    assert [r.metric is not None for r in run.records] == [False, True, False, True]  # eval_every=2
    assert len(run.records[-1].predictions) == 4
    assert pg.prefix_choices("k") == [JUST_TRAINED]


def test_setting_cancel_mid_run_stops_it_early(pg):
    run = pg.start_run("k", get_task("sentiment"), ps(), ts(steps=8, eval_every=3))
    for r in pg.run_steps(run):
        if r.step == 2:
            run.cancel.set()
    assert run.state == "stopped" and run.steps_done == 2 and len(run.records) == 2
    assert run.records[-1].predictions is None  # stopped between evaluations
    rows = pg.compare_rows(run)  # scores the prefix as it is now
    assert run.metric is not None and len(rows) == 4 and run.records[-1].predictions is not None


def test_a_run_that_ends_abruptly_is_not_marked_finished(pg):
    run = pg.start_run("k", get_task("sentiment"), ps(), ts(steps=4))
    gen = pg.run_steps(run)
    next(gen)
    gen.close()  # the consumer went away (tab closed) or the loop raised
    assert run.state == "stopped" and run.steps_done == 1


def test_a_run_whose_training_fails_is_not_marked_finished(pg, monkeypatch):
    """The second training tick fails (in the scheduler's thread): the error reaches the run, which stops."""
    import playground.scheduler as scheduler_mod

    real, calls = scheduler_mod.shared_step, []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return real(*a, **k)

    monkeypatch.setattr(scheduler_mod, "shared_step", failing)
    run = pg.start_run("k", get_task("sentiment"), ps(), ts(steps=4))
    with pytest.raises(RuntimeError, match="out of memory"):
        list(pg.run_steps(run))
    assert run.state == "stopped" and run.steps_done == 1 and not run.cancel.is_set()


def test_without_the_scheduler_a_failing_run_is_not_marked_finished_either(tiny_llama, tmp_path, monkeypatch):
    def failing(base, prefix, task, settings, cancel=None, reserve=None):
        yield rec(1)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(service_mod, "train", failing)
    pg = Playground(tiny_llama, Library(tmp_path / "lib"), Limits(**LIMITS), scheduled=False)
    run = pg.start_run("k", get_task("sentiment"), ps(), ts(steps=4))
    with pytest.raises(RuntimeError, match="out of memory"):
        list(pg.run_steps(run))
    assert run.state == "stopped" and run.steps_done == 1 and not run.cancel.is_set()


def test_starting_a_new_run_stops_the_sessions_previous_one(pg):
    first = pg.start_run("k", get_task("sentiment"), ps(), ts())
    gen = pg.run_steps(first)
    next(gen)
    second = pg.start_run("k", get_task("sentiment"), ps(), ts())
    assert first.cancel.is_set() and not second.cancel.is_set()
    assert pg.sessions.get("k").run is second
    list(gen)
    assert first.state == "stopped" and first.steps_done == 1


def test_two_sessions_train_independently(pg):
    task = get_task("sentiment")
    a = pg.start_run("a", task, ps(), ts(steps=4, seed=1, eval_every=0))
    b = pg.start_run("b", task, ps(), ts(steps=4, seed=2, eval_every=0))
    assert a.prefix is not b.prefix
    ga, gb = pg.run_steps(a), pg.run_steps(b)
    for _ in range(2):  # interleave the two runs step by step on the shared model
        next(ga)
        next(gb)
    assert pg.stop("a") is True
    list(ga)
    list(gb)
    assert a.state == "stopped" and a.steps_done == 2
    assert b.state == "finished" and b.steps_done == 4 and not b.cancel.is_set()
    assert not torch.allclose(emb(a.prefix), emb(b.prefix))  # different seeds, different data order
    # Interleaving changed nothing: b equals the same run done alone in another session.
    solo = trained(pg, "solo", seed=2, steps=4)
    assert torch.allclose(emb(solo.prefix), emb(b.prefix), atol=1e-6)
    assert [r.loss for r in solo.records] == pytest.approx([r.loss for r in b.records], abs=1e-5)


def test_check_settings_refuses_values_above_the_servers_limits(pg):
    cases = [(ps(9), ts(), "num_virtual_tokens = 9 .*limit of 8"),
             (ps(), ts(steps=11), "steps = 11 .*limit of 10"),
             (ps(), ts(batch_size=9), "batch size = 9 .*limit of 8"),
             (ps(), ts(eval_examples=9), "held-out examples = 9 .*limit of 8")]
    for p, t, match in cases:
        with pytest.raises(PlaygroundError, match=match):
            pg.check_settings(p, t)
        with pytest.raises(PlaygroundError, match=match):
            pg.start_run("k", get_task("sentiment"), p, t)
    assert pg.sessions.peek("k") is None or pg.sessions.peek("k").run is None
    pg.check_settings(ps(8), ts(steps=10, batch_size=8, eval_examples=8))  # at the limits is fine
    with pytest.raises(PlaygroundError, match="MLP"):  # the settings' own validation still runs
        pg.check_settings(ps(4, "task", prefix_projection=True), ts())


def test_compare_rows_scores_every_prompt_once_for_the_class_with_its_cost(pg, monkeypatch):
    """The model as is plus the live baselines (instruction, + format, few-shot over draws, label scoring), each
    draw evaluated once and shared between sessions; the table shows the strongest prompt's first draw."""
    from playground import baselines as baselines_mod
    from playground.baselines import LIVE, specs

    calls = []
    real = service_mod.evaluate

    def counting(base, task, examples, method):
        r = real(base, task, examples, method)
        calls.append((type(method).__name__, r))
        return r

    monkeypatch.setattr(service_mod, "evaluate", counting)
    monkeypatch.setattr(baselines_mod, "evaluate", counting)
    task = get_task("sentiment")
    light = ts(steps=2, eval_every=0)
    want = 1 + sum(d for *_, d in specs(task, LIVE))  # the model as is and every draw of every prompt
    # the run's own (the end, and step 0: the initialized prefix) and, for the class's first run, the prompts
    assert pg.check_settings(ps(), light, task).evals == 2 + want
    run = trained(pg, "a", seed=1)
    rows = pg.compare_rows(run, max_rows=3)
    assert len(calls) == want  # the prefix's own come from the last eval
    assert pg.check_settings(ps(), light, task).evals == 2  # later runs on it do not: they are shared and [c for c, _ in calls].count("BareMethod") == 1
    assert "LabelScoringMethod" in {c for c, _ in calls}  # sentiment is a classification task
    held_out = task.split("validation")[:4]
    best = run.strongest
    assert best.mean == max(v for k, v in run.baselines.items() if k != "base")
    for i, row in enumerate(rows):
        assert row["input"] == held_out[i].input and row["target"] == held_out[i].target
        assert row["prefix"] == run.records[-1].predictions[i] and row["best"] == best.predictions[i]
        assert {"base_score", "instruction_score", "best_score", "prefix_score"} <= set(row)
    keys = [r["key"] for r in run.summary]
    assert keys[0] == "base" and keys[-1] == "prefix" and "few_shot_4" in keys and "instruction_format" in keys
    few = next(r for r in run.summary if r["key"] == "few_shot_4")
    assert len(few["scores"]) == LIVE.draws and few["kv_positions"] > 0 and few["prompt_tokens"] == 0
    assert few["examples_needed"] == 4 and few["ms_per_query"] > 0
    instr = next(r for r in run.summary if r["key"] == "instruction")
    assert instr["prompt_tokens"] > 0 and instr["kv_positions"] == 0
    assert run.summary[-1]["kv_positions"] == run.prefix.num_virtual_tokens
    a, b, p = run.paired
    assert a + b <= 4 and 0 < p <= 1
    assert pg.compare_rows(run, max_rows=3) == rows and len(calls) == want  # second call: nothing re-evaluated
    other = trained(pg, "b", seed=2)  # another session, same task and held-out set: baselines shared
    pg.compare_rows(other)
    assert len(calls) == want and other.baselines == run.baselines



def test_save_trained_refuses_early_then_saves_a_card_with_metrics(pg):
    with pytest.raises(PlaygroundError, match="Nothing to save"):
        pg.save_trained("k", "mine")
    run = pg.start_run("k", get_task("sentiment"), ps(), ts(steps=2, eval_every=0))
    with pytest.raises(PlaygroundError, match="Nothing to save"):
        pg.save_trained("k", "mine")
    gen = pg.run_steps(run)
    next(gen)
    with pytest.raises(PlaygroundError, match="still running"):
        pg.save_trained("k", "mine")
    list(gen)
    pg.compare_rows(run)
    path = pg.save_trained("k", "  mine ")
    assert path == pg.library.path("mine") and pg.library.names() == ["mine"]
    card = json.loads((path / CARD_FILE).read_text())
    m = card["metrics"]
    assert m["split"] == "validation" and m["metric"] == "exact_match" and m["n"] == 4
    assert m["prefix"] == round(run.metric, 4) and m["base"] == round(run.baselines["base"], 4)
    assert m["instruction"] == round(run.baselines["instruction"], 4)
    assert card["task"] == "sentiment" and card["base_fingerprint"] == pg.base.fingerprint
    assert card["training"]["steps_done"] == 2 and card["training"]["seed"] == 0
    assert card["instruction"] == get_task("sentiment").instruction
    assert card["train_examples"] == len(get_task("sentiment").split("train"))
    assert torch.allclose(pg.library.load("mine", pg.base).embeddings(), emb(run.prefix))
    with pytest.raises(PlaygroundError, match="already exists"):
        pg.save_trained("k", "mine")
    pg.save_trained("k", "mine", overwrite=True)
