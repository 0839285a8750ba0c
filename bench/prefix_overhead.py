"""Inference overhead of a prefix: time to first token, latency per token and KV cache vs P.

Runs on the CPU with 2 threads and the embedded SmolLM2, over P in (0, 8, 32, 128, 512)
virtual tokens and prompts of T in (16, 256) tokens, with a forced greedy decode (no early
stop). Prints a Markdown table, a least-squares fit of latency = a + b·P per T (to test the
claim "the overhead is constant and proportional to the prefix length"), and plain PEFT's
``generate`` at P = 32, T = 16 beside ours, on a fresh copy of the model so the shared one
stays clean. The last line is the ratio of per-token latency at P = 512 to P = 0 (T = 16).

    .venv/bin/python bench/prefix_overhead.py [--json out.json] [--new-tokens 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ANCHOR_P, ANCHOR_T = 32, 16


def peft_anchor(prefix, ids: list[int], new_tokens: int, repeats: int) -> dict:
    """Plain PEFT on a fresh model copy, holding our prefix's values: TTFT and per-token latency of generate.

    ``generate`` gives no per-step clock, so TTFT is the time of a 1-token generate and the
    per-token latency is (time of N tokens - time of 1 token) / (N - 1).
    """
    import torch
    from peft import PrefixTuningConfig, get_peft_model

    from playground.models import load_model

    fresh = load_model(device="cpu")  # get_peft_model injects into the model it wraps: never the shared one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(fresh.model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=ANCHOR_P))
    with torch.no_grad():  # the same virtual key/values as ours, so the tokens must agree too
        peft_model.prompt_encoder["default"].embedding.weight.copy_(prefix.encoder.embedding.weight)
    peft_model.eval()
    x = torch.tensor([ids])  # [1, T]
    kw = dict(attention_mask=torch.ones_like(x), do_sample=False, pad_token_id=fresh.tokenizer.pad_token_id)

    def run(n: int):
        t0 = time.perf_counter()
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = peft_model.generate(input_ids=x, max_new_tokens=n, min_new_tokens=n, **kw)
        return time.perf_counter() - t0, out[0, x.shape[1]:].tolist()

    run(new_tokens)  # warm-up
    one = statistics.median(run(1)[0] for _ in range(repeats))
    full = [run(new_tokens) for _ in range(repeats)]
    total = statistics.median(t for t, _ in full)
    return {"ttft_s": one, "per_token_s": (total - one) / (new_tokens - 1), "total_s": total, "tokens": full[0][1]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", help="also write the points, fits and the PEFT anchor here")
    ap.add_argument("--new-tokens", type=int, default=16, help="tokens generated per run, the first included")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per cell (median), after one warm-up")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    from playground.models import load_model
    from playground.overhead import (
        PREFIX_LENGTHS,
        PROMPT_LENGTHS,
        fit_overhead,
        forced_decode,
        measure_overhead,
        prompt_ids,
        random_prefix,
    )

    start = time.perf_counter()
    base = load_model(device="cpu")
    say = lambda frac, msg: print(f"  [{100 * frac:3.0f}%] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    points = measure_overhead(base, PREFIX_LENGTHS, PROMPT_LENGTHS, args.new_tokens, args.repeats, say)
    fits = fit_overhead(points)

    print()
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{base.name} on {base.device.type} / {str(base.dtype).replace('torch.', '')}; "
          f"{args.new_tokens} new tokens, median of {args.repeats} after a warm-up")
    print()
    print("| P | T | TTFT (ms) | per token (ms) | KV cache computed (MB) | KV cache measured (MB) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for p in sorted(points, key=lambda p: (p.T, p.P)):
        print(f"| {p.P} | {p.T} | {1000 * p.ttft_s:.1f} | {1000 * p.per_token_s:.2f} | "
              f"{p.kv_bytes_computed / 1e6:.2f} | {p.kv_bytes_measured / 1e6:.2f} |")
    print()
    print("Fit per prompt length, latency = a + b·P:")
    print()
    print("| T | per token: a (ms) | b (µs / virtual token) | r² | P=max vs P=0 | TTFT: a (ms) | b (µs / vt) | r² "
          "| P=max vs P=0 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for f in fits:
        print(f"| {f.T} | {f.per_token_ms:.2f} | {1000 * f.per_token_ms_per_vt:.1f} | {f.per_token_r2:.3f} | "
              f"{100 * f.per_token_added:+.1f} % (P={f.P_max}) | {f.ttft_ms:.1f} | {1000 * f.ttft_ms_per_vt:.1f} | "
              f"{f.ttft_r2:.3f} | {100 * f.ttft_added:+.1f} % |")
    print()
    print("Running the plain-PEFT anchor on a fresh copy of the model...", file=sys.stderr, flush=True)
    prefix = random_prefix(base, ANCHOR_P)  # measure_overhead's prefix for P = 32 (same seed)
    ids = prompt_ids(base, ANCHOR_T)
    ours_tokens = forced_decode(base, ids, prefix, args.new_tokens).tokens
    anchor = peft_anchor(prefix, ids, args.new_tokens, args.repeats)
    ours = next(p for p in points if (p.P, p.T) == (ANCHOR_P, ANCHOR_T))

    print(f"Anchor at P = {ANCHOR_P}, T = {ANCHOR_T} (the same prefix values in both):")
    print()
    print("| | ours (forced decode, shared model) | plain PEFT `generate` (fresh copy) |")
    print("|---|---:|---:|")
    print(f"| TTFT (ms) | {1000 * ours.ttft_s:.1f} | {1000 * anchor['ttft_s']:.1f} |")
    print(f"| per token (ms) | {1000 * ours.per_token_s:.2f} | {1000 * anchor['per_token_s']:.2f} |")
    print(f"| same {args.new_tokens} tokens | {'yes' if ours_tokens == anchor['tokens'] else 'NO'} | |")
    print()
    print(f"total time of this run: {time.perf_counter() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "points": [asdict(p) for p in points], "fits": [asdict(f) for f in fits],
            "anchor": {"P": ANCHOR_P, "T": ANCHOR_T, "ours_per_token_s": ours.per_token_s, "ours_ttft_s": ours.ttft_s,
                       **{k: v for k, v in anchor.items() if k != "tokens"},
                       "same_tokens": ours_tokens == anchor["tokens"]},
        }, indent=2))
    p0 = next(p for p in points if (p.P, p.T) == (0, 16))
    pmax = next(p for p in points if (p.P, p.T) == (512, 16))
    print(f"ratio (per-token latency P=512 / P=0, T=16): {pmax.per_token_s / p0.per_token_s:.2f}x")


if __name__ == "__main__":
    main()
