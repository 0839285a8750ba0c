"""Switch while a long turn runs: turns that pause for a watched answer (ours) vs turns that hold the model
until they end (the anchor).

    .venv/bin/python bench/turn_pauses.py [--rows 40] [--digits 1990] [--every 1.0] [--json PATH]

A learner uploads a task of long examples (here the hostile student's CSV of 1,990-digit fields, cut
to the server's 256 tokens per example). Its first run scores the prompts it is compared with (the
model as is, the instruction, few-shot over draws): one turn of the model per scoring, and the
few-shot heads of 4 and 8 such examples are 1,077 and 2,145 tokens. Meanwhile another learner
clicks Switch ("(no prefix)" and "sentiment") once a second after each answer. Each way runs on a
fresh ``Playground`` (its own scheduler), the same seed and inputs: ``pause_turns`` on (ours: the
turn hands the model to the answers at each decode step and each 512-token chunk of a head) or off.
Per way: the baselines' seconds, and the Switch latencies' n, p50, p95 and max. The last line is
the ratio of the Switch p95s.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, pct, setup, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SWITCH = ["(no prefix)", "sentiment"]
TEXT = "The kettle just clicked off."


def wide_csv(path: Path, rows: int, digits: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    lines = ["input,target"] + [",".join("".join(rng.choice("0123456789") for _ in range(digits)) for _ in range(2))
                                for _ in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def one_way(base, csv: Path, pause: bool, every: float, eval_examples: int) -> dict:
    from playground.library import Library
    from playground.service import Limits, Playground, _held_out

    tmp = Path(tempfile.mkdtemp(prefix="turn-pauses-"))
    pg = Playground(base, Library(tmp / "class", shipped=ROOT / "prefixes"), Limits())
    pg.scheduler.settings = replace(pg.scheduler.settings, pause_turns=pause)
    task = pg.load_upload("uploader", csv, "input", "target", "Copy the digits.", "exact_match")
    examples = _held_out(task, eval_examples)
    done, out = threading.Event(), {}

    def score():
        t0 = time.perf_counter()
        try:
            pg.baselines(task, examples)
        finally:
            out["baselines_s"] = time.perf_counter() - t0
            done.set()

    worker = threading.Thread(target=score)
    worker.start()
    lat = []
    while not done.wait(every):
        t0 = time.perf_counter()
        pg.switch(f"switcher-{len(lat)}", SWITCH, TEXT)
        lat.append(time.perf_counter() - t0)
    worker.join()
    stats = pg.scheduler.stats()
    pg.close()
    lat.sort()
    return {"pause_turns": pause, "baselines_s": out["baselines_s"], "switch_s": lat, "n": len(lat),
            "p50_s": pct(lat, 0.5), "p95_s": pct(lat, 0.95), "max_s": max(lat, default=float("nan")), "turn_pauses": stats["turn_pauses"],
            "busy_s": stats["busy_s"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=40, help="rows of the uploaded CSV")
    ap.add_argument("--digits", type=int, default=1990, help="digits per field (cut to the server's example limit)")
    ap.add_argument("--eval-examples", type=int, default=4, help="held-out examples the prompts are scored on")
    ap.add_argument("--every", type=float, default=1.0, help="seconds between one Switch answer and the next click")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    setup()
    from playground.models import load_model

    base = load_model()
    csv = Path(tempfile.mkdtemp(prefix="turn-pauses-")) / "wide.csv"
    wide_csv(csv, args.rows, args.digits)
    print(f"{machine()}; an uploaded task of {args.rows} rows x {args.digits}-digit fields; its prompts scored on "
          f"{args.eval_examples} held-out examples while a learner clicks Switch ({' + '.join(SWITCH)}) "
          f"{args.every:g} s after each answer", flush=True)
    ways = {}
    for name, pause in (("held (anchor)", False), ("paused (ours)", True)):
        r = ways[name] = one_way(base, csv, pause, args.every, args.eval_examples)
        print(f"{name:>14}: baselines {r['baselines_s']:.1f} s; Switch n={r['n']} p50 {r['p50_s']:.2f} s, "
              f"p95 {r['p95_s']:.2f} s, max {r['max_s']:.2f} s; turn pauses {r['turn_pauses']}; "
              f"model time: turns {r['busy_s']['turns']:.1f} s, answers {r['busy_s']['answers']:.1f} s", flush=True)
    a, b = ways["held (anchor)"], ways["paused (ours)"]
    write_json(args.json, {"command": " ".join(sys.argv), "machine": machine(), "args": vars(args), "ways": ways})
    print(f"Switch p95 during a long upload's baseline scoring: paused {b['p95_s']:.2f} s vs held "
          f"{a['p95_s']:.2f} s = {a['p95_s'] / b['p95_s']:.2f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
