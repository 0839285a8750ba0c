"""Initializing a prefix from demonstrations vs from the task text, on every built-in task.

For each task and seed, two prefixes train with the same loop, data order, learning rate
(``methods.default_learning_rate``) and steps:

- **task**: 20 virtual tokens from the task's instruction (PEFT's ``initialize_kv_prefix_from_text``);
- **demos**: the instruction and ``--shots`` training examples drawn with the seed, as long as
  their tokens (``PrefixSettings(init="demos")``): before training it is the cached few-shot prompt.

The held-out metric is measured on the first ``--examples`` of the validation split every
``--eval-every`` steps (that is where "time to target" is read), and on the first ``--examples``
of the test split before and after training (what is reported). The target is the task's
recipe bar (``recipes.RECIPES``); where a recipe has none (headline), the instruction prompt's
validation score, since that recipe's bar is a gain over it. Seconds count building the prefix
and training, not evaluation.

    nice -n 5 .venv/bin/python bench/init_demos.py [--seeds 0,1] [--json bench/results/init_demos.json]
"""

from __future__ import annotations

import argparse
import time

from common import machine, setup, write_json


def run(base, task, init: str, seed: int, a) -> dict:
    from playground.evaluation import evaluate
    from playground.methods import MethodSettings, create_method, default_learning_rate
    from playground.training import TrainSettings, train

    t0 = time.perf_counter()
    method = create_method(base, MethodSettings("prefix", 20, init, init_shots=a.shots), task.instruction, seed,
                           task.split("train"))
    setup_s = time.perf_counter() - t0
    val, test = task.split("validation")[: a.examples], task.split("test")[: a.examples]
    curve = [(0, setup_s, evaluate(base, task, val, method).score)]  # (step, seconds, validation metric)
    test_start = evaluate(base, task, test, method).score
    ts = TrainSettings(default_learning_rate("prefix", init), a.steps, 8, seed, a.eval_every, a.examples)
    for rec in train(base, method, task, ts, eval_split="validation"):
        if rec.metric is not None:
            curve.append((rec.step, setup_s + rec.elapsed, rec.metric))
    return {"task": task.name, "init": init, "seed": seed, "virtual_tokens": method.prefix.num_virtual_tokens,
            "lr": ts.learning_rate, "curve": curve, "test_start": test_start,
            "test_end": evaluate(base, task, test, method).score, "setup_s": setup_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="sentiment,topic,fr_en,headline,shout,capitals")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--examples", type=int, default=30, help="validation and test examples scored")
    ap.add_argument("--shots", type=int, default=2, help="training examples a demos prefix starts from")
    ap.add_argument("--json", help="write every run here")
    a = ap.parse_args()
    setup()
    from playground.evaluation import evaluate
    from playground.methods import InstructionMethod
    from playground.models import load_model
    from playground.recipes import RECIPES
    from playground.tasks import get_task

    t_all = time.perf_counter()
    base = load_model(device="cpu")
    print(f"machine: {machine()}")
    tasks = [get_task(n) for n in a.tasks.split(",")]
    targets = {}
    for t in tasks:
        bar = RECIPES[t.name].target
        if bar is None:  # the recipe's bar is a gain over the instruction prompt
            bar = evaluate(base, t, t.split("validation")[: a.examples], InstructionMethod(t.instruction)).score
        targets[t.name] = bar
    runs = []
    for seed in (int(s) for s in a.seeds.split(",")):
        for t in tasks:
            for init in ("task", "demos"):
                r = run(base, t, init, seed, a)
                hit = next(((s, sec) for s, sec, m in r["curve"] if m >= targets[t.name]), None)
                r["target"], r["reached"] = targets[t.name], hit
                runs.append(r)
                print(f"{t.name:9} {init:5} seed {seed} P={r['virtual_tokens']:3d} val "
                      f"{' '.join(f'{m:.2f}' for _, _, m in r['curve'])} test {r['test_start']:.3f} -> "
                      f"{r['test_end']:.3f} target {targets[t.name]:.2f} reached {hit}", flush=True)
                write_json(a.json, {"settings": vars(a), "machine": machine(), "targets": targets, "runs": runs})
    print(f"wall: {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
