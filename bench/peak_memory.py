"""Peak memory (RSS) while training the default model: our loop against ``Trainer`` + PEFT.

Each side runs in a fresh child process (peak RSS only ever grows, so one process can't
measure two things): load the cached model, train ``--steps`` steps of sentiment at batch 8
with 20 virtual tokens, report ``ru_maxrss``. Ours uses the app's defaults; the anchor is the
tutorial recipe in fp32.

    .venv/bin/python bench/peak_memory.py [--steps 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from common import ROOT, machine, rss_mb, setup, write_json


def child(which: str, steps: int) -> None:
    setup()
    from playground.models import load_model
    from playground.tasks import get_task

    base = load_model(device="cpu")
    task = get_task("sentiment")
    loaded = rss_mb()
    if which == "ours":
        from playground.methods import prefix_method
        from playground.prefix import PrefixSettings, create_prefix
        from playground.training import TrainSettings, train

        prefix = create_prefix(base, PrefixSettings(), task.instruction)
        for _ in train(base, prefix_method(prefix), task, TrainSettings(steps=steps, eval_every=0, eval_examples=8)):
            pass
    else:
        from common import peft_trainer

        trainer, _ = peft_trainer(base, task, steps=steps)
        trainer.train()
    print(f"RESULT {loaded:.0f} {rss_mb():.0f}")


def run(which: str, steps: int) -> tuple[float, float]:
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", which, "--steps", str(steps)],
                         capture_output=True, text=True, cwd=ROOT)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if out.returncode or line is None:
        raise SystemExit(f"{which} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    loaded, peak = map(float, line.split()[1:])
    return loaded, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--child", choices=["ours", "anchor"], help=argparse.SUPPRESS)
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.steps)
    setup()
    res = {w: run(w, args.steps) for w in ("ours", "anchor")}
    print(f"machine: {machine()}")
    print("| way | RSS after loading | peak RSS while training |")
    print("|---|---|---|")
    labels = {"ours": "ours (app defaults)", "anchor": "anchor: Trainer + PEFT, fp32"}
    for w, (loaded, peak) in res.items():
        print(f"| {labels[w]} | {loaded:.0f} MB | {peak:.0f} MB |")
    write_json(args.json, {"machine": machine(), "steps": args.steps,
                           "rss_mb": {w: {"loaded": a, "peak": b} for w, (a, b) in res.items()}})
    ours, anchor = res["ours"][1], res["anchor"][1]
    print(f"ratio (Trainer + PEFT peak RSS / ours): {anchor / ours:.2f}x (ours {ours:.0f} MB, anchor {anchor:.0f} MB; "
          "goal: ours <= 2048 MB)")


if __name__ == "__main__":
    main()
