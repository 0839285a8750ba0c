"""The shipped task prefixes in ``prefixes/``: how each one is trained, scored and described.

``python -m playground ship`` (``make prefixes``) retrains every prefix from scratch with
fixed seeds, scores it, writes it with its card into the library, and rewrites
``prefixes/README.md``. Settings were chosen on each task's **validation** split only; the
test split is scored once, after training, for the card, and the ``fresh`` split (inputs
written independently by another author, none of them in the training data) shows how a
prefix holds up on someone else's wording.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .errors import PlaygroundError
from .methods import prefix_method
from .metrics import METRIC_LABELS
from .models import BaseModel
from .prefix import PrefixSettings, create_prefix
from .tasks import Task, get_task
from .training import TrainSettings, train

REPORT_SPLITS = ("test", "fresh")  # scored for the card with all three modes; never used to choose settings


@dataclass(frozen=True)
class Recipe:
    """How one shipped prefix is trained, and the bar it is held to."""

    task: str
    prefix: PrefixSettings
    train: TrainSettings
    target: float | None  # the bar for the held-out metric (None: show a gain over the instruction prompt)
    why: str = ""  # what the validation runs showed, in a sentence
    lesson: str = ""  # set for a prefix kept to show what prefix tuning cannot do (still measured against the bar)
    name: str = ""  # the prefix's name in the library when it is not the task's (a second prefix for one task)
    held_to_bar: bool = True  # False: shipped for a demonstration, scored on its card but not held to the bar

    @property
    def key(self) -> str:
        """The shipped prefix's name: ``name``, else the task's."""
        return self.name or self.task


# The wayward prefix's init text: a sentence with nothing to do with movie reviews (Khashabi et al. 2022).
COOKING = "Whisk two eggs with a pinch of salt, fold in the flour, and bake the cake for twenty minutes."

# precision="fp32": the shipped prefixes were trained in fp32, and `make prefixes` reproduces them byte
# for byte on any CPU (the app's default, "auto", trains in bf16 where the CPU is fast at it).
RECIPES: dict[str, Recipe] = {
    r.key: r
    for r in [
        Recipe("sentiment", PrefixSettings(20), TrainSettings(3e-3, 20, 8, 0, 0, precision="fp32"), 0.90,
               "Text init already knows the two labels; a few steps settle the one-word answer format."),
        Recipe("topic", PrefixSettings(20), TrainSettings(3e-3, 60, 8, 0, 0, precision="fp32"), 0.85,
               "Validation accuracy was still rising at 40 steps (50, 73, 83, 88.5% at 10-40)."),
        Recipe("capitals", PrefixSettings(20), TrainSettings(1e-2, 60, 8, 0, 0, precision="fp32"), 0.70,
               "lr 1e-2 beat 3e-3 on validation (25% vs 20% at 60 steps); the model's own knowledge caps it.",
               lesson="A prefix steers what the model does; it does not add facts. Asked plainly, this model names the "
                      "right capital for only 17 of the 50 test places (bench/capitals_ceiling.py). The prefix fixes "
                      "the answer's form and beats every prompt, but it cannot reach capitals the model does not know."),
        Recipe("shout", PrefixSettings(20), TrainSettings(1e-2, 40, 8, 0, 0, precision="fp32"), 0.90,
               "Best validation score of the runs tried (14.4% at 40 steps); more steps, 40 virtual tokens or "
               "batch 16 did not help.",
               lesson="The prefix learns the style (capitals and a final '!' on nearly every answer) and beats every "
                      "prompt, yet whole sentences rarely come out exactly right: written in capitals, words split "
                      "into other tokens and the model garbles them. A prefix steers; it cannot add a skill the "
                      "model lacks."),
        Recipe("fr_en", PrefixSettings(20), TrainSettings(1e-2, 80, 8, 0, 0, precision="fp32"), 0.50,
               "lr 1e-2 beat 3e-3 (44% vs 32% on validation); past 80 steps it overfits (42% at 120-160)."),
        Recipe("headline", PrefixSettings(20), TrainSettings(3e-3, 30, 8, 0, 0, precision="fp32"), None,
               "Validation ROUGE-L rises from 34% (init) to 50% at 30 steps, then flattens."),
        # Same length and training settings as sentiment, only the init text differs. After the same 20 steps it
        # reaches 44% on validation (sentiment: 92%): the init text sets how far the same budget gets.
        Recipe("sentiment", PrefixSettings(20, "text", COOKING), TrainSettings(1e-2, 40, 8, 0, 0, precision="fp32"),
               0.90, "Started from a sentence about baking instead of the instruction, for the nearest-words demo "
               "(Khashabi et al. 2022). With sentiment's own 3e-3 x 20 steps it reached 44% on validation; lr 1e-2 "
               "reached 68, 72, 96, 98, 92, 94% on validation (n = 50) at 10-60 steps, so 40 steps.",
               name="sentiment_wayward"),
    ]
}


@dataclass
class Shipped:
    """What retraining one shipped prefix produced."""

    name: str
    path: Path
    card: dict
    seconds: float  # wall time: training plus every evaluation


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise PlaygroundError(f"No shipped recipe for '{name}'. Recipes exist for: {', '.join(RECIPES)}.")
    return RECIPES[name]


def score_modes(base: BaseModel, task: Task, split: str, prefix=None) -> dict:
    """{split, metric, n, base, instruction[, prefix]} on one split, rounded for a card."""
    from .evaluation import evaluate_all

    results = evaluate_all(base, task, split, prefix)
    return {"split": split, "metric": task.metric, "n": len(task.split(split)),
            **{mode: round(r.score, 4) for mode, r in results.items()}}


def ship(base: BaseModel, rec: Recipe, library, log: Callable[[str], None] = print) -> Shipped:
    """Train the shipped prefix ``rec.key`` for ``rec.task`` from scratch and save it (overwriting) with its card."""
    from .evaluation import evaluate
    from .peft_folder import make_card

    t0 = time.perf_counter()
    task = get_task(rec.task)
    prefix = create_prefix(base, rec.prefix, task.instruction, rec.train.seed)
    last = None
    for last in train(base, prefix_method(prefix), task, rec.train):
        if last.step % 10 == 0 or last.step == rec.train.steps:
            log(f"  {rec.key}: step {last.step}/{rec.train.steps} loss {last.loss:.3f} ({last.elapsed:.0f} s)")
    val = task.split("validation")
    validation = {"split": "validation", "n": len(val),
                  "prefix": round(evaluate(base, task, val, prefix_method(prefix)).score, 4)}
    reports = {s: score_modes(base, task, s, prefix) for s in REPORT_SPLITS if task.splits.get(s)}
    baselines, measured = kept_baselines(library, task)
    if baselines is None:
        baselines, measured = card_baselines(base, task, log), measured_by(base, "python -m playground ship")
    seconds = time.perf_counter() - t0
    card = make_card(
        base, task.name, asdict(rec.train), reports["test"],
        instruction=task.instruction, steps=rec.train.steps, train_examples=len(task.split("train")),
        train_seconds=round(last.elapsed, 1), wall_seconds=round(seconds, 1), validation=validation,
        fresh=reports.get("fresh"), baselines=baselines, target=rec.target, source="shipped", lesson=rec.lesson,
        baselines_measured=measured,
        recipe=f"python -m playground ship --task {rec.key}",
    )
    path = library.save(rec.key, prefix, card, overwrite=True)
    m = reports["test"]
    log(f"  {rec.key}: test {METRIC_LABELS[task.metric]} base {m['base']:.1%}, instruction {m['instruction']:.1%}, "
        f"prefix {m['prefix']:.1%} ({seconds:.0f} s)")
    return Shipped(rec.key, path, card, seconds)


BAR_MARGIN, BAR_REACH = 0.05, 0.95  # beat the strongest prompt by 5 points, or reach 95%


def card_baselines(base: BaseModel, task: Task, log: Callable[[str], None] = print) -> dict:
    """{split: [baseline rows]} on the report splits: the prompts a shipped prefix is held against."""
    from .baselines import measure

    out = {}
    for split in REPORT_SPLITS:
        if task.splits.get(split):
            out[split] = [r.as_dict() for r in measure(base, task, split, task.split(split))]
            best = max(out[split], key=lambda r: r["mean"])
            log(f"  {task.name}: {split}: strongest prompt {best['label']} {best['mean']:.1%} "
                f"(draws {', '.join(f'{s:.1%}' for s in best['scores'])})")
    return out


def measured_by(base: BaseModel, command: str) -> dict:
    """Where, how and when a card's baselines were measured (their ms per query depend on the machine)."""
    return {"on": base.describe(), "command": command, "date": time.strftime("%Y-%m-%d")}


