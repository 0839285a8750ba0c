"""Training throughput: examples per second, our loop against ``Trainer`` + PEFT, and each speed idea alone.

Same task (sentiment's 200 training reviews), batch 8, 20 virtual tokens, the same token
sequences. Each variant runs ``--steps`` optimizer steps; the first ``--warmup`` are not
timed (allocation, oneDNN kernel selection). Throughput is examples over the seconds between
the end of the last warm-up step and the end of the last step, batching and data loading
included. Rows:

- anchor: ``Trainer`` + PEFT prefix tuning in fp32 (the tutorial recipe), and with ``bf16=True``;
- ours, one idea at a time: fp32 with the model's full-vocabulary logits; fp32 with logits only
  at target positions; + bf16 autocast; + the frozen weights cast to bf16 once (the app's
  default on this CPU); + length-bucketed batches; and 1 thread instead of 2.

    .venv/bin/python bench/throughput.py [--steps 12] [--warmup 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import time

from common import machine, peft_trainer, setup, write_json


def full_logits_loss(base, prefix, ids, mask, labels, backbone=None):
    """The straightforward loss: the model's own, logits at every position (for the ablation row)."""
    from playground.prefix import prefix_forward

    return prefix_forward(base, ids, mask, prefix, labels=labels, use_cache=False).loss


def bucketed(lengths: list[int], window: int = 8):
    """A ``training.batches`` stand-in: each run of ``window`` shuffled batches is re-cut by length."""
    import torch

    def batches(n: int, batch_size: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        while True:
            perm = torch.randperm(n, generator=g).tolist()
            for i in range(0, n - n % batch_size or n, batch_size * window):
                chunk = sorted(perm[i:i + batch_size * window], key=lambda j: lengths[j])
                for k in range(0, len(chunk) - len(chunk) % batch_size or len(chunk), batch_size):
                    yield chunk[k:k + batch_size]
    return batches


def padding_waste(encoded, order, batch_size: int, steps: int) -> float:
    """Share of the token positions in ``steps`` batches that are padding."""
    real = padded = 0
    for _ in range(steps):
        idx = next(order)
        lens = [len(encoded[i][0]) for i in idx]
        real, padded = real + sum(lens), padded + max(lens) * len(lens)
    return 1 - real / padded


def ours(base, task, steps: int, warmup: int, precision: str, threads: int = 2, loss=None, batches=None,
         twin: bool = True):
    import torch

    import playground.methods as M
    import playground.training as T
    from playground.methods import prefix_method
    from playground.prefix import PrefixSettings, create_prefix

    old = (M.target_loss, T.batches, torch.get_num_threads(), T.bf16_backbone)
    M.target_loss, T.batches = loss or old[0], batches or old[1]  # the prefix's loss, as train calls it
    if not twin:  # autocast re-casts the frozen fp32 weights at every matmul
        T.bf16_backbone = lambda base: None
    torch.set_num_threads(threads)
    try:
        prefix = create_prefix(base, PrefixSettings(num_virtual_tokens=20), task.instruction)
        settings = T.TrainSettings(steps=steps, eval_every=0, eval_examples=1, precision=precision)
        recs = list(T.train(base, prefix_method(prefix), task, settings))
    finally:
        M.target_loss, T.batches, T.bf16_backbone = old[0], old[1], old[3]
        torch.set_num_threads(old[2])
    timed = recs[warmup:]
    return sum(settings.batch_size for _ in timed) / (recs[-1].elapsed - recs[warmup - 1].elapsed)


def anchor(base, task, steps: int, warmup: int, bf16: bool):
    from transformers import TrainerCallback

    ends = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            ends.append(time.perf_counter())

    trainer, _ = peft_trainer(base, task, steps=steps, callbacks=[Clock()], bf16=bf16)
    trainer.train()
    base.model.eval()
    return 8 * (steps - warmup) / (ends[-1] - ends[warmup - 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    setup()
    from playground.models import autocast_dtype, load_model
    from playground.prompts import PromptFormat
    from playground.tasks import get_task
    from playground.training import TrainSettings, batches

    base = load_model(device="cpu")
    task = get_task("sentiment")
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    encoded = [fmt.encode_example(e.input, e.target, "prefix") for e in task.split("train")]
    lengths = [len(e[0]) for e in encoded]
    default = "bf16" if autocast_dtype(base, TrainSettings().precision) is not None else "fp32"
    print(f"machine: {machine()}; app default precision here: {default}")
    n, w = args.steps, args.warmup
    rows = [
        ("anchor: Trainer + PEFT, fp32", lambda: anchor(base, task, n, w, bf16=False)),
        ("anchor: Trainer + PEFT, bf16=True", lambda: anchor(base, task, n, w, bf16=True)),
        ("ours, fp32, full-vocabulary logits", lambda: ours(base, task, n, w, "fp32", loss=full_logits_loss)),
        ("ours, fp32, logits at targets only", lambda: ours(base, task, n, w, "fp32")),
        ("ours, fp32 weights under bf16 autocast (cast at every matmul)",
         lambda: ours(base, task, n, w, default, twin=False)),
        ("ours, bf16 autocast, weights cast once (app default)", lambda: ours(base, task, n, w, default)),
        ("ours, app default + length-bucketed batches",
         lambda: ours(base, task, n, w, default, batches=bucketed(lengths))),
        ("ours, app default on 1 thread", lambda: ours(base, task, n, w, default, threads=1)),
    ]
    results = {}
    for name, fn in rows:
        results[name] = fn()
        print(f"  {name}: {results[name]:.1f} examples/s", flush=True)
    waste = {"shuffled (ours)": padding_waste(encoded, batches(len(encoded), 8, 0), 8, 25),
             "length-bucketed": padding_waste(encoded, bucketed(lengths)(len(encoded), 8, 0), 8, 25)}
    a = results["anchor: Trainer + PEFT, fp32"]
    print()
    print("| way | examples/s | vs Trainer + PEFT fp32 |")
    print("|---|---|---|")
    for name, v in results.items():
        print(f"| {name} | {v:.1f} | {v / a:.2f}x |")
    print("padding share of token positions: " + ", ".join(f"{k} {v:.1%}" for k, v in waste.items()))
    ours_v = results["ours, bf16 autocast, weights cast once (app default)"]
    write_json(args.json, {"machine": machine(), "examples_per_s": results, "padding_waste": waste,
                           "steps": n, "warmup": w, "default_precision": default})
    print(f"ratio (our loop, app defaults / Trainer + PEFT fp32, examples/s): {ours_v / a:.2f}x "
          f"(ours {ours_v:.1f}, anchor {a:.1f}; goal >= 1.3x)")


if __name__ == "__main__":
    main()
