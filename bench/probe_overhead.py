"""What recording the attention on the prefix while it trains costs: a Train-tab run with the recordings
(ours) against the same run without them (the anchor), on the real model.

    .venv/bin/python bench/probe_overhead.py [--repeats 2] [--steps 20] [--json PATH] [--figures DIR]

The run is the Train tab's default (sentiment, 20 virtual tokens from the task text, 20 steps of
batch 8, the held-out metric on 32 validation examples every 5 steps), through the app's own
``Playground`` and scheduler. Each repeat runs it once without and once with the recordings
(interleaved, after a warm-up run), timing ``Playground.run_steps``: the steps, the held-out scoring
and, with them on, the recordings (step 0, then every ``probe_every(steps)`` steps). Printed: the
median wall time of each way with its spread (min-max), the recordings' own seconds, and whether
the losses are the same both ways. The last line is the ratio: (with - without) / without.
``--figures DIR`` also writes the last recorded run's figures (the layer × step heatmap and the
layer × virtual-token maps at step 0 and at the end, HTML and PNG) and prints its per-layer shares.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--figures", help="write the attention-while-training figures of the last run here")
    args = ap.parse_args()

    from bench.common import machine, setup, write_json
    from playground.library import Library
    from playground.methods import prefix_learning_rate
    from playground.models import load_model
    from playground.prefix import PrefixSettings
    from playground.probe import probe_every
    from playground.service import Playground
    from playground.tasks import get_task
    from playground.training import TrainSettings

    setup()
    base = load_model(device=args.device)
    task = get_task("sentiment")
    ts = TrainSettings(prefix_learning_rate(False, "task"), args.steps, 8, 0, 5, 32)
    tmp = Path(tempfile.mkdtemp(prefix="probe-bench-"))
    pgs = {way: Playground(base, Library(tmp / f"lib-{way}", shipped=ROOT / "prefixes"), class_folder=tmp / way,
                           probes=way == "with")
           for way in ("without", "with")}

    def once(way: str):
        pg = pgs[way]
        run = pg.start_run("bench", task, PrefixSettings(), ts)
        t0 = time.perf_counter()
        for _ in pg.run_steps(run):
            pass
        return time.perf_counter() - t0, run

    print(f"{machine()}; {base.name} on {base.device.type}; sentiment, 20 virtual tokens, {args.steps} steps of "
          f"batch 8, 32 held-out examples every 5 steps; recordings at step 0 and every {probe_every(args.steps)} "
          f"steps; {args.repeats} runs of each way, interleaved, after a warm-up run of each")
    once("without"), once("with")  # warm-up: the bf16 twin, the tokenizer's caches
    walls: dict[str, list[float]] = {"without": [], "with": []}
    probe_s, losses, n_probes, last = [], {}, 0, None
    for _ in range(args.repeats):
        for way in ("without", "with"):
            wall, run = once(way)
            walls[way].append(wall)
            losses[way] = [r.loss for r in run.records]
            if way == "with":
                probe_s.append(sum(p.seconds for p in run.probes))
                n_probes, last = len(run.probes), run
    for pg in pgs.values():
        pg.close()
    med = {k: statistics.median(v) for k, v in walls.items()}
    ratio = (med["with"] - med["without"]) / med["without"]
    same = losses["with"] == losses["without"]
    print()
    print("| way | run wall time: median s (min-max) | recordings: s per run (min-max) |")
    print("|---|---:|---:|")
    print(f"| without recordings (anchor) | {med['without']:.1f} ({min(walls['without']):.1f}-"
          f"{max(walls['without']):.1f}) | - |")
    print(f"| with {n_probes} recordings | {med['with']:.1f} ({min(walls['with']):.1f}-{max(walls['with']):.1f}) | "
          f"{statistics.median(probe_s):.2f} ({min(probe_s):.2f}-{max(probe_s):.2f}) |")
    print()
    print(f"same losses both ways: {same}; the recordings' own time is "
          f"{100 * statistics.median(probe_s) / med['without']:.1f}% of the anchor's run")
    write_json(args.json, {"walls": walls, "probe_seconds": probe_s, "n_probes": n_probes, "same_losses": same,
                           "ratio": ratio, "steps": args.steps, "machine": machine()})
    print(f"overhead of the recordings: {100 * ratio:+.1f}% of the run's wall time (with / without = "
          f"{med['with'] / med['without']:.3f})")
    if args.figures and last is not None:
        figures(last, args.figures)
    return 0 if same else 1


def figures(run, out: str) -> None:
    """The run's attention-while-training figures, and its per-layer shares at the start and at the end."""
    from playground.figures import probe_figure, probe_slots_figure, write_figures

    first, end = run.probes[0], run.probes[-1]
    figs = {"probe_heatmap": probe_figure(run.probes, run.train_settings.steps, run.probe_text),
            "probe_slots_start": probe_slots_figure(first, run.probe_text),
            "probe_slots_end": probe_slots_figure(end, run.probe_text)}
    for path in write_figures(figs, out):
        print(f"wrote {path}")
    print(f"probe prompt: {run.probe_text!r}; held-out metric at the end {run.metric}")
    print("| layer | share at step 0 | share at the end | change |")
    print("|---:|---:|---:|---:|")
    for i, (a, b) in enumerate(zip(first.layer_share, end.layer_share)):
        print(f"| {i} | {a:.3f} | {b:.3f} | {b - a:+.3f} |")
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    print(f"mean over layers: {mean(first.layer_share):.3f} -> {mean(end.layer_share):.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
