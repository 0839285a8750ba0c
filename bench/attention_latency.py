"""Latency of the Attention tab: the prefix's attention mass for one prompt, and its figures.

Runs on the CPU with 2 threads and the embedded SmolLM2, with the shipped ``prefixes/sentiment``
(20 virtual tokens) and a review that makes exactly 32 input tokens in prefix mode. Times:
- ours: ``playground.attention.prefix_attention`` (prefix cache on the shared model), and the
  same computation with the LM head on every position (logits unused), as a reference;
- the four figures the tab builds (``ui/attention.py``), and their JSON for the browser;
- the anchor: plain PEFT, ``PeftModel.from_pretrained`` on a fresh copy of the model, one forward
  with ``output_attentions=True``, then the same ``prefix_shares``.
Medians of 10 after a warm-up; ours and PEFT are called in turn, so that other
processes' load on a shared CPU falls on both alike. Goal: ours ≤ 300 ms. The last line is the PEFT / ours ratio.

    .venv/bin/python bench/attention_latency.py [--json out.json] [--repeats 10]
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

PREFIX = ROOT / "prefixes" / "sentiment"
TEXT = "A warm, funny film with a clumsy ending that I still loved, and the music was great too."
INPUT_TOKENS = 32
GOAL_MS = 300


def median_s(fn, repeats: int) -> tuple[float, object]:
    """(median seconds over ``repeats`` calls after one warm-up call, the last result)."""
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def interleaved(fns: dict, repeats: int) -> dict[str, tuple[float, object]]:
    """``median_s`` for several functions, called in turn, so that load from other processes on a
    shared CPU falls on all of them alike. {name: (median seconds, last result)}."""
    outs = {k: f() for k, f in fns.items()}  # warm-up
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            outs[k] = f()
            times[k].append(time.perf_counter() - t0)
    return {k: (statistics.median(times[k]), outs[k]) for k in fns}


def prefix_shares(attentions, P: int) -> dict:
    """The straightforward reduction: every layer's full [1, head, q_pos, k_pos] matrix from
    ``output_attentions``, kept until the forward ends, then reduced as ``prefix_attention`` does."""
    from playground.attention import _stack, layer_shares

    return _stack([layer_shares(a, P) for a in attentions])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", help="also write the timings here")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    import torch
    from peft import PeftModel

    torch.set_num_threads(2)
    from playground.attention import prefix_attention
    from playground.figures import head_figure, layer_figure, query_token_figure, virtual_token_figure
    from playground.models import load_model
    from playground.peft_folder import load_prefix
    from playground.prefix import prefix_forward
    from playground.prompts import PromptFormat

    base = load_model(device="cpu")
    prefix = load_prefix(PREFIX, base)
    ids = PromptFormat.for_tokenizer(base.tokenizer).encode_prompt(TEXT, "prefix")
    assert len(ids) == INPUT_TOKENS, f"the prompt makes {len(ids)} tokens, not {INPUT_TOKENS}"
    P = prefix.num_virtual_tokens
    n = args.repeats

    att = prefix_attention(base, prefix, TEXT)

    def figures():  # what the tab's callback builds for one prefix
        return [layer_figure({"sentiment": att}), head_figure(att, "(sentiment)"),
                virtual_token_figure(att, "(sentiment)"), query_token_figure(att, "(sentiment)")]

    figs_s, figs = median_s(figures, n)
    json_s, _ = median_s(lambda: [f.to_json() for f in figs], n)  # gr.Plot sends each figure as plotly JSON

    fresh = load_model(device="cpu")  # PeftModel injects into the model it wraps: never the shared one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = PeftModel.from_pretrained(fresh.model, str(PREFIX)).eval()
    x = torch.tensor([ids])  # [1, T]

    @torch.inference_mode()
    def peft_run():
        out = peft_model(input_ids=x, attention_mask=torch.ones_like(x), output_attentions=True)
        return prefix_shares(out.attentions, P)  # per layer [1, head, q_pos, P + T] -> shares

    @torch.inference_mode()
    def before_run():  # prefix_attention with the LM head on every position, logits unused
        fmt = PromptFormat.for_tokenizer(base.tokenizer)
        y = torch.tensor([fmt.encode_prompt(TEXT, "prefix")])  # [1, T]
        out = prefix_forward(base, y, torch.ones_like(y), prefix, output_attentions=True, use_cache=False)
        [base.tokenizer.decode([i]) for i in y[0].tolist()]
        return prefix_shares(out.attentions, P)

    timed = interleaved({"ours": lambda: prefix_attention(base, prefix, TEXT), "before": before_run,
                         "peft": peft_run}, n)
    ours_s, before_s, peft_s = (timed[k][0] for k in ("ours", "before", "peft"))
    shares = timed["peft"][1]
    same = all(torch.allclose(shares[k].cpu(), getattr(att, k), atol=1e-5) for k in shares)

    print()
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{base.name} on {base.device.type} / {str(base.dtype).replace('torch.', '')}, "
          f"attention '{base.model.config._attn_implementation}'; prefix {PREFIX.name} ({P} virtual tokens), "
          f"{INPUT_TOKENS} input tokens; median of {n} after a warm-up")
    print()
    print("| step | ms |")
    print("|---|---:|")
    print(f"| ours: `prefix_attention` (forward with attention weights + shares + token texts) | {1000 * ours_s:.1f} |")
    print(f"| the same before this change (LM head on all {INPUT_TOKENS} positions) | {1000 * before_s:.1f} |")
    print(f"| the tab's 4 figures: build | {1000 * figs_s:.1f} |")
    print(f"| the tab's 4 figures: to JSON | {1000 * json_s:.1f} |")
    print(f"| ours end to end (shares + figures + JSON) | {1000 * (ours_s + figs_s + json_s):.1f} |")
    print(f"| plain PEFT: forward with `output_attentions=True` + `prefix_shares` | {1000 * peft_s:.1f} |")
    print(f"| same shares as PEFT (atol 1e-5) | {'yes' if same else 'NO'} |")
    print()
    verdict = "met" if 1000 * ours_s <= GOAL_MS else "NOT met"
    print(f"goal: prefix_attention <= {GOAL_MS} ms: {verdict} ({1000 * ours_s:.1f} ms)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "input_tokens": INPUT_TOKENS, "num_virtual_tokens": P, "repeats": n, "ours_s": ours_s,
            "before_s": before_s, "figures_build_s": figs_s, "figures_json_s": json_s, "peft_s": peft_s,
            "same_shares": same,
            "goal_ms": GOAL_MS}, indent=2))
    print(f"ratio (PEFT forward / ours): {peft_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
