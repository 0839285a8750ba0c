"""A class's training runs side by side: one plot of every run, the settings that differ, and a leaderboard.

Pure functions from run records (plain dicts) to ``go.Figure`` and table rows; no gradio. A run record::

    {"run_id": "20261126-231500-alex-3fa2c1", "author": "alex",
     "task": "sentiment", "task_title": "Sentiment (positive/negative)", "metric": "exact_match",
     "state": "running" | "finished" | "stopped", "steps_done": 12,
     "start_metric": 0.25 | None,  # held-out metric of the initialized prefix (step 0), a fraction
     "final_metric": 0.8 | None,   # held-out metric after training, a fraction
     "held_out": {"split": "validation", "n": 32},
     "prefix_settings": {"num_virtual_tokens": 20, "init": "task", "init_text": "", "prefix_projection": False,
                         "encoder_hidden_size": 256, "init_shots": 4},
     "train_settings": {"learning_rate": 0.01, "steps": 20, "batch_size": 8, "seed": 0, "eval_every": 5,
                        "eval_examples": 32, "precision": "auto"},
     "forked_from": "", "started": 1795734900.0,  # epoch seconds
     "steps": [{"step": 1, "loss": 2.31, "metric": None, "elapsed": 0.8}, ...]}  # "metric" on evaluation steps

Missing keys read as empty, so a record written by an older version still draws.
"""

from __future__ import annotations

import functools
import html
import math
import time

import plotly.colors
import plotly.graph_objects as go
import plotly.io as pio

from .metrics import METRIC_LABELS

# 48 distinct colors: a class's worth of runs, each its own line
PALETTE = tuple(plotly.colors.qualitative.Dark24) + tuple(plotly.colors.qualitative.Light24)
NO_VALUE = "—"
PREFIX_FIELDS = ("num_virtual_tokens", "init", "init_text", "prefix_projection", "encoder_hidden_size", "init_shots")
TRAIN_FIELDS = ("learning_rate", "steps", "batch_size", "seed", "eval_every", "eval_examples", "precision")


def _prefix(run: dict) -> dict:
    return run.get("prefix_settings") or {}


def _train(run: dict) -> dict:
    return run.get("train_settings") or {}


def _lr(x) -> str:
    """A learning rate as a power of ten: 0.01 -> "1e-2", 0.003 -> "3e-3", 0.015 -> "1.5e-2"."""
    if not isinstance(x, (int, float)) or isinstance(x, bool) or not x > 0 or not math.isfinite(x):
        return str(x)
    e = math.floor(math.log10(x))
    m = round(x / 10**e, 3)  # 0.003 / 1e-3 is 3.0000000000000004
    if m >= 10:
        m, e = round(m / 10, 3), e + 1
    return f"{m:g}e{e}"


def settings_text(run: dict) -> str:
    """One line with what a run was trained on and how, e.g.
    "sentiment · 20 virtual tokens · init task · lr 1e-2 · 20 steps · batch 8 · seed 0" (+ "· MLP 256"
    when the prefix trains through an MLP, + "· forked" for a run forked from another)."""
    p, t = _prefix(run), _train(run)
    init = p.get("init", "?")
    if init == "demos":
        init = f"demos ({p.get('init_shots', '?')} shots)"
    elif init == "text":
        text = " ".join(str(p.get("init_text", "")).split())
        init = f"text “{text[:24]}…”" if len(text) > 24 else f"text “{text}”"
    parts = [str(run.get("task", "?")), f"{p.get('num_virtual_tokens', '?')} virtual tokens", f"init {init}",
             f"lr {_lr(t.get('learning_rate', '?'))}", f"{t.get('steps', '?')} steps",
             f"batch {t.get('batch_size', '?')}", f"seed {t.get('seed', '?')}"]
    if p.get("prefix_projection"):
        parts.append(f"MLP {p.get('encoder_hidden_size', '?')}")
    if run.get("forked_from"):
        parts.append("forked")
    return " · ".join(parts)


