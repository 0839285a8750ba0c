"""One input through N prefixes: one mixed-prefix batch vs one plain-PEFT generate call per prefix.

PEFT cannot put rows with different prefixes in one batch (its mixed-adapter batches are LoRA
only, and ``set_adapter`` is global), so the anchor is what a PEFT user writes: a ``PeftModel``
holding the N prefixes as adapters, then ``set_adapter(name)`` and ``generate`` per prefix.
For context it also times N single-row calls of our own ``greedy_mixed``, one prefix each.

The embedded SmolLM2-135M-Instruct on the CPU with 2 threads, the shipped prefixes in
``prefixes/`` (cycled, each slot loaded as its own copy, for N above 6), greedy, exactly
``--tokens`` new tokens per row in every path (no early stop at the end token, so each path
does the same work), median of ``--repeats`` after one warm-up. It asserts that the mixed
batch and PEFT give the same tokens, row for row.

    .venv/bin/python bench/mixed_batch.py [--tokens 24] [--repeats 3] [--threads 2] [--json PATH]

On a machine other jobs are loading, torch's spinning worker threads can slow every path
tenfold; run with OMP_WAIT_POLICY=PASSIVE (or --threads 1) there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

INPUT = "The acting was wooden and the plot made no sense at all."
SIZES = (2, 4, 8)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=24, help="new tokens per row, in every path")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median), after one warm-up")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (this project's machine has 2 cores)")
    ap.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = ap.parse_args()
    import torch
    from peft import PeftModel

    from playground.generate import greedy_mixed
    from playground.models import load_model
    from playground.peft_folder import CONFIG_FILE, load_prefix
    from playground.prompts import PromptFormat

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # generate's per-call notes about eos/pad settings
    base = load_model(device="cpu")
    folders = sorted(p for p in (ROOT / "prefixes").iterdir() if (p / CONFIG_FILE).is_file())
    slots = [folders[i % len(folders)] for i in range(max(SIZES))]  # N=8 reuses two prefixes as copies
    names = [f"{f.name}#{i}" for i, f in enumerate(slots)]  # one adapter (and one Prefix object) per slot
    prefixes = [load_prefix(f, base) for f in slots]
    peft_model = PeftModel.from_pretrained(base.model, str(slots[0]), adapter_name=names[0]).eval()
    for name, folder in zip(names[1:], slots[1:]):
        peft_model.load_adapter(str(folder), adapter_name=name)
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    prompt = fmt.encode_prompt(INPUT, "prefix")
    T, pad = args.tokens, base.tokenizer.pad_token_id

    def mixed(n):
        return greedy_mixed(base, [prompt] * n, prefixes[:n], T)

    def peft_sequential(n):
        rows = []
        ids = torch.tensor([prompt])
        for name in names[:n]:
            peft_model.set_adapter(name)
            with torch.inference_mode():
                out = peft_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=T,
                                          min_new_tokens=T, eos_token_id=None, do_sample=False, pad_token_id=pad)
            rows.append(out[0, len(prompt):].tolist())
        return rows

    def greedy_sequential(n):
        return [greedy_mixed(base, [prompt], [p], T)[0] for p in prefixes[:n]]

    paths = {"mixed": mixed, "peft_sequential": peft_sequential, "greedy_sequential": greedy_sequential}
    results = []
    for n in SIZES:
        times: dict[str, list[float]] = {k: [] for k in paths}
        tokens = {k: fn(n) for k, fn in paths.items()}  # warm-up, and the outputs to compare
        for _ in range(args.repeats):
            for k, fn in paths.items():  # interleaved, so a noisy neighbour hits every path alike
                times[k].append(timed(lambda: fn(n))[0])
        assert all(len(r) == T for rows in tokens.values() for r in rows), "every row must have exactly T tokens"
        same_peft = tokens["mixed"] == tokens["peft_sequential"]
        same_greedy = tokens["mixed"] == tokens["greedy_sequential"]
        med = {k: statistics.median(v) for k, v in times.items()}
        results.append({"N": n, "prefixes": names[:n], "median_s": med, "times_s": times,
                        "identical_to_peft": same_peft, "identical_to_greedy": same_greedy})
        print(f"N={n}: mixed {med['mixed']:.2f} s, PEFT x{n} {med['peft_sequential']:.2f} s, "
              f"greedy x{n} {med['greedy_sequential']:.2f} s; tokens identical to PEFT: {same_peft}, "
              f"to our greedy: {same_greedy}", flush=True)
        assert same_peft, f"N={n}: the mixed batch's tokens differ from PEFT's"

    print()
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"input {INPUT!r}, {T} new tokens per row, median of {args.repeats}")
    print("| N prefixes | one mixed batch | N x PEFT set_adapter + generate | N x our greedy | PEFT / mixed "
          "| greedy / mixed | tokens identical (mixed = PEFT) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        m = r["median_s"]
        print(f"| {r['N']} | {m['mixed']:.2f} s | {m['peft_sequential']:.2f} s | {m['greedy_sequential']:.2f} s "
              f"| {m['peft_sequential'] / m['mixed']:.2f}x | {m['greedy_sequential'] / m['mixed']:.2f}x "
              f"| {'yes' if r['identical_to_peft'] else 'NO'} |")
    if args.json:
        meta = {"cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                "model": base.name, "input": INPUT, "max_new_tokens": T, "repeats": args.repeats}
        args.json.write_text(json.dumps({**meta, "results": results}, indent=2), encoding="utf-8")
    four = next(r["median_s"] for r in results if r["N"] == 4)
    print(f"ratio N=4 (sequential PEFT generate / mixed batch): {four['peft_sequential'] / four['mixed']:.2f}x")


if __name__ == "__main__":
    main()
