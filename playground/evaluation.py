"""Held-out metrics: the three rows people compare (base model, instruction prompt, prefix), and any method's."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .generate import generate_texts
from .methods import InstructionMethod, answer_texts
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


def evaluate(base: BaseModel, task: Task, examples: list[Example], mode: str = "prefix", prefix: Prefix | None = None,
             batch_size: int = 16) -> EvalResult:
    """Generate an answer for each example (greedy) and score it with the task's metric."""
    if mode == "prefix" and prefix is None:
        raise ValueError("mode 'prefix' needs a prefix")
    t0 = time.perf_counter()
    preds = generate_texts(base, [e.input for e in examples], mode=mode, instruction=task.instruction,
                           prefix=prefix if mode == "prefix" else None, max_new_tokens=task.max_new_tokens,
                           batch_size=batch_size)
    s = score(task.metric, preds, [e.target for e in examples])
    return EvalResult(mode, task.metric, s, len(examples), time.perf_counter() - t0, preds)


def evaluate_method(base: BaseModel, task: Task, examples: list[Example], method) -> EvalResult:
    """``evaluate`` for any method of ``playground.methods``: greedy answers to ``examples``, scored by the task's metric.

    A prefix through ``methods.prefix_method`` answers exactly as ``evaluate(..., "prefix", prefix)`` (tested).
    """
    t0 = time.perf_counter()
    mode = "instruction" if isinstance(method, InstructionMethod) else "prefix"
    preds = []
    for i in range(0, len(examples), 16):
        chunk = examples[i:i + 16]
        preds += answer_texts(base, method, [e.input for e in chunk], mode, task.instruction, task.max_new_tokens)
    s = score(task.metric, preds, [e.target for e in examples])
    return EvalResult(mode, task.metric, s, len(examples), time.perf_counter() - t0, preds)


def evaluate_all(base: BaseModel, task: Task, split: str = "test", prefix: Prefix | None = None,
                 limit: int | None = None) -> dict[str, EvalResult]:
    """The held-out metric for the base model as is, with the instruction prompt, and (if given) with the prefix."""
    examples = task.split(split)[:limit]
    modes = ["base", "instruction"] + (["prefix"] if prefix is not None else [])
    return {m: evaluate(base, task, examples, m, prefix) for m in modes}


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