def run_label(run: dict) -> str:
    """Who and when: "alex · 23:15" (the author and the local time the run started)."""
    author = str(run.get("author") or "anonymous")
    started = run.get("started")
    return f"{author} · {time.strftime('%H:%M', time.localtime(started))}" if started is not None else author


def run_labels(runs: list[dict]) -> list[str]:
    """``run_label`` of each run, made unique: runs of one author started in the same minute also get the
    end of their run_id ("alex · 23:15 · 3fa2c1"), so every legend entry and table row names one run."""
    plain = [run_label(r) for r in runs]
    labels = list(plain)
    for i, label in enumerate(plain):
        if plain.count(label) > 1:
            tail = str(runs[i].get("run_id", "")).rsplit("-", 1)[-1]
            labels[i] = f"{label} · {tail}" if tail else label
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):  # same run_id twice: number the repeats
        seen[label] = seen.get(label, 0) + 1
        labels[i] = label if seen[label] == 1 else f"{label} #{seen[label]}"
    return labels


def _held_out(run: dict) -> tuple:
    h = run.get("held_out") or {}
    return h.get("split"), h.get("n")


def _pct(value, run: dict, split: bool = True) -> str:
    """The held-out metric as "81.2% (n = 32, validation)"; "—" before it is measured."""
    if value is None:
        return NO_VALUE
    s, n = _held_out(run)
    where = ", ".join(x for x in (f"n = {n}" if n is not None else "", str(s) if split and s else "") if x)
    return f"{100 * value:.1f}%" + (f" ({where})" if where else "")


def runs_figure(runs: list[dict], what: str = "loss") -> go.Figure:
    """Every run as one line, overlaid: the training loss per step (``what="loss"``) or the held-out metric in
    % (``what="metric"``) from step 0 (the initialized prefix) through each evaluation step. Running runs are
    dotted and marked "(running)"; hovering a point shows the run, its settings, the step and the exact value.
    Colors follow the order of ``runs``: pass them in a stable order (by start time) to keep each run's color.

    The teacher's view redraws this every few seconds beside the training, so it is built as plain dicts and
    handed to plotly unvalidated (``_validate=False``): 30 runs cost ~3 ms instead of ~25 ms of validation,
    time the scheduler's worker would otherwise wait for the GIL. The dicts use plotly's own attribute names
    (the unit tests read them back through ``fig.data`` and ``fig.layout``)."""
    if what not in ("loss", "metric"):
        raise ValueError(f"what must be 'loss' or 'metric'; got {what!r}")
    if not runs:
        title = "No runs yet: train a prefix and it appears here" if what == "loss" else \
            "No runs yet: a run's held-out metric appears here once it is measured"
        y = {"range": [0, 100]} if what == "metric" else {}
        return _figure([], title, {"range": [0, 20], "dtick": 5}, "step", y,
                       "loss" if what == "loss" else "held-out metric (%)", 0)
    last, traces = 1, []
    for i, (run, label) in enumerate(zip(runs, run_labels(runs))):
        steps = run.get("steps") or []
        if what == "loss":
            pts = [(s["step"], s["loss"]) for s in steps if s.get("loss") is not None]
            value = "loss %{y:.4f}"
        else:
            pts = ([(0, 100 * run["start_metric"])] if run.get("start_metric") is not None else []) + \
                  [(s["step"], 100 * s["metric"]) for s in steps if s.get("metric") is not None]
            value = f"{html.escape(METRIC_LABELS.get(run.get('metric'), str(run.get('metric'))))} %{{y:.2f}}%"
        running = run.get("state") == "running"
        last = max([last, _train(run).get("steps") or 0] + [x for x, _ in pts])
        traces.append(dict(
            type="scatter", x=[x for x, _ in pts], y=[y for _, y in pts], mode="lines+markers",
            name=label + (" (running)" if running else ""),
            line=dict(color=PALETTE[i % len(PALETTE)], dash="dot" if running else "solid"),
            # the names and settings travel as meta, so no character of theirs is read as template syntax
            meta=[html.escape(label), html.escape(settings_text(run)), run.get("state", "")],
            hovertemplate="<b>%{meta[0]}</b> (%{meta[2]})<br>%{meta[1]}<br>step %{x}<br>" + value + "<extra></extra>"))
    # whole steps only: a tick every 1, 2, 5, 10, ... steps, about 10 of them at most
    dtick = next(d for k in range(12) for d in (10**k, 2 * 10**k, 5 * 10**k) if last / d <= 10)
    xaxis = {"range": [-0.5, last + 0.5], "tick0": 0, "dtick": dtick}
    if what == "loss":
        return _figure(traces, f"Training loss per step, {_count(runs)}", xaxis, "step", {},
                       "loss (cross-entropy on the answer)", len(runs))
    metrics = list(dict.fromkeys(r.get("metric") for r in runs))
    names = [METRIC_LABELS.get(m, str(m)) for m in metrics]
    held = {_held_out(r) for r in runs}
    split, n = held.pop() if len(held) == 1 else (None, None)
    where = ", ".join(x for x in (split, f"n = {n}") if x) if n is not None else "n varies" if held else ""
    where = f" ({where})" if where else ""  # one run not yet measured: no held-out set to name
    if len(metrics) == 1:
        title, y = f"Held-out {names[0]}{where}, {_count(runs)}", f"{names[0]} (%)"
    else:
        title, y = f"Held-out score{where}, {_count(runs)}", f"score (%), mixed metrics: {', '.join(names)}"
    return _figure(traces, title, xaxis, "step (0: the prefix before training)", {"range": [-3, 103]}, y, len(runs))


