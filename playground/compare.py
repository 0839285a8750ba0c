"""The Compare lab's runner: several tuning methods on one task, same data, same step budget.

For each method it trains with the ordinary loop (``training.train``: same data order, batch,
precision and held-out metric), then measures what the comparison table people quote
asserts: trainable parameters while training and stored at export, the held-out metric
against step and wall time, the latency per generated token, and the key/value cache the
method adds. ``python -m playground compare`` prints the table and writes the records as JSON.
Before each slow phase (scoring, training, timing) a run yields a ``Stage`` naming it, so a
caller can say what runs now from the first second.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Iterator

from .baselines import tuned
from .busy import busier, machine_load
from .errors import PlaygroundError
from .evaluation import evaluate
from .methods import (
    METHODS,
    InstructionMethod,
    LoraMethod,
    MethodSettings,
    create_method,
    default_init,
    default_learning_rate,
    exported_bytes,
)
from .models import BaseModel
from .overhead import kv_cache_bytes
from .tasks import Task, labels_of
from .training import StepRecord, TrainSettings, held_out_split, train


@dataclass(frozen=True)
class Stage:
    """What a method's run does next, said before it starts (a status line); after the metric at init
    is measured, ``start_metric`` carries it (the curve's step 0)."""

    method: str  # a key of methods.METHODS
    text: str  # e.g. "scoring Prefix tuning at init on 24 validation examples"
    start_metric: float | None = None


@dataclass(frozen=True)
class Timing:
    """Seconds per generated token over several timed generations, and how busy the machine was."""

    median: float
    q1: float  # 25th percentile over the repeats
    q3: float  # 75th percentile
    repeats: int
    busy_note: str = ""  # busy.Load.note() of the busier reading (before or after): '' on an idle machine


@dataclass
class MethodResult:
    """One method's run: sizes, curve and inference cost."""

    method: str  # a key of methods.METHODS
    trainable: int  # parameters the optimizer updated
    stored: int  # parameters saved at export
    stored_bytes: int  # size of the exported adapter_model.safetensors (PEFT's format, fp32)
    extra_positions: int  # key/value positions added to every layer at inference
    kv_bytes_added: int  # what those positions cost per request: layer x 2 x kv_head x head_dim x P x bytes
    records: list[StepRecord] = field(default_factory=list, repr=False)  # the training curve (empty: no training)
    metric: float = 0.0  # held-out metric at the end
    train_seconds: float = 0.0  # training time, evaluation excluded
    per_token_s: float = 0.0  # greedy latency per generated token on one prompt (16 tokens, no early stop): median
    per_token_merged_s: float | None = None  # LoRA only: the same with the adapters merged into the weights
    prompt_tokens_added: int = 0  # tokens added to every query's prompt (a few-shot prompt's demonstrations)
    start_metric: float | None = None  # held-out metric at init, before the first step (None: nothing trained)
    metric_name: str = ""  # a key of metrics.METRICS
    n_eval: int = 0  # held-out examples the metric was measured on
    eval_split: str = ""  # and their split
    per_token_spread: tuple[float, float] | None = None  # 25th-75th percentile of per_token_s over the repeats
    per_token_merged_spread: tuple[float, float] | None = None
    timing_repeats: int = 0  # timed generations behind each latency
    busy_note: str = ""  # busy.Load.note() while timing: '' on an idle machine


TIMED_REPEATS = 5  # timed generations per latency (after one warm-up): enough for a median and quartiles


def time_per_token(base: BaseModel, method, text: str, new_tokens: int = 16, mode: str | None = None,
                   repeats: int = TIMED_REPEATS) -> Timing:
    """Seconds per generated token for one prompt, prefill included: median and quartiles of ``repeats``
    timed generations after a warm-up, with the machine's load while they ran."""
    from .prompts import PromptFormat

    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    prompt = [fmt.encode_prompt(text, mode or method.mode, getattr(method, "instruction", ""))]
    before = machine_load()
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        method.generate(base, prompt, new_tokens)  # no stop ids: exactly new_tokens every time
        times.append((time.perf_counter() - t0) / new_tokens)
    times = times[1:]  # the first one warms caches up
    q1, med, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else times * 3
    return Timing(med, q1, q3, len(times), busier(before, machine_load()).note())


def per_token_latency(base: BaseModel, method, text: str, new_tokens: int = 16, mode: str | None = None) -> float:
    """Seconds per generated token for one prompt, prefill included (the median of ``time_per_token``)."""
    return time_per_token(base, method, text, new_tokens, mode).median


def run_method(base: BaseModel, task: Task, ms: MethodSettings, ts: TrainSettings,
               cancel: threading.Event | None = None, eval_split: str | None = None,
               ) -> Iterator[Stage | StepRecord | MethodResult]:
    """Train one method (yielding a Stage before each slow phase and each StepRecord), then yield its MethodResult
    (none when ``cancel`` stopped the training part way: a partial run is not comparable with the others).

    The metric is measured on ``eval_split`` (default: ``held_out_split(task)``, validation where there is one),
    for a trained method also at init (``MethodResult.start_metric``, the curve's step 0).
    """
    ms = tuned(task, ms)  # a prompt's format sentence and few-shot layout, as chosen on validation
    name = METHODS[ms.method].name
    split = eval_split or held_out_split(task)
    held_out = task.split(split)[: ts.eval_examples]
    on = f"on {len(held_out)} {split} examples"
    method = create_method(base, ms, task.instruction, ts.seed, task.split("train"))
    res = MethodResult(ms.method, method.trainable_parameters, method.stored_parameters, 0, method.extra_positions,
                       kv_cache_bytes(base, method.extra_positions), metric_name=task.metric, n_eval=len(held_out),
                       eval_split=split)
    if isinstance(method, InstructionMethod):
        yield Stage(ms.method, f"scoring {name} {on}")
        res.metric = evaluate(base, task, held_out, method).score
    else:
        yield Stage(ms.method, f"scoring {name} at init (step 0) {on}")
        res.start_metric = evaluate(base, task, held_out, method).score
        yield Stage(ms.method, f"training {name}: step 0/{ts.steps}", res.start_metric)
        for rec in train(base, method, task, ts, cancel=cancel, eval_split=split):
            res.records.append(rec)
            yield rec
        if cancel is not None and cancel.is_set():
            return  # stopped part way: not a result to set beside the others
        res.metric = res.records[-1].metric if res.records and res.records[-1].metric is not None else 0.0
        res.train_seconds = res.records[-1].elapsed if res.records else 0.0
    yield Stage(ms.method, f"exporting {name} and timing {TIMED_REPEATS} generations")
    res.stored_bytes = exported_bytes(method)  # written as PEFT files, measured, deleted
    res.prompt_tokens_added = getattr(method, "prompt_tokens_added", 0)
    text = task.split("test")[0].input
    t = time_per_token(base, method, text)
    res.per_token_s, res.per_token_spread, res.timing_repeats, notes = t.median, (t.q1, t.q3), t.repeats, [t.busy_note]
    if isinstance(method, LoraMethod):
        # merged, it is a plain model again: time it with no adapter at all (InstructionMethod's plain greedy)
        m = time_per_token(method.merged(base), InstructionMethod(""), text, mode="prefix")
        res.per_token_merged_s, res.per_token_merged_spread = m.median, (m.q1, m.q3)
        notes.append(m.busy_note)
    res.busy_note = next((n for n in notes if n), "")
    yield res


def applicable_methods(task: Task) -> list[str]:
    """Every method that runs on ``task`` (label scoring only on a classification task)."""
    return [m for m in METHODS if m != "label_scoring" or labels_of(task.split("train"))]


def check_methods(names: list[str], task: Task | None = None) -> list[str]:
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise PlaygroundError(f"Unknown method(s): {', '.join(unknown)}. Choose from: {', '.join(METHODS)}.")
    if not names:
        raise PlaygroundError(f"Pick at least one method: {', '.join(METHODS)}.")
    if task is not None and "label_scoring" in names and not labels_of(task.split("train")):
        raise PlaygroundError(f"Label scoring needs a classification task (a few fixed answer labels); '{task.name}' "
                              "has free-form answers. Untick label scoring, or pick sentiment or topic.")
    return list(dict.fromkeys(names))


def compare(base: BaseModel, task: Task, names: list[str], ts: TrainSettings, seeds: list[int],
            num_virtual_tokens: int = 20, r: int = 4, learning_rates: dict | None = None,
            eval_split: str | None = None, say=print) -> dict[str, list[MethodResult]]:
    """Every method for every seed (the CLI's full runs). Returns method -> one MethodResult per seed.

    Each method trains at ``learning_rates[method]`` if given, else at its registry default
    (``methods.default_learning_rate``); the instruction prompt, which trains nothing, keeps ``ts``'s.
    """
    names = check_methods(names, task)
    lrs = {n: default_learning_rate(n, default_init(n)) for n in names} | (learning_rates or {})
    out: dict[str, list[MethodResult]] = {n: [] for n in names}
    for seed in seeds:
        for n in names:
            ms = MethodSettings(n, num_virtual_tokens, default_init(n), r=r)
            run_ts = replace(ts, seed=seed, learning_rate=lrs.get(n) or ts.learning_rate)
            for item in run_method(base, task, ms, run_ts, eval_split=eval_split):
                if isinstance(item, MethodResult):
                    out[n].append(item)
                    say(f"{METHODS[n].name:>34} seed {seed}: metric {100 * item.metric:5.1f}% after "
                        f"{len(item.records)} steps, {item.train_seconds:5.1f} s, {1000 * item.per_token_s:.1f} ms/token "
                        f"(median of {item.timing_repeats}; 25th-75th percentile {1000 * item.per_token_spread[0]:.1f}"
                        f"-{1000 * item.per_token_spread[1]:.1f}){' ' + item.busy_note if item.busy_note else ''}")
    return out


def to_json(results: dict[str, list[MethodResult]]) -> dict:
    from dataclasses import asdict

    return {n: [{**{k: v for k, v in asdict(r).items() if k != "records"},
                 "records": [{"step": s.step, "loss": s.loss, "elapsed": s.elapsed, "metric": s.metric}
                             for s in r.records]} for r in runs] for n, runs in results.items()}
