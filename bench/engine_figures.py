"""Engine figures: model load times, seconds of training to 90% on sentiment, peak memory.

Runs on the CPU with 2 threads (this project's machine) and prints a Markdown table. It
compares our default (prefix initialized from the task's instruction text, lr 3e-3) with
PEFT's default random init (the tutorial learning rate 3e-2), same loop, data and batch.
Training seconds exclude the held-out evaluation done after every step.

    .venv/bin/python bench/engine_figures.py [--cap 40]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def time_to_target(base, init: str, lr: float, cap: int, target: float = 0.9):
    from playground.evaluation import evaluate
    from playground.methods import prefix_method
    from playground.prefix import PrefixSettings, create_prefix
    from playground.tasks import get_task
    from playground.training import TrainSettings, train

    task = get_task("sentiment")
    test = task.split("test")
    prefix = create_prefix(base, PrefixSettings(init=init), task.instruction, seed=0)
    method = prefix_method(prefix)
    acc0 = evaluate(base, task, test, method).score
    curve = [(0, 0.0, acc0)]
    if acc0 >= target:
        return 0, 0.0, acc0, curve
    for rec in train(base, method, task, TrainSettings(learning_rate=lr, steps=cap, eval_every=0)):
        acc = evaluate(base, task, test, method).score
        curve.append((rec.step, rec.elapsed, acc))
        print(f"  {init:6s} step {rec.step:3d} loss {rec.loss:.3f} train {rec.elapsed:6.1f} s test acc {acc:.3f}", flush=True)
        if acc >= target:
            return rec.step, rec.elapsed, acc, curve
    return None, curve[-1][1], curve[-1][2], curve


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cap", type=int, default=40, help="most steps to try for each init")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    from playground.models import load_model

    fresh = Path(tempfile.mkdtemp(prefix="pg-bench-cache-"))
    os.environ["PLAYGROUND_CACHE"] = str(fresh)
    try:
        # The one-time conversion runs in a child process, so this process's peak RSS
        # measures only loading from the cache and training.
        code = ("import resource, torch; torch.set_num_threads(2); from playground.models import load_model; "
                "b = load_model(device='cpu'); assert b.converted; "
                "print(b.load_seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent.parent)
        convert_s, convert_rss = map(float, out.stdout.split()[-2:])
        loads = []
        for _ in range(3):
            t0 = time.perf_counter()
            base = load_model(device="cpu")
            loads.append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    rss_loaded = rss_mb()
    rows = {}
    for init, lr in (("task", 3e-3), ("random", 3e-2)):
        rows[init] = time_to_target(base, init, lr, args.cap)
    peak = rss_mb()
    print()
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("| figure | value |")
    print("|---|---|")
    print(f"| first load: GGUF -> safetensors cache, then load | {convert_s:.1f} s (peak RSS {convert_rss:.0f} MB) |")
    print(f"| load from cache (mean of 3) | {sum(loads) / len(loads):.2f} s |")
    for init, (step, secs, acc, _) in rows.items():
        label = "instruction text, lr 3e-3 (ours)" if init == "task" else "PEFT random init, lr 3e-2"
        reached = f"{secs:.1f} s ({step} steps), test acc {acc:.1%}" if step is not None else \
            f"not reached in {args.cap} steps ({secs:.1f} s); accuracy at the cap {acc:.1%}; so > {secs:.1f} s"
        print(f"| sentiment to 90% test accuracy, {label} | {reached} |")
    print(f"| peak RSS after loading from the cache | {rss_loaded:.0f} MB |")
    print(f"| peak RSS through both training runs (batch 8, 20 virtual tokens) | {peak:.0f} MB |")
    ours, anchor = rows["task"], rows["random"]
    if ours[0] is not None:
        ratio = (anchor[1] / ours[1]) if ours[1] > 0 else float("inf")
        bound = "" if anchor[0] is not None else ">= "
        print(f"ratio (random init seconds / ours): {bound}{ratio:.1f}x")


if __name__ == "__main__":
    main()
