"""Plotly figures for the web app: training curves, the four attention views, and the inference overhead.

Pure functions from engine results (StepRecord lists, PrefixAttention) to ``go.Figure``.
No gradio here, so they are testable and reusable in notebooks. Every trace carries a
hovertemplate with the exact value, because learners hover to read numbers.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .ablation import Ablation, AblationRow
from .attention import PrefixAttention
from .lens import LogitLens
from .metrics import METRIC_LABELS
from .overhead import OverheadPoint
from .probe import ProbePoint
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
        line=dict(color=COLORS[0]),
        hovertemplate="step %{x}<br>loss %{y:.4f} (cross-entropy on the answer's tokens)<extra></extra>"))
    if total_steps:
        fig.update_xaxes(range=[-0.5, total_steps + 0.5])
    return _layout(fig, "Training loss", "step", "loss (lower: likelier answers)")


def metric_figure(records: list[StepRecord], metric_label: str, total_steps: int | None = None,
                  baselines: dict[str, float] | None = None, start: float | None = None,
                  held_out: str = "") -> go.Figure:
    """Held-out metric at the steps where it was measured, from ``start`` (the initialized prefix, step 0),
    with dashed baseline lines; ``held_out`` names the examples (e.g. "n = 32, validation")."""
    pts = ([(0, start)] if start is not None else []) + [(r.step, r.metric) for r in records if r.metric is not None]
    fig = go.Figure(go.Scatter(
        x=[x for x, _ in pts], y=[100 * m for _, m in pts], mode="lines+markers", name="prefix",
        line=dict(color=COLORS[1]), hovertemplate="step %{x}<br>%{y:.1f}%<extra></extra>"))
    for i, (name, value) in enumerate((baselines or {}).items()):
        # alternate sides so that equal baselines (often both 0 %) don't print on top of each other
        fig.add_hline(y=100 * value, line_dash="dash", line_color=COLORS[2 + i % 4],
                      annotation_text=f"{name}: {100 * value:.1f}%",
                      annotation_position="top left" if i % 2 == 0 else "top right")
    fig.update_yaxes(range=[-3, 103])
    if total_steps:
        fig.update_xaxes(range=[-0.5, total_steps + 0.5])
    return _layout(fig, f"Held-out {metric_label}" + (f" ({held_out})" if held_out else ""), "step",
                   f"{metric_label} (%)")


def layer_figure(shares: dict[str, PrefixAttention]) -> go.Figure:
    """Share of attention on the prefix per layer; one line per prefix (overlay)."""
    fig = go.Figure()
    for i, (name, att) in enumerate(shares.items()):
        y = att.layer_share.tolist()  # [layer]
        fig.add_trace(go.Scatter(x=list(range(len(y))), y=y, mode="lines+markers", name=name,
                                 line=dict(color=COLORS[i % len(COLORS)]),
                                 hovertemplate=f"{name}<br>layer %{{x}}<br>share %{{y:.4f}}<extra></extra>"))
    fig.update_yaxes(range=[0, 1.02])
    fig = _layout(fig, "Share of attention on the prefix, per layer", "layer", "share (0–1)")
    return legend_under(fig, list(shares)) if len(shares) > 1 else fig


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


def _quote(text: str, most: int = 48) -> str:
    text = " ".join(text.split())
    return f"“{text[:most]}…”" if len(text) > most else f"“{text}”"


def probe_figure(points: list[ProbePoint], total_steps: int | None = None, prompt: str = "") -> go.Figure:
    """Layer × step heatmap of the share of attention on the prefix while it trains, on one fixed held-out
    ``prompt`` (``probe.py``): one column per recorded step, step 0 being the prefix as it started."""
    z = [list(col) for col in zip(*(p.layer_share for p in points))] if points else []  # [step, layer] -> [layer, step]
    fig = go.Figure(go.Heatmap(z=z, x=[p.step for p in points], y=list(range(len(z))), colorscale="Viridis", zmin=0,
                               colorbar=dict(title="share"),
                               hovertemplate="step %{x}<br>layer %{y}<br>share on the prefix %{z:.4f}<extra></extra>"))
    if total_steps:
        fig.update_xaxes(range=[-0.5, total_steps + 0.5])
    title = "Attention on the prefix while it trains, per layer"
    return _layout(fig, f"{title} ({_quote(prompt)})" if prompt else title, "step (0: as it started)", "layer")


def probe_slots_figure(point: ProbePoint | None, prompt: str = "") -> go.Figure:
    """Layer × virtual-token heatmap of one recorded step: the share of attention on each slot, mean over heads
    and the prompt's tokens (the same map as the Attention tab's, on the probe prompt)."""
    z = [list(col) for col in zip(*point.slot_share)] if point is not None else []  # [layer, vt] -> [vt, layer]
    fig = go.Figure(go.Heatmap(z=z, colorscale="Magma", zmin=0, colorbar=dict(title="share"),
                               hovertemplate="layer %{x}<br>virtual token %{y}<br>share %{z:.4f}<extra></extra>"))
    title = f"Each virtual token, layer × slot, at step {point.step}" if point is not None else \
        "Each virtual token, layer × slot: recorded once the run starts"
    return _layout(fig, f"{title} ({_quote(prompt, 32)})" if prompt and point is not None else title, "layer",
                   "virtual token")


def query_token_figure(att: PrefixAttention, name: str = "") -> go.Figure:
    """Layer × prompt-token heatmap: which input tokens lean on the prefix."""
    # unique labels even for repeated tokens; newlines and bare spaces made visible
    labels = [f"{i}: {t.replace(chr(10), '⏎').strip() or repr(t)}" for i, t in enumerate(att.tokens)]
    z = att.token_share.T.tolist()  # [layer, q_pos] -> [q_pos, layer]
    fig = go.Figure(go.Heatmap(z=z, x=list(range(att.token_share.shape[0])), y=labels, colorscale="Cividis",
                               zmin=0, zmax=1, colorbar=dict(title="share"),
                               hovertemplate="layer %{x}<br>token %{y}<br>share %{z:.4f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", tickfont=dict(size=10))
    return _layout(fig, f"Which prompt tokens lean on the prefix {name}".strip(), "layer",
                   "prompt token (the model's word pieces)", height=max(HEIGHT, 18 * len(labels) + 100))


def _html(text: str) -> str:
    """A token as plotly hover text: angle brackets escaped (``<|im_end|>`` is not a tag)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def lens_figure(lens: LogitLens, name: str = "") -> go.Figure:
    """The logit lens per layer, without and with the prefix: the target's first-token probability (top panel)
    and its rank among the whole vocabulary (bottom, log scale, 1 at the top); hover names each layer's top token."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    for i, (label, run) in enumerate((("without prefix", lens.without), (f"with {name or 'the prefix'}",
                                                                        lens.with_prefix))):
        layers = list(range(len(run.top_tokens)))
        top = [[_html(t), float(p)] for t, p in zip(run.top_tokens, run.top_prob.tolist())]
        color, dash = (COLORS[2], "dash") if i == 0 else (COLORS[1], "solid")
        hover = ("layer %{x}<br>" + label + "<br>" + "{what}<br>top token: '%{customdata[0]}' "
                 "(p %{customdata[1]:.3f})<extra></extra>")
        fig.add_trace(go.Scatter(x=layers, y=run.prob.tolist(), customdata=top, mode="lines+markers",
                                 name=f"{label}: probability", legendgroup=label, line=dict(color=color, dash=dash),
                                 hovertemplate=hover.replace("{what}", "p(target) %{y:.4f}")), row=1, col=1)
        fig.add_trace(go.Scatter(x=layers, y=run.rank.tolist(), customdata=top, mode="lines+markers",
                                 name=f"{label}: rank", legendgroup=label, showlegend=False,
                                 line=dict(color=color, dash=dash),
                                 hovertemplate=hover.replace("{what}", "rank %{y:,} of the vocabulary")), row=2, col=1)
    fig = _layout(fig, f"Logit lens on '{_html(lens.target_token)}', the first token of '{_html(lens.target)}'",
                  "", "", height=520)
    fig.update_yaxes(title_text="p(target's first token)", range=[-0.03, 1.03], row=1, col=1)
    fig.update_yaxes(title_text="rank (1 = top)", type="log", autorange="reversed", row=2, col=1)
    fig.update_xaxes(title_text="layer (its output read through the final norm and LM head)", row=2, col=1)
    return fig


def overhead_figure(points: list[OverheadPoint]) -> go.Figure:
    """Per-token latency and time to first token (ms, left axis) and KV-cache MB (right axis) vs P.

    One set of three lines per prompt length T; dashes mark the cache, the memory axis.
    """
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for i, T in enumerate(sorted({p.T for p in points})):
        row = sorted((p for p in points if p.T == T), key=lambda p: p.P)
        x = [p.P for p in row]
        tag = f" (T={T})"
        for j, (name, y, spans) in enumerate((("per token", [p.per_token_s for p in row],
                                               [p.per_token_range_s for p in row]),
                                              ("first token", [p.ttft_s for p in row], [p.ttft_range_s for p in row]))):
            # the median of the repeats, with a bar from the fastest to the slowest: the spread is part of the number
            bars = dict(type="data", symmetric=False, array=[1000 * (hi - m) for m, (_, hi) in zip(y, spans)],
                        arrayminus=[1000 * (m - lo) for m, (lo, _) in zip(y, spans)], thickness=1)
            fig.add_trace(go.Scatter(
                x=x, y=[1000 * v for v in y], mode="lines+markers", name=name + tag, error_y=bars,
                line=dict(color=COLORS[(2 * i + j) % len(COLORS)]), customdata=[[1000 * a, 1000 * b] for a, b in spans],
                hovertemplate=f"{name}{tag}<br>P = %{{x}}<br>median %{{y:.1f}} ms<br>fastest to slowest: "
                              "%{customdata[0]:.1f}-%{customdata[1]:.1f} ms<extra></extra>"), secondary_y=False)
        fig.add_trace(go.Scatter(
            x=x, y=[p.kv_bytes_measured / 1e6 for p in row], mode="lines+markers", name="KV cache" + tag,
            line=dict(color=COLORS[(4 + i) % len(COLORS)], dash="dash"),
            hovertemplate=f"KV cache{tag}<br>P = %{{x}}<br>%{{y:.2f}} MB<extra></extra>"), secondary_y=True)
    fig.update_yaxes(title_text="latency (ms)", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="KV cache (MB)", rangemode="tozero", showgrid=False, secondary_y=True)
    n = row[0].repeats if row else 1
    fig = _layout(fig, f"What a prefix costs at inference (median of {n} runs, bars: fastest to slowest)",
                  "virtual tokens P", "latency (ms)")
    return legend_under(fig, [t.name for t in fig.data])


def compare_figure(curves: dict[str, list[StepRecord]], metric_label: str, x: str = "step",
                   baselines: dict[str, float] | None = None, starts: dict[str, float] | None = None,
                   y: str = "metric", held_out: str = "", interval=None) -> go.Figure:
    """One line per trained method: the held-out metric (y="metric") against optimizer steps (x="step") or
    seconds of training (x="time"), from its metric at init (``starts``: step 0, 0 s); untrained baselines
    as dashed lines. With y="loss", the training loss per step instead (cross-entropy on the answer tokens).

    ``held_out`` names the examples (e.g. "n = 24, validation"); ``interval(p) -> (lo, hi)``, given for a
    proportion metric, adds each point's 95% interval to its hover text.
    """
    fig = go.Figure()
    if y == "metric":
        for i, (name, value) in enumerate((baselines or {}).items()):
            # alternate sides so that equal baselines don't print on top of each other
            fig.add_hline(y=100 * value, line_dash="dash", line_color=COLORS[(len(curves) + i) % len(COLORS)],
                          annotation_text=f"{name}: {100 * value:.1f}%",
                          annotation_position="top left" if i % 2 == 0 else "bottom right")
    for i, (name, records) in enumerate(curves.items()):
        color = COLORS[i % len(COLORS)]
        if y == "loss":
            fig.add_trace(go.Scatter(x=[r.step for r in records], y=[r.loss for r in records], mode="lines+markers",
                                     name=name, line=dict(color=color),
                                     hovertemplate=f"{name}<br>step %{{x}}<br>loss %{{y:.4f}}<extra></extra>"))
            continue
        pts = [(0, 0.0, starts[name])] if starts and name in starts else []
        pts += [(r.step, r.elapsed, r.metric) for r in records if r.metric is not None]
        ms = [m for _, _, m in pts]
        lohi = [interval(m) for m in ms] if interval else [(m, m) for m in ms]
        unit = "step %{x}" if x == "step" else "%{x:.1f} s"
        band = "<br>95% interval %{customdata[0]:.0f}–%{customdata[1]:.0f}%" if interval else ""
        fig.add_trace(go.Scatter(
            x=[p[0] if x == "step" else p[1] for p in pts], y=[100 * m for m in ms], mode="lines+markers", name=name,
            line=dict(color=color), customdata=[[100 * lo, 100 * hi] for lo, hi in lohi],
            hovertemplate=f"{name}<br>{unit}<br>%{{y:.1f}}%{band}<br>{held_out}<extra></extra>"))
    last = max((r.step for rs in curves.values() for r in rs), default=1)
    if y == "loss" or x == "step":
        fig.update_xaxes(**step_ticks(last))
    if y == "loss":
        return legend_under(_layout(fig, "Training loss vs step", "step", "loss (cross-entropy)"), curves)
    fig.update_yaxes(range=[-3, 103])
    what = "step" if x == "step" else "seconds of training"
    _layout(fig, f"Held-out {metric_label} vs {what}" + (f"<br><sup>{held_out}</sup>" if held_out else ""), what,
            f"{metric_label} (%)")
    if held_out:
        fig.update_layout(margin=dict(t=64))  # room for the title's second line
    return legend_under(fig, curves)  # the baselines are labelled lines, not legend entries


def _spread(values: list[float]) -> tuple[float, float, float]:
    """(mean, mean - min, max - mean): a point with asymmetric error bars spanning every seed."""
    mean = sum(values) / len(values)
    return mean, mean - min(values), max(values) - mean


def seeds_curve_figure(runs_by_method: dict[str, list[dict]], metric_label: str, x: str = "step") -> go.Figure:
    """The Compare CLI's curves over seeds: mean held-out metric per method, error bars from the worst
    to the best seed, against steps (x="step") or mean seconds of training (x="time").

    ``runs_by_method``: ``compare.to_json``'s output (method -> one dict per seed, with "records").
    """
    from .methods import METHODS

    fig = go.Figure()
    for i, (name, runs) in enumerate(runs_by_method.items()):
        color = COLORS[i % len(COLORS)]
        label = METHODS[name].name if name in METHODS else name
        if not any(r["records"] for r in runs):  # untrained baseline: a dashed line at its mean
            mean, _, _ = _spread([100 * r["metric"] for r in runs])
            fig.add_hline(y=mean, line_dash="dash", line_color=color, annotation_text=f"{label}: {mean:.1f}%",
                          annotation_position="top left")
            continue
        steps = sorted({rec["step"] for r in runs for rec in r["records"] if rec["metric"] is not None})
        xs, ys, lo, hi = [], [], [], []
        for st in steps:
            at = [rec for r in runs for rec in r["records"] if rec["step"] == st and rec["metric"] is not None]
            m, dlo, dhi = _spread([100 * rec["metric"] for rec in at])
            xs.append(st if x == "step" else sum(rec["elapsed"] for rec in at) / len(at))
            ys.append(m), lo.append(dlo), hi.append(dhi)
        unit = "step %{x}" if x == "step" else "%{x:.1f} s"
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=label, line=dict(color=color),
                                 error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo),
                                 hovertemplate=f"{label}<br>{unit}<br>mean %{{y:.1f}}%<extra></extra>"))
    fig.update_yaxes(range=[-3, 103])
    what = "step" if x == "step" else "seconds of training (mean over seeds)"
    n = max(len(r) for r in runs_by_method.values())
    return _legend_below(_layout(fig, f"Held-out {metric_label} vs {what.split(' (')[0]}: mean of {n} seeds, bars "
                                 "from worst to best", what, f"{metric_label} (%)", height=440))


def ablation_figure(points: list, metric_label: str, x_label: str, log_x: bool = False,
                    bars: bool = False) -> go.Figure:
    """One ablation study: the metric after training per series against the swept value, as the mean
    over seeds with error bars from the worst to the best seed. ``points``: ``experiments.Point`` list."""
    fig = go.Figure()
    series = list(dict.fromkeys(p.series for p in points))
    for i, name in enumerate(series):
        pts = [p for p in points if p.series == name]
        err = dict(type="data", symmetric=False, array=[100 * (p.hi - p.mean) for p in pts],
                   arrayminus=[100 * (p.mean - p.lo) for p in pts])
        xs = [f"{p.x:g}" for p in pts] if bars else [p.x for p in pts]
        common = dict(x=xs, y=[100 * p.mean for p in pts], name=name, error_y=err,
                      customdata=[[100 * p.lo, 100 * p.hi, p.n, 100 * p.start] for p in pts],
                      hovertemplate=f"{name}<br>{x_label} %{{x}}<br>mean %{{y:.1f}}% (seeds: %{{customdata[0]:.1f}}–"
                                    "%{customdata[1]:.1f}, n=%{customdata[2]})<br>before training "
                                    "%{customdata[3]:.1f}%<extra></extra>")
        if bars:
            fig.add_trace(go.Bar(marker_color=COLORS[i % len(COLORS)], **common))
        else:
            fig.add_trace(go.Scatter(mode="lines+markers", line=dict(color=COLORS[i % len(COLORS)]), **common))
    if bars:
        fig.update_layout(barmode="group")
        fig.update_xaxes(type="category")
    elif log_x:
        fig.update_xaxes(type="log")
    fig.update_yaxes(range=[-3, 103])
    n = max(p.n for p in points)
    return _legend_below(_layout(fig, f"Held-out {metric_label} after training vs {x_label}: mean of {n} seeds, "
                                 "bars from worst to best", x_label, f"{metric_label} (%)", height=440))


def loss_curves_figure(runs: list[dict]) -> go.Figure:
    """Training loss per step of every seed, one panel per learning rate, one color per series:
    how smooth (stable) or jumpy each way of optimizing is. ``runs``: ``experiments.Run`` dicts."""
    xs = sorted({r["x"] for r in runs})
    series = list(dict.fromkeys(r["series"] for r in runs))
    fig = make_subplots(rows=1, cols=len(xs), shared_yaxes=True, subplot_titles=[f"lr {x:g}" for x in xs])
    for col, x in enumerate(xs, 1):
        for i, name in enumerate(series):
            for j, r in enumerate(r for r in runs if r["x"] == x and r["series"] == name):
                fig.add_trace(go.Scatter(
                    x=[c[0] for c in r["curve"]], y=[c[1] for c in r["curve"]], mode="lines", name=name,
                    legendgroup=name, showlegend=col == 1 and j == 0, line=dict(color=COLORS[i % len(COLORS)], width=1),
                    hovertemplate=f"{name}, seed {r['seed']}<br>step %{{x}}<br>loss %{{y:.3f}}<extra></extra>"),
                    row=1, col=col)
    losses = [c[1] for r in runs for c in r["curve"] if c[1] is not None and c[1] > 0]
    fig.update_yaxes(type="log", **log_ticks(losses))
    fig.update_xaxes(**step_ticks(max((c[0] for r in runs for c in r["curve"]), default=1)))
    n = len({r["seed"] for r in runs})
    fig = _layout(fig, f"Training loss (log scale) of {'every one of ' + str(n) + ' seeds' if n > 1 else 'one seed'}",
                  "step", "loss (cross-entropy)", height=400)
    # the panels' titles sit just above each plot: leave them room under the figure's title
    fig.update_layout(margin=dict(t=72))
    return legend_under(fig, series)


def log_ticks(values: list[float], at_values: bool = False) -> dict:
    """Tick settings for a log axis with a few readable labels: the values themselves (``at_values``,
    for a handful of swept settings) or 1, 2, 5 x 10^k across their range; {} when there is nothing to mark."""
    vals = sorted({v for v in values if v and v > 0 and math.isfinite(v)})
    if not vals:
        return {}
    if at_values:
        ticks = vals
    else:
        lo, hi = math.floor(math.log10(vals[0])), math.ceil(math.log10(vals[-1]))
        ticks = [m * 10**k for k in range(lo, hi + 1) for m in (1, 2, 5)]
        inside = [t for t in ticks if vals[0] <= t <= vals[-1]]
        if len(inside) < 3:  # a narrow range (7 to 18, say): finer steps, or one label would be all there is
            ticks = [round(m * 10**k, 12) for k in range(lo, hi + 1) for m in (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9)]
            inside = [t for t in ticks if vals[0] <= t <= vals[-1]]
        below, above = [t for t in ticks if t < vals[0]][-1:], [t for t in ticks if t > vals[-1]][:1]
        ticks = below + inside + above  # one tick beyond each end, so the data sits between labels
        if len(ticks) > 8:  # a wide range: powers of ten only
            ticks = [10.0**k for k in range(lo, hi + 1)]
    return dict(tickvals=ticks, ticktext=[f"{t:g}" for t in ticks], minor=dict(showgrid=False))


def step_ticks(last: int) -> dict:
    """Whole steps only on a step axis: a tick every 1, 2, 5, 10, ... steps, about 10 of them at most."""
    return dict(tick0=0, dtick=next(d for k in range(12) for d in (10**k, 2 * 10**k, 5 * 10**k) if last / d <= 10))


LEGEND_WIDTH = 360  # px: the narrowest plot the legend must fit across (a half-width plot on a 1280 px screen)


def legend_under(fig: go.Figure, names) -> go.Figure:
    """A horizontal legend in the figure's bottom margin, under the x-axis title, so it never reaches the
    title at the top; the margin grows with the rows the names need at the narrowest width the app shows."""
    rows, used = 1, 0
    for name in names:
        w = 40 + 7 * len(str(name))  # the symbol and a 12 px label
        if used and used + w > LEGEND_WIDTH:
            rows, used = rows + 1, 0
        used += w
    fig.update_layout(showlegend=True,  # even for one line: the legend is where its name is read
                      legend=dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0, xanchor="left",
                                  font=dict(size=12)),
                      margin=dict(b=72 + 22 * rows), height=(fig.layout.height or HEIGHT) + 22 * rows)
    return fig


def _legend_below(fig: go.Figure) -> go.Figure:
    """Long titles and many series: the legend goes under the x axis instead of beside the title."""
    fig.update_layout(legend=dict(orientation="h", y=-0.18, yanchor="top", x=0, xanchor="left"),
                      margin=dict(l=60, r=20, t=48, b=90))
    return fig


def write_figures(figs: dict[str, go.Figure], out_dir, png: bool = True, html: bool = True, width: int = 1000,
                  height: int = 440) -> list:
    """Write each figure as interactive HTML (plotly.js once, beside them; with ``html=False``, in a
    temporary folder) and, with ``png`` and Debian's Chromium at ``CHROMIUM``, as PNG screenshots of
    that HTML. Returns the paths written. Plotly's own image export needs kaleido and a Chrome download."""
    import tempfile
    from pathlib import Path

    from .browser import CHROMIUM, CHROMIUM_ARGS

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="pg-figs-") as tmp:
        pages = out if html else Path(tmp)
        for name, fig in figs.items():
            path = pages / f"{name}.html"
            fig.write_html(str(path), include_plotlyjs="directory", full_html=True)
            written += [path] if html else []
        if not png or not figs or not Path(CHROMIUM).exists():
            return written
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": width, "height": height})
            for name in figs:
                page.goto((pages / f"{name}.html").resolve().as_uri())
                page.wait_for_selector(".main-svg")
                path = out / f"{name}.png"
                page.locator(".js-plotly-plot").first.screenshot(path=str(path))
                written.append(path)
            browser.close()
    return written


