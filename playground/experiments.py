"""Li & Liang (2021)'s ablations on the toy tasks, with several seeds: the engine behind
``python -m playground experiments`` and ``docs/experiments.md``.

Four studies, each a grid of ordinary training runs (``training.train``, the same loop as the
Train and Compare tabs) scored on a held-out split before and after training:

- ``length``: prefix length P swept (1, 2, 5, ..., 100), and prompt tuning at some of the
  same P, so that "prefix (every layer) vs prompt (input only) at equal virtual tokens" is one chart;
- ``init``: few training examples (16, 64) x the init: task words (the task's instruction),
  unrelated words, random, and training examples (the instruction and ``init_shots`` of the run's
  own training examples, a prefix as long as their tokens: the cached few-shot prompt);
- ``mlp``: the MLP reparameterization vs direct optimization, both from random init (PEFT can't
  start the MLP from words), over a few learning rates: what "unstable" looks like;
- ``compare``: ``compare.compare`` (every method, with inference cost) over the same seeds.

Results are written after every run, so an interrupted full run resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from .compare import applicable_methods, compare, to_json
from .errors import PlaygroundError
from .evaluation import evaluate
from .methods import MethodSettings, create_method, default_learning_rate
from .models import BaseModel
from .prefix import DEMO_SHOTS, PrefixSettings
from .runlog import write_atomic
from .tasks import Task
from .training import MAX_STEPS, TrainSettings, held_out_split, train

STUDIES = ("compare", "length", "init", "mlp")
# Unrelated words for the init study: no label word and nothing about the task (the paper's
# contrast is "task-relevant" vs "task-irrelevant" real words).
UNRELATED_TEXT = "The elephant slept under a tall green tree beside the quiet river."
INIT_SERIES = {"task words": "task", "unrelated words": "text", "random": "random", "training examples": "demos"}


@dataclass
class ExperimentSettings:
    """One full experiments run: which task, seeds and budgets, and each study's grid."""

    task: str = "topic"  # 4 labels and not solved by the instruction alone: differences show
    studies: tuple[str, ...] = STUDIES
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 30  # optimizer steps per run
    batch_size: int = 8
    eval_every: int = 10  # compare: held-out points along each curve (ablation runs: before and after only)
    eval_examples: int = 60  # first N of eval_split
    eval_split: str = "test"  # learning rates were chosen on validation (methods.METHODS)
    num_virtual_tokens: int = 20  # for init, mlp and compare
    lengths: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100)  # prefix length sweep
    prompt_lengths: tuple[int, ...] = (1, 5, 20, 100)  # prompt tuning at equal virtual tokens
    train_sizes: tuple[int, ...] = (16, 64)  # low-data training sets for the init study
    init_shots: int = DEMO_SHOTS  # the init study's "training examples" series: examples the prefix starts from
    mlp_lrs: tuple[float, ...] = (1e-3, 1e-2, 3e-2)  # learning rates tried for direct vs MLP
    unrelated_text: str = UNRELATED_TEXT
    precision: str = "auto"

    def validate(self) -> None:
        unknown = [s for s in self.studies if s not in STUDIES]
        if unknown or not self.studies:
            raise PlaygroundError(f"Unknown or no studies: {', '.join(unknown) or '(none)'}. "
                                  f"Choose from: {', '.join(STUDIES)}.")
        if not self.seeds:
            raise PlaygroundError("Give at least one seed, e.g. --seeds 0,1,2.")
        if not (1 <= self.steps <= MAX_STEPS):
            raise PlaygroundError(f"steps must be from 1 to {MAX_STEPS}; got {self.steps}.")
        bad = [p for p in (*self.lengths, *self.prompt_lengths) if not 1 <= p <= 512]
        if bad:
            raise PlaygroundError(f"Virtual-token counts must be from 1 to 512; got {bad}.")
        if "init" in self.studies:
            PrefixSettings(init="demos", init_shots=self.init_shots).validate()
        if any(n < 1 for n in self.train_sizes):
            raise PlaygroundError(f"Training-set sizes must be at least 1; got {list(self.train_sizes)}.")
        if any(not 0 < lr <= 1 for lr in self.mlp_lrs):
            raise PlaygroundError(f"Learning rates must be above 0 and at most 1; got {list(self.mlp_lrs)}.")