def _count(runs: list[dict]) -> str:
    running = sum(r.get("state") == "running" for r in runs)
    return f"{len(runs)} run{'s' if len(runs) != 1 else ''}" + (f" ({running} running)" if running else "")


@functools.cache
def _template() -> go.layout.Template:
    return pio.templates["plotly_white"]  # the object: an unvalidated layout keeps a template name as a string


def _figure(traces: list[dict], title: str, xaxis: dict, x: str, yaxis: dict, y: str, n: int) -> go.Figure:
    """The app's look, with a legend right of the plot, one run a row: the figure grows with the runs so up
    to ~30 names stay readable."""
    layout = dict(title=dict(text=title, x=0.01), xaxis={**xaxis, "title": {"text": x}},
                  yaxis={**yaxis, "title": {"text": y}}, template=_template(), height=max(360, 120 + 20 * n),
                  margin=dict(l=60, r=20, t=48, b=48), showlegend=n > 0,
                  legend=dict(orientation="v", x=1.02, xanchor="left", y=1, yanchor="top", font=dict(size=12),
                              tracegroupgap=0))
    return go.Figure({"data": traces, "layout": layout}, _validate=False)


def _effective(run: dict) -> dict:
    """The settings that shaped a run: a field its other settings leave unused (the MLP's width with no MLP,
    the init text of a prefix started from the task) reads as "—", so it never shows as a difference."""
    p, t = _prefix(run), _train(run)
    out = {"task": run.get("task"), "metric": run.get("metric")}
    out.update({k: p.get(k) for k in PREFIX_FIELDS})
    if "prefix_settings" in run:
        out["encoder_hidden_size"] = p.get("encoder_hidden_size") if p.get("prefix_projection") else NO_VALUE
        out["init_text"] = p.get("init_text") if p.get("init") == "text" else NO_VALUE
        out["init_shots"] = p.get("init_shots") if p.get("init") == "demos" else NO_VALUE
    out.update({k: t.get(k) for k in TRAIN_FIELDS})
    out["forked_from"] = run.get("forked_from") or NO_VALUE
    return out


