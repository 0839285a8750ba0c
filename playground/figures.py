"""Plotly figures for the web app: training curves, the four attention views, and the inference overhead.

Pure functions from engine results (StepRecord lists, PrefixAttention) to ``go.Figure``.
No gradio here, so they are testable and reusable in notebooks. Every trace carries a
hovertemplate with the exact value, because learners hover to read numbers.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .attention import PrefixAttention
from .overhead import OverheadPoint
from .training import StepRecord

HEIGHT = 320
COLORS = ("#e4572e", "#2e86ab", "#76b041", "#a23b72", "#f3a712", "#3b1f2b")


def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = HEIGHT) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0.01), xaxis_title=x, yaxis_title=y, height=height,
                      margin=dict(l=60, r=20, t=48, b=48), template="plotly_white",
                      legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"))
    return fig


def loss_figure(records: list[StepRecord], total_steps: int | None = None) -> go.Figure:
    """Training loss per step (target tokens only)."""
    fig = go.Figure(go.Scatter(
        x=[r.step for r in records], y=[r.loss for r in records], mode="lines+markers", name="train loss",
        line=dict(color=COLORS[0]), hovertemplate="step %{x}<br>loss %{y:.4f}<extra></extra>"))
    if total_steps:
        fig.update_xaxes(range=[0.5, total_steps + 0.5])
    return _layout(fig, "Training loss", "step", "cross-entropy on target tokens")


def metric_figure(records: list[StepRecord], metric_label: str, total_steps: int | None = None,
                  baselines: dict[str, float] | None = None) -> go.Figure:
    """Held-out metric at the steps where it was measured, with dashed baseline lines."""
    pts = [r for r in records if r.metric is not None]
    fig = go.Figure(go.Scatter(
        x=[r.step for r in pts], y=[100 * r.metric for r in pts], mode="lines+markers", name="prefix",
        line=dict(color=COLORS[1]), hovertemplate="step %{x}<br>%{y:.1f}%<extra></extra>"))
    for i, (name, value) in enumerate((baselines or {}).items()):
        # alternate sides so that equal baselines (often both 0 %) don't print on top of each other
        fig.add_hline(y=100 * value, line_dash="dash", line_color=COLORS[2 + i % 4],
                      annotation_text=f"{name}: {100 * value:.1f}%",
                      annotation_position="top left" if i % 2 == 0 else "top right")
    fig.update_yaxes(range=[-3, 103])
    if total_steps:
        fig.update_xaxes(range=[0.5, total_steps + 0.5])
    return _layout(fig, f"Held-out {metric_label}", "step", f"{metric_label} (%)")


def layer_figure(shares: dict[str, PrefixAttention]) -> go.Figure:
    """Share of attention on the prefix per layer; one line per prefix (overlay)."""
    fig = go.Figure()
    for i, (name, att) in enumerate(shares.items()):
        y = att.layer_share.tolist()  # [layer]
        fig.add_trace(go.Scatter(x=list(range(len(y))), y=y, mode="lines+markers", name=name,
                                 line=dict(color=COLORS[i % len(COLORS)]),
                                 hovertemplate=f"{name}<br>layer %{{x}}<br>share %{{y:.4f}}<extra></extra>"))
    fig.update_yaxes(range=[0, 1.02])
    return _layout(fig, "Share of attention on the prefix, per layer", "layer", "share (0–1)")


def head_figure(att: PrefixAttention, name: str = "") -> go.Figure:
    """Layer × head heatmap of the share on the prefix."""
    z = att.head_share.T.tolist()  # [head, layer]
    fig = go.Figure(go.Heatmap(z=z, colorscale="Viridis", zmin=0, zmax=1, colorbar=dict(title="share"),
                               hovertemplate="layer %{x}<br>head %{y}<br>share %{z:.4f}<extra></extra>"))
    return _layout(fig, f"Share on the prefix, layer × head {name}".strip(), "layer", "query head")


def virtual_token_figure(att: PrefixAttention, name: str = "") -> go.Figure:
    """Layer × virtual-token heatmap: attention on each slot, mean over heads and query positions."""
    z = att.weights.mean(dim=(1, 2)).T.tolist()  # [layer, head, q_pos, vt] -> [layer, vt] -> [vt, layer]
    fig = go.Figure(go.Heatmap(z=z, colorscale="Magma", colorbar=dict(title="weight"),
                               hovertemplate="layer %{x}<br>virtual token %{y}<br>weight %{z:.4f}<extra></extra>"))
    return _layout(fig, f"Attention on each virtual token, layer × slot {name}".strip(), "layer", "virtual token")


def query_token_figure(att: PrefixAttention, name: str = "") -> go.Figure:
    """Layer × prompt-token heatmap: which input tokens lean on the prefix."""
    # unique labels even for repeated tokens; newlines and bare spaces made visible
    labels = [f"{i}: {t.replace(chr(10), '⏎').strip() or repr(t)}" for i, t in enumerate(att.tokens)]
    z = att.token_share.T.tolist()  # [layer, q_pos] -> [q_pos, layer]
    fig = go.Figure(go.Heatmap(z=z, x=list(range(att.token_share.shape[0])), y=labels, colorscale="Cividis",
                               zmin=0, zmax=1, colorbar=dict(title="share"),
                               hovertemplate="layer %{x}<br>token %{y}<br>share %{z:.4f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", tickfont=dict(size=10))
    return _layout(fig, f"Which prompt tokens lean on the prefix {name}".strip(), "layer", "prompt token",
                   height=max(HEIGHT, 18 * len(labels) + 100))


def overhead_figure(points: list[OverheadPoint]) -> go.Figure:
    """Per-token latency and time to first token (ms, left axis) and KV-cache MB (right axis) vs P.

    One set of three lines per prompt length T; dashes mark the cache, the memory axis.
    """
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for i, T in enumerate(sorted({p.T for p in points})):
        row = sorted((p for p in points if p.T == T), key=lambda p: p.P)
        x = [p.P for p in row]
        tag = f" (T={T})"
        for j, (name, y, unit) in enumerate((("per token", [1000 * p.per_token_s for p in row], "ms"),
                                             ("first token", [1000 * p.ttft_s for p in row], "ms"))):
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="lines+markers", name=name + tag, line=dict(color=COLORS[(2 * i + j) % len(COLORS)]),
                hovertemplate=f"{name}{tag}<br>P = %{{x}}<br>%{{y:.1f}} {unit}<extra></extra>"), secondary_y=False)
        fig.add_trace(go.Scatter(
            x=x, y=[p.kv_bytes_measured / 1e6 for p in row], mode="lines+markers", name="KV cache" + tag,
            line=dict(color=COLORS[(4 + i) % len(COLORS)], dash="dash"),
            hovertemplate=f"KV cache{tag}<br>P = %{{x}}<br>%{{y:.2f}} MB<extra></extra>"), secondary_y=True)
    fig.update_yaxes(title_text="latency (ms)", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="KV cache (MB)", rangemode="tozero", showgrid=False, secondary_y=True)
    return _layout(fig, "What a prefix costs at inference", "virtual tokens P", "latency (ms)")


def compare_figure(curves: dict[str, list[StepRecord]], metric_label: str, x: str = "step",
                   baselines: dict[str, float] | None = None) -> go.Figure:
    """Held-out metric per method against optimizer steps (x="step") or seconds of training (x="time");
    untrained baselines as dashed lines."""
    fig = go.Figure()
    for i, (name, value) in enumerate((baselines or {}).items()):
        fig.add_hline(y=100 * value, line_dash="dash", line_color=COLORS[(len(curves) + i) % len(COLORS)],
                      annotation_text=f"{name}: {100 * value:.1f}%", annotation_position="top left")
    for i, (name, records) in enumerate(curves.items()):
        pts = [r for r in records if r.metric is not None]
        xs = [r.step if x == "step" else r.elapsed for r in pts]
        unit = "step %{x}" if x == "step" else "%{x:.1f} s"
        fig.add_trace(go.Scatter(x=xs, y=[100 * r.metric for r in pts], mode="lines+markers", name=name,
                                 line=dict(color=COLORS[i % len(COLORS)]),
                                 hovertemplate=f"{name}<br>{unit}<br>%{{y:.1f}}%<extra></extra>"))
    fig.update_yaxes(range=[-3, 103])
    what = "step" if x == "step" else "seconds of training"
    return _layout(fig, f"Held-out {metric_label} vs {what}", what, f"{metric_label} (%)")
