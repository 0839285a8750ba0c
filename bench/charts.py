"""Charts for BENCHMARKS.md from ``bench/results/*.json``: plotly figures saved as PNG (via headless Chromium).

    .venv/bin/python bench/charts.py

Writes ``docs/bench/NAME.png`` for each result file it finds; missing results are skipped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
RESULTS = HERE / "results"
OUT = HERE.parent / "docs" / "bench"


def load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def time_to_accuracy(d):
    import plotly.graph_objects as go

    fig = go.Figure()
    names = {"ours": "ours (app defaults)", "demos": "ours, init from training examples",
             "anchor": "PEFT random init + Trainer, lr 3e-2"}
    for k, curve in d["curves"].items():
        fig.add_scatter(x=[t for _, t, _ in curve], y=[100 * a for _, _, a in curve], mode="lines+markers", name=names[k])
    fig.add_hline(y=100 * d["target"], line_dash="dot", annotation_text="90% target")
    fig.update_layout(title="Sentiment: held-out accuracy vs seconds of training (2 CPU cores)",
                      xaxis_title="seconds of training (evaluation excluded)", yaxis_title="test accuracy (%)")
    return fig


def throughput(d):
    import plotly.graph_objects as go

    items = list(d["examples_per_s"].items())
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h",
                           text=[f"{v:.1f}" for _, v in items], textposition="auto"))
    fig.update_layout(title="Training throughput, sentiment, batch 8, 20 virtual tokens (2 CPU cores)",
                      xaxis_title="examples per second", yaxis=dict(autorange="reversed"), margin=dict(l=380))
    return fig


def mixed_batch(d):
    import plotly.graph_objects as go

    rows = d["results"]
    labels = {"mixed": "one mixed batch (ours)", "peft_sequential": "N x PEFT set_adapter + generate",
              "greedy_sequential": "N x our single-prefix greedy"}
    fig = go.Figure()
    for k, label in labels.items():
        fig.add_bar(x=[f"N = {r['N']}" for r in rows], y=[r["median_s"][k] for r in rows], name=label,
                    text=[f"{r['median_s'][k]:.2f} s" for r in rows], textposition="outside")
    fig.update_layout(title=f"Side by side: N prefixes on one input, {d['max_new_tokens']} greedy tokens each "
                            "(2 CPU cores)", yaxis_title="seconds (median)", barmode="group")
    return fig


def prefix_overhead(d):
    from plotly.subplots import make_subplots

    pts = d.get("points", [])
    fig = make_subplots(rows=1, cols=3, subplot_titles=("latency per generated token", "time to first token",
                                                        "KV-cache memory"))
    colors = ["#1f77b4", "#d62728"]
    for i, T in enumerate(sorted({p["T"] for p in pts})):
        row = sorted((p for p in pts if p["T"] == T), key=lambda p: p["P"])
        x, line = [p["P"] for p in row], dict(color=colors[i % 2])
        fig.add_scatter(x=x, y=[1000 * p["per_token_s"] for p in row], name=f"prompt {T} tokens", row=1, col=1,
                        legendgroup=str(T), line=line)
        fig.add_scatter(x=x, y=[1000 * p["ttft_s"] for p in row], name=f"prompt {T}", row=1, col=2,
                        legendgroup=str(T), showlegend=False, line=line)
        fig.add_scatter(x=x, y=[p["kv_bytes_measured"] / 2**20 for p in row], name=f"prompt {T}", row=1, col=3,
                        legendgroup=str(T), showlegend=False, line=line)
    fig.update_xaxes(title_text="virtual tokens P")
    fig.update_yaxes(title_text="ms", row=1, col=1)
    fig.update_yaxes(title_text="ms", row=1, col=2)
    fig.update_yaxes(title_text="MB", row=1, col=3)
    fig.update_layout(title="What a prefix costs at inference (2 CPU cores, fp32)")
    return fig


CHARTS = {"time_to_accuracy": time_to_accuracy, "throughput": throughput, "mixed_batch": mixed_batch,
          "prefix_overhead": prefix_overhead}


def to_png(figs: dict, width: int = 1100, height: int = 480) -> None:
    from playground.figures import write_figures

    for fig in figs.values():
        fig.update_layout(width=width, height=height, template="plotly_white")
    for path in write_figures(figs, OUT, html=False, width=width, height=height):
        print(f"wrote {path}")


def main() -> None:
    figs = {}
    for name, fn in CHARTS.items():
        d = load(name)
        if d is not None:
            figs[name] = fn(d)
    if figs:
        to_png(figs)


if __name__ == "__main__":
    main()
