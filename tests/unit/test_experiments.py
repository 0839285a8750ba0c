"""The ablation studies: the grid they plan, low-data subsets, resumable runs, tables, figures and the lab's caps."""

from __future__ import annotations

import json

import pytest

from playground.errors import PlaygroundError
from playground.experiments import UNRELATED_TEXT, ExperimentSettings, Point, aggregate, plan, run_all, subsample
from playground.figures import ablation_figure, seeds_curve_figure, write_figures
from playground.lab import CompareLab
from playground.methods import METHODS
from playground.report import experiment_figures, markdown_tables
from playground.tasks import get_task
from tests.conftest import ROOT


def test_the_plan_covers_every_cell_of_every_study_once_per_seed():
    s = ExperimentSettings(studies=("length", "init", "mlp"), seeds=(0, 1, 2))
    specs = plan(s)
    per_seed = {"length": 7 + 4, "init": 2 * 4, "mlp": 3 * 2}
    assert {st: sum(sp.study == st for sp in specs) for st in per_seed} == {k: 3 * v for k, v in per_seed.items()}
    assert len({sp.key for sp in specs}) == len(specs)
    assert [sp.study for sp in specs] == sorted((sp.study for sp in specs), key=["length", "init", "mlp"].index)
    init = {sp.series: sp for sp in specs if sp.study == "init" and sp.x == 16 and sp.seed == 0}
    assert init["task words"].method.init == "task" and init["random"].method.init == "random"
    assert init["unrelated words"].method.init_text == UNRELATED_TEXT
    assert init["training examples"].method.init == "demos" and init["training examples"].method.init_shots == 2
    assert init["random"].learning_rate == METHODS["prefix"].random_init_lr and init["task words"].train_examples == 16
    mlp = [sp for sp in specs if sp.study == "mlp"]
    assert {sp.method.method for sp in mlp} == {"prefix", "prefix_mlp"} and {sp.method.init for sp in mlp} == {"random"}
    assert all(sp.learning_rate == sp.x for sp in mlp)
    prompt = [sp for sp in specs if sp.series == "prompt"]
    assert {sp.method.method for sp in prompt} == {"prompt"} and {sp.x for sp in prompt} == {1, 5, 20, 100}


def test_low_data_subsets_are_seeded_and_leave_the_task_alone():
    task = get_task("topic")
    full = list(task.split("train"))
    a, b, a2 = subsample(task, 16, 0), subsample(task, 16, 1), subsample(task, 16, 0)
    assert len(a.split("train")) == 16 and a.split("train") == a2.split("train") != b.split("train")
    assert set(a.split("train")) <= set(full) and len(set(a.split("train"))) == 16
    assert a.split("test") == task.split("test") and task.split("train") == full
    assert subsample(task, 10_000, 0) is task


@pytest.mark.parametrize("kwargs, match", [
    (dict(studies=("length", "speed")), "Unknown or no studies: speed"),
    (dict(seeds=()), "at least one seed"),
    (dict(lengths=(0, 5)), r"from 1 to 512; got \[0\]"),
    (dict(train_sizes=(0,)), "at least 1"),
    (dict(mlp_lrs=(2.0,)), "at most 1"),
    (dict(init_shots=0), "from 1 to 8 training examples"),
])
def test_bad_settings_are_refused_with_the_fix(kwargs, match):
    with pytest.raises(PlaygroundError, match=match):
        ExperimentSettings(**kwargs).validate()