@dataclass(frozen=True)
class RunSpec:
    """One cell of a study's grid, for one seed."""

    study: str  # a key of STUDIES (not "compare")
    series: str  # the line or bar group it belongs to, e.g. "prefix", "random", "MLP"
    x: float  # the swept value: virtual tokens, training examples or learning rate
    seed: int
    method: MethodSettings
    learning_rate: float
    train_examples: int | None = None  # None: the whole train split

    @property
    def key(self) -> str:
        return run_key(self.study, self.series, self.x, self.seed)


def run_key(study: str, series: str, x: float, seed: int) -> str:
    """A grid cell for one seed: what a resumed run skips."""
    return f"{study}/{series}/{x:g}/{seed}"


@dataclass
class Run:
    """What one run measured."""

    study: str
    series: str
    x: float
    seed: int
    learning_rate: float
    train_examples: int  # examples it trained on
    metric_start: float  # held-out metric before the first step (what the init alone gives)
    metric: float  # held-out metric after the last step
    final_loss: float  # mean training loss of the last 5 steps (nan: it diverged)
    seconds: float  # training time, evaluation excluded
    curve: list[tuple[int, float, float | None]] = field(default_factory=list, repr=False)  # (step, loss, metric)


def subsample(task: Task, n: int, seed: int) -> Task:
    """``task`` with its train split cut to n examples drawn with ``seed`` (other splits untouched)."""
    train_set = task.split("train")
    if n >= len(train_set):
        return task
    picked = random.Random(seed).sample(train_set, n)
    return replace(task, splits={**task.splits, "train": picked})


def plan(s: ExperimentSettings) -> list[RunSpec]:
    """Every training run of the ablation studies, seed by seed within each cell."""
    p = s.num_virtual_tokens
    specs: list[RunSpec] = []
    for seed in s.seeds:
        if "length" in s.studies:
            specs += [RunSpec("length", "prefix", n, seed, MethodSettings("prefix", n, "task"),
                              default_learning_rate("prefix")) for n in s.lengths]
            specs += [RunSpec("length", "prompt", n, seed, MethodSettings("prompt", n, "task"),
                              default_learning_rate("prompt")) for n in s.prompt_lengths]
        if "init" in s.studies:
            for size in s.train_sizes:
                for series, init in INIT_SERIES.items():
                    ms = MethodSettings("prefix", p, init, s.unrelated_text if init == "text" else "",
                                        init_shots=s.init_shots)
                    specs.append(RunSpec("init", series, size, seed, ms, default_learning_rate("prefix", init), size))
        if "mlp" in s.studies:
            for lr in s.mlp_lrs:
                specs.append(RunSpec("mlp", "direct", lr, seed, MethodSettings("prefix", p, "random"), lr))
                specs.append(RunSpec("mlp", "MLP", lr, seed, MethodSettings("prefix_mlp", p, "random"), lr))
    order = {st: i for i, st in enumerate(STUDIES)}
    return sorted(specs, key=lambda r: order[r.study])  # stable: study by study, seeds inside


def run_one(base: BaseModel, task: Task, spec: RunSpec, s: ExperimentSettings,
            cancel: threading.Event | None = None) -> Run | None:
    """Train one cell for one seed; score it on the held-out split before and after (None: cancelled)."""
    data = subsample(task, spec.train_examples, spec.seed) if spec.train_examples else task
    # demonstrations (few-shot methods, a "demos" prefix) come from the examples this run trains on
    method = create_method(base, spec.method, task.instruction, spec.seed, data.split("train"))
    held_out = task.split(s.eval_split)[: s.eval_examples]
    start = evaluate(base, task, held_out, method).score
    ts = TrainSettings(learning_rate=spec.learning_rate, steps=s.steps, batch_size=s.batch_size, seed=spec.seed,
                       eval_every=0, eval_examples=s.eval_examples, precision=s.precision)
    records = list(train(base, method, data, ts, cancel=cancel, eval_split=s.eval_split))
    if cancel is not None and cancel.is_set():
        return None
    losses = [r.loss for r in records[-5:]]
    return Run(spec.study, spec.series, spec.x, spec.seed, spec.learning_rate, len(data.split("train")), start,
               records[-1].metric or 0.0, sum(losses) / len(losses), records[-1].elapsed,
               [(r.step, r.loss, r.metric) for r in records])