def kv_cache_figure(rows: list, metric_label: str = "score") -> go.Figure:
    """Per way of prompting (``kvlesson.CacheRow``), its head's length in key/value positions per layer:
    cached once (solid) and prompt tokens run on every query (light), with the score and latency beside it."""
    rows = list(reversed(rows))  # plotly draws horizontal bars bottom-up: the first row goes on top
    names = [r.label for r in rows]
    fig = go.Figure()
    for part, color, values in (("cached: computed once, reused by every query", COLORS[1],
                                 [r.cached_positions for r in rows]),
                                ("prompt tokens: computed on every query", COLORS[4], [r.prompt_tokens for r in rows])):
        fig.add_trace(go.Bar(y=names, x=values, name=part, orientation="h", marker_color=color,
                             hovertemplate="%{y}<br>%{x} positions " + part.split(":")[0] + "<extra></extra>"))
    longest = max((r.cached_positions + r.prompt_tokens for r in rows), default=0)
    for r in rows:
        lo, hi = r.ms_quartiles
        fig.add_annotation(
            y=r.label, x=r.cached_positions + r.prompt_tokens, xanchor="left", showarrow=False, xshift=8,
            font=dict(size=15),
            text=f"<b>{100 * r.score:.1f}%</b> (n={r.n}, {r.split}) · <b>{r.ms_median:.0f} ms</b>/query "
                 f"({lo:.0f}–{hi:.0f})")
    fig.update_layout(barmode="stack", font=dict(size=15), bargap=0.35)
    fig.update_xaxes(range=[0, 2.1 * max(longest, 1)])  # room for the annotations right of the longest bar
    _layout(fig, f"Key/value positions per layer before each query, with held-out {metric_label} and latency",
            "key/value positions in every layer", "", height=380)
    return _legend_below(fig)


