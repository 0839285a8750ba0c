"""The prompts a prefix has to beat: the strongest simple ones, chosen on validation, with their cost.

Against a 135M chat model, the bare instruction is a straw man (it answers in sentences, so exact
match is near 0). The honest comparison is with the strongest prompt that needs no training:

- ``instruction``: the task instruction as the system message;
- ``instruction_format``: the instruction plus a sentence on the answer's form;
- ``few_shot_k``: k training examples before the query, their key/values cached once (they answer
  exactly as the uncached prompt, tested), for k in ``BaselineSettings.shots``, over several draws
  of the examples, since which examples are drawn moves the score a lot;
- ``label_k``: the same prompt with label scoring, for classification tasks.

Which format sentence and which few-shot layout (chat turns or one block) a task uses are chosen on
its *validation* split (``choose``) and kept in ``data/prompting.json`` with the command that made
them; test and fresh splits only ever report. Each result carries its cost: prompt tokens added to
every query, cached key/value positions, measured latency per query, and the training examples it
needs at query time.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
from dataclasses import dataclass, field, replace
from typing import Callable, ContextManager

from .evaluation import evaluate
from .fewshot import STYLES
from .methods import FEW_SHOT_METHODS, MethodSettings, added_positions, create_method
from .metrics import METRICS
from .models import BaseModel
from .tasks import DATA_DIR, Example, Task, labels_of

CHOICES_FILE = DATA_DIR / "prompting.json"
CHOOSE_COMMAND = "python -m playground baselines --choose"


@dataclass(frozen=True)
class BaselineSettings:
    """Which prompting baselines are measured, and over how many draws of the demonstrations."""

    shots: tuple[int, ...] = (4, 8)  # few-shot sizes
    draws: int = 3  # seeds 0..draws-1 for every few-shot row
    label_scoring: bool = True  # classification tasks also get label scoring at the first k


LIVE = BaselineSettings(draws=2)  # the Train tab's: computed once per task and held-out set for a whole class


def evaluations(task: Task, settings: BaselineSettings = BaselineSettings()) -> int:
    """Held-out scorings the baselines take (one per draw of each), the model as is included."""
    return 1 + sum(draws for *_, draws in specs(task, settings))


@dataclass
class BaselineResult:
    """One prompting baseline on one split: a score per draw (one for a deterministic prompt) and its cost."""

    key: str  # "instruction", "instruction_format", "few_shot_4", "label_4", ...
    label: str  # for people: "instruction + 4 examples"
    split: str
    n: int
    scores: list[float]  # one per draw of the demonstrations
    prompt_tokens: int  # tokens added to every query's prompt (uncached form)
    kv_positions: int  # cached key/value positions every query starts behind (cached form)
    ms_per_query: float  # measured, batched 16 at a time, mean over the draws
    examples_needed: int  # training examples the prompt needs at query time
    per_example: list[list[float]] = field(default_factory=list, repr=False)  # [draw][example] metric
    predictions: list[str] = field(default_factory=list, repr=False)  # draw 0

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.scores), max(self.scores)

    def as_dict(self) -> dict:
        return {"key": self.key, "label": self.label, "split": self.split, "n": self.n,
                "scores": [round(s, 4) for s in self.scores], "mean": round(self.mean, 4),
                "prompt_tokens": self.prompt_tokens, "kv_positions": self.kv_positions,
                "ms_per_query": round(self.ms_per_query, 1), "examples_needed": self.examples_needed}


def load_choices() -> dict:
    return json.loads(CHOICES_FILE.read_text()) if CHOICES_FILE.exists() else {}


def choices_for(task: Task) -> dict:
    """The task's chosen format sentence and few-shot layouts, or the first candidates for a task never
    chosen on (an uploaded one): {"format": str, "style": {"4": "turns", ...}}."""
    chosen = load_choices().get("tasks", {}).get(task.name, {})
    if chosen.get("instruction") != task.instruction:  # chosen for another instruction: not this task's
        chosen = {}
    return {"format": chosen.get("format", task.format_candidates[0]), "style": chosen.get("style", {})}


def tuned(task: Task, ms: MethodSettings) -> MethodSettings:
    """``ms`` with the task's chosen format sentence (when it names none) and few-shot layout for its k."""
    chosen = choices_for(task)
    if ms.method == "instruction_format" and not ms.format_text.strip():
        ms = replace(ms, format_text=chosen["format"])
    if ms.method in FEW_SHOT_METHODS and str(ms.shots) in chosen["style"]:
        ms = replace(ms, style=chosen["style"][str(ms.shots)])
    return ms