def run_all(base: BaseModel, task: Task, s: ExperimentSettings, out: Path | None = None,
            say: Callable[[str], None] = print) -> dict:
    """Every study of ``s``; with ``out``, results.json is rewritten after each run and reused on a rerun."""
    s.validate()
    path = out / "results.json" if out else None
    data = {"settings": asdict(s), "model": base.name, "metric_label": task.metric, "runs": [], "compare": None}
    if path and path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("settings") == json.loads(json.dumps(asdict(s))) and old.get("model") == base.name:
            data = old
            say(f"Resuming: {len(data['runs'])} runs already in {path}.")
    done = {run_key(r["study"], r["series"], r["x"], r["seed"]) for r in data["runs"]}
    specs = [sp for sp in plan(s) if sp.key not in done]
    if "compare" in s.studies and data["compare"] is None:
        methods = applicable_methods(task)
        say(f"compare: {len(s.seeds)} seeds x {len(methods)} methods")
        ts = TrainSettings(steps=s.steps, batch_size=s.batch_size, eval_every=s.eval_every,
                           eval_examples=s.eval_examples, precision=s.precision)
        results = compare(base, task, methods, ts, list(s.seeds), s.num_virtual_tokens,
                          eval_split=s.eval_split, say=say)
        data["compare"] = to_json(results)
        if path:
            write_atomic(path, json.dumps(data, indent=1))
    t_all = time.perf_counter()
    for i, spec in enumerate(specs, 1):
        t0 = time.perf_counter()
        run = run_one(base, task, spec, s)
        data["runs"].append(asdict(run))
        if path:
            write_atomic(path, json.dumps(data, indent=1))
        per_run = (time.perf_counter() - t_all) / i
        say(f"[{i}/{len(specs)}] {spec.study:>6} {spec.series:>15} x={spec.x:<6g} seed {spec.seed}: "
            f"{100 * run.metric_start:5.1f}% -> {100 * run.metric:5.1f}%, loss {run.final_loss:.3f}, "
            f"{time.perf_counter() - t0:4.1f} s (about {per_run * (len(specs) - i) / 60:.0f} min left)")
    return data


# The Compare tab's short versions (lab.CompareLab.ablate): fewer cells, the held-out metric on validation.
LAB_GRIDS = {
    "length": dict(studies=("length",), lengths=(1, 5, 20, 50), prompt_lengths=(1, 5, 20, 50)),
    "init": dict(studies=("init",), train_sizes=(16, 64)),
    "mlp": dict(studies=("mlp",), mlp_lrs=(1e-3, 3e-2)),
}


def lab_settings(task: Task, study: str, steps: int, seeds: int, eval_examples: int) -> ExperimentSettings:

    return ExperimentSettings(task=task.name, steps=steps, seeds=tuple(range(seeds)), eval_examples=eval_examples,
                              eval_split=held_out_split(task), **LAB_GRIDS[study])


@dataclass
class Point:
    """One cell over its seeds: what a table row or an error bar shows."""

    study: str
    series: str
    x: float
    n: int  # seeds
    mean: float  # held-out metric after training, in [0, 1]
    lo: float  # the worst seed
    hi: float  # the best seed
    std: float  # population standard deviation over seeds
    start: float  # mean metric before training
    final_loss: float  # mean over seeds (nan when a seed diverged)
    seconds: float  # mean training time


def aggregate(runs: list[dict]) -> list[Point]:
    """Group runs by (study, series, x), in the order they first appear."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["study"], r["series"], r["x"]), []).append(r)
    points = []
    for (study, series, x), rs in groups.items():
        ms = [r["metric"] for r in rs]
        mean = sum(ms) / len(ms)
        points.append(Point(study, series, x, len(rs), mean, min(ms), max(ms),
                            math.sqrt(sum((m - mean) ** 2 for m in ms) / len(ms)),
                            sum(r["metric_start"] for r in rs) / len(rs),
                            sum(r["final_loss"] for r in rs) / len(rs), sum(r["seconds"] for r in rs) / len(rs)))
    return points
