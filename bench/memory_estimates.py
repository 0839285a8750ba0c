"""Measure the peak memory of model calls against ``playground.budget``'s estimates.

    .venv/bin/python bench/memory_estimates.py

Each call runs in a fresh process on the embedded model (CPU): a warm-up call first (one-time
allocations), then glibc's trim, the peak-RSS counter reset (``/proc/self/clear_refs``), the
call, and its peak RSS (VmHWM) minus the RSS before it. Prints measured / estimate (the estimate
already holds ``budget.SAFETY``) and writes ``bench/results/memory_estimates.json``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "memory_estimates.json"
# (kind, args): attention (T digits, P), attention_old (the same through output_attentions),
# train (batch, T, P, targets, precision), generate (batch, T, P, new tokens)
CASES = [
    ("attention", (250, 20)), ("attention", (1000, 20)), ("attention", (2000, 20)), ("attention", (2000, 128)),
    ("attention_old", (2000, 20)),
    ("train", (8, 256, 20, 8, "fp32")), ("train", (8, 256, 20, 8, "bf16")), ("train", (8, 256, 20, 200, "bf16")),
    ("train", (32, 120, 128, 20, "fp32")), ("train", (32, 120, 128, 20, "bf16")), ("train", (4, 64, 20, 4, "fp32")),
    ("generate", (16, 270, 20, 24)), ("generate", (16, 120, 128, 20)), ("generate", (4, 2000, 20, 8)),
]


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def one(kind: str, args: tuple) -> dict:
    import torch

    from playground import budget
    from playground.attention import prefix_attention
    from playground.generate import greedy_mixed
    from playground.losses import target_loss
    from playground.memory import limit_arenas, trim
    from playground.models import load_model
    from playground.prefix import PrefixSettings, create_prefix, prefix_forward
    from playground.prompts import PromptFormat
    from playground.training import bf16_backbone

    limit_arenas(2)  # as app.py
    torch.set_num_threads(2)
    base = load_model(device="cpu")
    P = args[1] if kind.startswith("attention") else args[2]
    prefix = create_prefix(base, PrefixSettings(P, "random"), seed=0)

    if kind.startswith("attention"):
        T, _ = args
        text = "".join(str(i % 10) for i in range(T))
        n = len(PromptFormat.for_tokenizer(base.tokenizer).encode_prompt(text, "prefix"))
        estimate = budget.attention_bytes(base, n, P)
        if kind == "attention":
            def run(t=text):
                prefix_attention(base, prefix, t)
        else:
            def run(t=text):
                fmt = PromptFormat.for_tokenizer(base.tokenizer)
                ids = torch.tensor([fmt.encode_prompt(t, "prefix")])
                with torch.inference_mode():
                    out = prefix_forward(base, ids, torch.ones_like(ids), prefix, output_attentions=True,
                                         use_cache=False, logits_to_keep=1)
                    [a[0, ..., :P].float() for a in out.attentions]
        warm = lambda: prefix_attention(base, prefix, "12345")  # noqa: E731
    elif kind == "train":
        B, T, _, targets, precision = args
        amp = torch.bfloat16 if precision == "bf16" else None
        backbone = bf16_backbone(base) if amp is not None else None
        estimate = budget.train_step_bytes(base, B, T, P, targets, amp)

        def run(B=B, T=T):
            ids = torch.randint(100, 1000, (B, T))
            labels = torch.full((B, T), -100)
            labels[:, T - targets:] = ids[:, T - targets:]
            with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
                loss = target_loss(base, prefix, ids, torch.ones_like(ids), labels, backbone)
            loss.backward()
        warm = lambda: run(2, 8)  # noqa: E731
    else:
        B, T, _, new = args
        estimate = budget.generate_bytes(base, B, T, P, new)

        def run(B=B, T=T, new=new):
            greedy_mixed(base, [[100 + (i + j) % 900 for j in range(T)] for i in range(B)], [prefix] * B, new)
        warm = lambda: run(2, 8, 2)  # noqa: E731
    warm()
    trim()
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    run()
    peak = _status("VmHWM")
    return {"kind": kind, "args": list(args), "rss_before_mb": round(before / 2**20),
            "measured_mb": round((peak - before) / 2**20, 1), "estimate_mb": round(estimate / 2**20, 1),
            "ratio": round((peak - before) / estimate, 3)}


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2], tuple(json.loads(sys.argv[3])))))
        return 0
    rows = []
    for kind, args in CASES:
        out = subprocess.run([sys.executable, __file__, "--one", kind, json.dumps(args)], capture_output=True,
                             text=True, cwd=ROOT)
        if out.returncode != 0:
            print(f"{kind} {args}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            return 1
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{kind:>13} {str(args):<28} measured {row['measured_mb']:8.1f} MB  estimate {row['estimate_mb']:8.1f} MB"
              f"  ratio {row['ratio']:.2f}", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
