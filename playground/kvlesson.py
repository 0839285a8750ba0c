"""Prompts, cached prompts and prefixes as key/value caches of different lengths, measured side by side.

Every prompt token becomes a key and a value in every layer. Text that is the same for every
query (the instruction, k demonstrations) can be run through the model once and its key/values
reused (``fewshot.TextCache``); a text-initialized prefix starts as exactly such a cache of the
instruction, and training makes that short cache do what a long prompt does. ``measure_caches``
puts four of them on one task and model:

    4-shot prompt        [system: instr] [4 x (user, assistant)] [query]   all prompt tokens, every query
    4-shot, cached       (cached: the same H positions)           [query]   computed once
    instruction, cached  (cached: the instruction's positions)    [query]   computed once
    trained prefix       (P trained positions)                    [query]   stored, never computed

and reports, for each, its cached positions, the prompt tokens it adds to every query, the
key/value bytes its head takes in every query's cache, the latency per query (one query at a
time, the methods taken in turn on each example so a busy machine slows them alike) and the
held-out score.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable

from .budget import eval_bytes
from .evaluation import evaluate
from .fewshot import head_ids
from .library import Library
from .methods import FewShotMethod, MethodSettings, added_positions, create_method, prefix_method
from .metrics import score
from .models import BaseModel
from .overhead import kv_cache_bytes
from .prefix import Prefix
from .tasks import BUILTIN, Example, Task

SHOTS = 4  # demonstrations in the few-shot rows
SEED = 0  # which demonstrations are drawn from the training split
N_EXAMPLES = 16  # held-out queries each cache answers: 4 x 16 timed single queries in a live measurement

Progress = Callable[[float, str], None]  # (fraction done 0..1, what is happening)


@dataclass
class CacheRow:
    """One way of putting the task in front of the query, measured."""

    key: str  # "few_shot", "few_shot_cached", "instruction_cached" or "prefix"
    label: str  # shown to learners
    cached_positions: int  # key/value positions computed once (or trained) and reused by every query
    prompt_tokens: int  # tokens added to every query's prompt, run through the model on every query
    kv_bytes: int  # key/values of that head (cached + prompt tokens) in every query's cache, all layers
    ms: list[float] = field(repr=False)  # latency of each query, one at a time (ms)
    score: float  # mean metric on the held-out examples, in [0, 1]
    n: int  # held-out examples scored
    split: str  # which split they come from
    metric: str  # a key of metrics.METRICS
    predictions: list[str] = field(default_factory=list, repr=False)  # one answer per held-out example

    @property
    def ms_median(self) -> float:
        return statistics.median(self.ms)

    @property
    def ms_quartiles(self) -> tuple[float, float]:
        """25th and 75th percentile of the per-query latency (both the value itself for one query)."""
        if len(self.ms) < 2:
            return self.ms[0], self.ms[0]
        q = statistics.quantiles(self.ms, n=4, method="inclusive")
        return q[0], q[2]


def labels(shots: int = SHOTS) -> dict[str, str]:
    return {"few_shot": f"{shots}-shot prompt", "few_shot_cached": f"{shots}-shot, cached",
            "instruction_cached": "instruction, cached", "prefix": "trained prefix"}


def shipped_prefixes(library: Library, base: BaseModel) -> dict[str, str]:
    """Built-in tasks that have a shipped prefix made for ``base``: {task name: prefix name}, in task order."""
    found = {}
    for e in library.entries():
        task, made_for = e.card.get("task"), e.card.get("base_fingerprint")
        if e.shipped and task in BUILTIN and made_for in (None, base.fingerprint):
            found.setdefault(task, e.name)
    return {t: found[t] for t in BUILTIN if t in found}


def head_lengths(base: BaseModel, task: Task, prefix_tokens: int, shots: int = SHOTS,
                 seed: int = SEED) -> dict[str, tuple[int, int]]:
    """(cached positions, prompt tokens) each row adds to every query, without building anything."""
    train = task.split("train")
    few = {m: added_positions(base, MethodSettings(m, shots=shots), task.instruction, train, seed)
           for m in ("few_shot", "few_shot_cached")}
    return {**few, "instruction_cached": (len(head_ids(base, task.instruction, [])), 0), "prefix": (prefix_tokens, 0)}


def peak_bytes(base: BaseModel, task: Task, examples: list[Example], prefix_tokens: int, shots: int = SHOTS,
               seed: int = SEED) -> int:
    """The measurement's peak: one query at a time behind the longest head (its prompt tokens included)."""
    heads = head_lengths(base, task, prefix_tokens, shots, seed).values()
    return max(eval_bytes(base, task, [e], P, T) for e in examples for P, T in heads)


def build(base: BaseModel, task: Task, prefix: Prefix, shots: int = SHOTS, seed: int = SEED) -> dict:
    """The four methods, keyed as ``labels``: the caches are computed here, once."""
    train = task.split("train")
    few = {m: create_method(base, MethodSettings(m, shots=shots), task.instruction, seed, train)
           for m in ("few_shot", "few_shot_cached")}
    # the instruction alone, cached: the text a task-initialized prefix starts from
    return {**few, "instruction_cached": FewShotMethod(base, task.instruction, [], cached=True),
            "prefix": prefix_method(prefix)}


def measure_caches(base: BaseModel, task: Task, prefix: Prefix, examples: list[Example], split: str,
                   shots: int = SHOTS, seed: int = SEED, progress: Progress | None = None) -> list[CacheRow]:
    """Build the caches, then answer ``examples`` one query at a time with each, timing every query.

    One warm-up query per method (the first example, not counted) before the clock starts.
    """
    say = progress or (lambda frac, msg: None)
    say(0.0, "computing the caches (the instruction's and the demonstrations' key/values)")
    methods = build(base, task, prefix, shots, seed)
    for m in methods.values():
        evaluate(base, task, examples[:1], m)
    preds: dict[str, list[str]] = {k: [] for k in methods}
    ms: dict[str, list[float]] = {k: [] for k in methods}
    for i, e in enumerate(examples):
        say(i / len(examples), f"query {i + 1} of {len(examples)}, through each of the {len(methods)} caches")
        for k, m in methods.items():  # in turn on each query: a busy machine slows every method alike
            r = evaluate(base, task, [e], m)
            preds[k] += r.predictions
            ms[k].append(1000 * r.seconds)
    targets = [e.target for e in examples]
    names = labels(shots)
    rows = []
    for k, m in methods.items():
        P, T = m.extra_positions, getattr(m, "prompt_tokens_added", 0)
        rows.append(CacheRow(k, names[k], P, T, kv_cache_bytes(base, P + T), ms[k], score(task.metric, preds[k],
                             targets), len(examples), split, task.metric, preds[k]))
    say(1.0, "done")
    return rows