def specs(task: Task, settings: BaselineSettings = BaselineSettings()) -> list[tuple[str, str, MethodSettings, int]]:
    """(key, label, method settings, draws) of every baseline ``settings`` asks for on ``task``, each ``tuned``."""
    out = [("instruction", "instruction", MethodSettings("instruction"), 1),
           ("instruction_format", "instruction + format", MethodSettings("instruction_format"), 1)]
    out += [(f"few_shot_{k}", f"instruction + {k} examples", MethodSettings("few_shot_cached", shots=k),
             settings.draws) for k in settings.shots]
    if settings.label_scoring and settings.shots and labels_of(task.split("train")):
        k = settings.shots[0]
        out.append((f"label_{k}", f"{k} examples, label scoring", MethodSettings("label_scoring", shots=k),
                     settings.draws))
    return [(key, label, tuned(task, ms), draws) for key, label, ms, draws in out]


def measure(base: BaseModel, task: Task, split: str, examples: list[Example],
            settings: BaselineSettings = BaselineSettings(),
            progress: Callable[[float, str], None] | None = None,
            around: Callable[[], ContextManager] | None = None) -> list[BaselineResult]:
    """Every baseline of ``specs`` on ``examples`` (from ``split``), each draw scored by the task's metric.

    ``around()``, when given, wraps each draw's model work (a server's turn with the model, say)."""
    train, fn = task.split("train"), METRICS[task.metric]
    todo = specs(task, settings)
    total, done, out = sum(d for *_, d in todo), 0, []
    for key, label, ms, draws in todo:
        scores, per, secs, preds, positions = [], [], [], [], []
        for seed in range(draws):
            if progress:
                progress(done / total, f"{label}" + (f", draw {seed + 1} of {draws}" if draws > 1 else ""))
            with around() if around is not None else contextlib.nullcontext():
                method = create_method(base, ms, task.instruction, seed, train)
                r = evaluate(base, task, examples, method)
            scores.append(r.score)
            per.append([fn(p, e.target) for p, e in zip(r.predictions, examples)])
            secs.append(r.seconds)
            preds = preds or r.predictions
            positions.append(added_positions(base, ms, task.instruction, train, seed))
            done += 1
        kv = round(statistics.fmean(p[0] for p in positions))  # cached positions, mean over the draws
        out.append(BaselineResult(key, label, split, len(examples), scores, positions[0][1], kv,
                                  1000 * statistics.fmean(secs) / max(1, len(examples)),
                                  ms.shots if ms.method in FEW_SHOT_METHODS else 0, per, preds))
    return out


def strongest(results: list[BaselineResult]) -> BaselineResult:
    """The baseline with the best mean score (ties: the cheaper, listed first)."""
    return max(results, key=lambda r: r.mean)


def paired(ours: list[float], theirs: list[float]) -> tuple[int, int, float]:
    """(examples where ours scored higher, where theirs did, two-sided sign-test p): the paired difference,
    which ignores the examples both got right (or wrong) alike."""
    a = sum(x > y for x, y in zip(ours, theirs, strict=True))
    b = sum(y > x for x, y in zip(ours, theirs, strict=True))
    n = a + b
    if n == 0:
        return 0, 0, 1.0
    tail = sum(math.comb(n, i) for i in range(0, min(a, b) + 1)) / 2 ** n
    return a, b, min(1.0, 2 * tail)


def choose(base: BaseModel, task: Task, settings: BaselineSettings = BaselineSettings(), limit: int | None = None,
           progress: Callable[[float, str], None] | None = None) -> dict:
    """The format sentence and, per k, the few-shot layout that score best on the validation split
    (few-shot: mean over the draws). Returns {"instruction", "format", "style", "validation": {...}}."""
    examples = task.split("validation")[:limit]
    train = task.split("train")
    report: dict[str, float] = {}
    candidates = [("format", f, MethodSettings("instruction_format", format_text=f), 1) for f in task.format_candidates]
    candidates += [(str(k), s, MethodSettings("few_shot_cached", shots=k, style=s), settings.draws)
                   for k in settings.shots for s in STYLES]
    for i, (group, value, ms, draws) in enumerate(candidates):
        if progress:
            progress(i / len(candidates), f"{task.name}: {ms.method} {value!r}")
        scores = [evaluate(base, task, examples, create_method(base, ms, task.instruction, seed, train)).score
                  for seed in range(draws)]
        report[f"{group}: {value}"] = round(statistics.fmean(scores), 4)
    best_format = max(task.format_candidates, key=lambda f: report[f"format: {f}"])
    style = {str(k): max(STYLES, key=lambda s: report[f"{k}: {s}"]) for k in settings.shots}
    return {"instruction": task.instruction, "format": best_format, "style": style,
            "validation": {"n": len(examples), "draws": settings.draws, "scores": report}}


def save_choices(chosen: dict[str, dict]) -> None:
    data = load_choices()
    data["command"] = CHOOSE_COMMAND
    data.setdefault("tasks", {}).update(chosen)
    CHOICES_FILE.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