def _cell(field: str, value) -> str:
    if value is None:
        return NO_VALUE
    if field == "learning_rate":
        return _lr(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_diff(runs: list[dict]) -> tuple[list[str], list[list]]:
    """Headers and rows comparing the selected runs on only the settings that differ among them (task, metric,
    each prefix and training setting, forked_from; PEFT's field names), one row per run, led by its label and
    closed by its held-out metric ("81.2% (n = 32)"). When nothing differs, one "same settings" column holds
    the settings they share."""
    labels = run_labels(runs)
    eff = [_effective(r) for r in runs]
    fields = [f for f in eff[0] if len({_cell(f, e.get(f)) for e in eff}) > 1] if eff else []
    if not fields:
        return (["run", "same settings", "held-out %"],
                [[lb, settings_text(r), _pct(r.get("final_metric"), r, split=False)] for lb, r in zip(labels, runs)])
    return (["run", *fields, "held-out %"],
            [[lb, *(_cell(f, e.get(f)) for f in fields), _pct(r.get("final_metric"), r, split=False)]
             for lb, r, e in zip(labels, runs, eff)])


LEADERBOARD_HEADERS = ["rank", "student", "task", "held-out %", "the strongest prompt, on the same examples", "state",
                       "steps", "settings"]


def strongest_prompt(run: dict) -> str:
    """The best way of answering without training in the run's final table (``summary``: the prompts, not the bare
    model or the prefix; ties: the one listed first, as ``baselines.strongest`` picks), with its score and its
    cost per query: "instruction + 4 examples: 78.1% · 112 prompt tokens"; "—" before the run is compared."""
    prompts = [r for r in run.get("summary") or [] if isinstance(r, dict) and r.get("key") not in ("base", "prefix")
               and isinstance(r.get("mean"), (int, float))]
    if not prompts:
        return NO_VALUE
    best = max(prompts, key=lambda r: r["mean"])  # max keeps the first of equal scores
    cost = best.get("prompt_tokens")
    return f"{best.get('label', best.get('key'))}: {100 * best['mean']:.1f}%" + \
        (f" · {cost} prompt tokens" if isinstance(cost, int) else "")


def leaderboard_rows(runs: list[dict]) -> tuple[list[str], list[list]]:
    """Headers and rows of the class leaderboard: per task (tasks in alphabetical order), runs ranked by their
    final held-out metric, best first; equal scores share a rank and keep the run started first on top; runs
    not yet measured come last with rank "—". Uploaded tasks with different examples (their records'
    ``data_fingerprint``) are ranked apart. Beside each run's score, the strongest prompt's on the same examples,
    with its cost (``strongest_prompt``): the prefix's own cost is its virtual tokens, in the settings.
    Columns: ``LEADERBOARD_HEADERS``."""
    def key(r: dict) -> tuple[str, str]:
        return str(r.get("task", "")), str(r.get("data_fingerprint", ""))

    rows = []
    for task, data in sorted({key(r) for r in runs}):
        mine = [r for r in runs if key(r) == (task, data)]
        # a stable sort: ties stay in start order
        mine.sort(key=lambda r: r.get("started") if r.get("started") is not None else math.inf)
        mine.sort(key=lambda r: -r["final_metric"] if r.get("final_metric") is not None else math.inf)
        rank, prev = 0, None
        for i, r in enumerate(mine):
            m = r.get("final_metric")
            if m is not None and m != prev:
                rank, prev = i + 1, m
            total = _train(r).get("steps")
            rows.append([rank if m is not None else NO_VALUE, str(r.get("author") or "anonymous"),
                         r.get("task_title") or task, _pct(m, r), strongest_prompt(r), r.get("state", ""),
                         f"{r.get('steps_done', 0)}/{total if total is not None else '?'}", settings_text(r)])
    return list(LEADERBOARD_HEADERS), rows
