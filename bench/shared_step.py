"""N students' training steps: one shared forward/backward vs one step per run.

The anchor is what the app does today: each run takes its own step (``losses.target_loss`` on
its batch, backward, AdamW), one after another. Ours puts every run's batch in one forward and
one backward (``playground.sharedstep.shared_step``), each row behind its own run's prefix, each
run with its own optimizer. Both train the same prefixes on the same batches, in fp32 (the shared
step's parity with a run alone is a unit test).

The embedded SmolLM2-135M-Instruct on the CPU with 2 threads, N runs of sentiment at batch
``--batch`` with 20 text-initialized virtual tokens each, median of ``--repeats`` rounds after one
warm-up round. A round is one step of every run. Prints training examples per second both ways
and the ratio.

    .venv/bin/python bench/shared_step.py [--runs 1,4,8] [--batch 4] [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import time

from common import machine, median, setup, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="1,4,8")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    setup()
    from playground.losses import target_loss
    from playground.models import load_model
    from playground.prefix import PrefixSettings, create_prefix
    from playground.sharedstep import SharedRun, shared_step
    from playground.tasks import get_task
    from playground.training import TrainSettings

    base = load_model(device="cpu", dtype="float32")
    task = get_task("sentiment")
    settings = TrainSettings(1e-2, 100, args.batch, 0, 0, 4, "fp32")
    print(machine(), flush=True)
    rows = []
    for n in (int(x) for x in args.runs.split(",")):
        def runs():
            return [SharedRun.start(base, create_prefix(base, PrefixSettings(), task.instruction, seed=i),
                                    task, TrainSettings(**{**vars(settings), "seed": i})) for i in range(n)]

        def alone(rs):  # today's path: one step per run, in turn
            for r in rs:
                b = r.next_batch(base.tokenizer.pad_token_id)
                r.opt.zero_grad(set_to_none=True)
                loss = target_loss(base, r.prefix, b.ids, b.mask, b.labels)
                loss.backward()
                r.opt.step()

        times = {}
        for name, step in (("one step per run", alone), ("shared step", lambda rs: shared_step(base, rs))):
            rs = runs()
            step(rs)  # warm-up
            ts = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                step(rs)
                ts.append(time.perf_counter() - t0)
            times[name] = median(ts)
        ex = n * args.batch
        row = {"runs": n, "batch": args.batch, **{f"{k} s": round(v, 3) for k, v in times.items()},
               **{f"{k} examples/s": round(ex / v, 1) for k, v in times.items()},
               "speed-up": round(times["one step per run"] / times["shared step"], 2)}
        rows.append(row)
        print(f"{n} runs x batch {args.batch}: one step per run {times['one step per run']:.2f} s "
              f"({ex / times['one step per run']:.1f} examples/s), shared {times['shared step']:.2f} s "
              f"({ex / times['shared step']:.1f} examples/s): {row['speed-up']:.2f}x", flush=True)
    write_json(args.json, {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
