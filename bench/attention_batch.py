"""Attention views of a class: N learners' views in one forward (ours) vs each view alone (N forwards).

    .venv/bin/python bench/attention_batch.py [--views 1 4 8 16] [--repeats 5] [--json PATH]

When several learners open the Attention tab at once, the scheduler runs their waiting views in one
mixed-prefix forward (``attention.prefix_attention_many``): row i is learner i's prompt behind its
own prefix, and each row is reduced to its own prefix's columns layer by layer. The anchor is what
one learner's view costs today, run N times in turn (``prefix_attention``, itself one batch-of-one
forward of the same code). The views cycle over the shipped prefixes (20 virtual tokens each) and
two freshly made ones of 8 and 32, and over prompts of different lengths, so the batch pays for
its padding. Per N: the median
seconds of each way (interleaved, after a warm-up), the spread (min to max), the ratio, and whether
the shares are the same (atol 1e-5). The last line is the ratio at the largest N.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["A warm, funny film with a great cast.", "Iceland", "je cherche la gare ce soir",
         "Coastal nations sign pact to share fishing patrols", "The kettle just clicked off."]


def timed(fns: dict, repeats: int) -> dict[str, tuple[list[float], object]]:
    """Each function called in turn ``repeats`` times after a warm-up, so that load from other processes on a
    shared CPU falls on all alike. {name: (seconds per call, the last result)}."""
    outs = {k: f() for k, f in fns.items()}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            outs[k] = f()
            times[k].append(time.perf_counter() - t0)
    return {k: (times[k], outs[k]) for k in fns}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--views", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    import torch

    from bench.common import machine, setup, write_json
    from playground.attention import AttentionRequest, prefix_attention, prefix_attention_many
    from playground.library import Library
    from playground.models import load_model
    from playground.prefix import PrefixSettings, create_prefix

    setup()
    base = load_model(device=args.device)
    lib = Library(ROOT / "prefixes")
    prefixes = [lib.load(e.name, base) for e in lib.entries()]
    prefixes[1:1] = [create_prefix(base, PrefixSettings(8, "random"), seed=1),
                     create_prefix(base, PrefixSettings(32, "random"), seed=2)]
    rows = []
    print(f"{machine()}; {base.name} on {base.device.type} / {str(base.dtype).replace('torch.', '')}; "
          f"prefixes of {sorted({p.num_virtual_tokens for p in prefixes})} virtual tokens; "
          f"{args.repeats} timed calls of each way per N, interleaved, after a warm-up")
    print()
    print("| views (learners) | N forwards, one view each: median s (min-max) | one forward: median s (min-max) "
          "| ratio | same shares |")
    print("|---:|---:|---:|---:|---|")
    for n in args.views:
        reqs = [AttentionRequest(prefixes[i % len(prefixes)], TEXTS[i % len(TEXTS)]) for i in range(n)]
        out = timed({"alone": lambda: [prefix_attention(base, r.prefix, r.text) for r in reqs],
                     "together": lambda: prefix_attention_many(base, reqs)}, args.repeats)
        (alone_t, alone), (tog_t, tog) = out["alone"], out["together"]
        same = all(torch.allclose(getattr(a, k), getattr(b, k), atol=1e-5)
                   for a, b in zip(alone, tog) for k in ("weights", "head_share", "layer_share", "token_share"))
        a, t = statistics.median(alone_t), statistics.median(tog_t)
        rows.append({"views": n, "alone_s": alone_t, "together_s": tog_t, "alone_median_s": a,
                     "together_median_s": t, "ratio": a / t, "same_shares": same})
        print(f"| {n} | {a:.3f} ({min(alone_t):.3f}-{max(alone_t):.3f}) | {t:.3f} ({min(tog_t):.3f}-{max(tog_t):.3f}) "
              f"| {a / t:.2f}x | {'yes' if same else 'NO'} |")
    write_json(args.json, {"command": " ".join(["bench/attention_batch.py", *sys.argv[1:]]), "machine": machine(),
                           "model": base.name, "device": base.device.type, "repeats": args.repeats, "rows": rows})
    print()
    last = rows[-1]
    print(f"{last['views']} learners' attention views: one shared forward is {last['ratio']:.2f}x faster than "
          f"{last['views']} forwards of one view each (same shares: {'yes' if last['same_shares'] else 'NO'})")
    return 0 if all(r["same_shares"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
