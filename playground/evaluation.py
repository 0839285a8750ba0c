"""Held-out metrics: the three answers people compare (base model, instruction prompt, prefix), and any method's."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .methods import BareMethod, InstructionMethod, answer, prefix_method
from .metrics import METRICS, score
from .models import BaseModel
from .prefix import Prefix
from .tasks import Example, Task


@dataclass
class EvalResult:
    """One way of prompting, scored on a list of held-out examples."""

    mode: str  # "base", "instruction" or "prefix"
    metric: str  # a key of metrics.METRICS
    score: float  # mean metric in [0, 1]
    n: int  # examples scored
    seconds: float
    predictions: list[str] = field(default_factory=list, repr=False)


def evaluate(base: BaseModel, task: Task, examples: list[Example], method) -> EvalResult:
    """Greedy answers of any method of ``playground.methods`` to ``examples``, scored by the task's metric."""
    t0 = time.perf_counter()
    preds = answer(base, method, [e.input for e in examples], task.instruction, task.max_new_tokens)
    s = score(task.metric, preds, [e.target for e in examples])
    return EvalResult(method.mode, task.metric, s, len(examples), time.perf_counter() - t0, preds)


def evaluate_all(base: BaseModel, task: Task, split: str = "test", prefix: Prefix | None = None,
                 limit: int | None = None) -> dict[str, EvalResult]:
    """The held-out metric for the base model as is, with the instruction prompt, and (if given) with the prefix."""
    examples = task.split(split)[:limit]
    methods = [BareMethod(), InstructionMethod(task.instruction)]
    methods += [prefix_method(prefix)] if prefix is not None else []
    return {m.mode: evaluate(base, task, examples, m) for m in methods}


def per_example(task: Task, examples: list[Example], results: dict[str, EvalResult]) -> list[dict]:
    """Rows for a before/after table: input, target and each mode's answer with its score."""
    fn = METRICS[task.metric]
    rows = []
    for i, e in enumerate(examples):
        row = {"input": e.input, "target": e.target}
        for mode, r in results.items():
            row[mode] = r.predictions[i]
            row[f"{mode}_score"] = fn(r.predictions[i], e.target)
        rows.append(row)
    return rows