# ---- the per-layer ablation of a prefix (ablation.py) -------------------------------------------------------------
ABLATION_REFERENCES = (("full", "full prefix", COLORS[2], "dash"), ("none", "no prefix", "#777777", "dot"),
                       ("zero", "zero prefix", COLORS[5], "dashdot"))


def _ablation_panels(ab: Ablation, series: list[tuple[str, list[AblationRow], str]], title: str,
                     x_label: str) -> go.Figure:
    """Two panels over one x axis: the metric (%) and the mean target log-prob (error bars: the std over
    examples), one line per series, and the three references as flat lines across both."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1)
    metric = METRIC_LABELS.get(ab.metric, ab.metric)
    xs = [r.x for _, rows, _ in series for r in rows]
    span = [min(xs), max(xs)] if xs else [0, 1]
    for name, rows, color in series:
        data = [[r.label, r.logprob_std, r.n] for r in rows]
        x = [r.x for r in rows]
        fig.add_trace(go.Scatter(
            x=x, y=[100 * r.metric for r in rows], mode="lines+markers", name=name, legendgroup=name,
            line=dict(color=color), customdata=data,
            hovertemplate="%{customdata[0]}<br>" + metric + " %{y:.1f}% (n=%{customdata[2]})<extra></extra>"),
            row=1, col=1)
        fig.add_trace(go.Scatter(
            x=x, y=[r.logprob_mean for r in rows], mode="lines+markers", name=name, legendgroup=name,
            showlegend=False, line=dict(color=color), customdata=data,
            error_y=dict(type="data", array=[r.logprob_std for r in rows], thickness=1, width=3),
            hovertemplate="%{customdata[0]}<br>mean log p(target) %{y:.3f} (std %{customdata[1]:.3f}, "
                          "n=%{customdata[2]})<extra></extra>"), row=2, col=1)
    for key, name, color, dash in ABLATION_REFERENCES:
        r = ab.row(key)
        line = dict(color=color, dash=dash, width=1.5)
        fig.add_trace(go.Scatter(x=span, y=[100 * r.metric] * 2, mode="lines", name=name, legendgroup=name, line=line,
                                 hovertemplate=f"{r.label}: {100 * r.metric:.1f}% (n={r.n})<extra></extra>"),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=span, y=[r.logprob_mean] * 2, mode="lines", name=name, legendgroup=name,
                                 showlegend=False, line=line,
                                 hovertemplate=f"{r.label}: mean log p(target) {r.logprob_mean:.3f} "
                                               f"(std {r.logprob_std:.3f}, n={r.n})<extra></extra>"), row=2, col=1)
    fig = _layout(fig, f"{title} (n = {ab.n}, {ab.split})", "", "", height=560)
    fig.update_yaxes(title_text=f"{metric} (%)", range=[-3, 103], row=1, col=1)
    fig.update_yaxes(title_text="mean log p(target)", row=2, col=1)
    fig.update_xaxes(title_text=x_label, dtick=max(1, ab.num_layers // 10), row=2, col=1)
    return legend_under(fig, [n for n, _, _ in series] + [n for _, n, _, _ in ABLATION_REFERENCES])


def ablation_layer_figure(ab: Ablation) -> go.Figure:
    """The prefix removed from one layer at a time: the metric and the target's log-prob per layer dropped."""
    return _ablation_panels(ab, [("without this layer", ab.group("drop"), COLORS[0])],
                            "The prefix removed from one layer", "layer whose attention cannot see the prefix")


def ablation_depth_figure(ab: Ablation) -> go.Figure:
    """The prefix kept only below depth k, or only from k up: the metric and the target's log-prob per k."""
    return _ablation_panels(ab, [("only in layers below k", ab.group("below"), COLORS[3]),
                                 ("only in layers from k up", ab.group("from"), COLORS[4])],
                            "The prefix kept in some layers only", "depth k")