def test_a_run_writes_results_after_each_run_and_a_rerun_resumes(tiny_llama, tmp_path):
    task = get_task("topic")
    s = ExperimentSettings(studies=("length", "init"), seeds=(0, 1), steps=2, batch_size=2, eval_examples=2,
                           lengths=(1, 2), prompt_lengths=(1,), train_sizes=(4,))
    said = []
    data = run_all(tiny_llama, task, s, tmp_path, say=said.append)
    assert len(data["runs"]) == 2 * (3 + 4) and data["compare"] is None
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["runs"] == json.loads(json.dumps(data["runs"])) and saved["model"] == tiny_llama.name
    run = data["runs"][0]
    assert [c[0] for c in run["curve"]] == [1, 2] and 0 <= run["metric_start"] <= 1 and run["seconds"] > 0
    assert {r["train_examples"] for r in data["runs"] if r["study"] == "init"} == {4}
    said.clear()
    again = run_all(tiny_llama, task, s, tmp_path, say=said.append)
    assert said == [f"Resuming: 14 runs already in {tmp_path / 'results.json'}."] and again["runs"] == saved["runs"]
    points = aggregate(again["runs"])
    assert len(points) == 7 and all(p.n == 2 and p.lo <= p.mean <= p.hi for p in points)
    md = markdown_tables(again)
    assert "### length" in md and "### init" in md and "| unrelated words | 4 |" in md
    assert "| training examples | 4 |" in md
    figs = experiment_figures(again)
    assert set(figs) == {"length", "init"}
    written = write_figures(figs, tmp_path / "figs", png=False)
    assert {p.name for p in written} == {"length.html", "init.html"} and (tmp_path / "figs" / "plotly.min.js").exists()


def test_the_stored_results_render_to_the_published_tables_and_charts():
    """docs/experiments/results.md is what `python -m playground experiments` rendered from results.json."""
    folder = ROOT / "docs" / "experiments"
    data = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    assert markdown_tables(data) + "\n" == (folder / "results.md").read_text(encoding="utf-8")
    assert set(experiment_figures(data)) == {p.stem for p in folder.glob("*.png")}


def test_error_bars_span_the_worst_to_the_best_seed():
    pts = [Point("length", "prefix", 5, 3, 0.5, 0.4, 0.7, 0.1, 0.0, 1.0, 2.0),
           Point("length", "prefix", 20, 3, 0.8, 0.8, 0.8, 0.0, 0.1, 0.5, 2.0)]
    fig = ablation_figure(pts, "accuracy", "virtual tokens", log_x=True)
    (trace,) = fig.data
    assert list(trace.y) == [50.0, 80.0] and list(trace.error_y.array) == pytest.approx([20.0, 0.0])
    assert list(trace.error_y.arrayminus) == pytest.approx([10.0, 0.0]) and fig.layout.xaxis.type == "log"
    runs = {"prefix": [{"metric": m, "records": [{"step": 5, "elapsed": e, "metric": m}]} for m, e in
                       ((0.6, 1.0), (0.9, 3.0))],
            "instruction": [{"metric": 0.25, "records": []}]}
    fig = seeds_curve_figure(runs, "accuracy", "time")
    (trace,) = fig.data  # the untrained baseline is a dashed line, not a trace
    assert list(trace.x) == [2.0] and list(trace.y) == pytest.approx([75.0])
    assert list(trace.error_y.array) == pytest.approx([15.0]) and fig.layout.shapes[0].y0 == 25.0


def test_the_lab_ablation_streams_runs_keeps_to_its_budget_and_stops(tiny_llama):
    lab = CompareLab(tiny_llama, max_steps=5, max_ablation_steps=20)
    task = get_task("topic")
    items = list(lab.ablate("a", task, "mlp", steps=2, seeds=1, eval_examples=2))
    assert [(i, n) for i, n, _ in items] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert {(r.series, r.x) for _, _, r in items} == {("direct", 1e-3), ("MLP", 1e-3), ("direct", 3e-2), ("MLP", 3e-2)}
    with pytest.raises(PlaygroundError, match=r"8 runs x 5 steps = 40 steps, over this server's limit of 20"):
        next(lab.ablate("a", task, "length", steps=5))
    with pytest.raises(PlaygroundError, match="Unknown ablation 'depth'"):
        next(lab.ablate("a", task, "depth", steps=1))
    with pytest.raises(PlaygroundError, match="seeds must be 1, 2 or 3"):
        next(lab.ablate("a", task, "init", steps=1, seeds=4))
    gen = lab.ablate("b", task, "init", steps=2, eval_examples=2)
    next(gen)
    assert lab.stop("b")
    assert list(gen) == []  # the run in progress is dropped, none other starts


