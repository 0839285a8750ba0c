"""The Compare tab's session-aware runner: comparisons and ablations per session, within the server's limits.

A service object above the engine: it holds a lock, one Stop (a ``threading.Event``) per
session and the server's memory budget, and calls ``compare.run_method`` and
``experiments.run_one``, which know nothing of sessions. ``service.Playground`` owns one
(``pg.lab``) and stops a session's runs when the session goes away.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import replace
from typing import Iterator

from .baselines import tuned
from .budget import MemoryBudget, plan_run
from .compare import MethodResult, Stage, check_methods, run_method
from .errors import PlaygroundError
from .experiments import LAB_GRIDS, lab_settings, plan, run_one, subsample
from .methods import MethodSettings, added_positions, default_init, default_learning_rate
from .models import BaseModel, autocast_dtype
from .scheduler import Scheduler
from .tasks import Task
from .training import StepRecord, TrainSettings, held_out_split

ABLATION_EXAMPLES = 24  # held-out examples each ablation run is scored on, before and after training


class CompareLab:
    """The Compare tab's engine: short comparisons streamed per session, within the server's limits.

    Each session gets its own Stop (a threading.Event); the shared model is never changed
    (LoRA trains on a module copy, the prefixes and prompts are per-call inputs).
    """

    def __init__(self, base: BaseModel, max_steps: int = 60, max_eval_examples: int = 100,
                 max_ablation_steps: int = 600, budget: MemoryBudget | None = None,
                 scheduler: Scheduler | None = None):
        self.base, self.max_steps, self.max_eval_examples = base, max_steps, max_eval_examples
        # the model's owner: each step of a comparison takes a turn, between the class's training ticks
        self.scheduler = scheduler or Scheduler(base, budget=budget, direct=True)
        self.budget = budget  # the server's memory budget: each method's run holds its share while it trains
        self.max_ablation_steps = max_ablation_steps  # one ablation's grid in all: about 5 min of CPU training
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def stream(self, key: str, task: Task, names: list[str], steps: int, eval_every: int = 5,
               eval_examples: int = 24) -> Iterator[tuple[str, Stage | StepRecord | MethodResult]]:
        """(method, Stage) before each slow phase, (method, StepRecord) while each method trains, then
        (method, MethodResult); methods run in turn."""
        names = check_methods(names, task)
        self._check_budget(steps, eval_examples, "compare")
        cancel = self._begin(key)
        try:
            for n in names:
                if cancel.is_set():
                    return
                ms = MethodSettings(n, 20, default_init(n))
                ts = TrainSettings(steps=steps, eval_every=eval_every, eval_examples=eval_examples)
                if (lr := default_learning_rate(n, ms.init)) is not None:  # None: the instruction prompt
                    ts = replace(ts, learning_rate=lr)
                with self._hold(task, *self._positions(task, ms), ts):
                    work = run_method(self.base, task, ms, ts, cancel=cancel)
                    for item in self.scheduler.stepwise(key, work, f"the comparison's {n}"):
                        yield n, item
        finally:
            self._end(key, cancel)

    def ablate(self, key: str, task: Task, study: str, steps: int, seeds: int = 1,
               eval_examples: int = ABLATION_EXAMPLES) -> Iterator[tuple[int, int, object]]:
        """One of Li & Liang's ablations at a classroom budget (``experiments.LAB_GRIDS``): yields
        (runs done, runs in all, experiments.Run) after each run. The whole grid must fit in
        ``max_ablation_steps`` optimizer steps; the CLI (``python -m playground experiments``) has no cap."""
        if study not in LAB_GRIDS:
            raise PlaygroundError(f"Unknown ablation '{study}'. Choose one of: {', '.join(LAB_GRIDS)}.")
        if not (isinstance(seeds, int) and 1 <= seeds <= 3):
            raise PlaygroundError(f"seeds must be 1, 2 or 3 here; got {seeds}. Use the CLI for more.")
        self._check_budget(steps, eval_examples, "experiments")
        s = lab_settings(task, study, steps, seeds, eval_examples)
        specs = plan(s)
        if len(specs) * steps > self.max_ablation_steps:
            raise PlaygroundError(
                f"This ablation is {len(specs)} runs x {steps} steps = {len(specs) * steps} steps, over this server's "
                f"limit of {self.max_ablation_steps}. Use fewer steps or seeds, or the CLI (`python -m playground "
                "experiments`) for full runs.")
        cancel = self._begin(key)
        try:
            for i, spec in enumerate(specs, 1):
                data = subsample(task, spec.train_examples, spec.seed) if spec.train_examples else task
                with self._hold(task, *self._positions(data, spec.method, spec.seed), TrainSettings(
                        steps=s.steps, batch_size=s.batch_size, eval_every=0, eval_examples=s.eval_examples,
                        precision=s.precision)), self.scheduler.turn(key, "an ablation run"):
                    run = run_one(self.base, task, spec, s, cancel)
                if run is None:  # stopped mid-run: a partial run would skew the mean, so it is dropped
                    return
                yield i, len(specs), run
        finally:
            self._end(key, cancel)

    def ablation_runs(self, task: Task, study: str, steps: int, seeds: int = 1,
                      eval_examples: int = ABLATION_EXAMPLES) -> int:
        """How many runs ``ablate`` would make (0 for an unknown study): what a status line counts up to."""
        if study not in LAB_GRIDS:
            return 0
        return len(plan(lab_settings(task, study, steps, seeds, eval_examples)))

    @staticmethod
    def held_out(task: Task, eval_examples: int = ABLATION_EXAMPLES) -> tuple[int, str]:
        """(examples, split) a held-out metric of this lab is measured on."""
        split = held_out_split(task)
        return len(task.split(split)[:eval_examples]), split

    def _positions(self, task: Task, ms: MethodSettings, seed: int = 0) -> tuple[int, int]:
        """(cached positions, prompt tokens) the method adds to every query, drawn as its run with ``seed`` draws
        them (from ``task``'s training split: pass the run's own)."""
        return added_positions(self.base, tuned(task, ms), task.instruction, task.split("train"), seed)

    def _hold(self, task: Task, P: int, extra_tokens: int, ts: TrainSettings):
        """Reserve one run's peak (its widest step or scoring, behind P positions) from the memory budget."""
        if self.budget is None:
            return contextlib.nullcontext()
        held = task.split(held_out_split(task))[: ts.eval_examples]
        plan = plan_run(self.base, task, P, ts.steps, ts.batch_size, ts.eval_every, ts.eval_examples,
                        autocast_dtype(self.base, ts.precision), held, extra_tokens)
        return self.scheduler.hold(max(plan.step_bytes, plan.eval_bytes), "This comparison's training",
                                   "Use fewer held-out examples.")

    def _check_budget(self, steps: int, eval_examples: int, cli: str) -> None:
        if not (isinstance(steps, int) and 1 <= steps <= self.max_steps):
            raise PlaygroundError(f"steps = {steps} is outside this server's range (1 to {self.max_steps}). "
                                  f"Use the CLI (`python -m playground {cli}`) for longer runs.")
        if not 1 <= eval_examples <= self.max_eval_examples:
            raise PlaygroundError(f"held-out examples must be from 1 to {self.max_eval_examples}; got {eval_examples}.")

    def _begin(self, key: str) -> threading.Event:
        cancel = threading.Event()
        with self._lock:
            old = self._cancel.get(key)
            if old is not None:
                old.set()  # a new comparison replaces this session's running one
            self._cancel[key] = cancel
        return cancel

    def _end(self, key: str, cancel: threading.Event) -> None:
        with self._lock:
            if self._cancel.get(key) is cancel:
                del self._cancel[key]

    def stop(self, key: str) -> bool:
        with self._lock:
            ev = self._cancel.get(key)
        if ev is None:
            return False
        ev.set()
        return True