def kept_baselines(library, task: Task) -> tuple[dict | None, dict | None]:
    """The baselines on the card ``ship`` is about to replace, when they were measured for this instruction.

    They do not depend on the prefix, and the same code on the same data gives the same answers, so a
    retrain keeps them (``python -m playground baselines --cards`` measures them again)."""
    from .peft_folder import read_card

    e = library.find(task.name)
    card = read_card(e.path) if e is not None else {}
    if card.get("instruction") == task.instruction and card.get("baselines"):
        return card["baselines"], card.get("baselines_measured")
    return None, None


def strongest_prompt(card: dict, split: str) -> dict | None:
    """The card's best prompting baseline on ``split`` (mean over draws), or None when it has none."""
    rows = card.get("baselines", {}).get(split) or []
    return max(rows, key=lambda r: r["mean"]) if rows else None


def prefix_score(card: dict, split: str) -> float | None:
    m = card.get("metrics" if split == "test" else split) or {}
    return m.get("prefix")


def meets_bar(card: dict) -> bool:
    """The shipping bar, on the test and the fresh split alike: the prefix beats the strongest prompt without
    training by at least 5 points (its mean over draws), or reaches 95%."""
    for split in REPORT_SPLITS:
        score, best = prefix_score(card, split), strongest_prompt(card, split)
        if score is None or best is None:
            return False
        if not (score >= BAR_REACH or score - best["mean"] >= BAR_MARGIN):
            return False
    return True
