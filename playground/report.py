"""The tables, Markdown and figure sets that the UI, the CLI and the docs show: pure functions from what
the engine measured (the loaded model, library cards, compare and experiments results). The engine computes;
this module only formats."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from .compare import MethodResult
from .experiments import aggregate
from .figures import ablation_figure, legend_under, log_ticks, loss_curves_figure, seeds_curve_figure
from .library import Library
from .methods import METHODS
from .metrics import METRIC_LABELS
from .models import BaseModel
from .prefix import PrefixSettings, parameter_counts
from .recipes import meets_bar, strongest_prompt


def model_rows(base: BaseModel, settings: PrefixSettings) -> list[list]:
    """The loaded model's live numbers, and the prefix's size at these settings."""
    trainable, exported = parameter_counts(base, settings)
    return [["model", base.name], ["device / dtype", f"{base.device.type} / {str(base.dtype).replace('torch.', '')}"],
            ["layers", base.num_layers], ["attention heads (query)", base.num_heads], ["kv heads", base.num_kv_heads],
            ["head dim", base.head_dim], ["parameters (frozen)", f"{base.num_parameters:,}"],
            ["virtual tokens", settings.num_virtual_tokens],
            ["trainable parameters", f"{trainable:,} ({100 * trainable / base.num_parameters:.3f}%)"],
            ["stored at export", f"{exported:,} ({100 * exported / base.num_parameters:.3f}%)"]]


def parameter_summary(base: BaseModel, settings: PrefixSettings) -> str:
    trainable, exported = parameter_counts(base, settings)
    pct = lambda n: f"{100 * n / base.num_parameters:.3f}%"  # noqa: E731
    if settings.prefix_projection:
        return (f"**Trainable while training:** {trainable:,} ({pct(trainable)} of the model, MLP included) · "
                f"**stored after export:** {exported:,} ({pct(exported)}): the MLP is dropped.")
    return f"**Trainable:** {trainable:,} parameters ({pct(trainable)} of the {base.num_parameters:,} frozen ones)."


LIBRARY_HEADERS = ["name", "with the prefix", "instruction only", "no prompt", "held out on", "measure", "task",
                   "virtual tokens", "base model", "owner", "saved (UTC)"]
SCORES = {"prefix": "with the prefix", "instruction": "instruction only", "base": "no prompt"}  # a card's metric keys


def _count(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n > 0


def held_out(m: dict) -> str:
    """Where a card's scores were measured: 'test, n = 60'; what the card lacks is said, never guessed."""
    split = m.get("split") if isinstance(m.get("split"), str) and m.get("split") else "split unknown"
    return f"{split}, n = {m['n']}" if _count(m.get("n")) else f"{split}, n unknown"


def measure(m: dict) -> str:
    """The metric's plain name; a mean score (ROUGE-L, F1) says why it has no Wilson interval."""
    metric = m.get("metric")
    if not isinstance(metric, str):
        return "–"
    label = METRIC_LABELS.get(metric, metric)
    return label if metric.startswith("exact_match") else f"{label} (a mean: no interval)"


def score_cell(m: dict, key: str) -> str:
    """One score of a card (``metrics`` or a split's block): the value, and for exact match on a known n its
    95% Wilson interval."""
    v = m.get(key)
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "–"
    out = f"{100 * v:.1f}%"
    if str(m.get("metric", "")).startswith("exact_match") and _count(m.get("n")):
        lo, hi = wilson(v, m["n"])
        out += f" (95% interval {100 * lo:.0f}–{100 * hi:.0f}%)"
    return out


def library_rows(library: Library, owner: str | None = None) -> list[list]:
    """The Library table (``LIBRARY_HEADERS``): the scores first, each beside the split and n it was measured on;
    the owner column says "shipped" (", writable" with ``writable_shipped``), or "yours" for ``owner``'s saves."""
    rows = []
    for e in library.entries():
        c, m = e.card, e.card.get("metrics") if isinstance(e.card.get("metrics"), dict) else {}
        scored = any(isinstance(m.get(k), (int, float)) for k in SCORES)
        who = (("shipped, writable" if library.writable_shipped else "shipped") if e.shipped
               else "yours" if library.owned_by(e, owner) else "")
        rows.append([e.name, *(score_cell(m, k) for k in SCORES), held_out(m) if scored else "–", measure(m),
                     str(c.get("task", "?")), c.get("num_virtual_tokens", "?"), str(c.get("base_model", "?")),
                     who, str(c.get("saved_at", ""))[:16].replace("T", " ")])  # date and minute: wraps between them
    return rows


def card_scores(card: dict) -> str:
    """Markdown: every score a card holds (its held-out metrics, then validation and fresh where present), each
    with its split, n and, for exact match, the 95% Wilson interval."""
    lines = []
    base = card.get("metrics") if isinstance(card.get("metrics"), dict) else {}
    for key in ("metrics", "validation", "fresh"):
        m = card.get(key)
        if not isinstance(m, dict):
            continue
        m = {"metric": base.get("metric"), **m}  # a split's block may leave out the metric: the card's own
        cells = [f"{label} **{score_cell(m, k)}**" for k, label in SCORES.items() if score_cell(m, k) != "–"]
        if cells:
            lines.append(f"- {held_out(m)}, {measure(m)}: " + " · ".join(cells))
    return "\n".join(lines) if lines else "No held-out scores on this card."


TABLE_HEADERS = ["method (PEFT's name)", "held-out metric", "trainable parameters", "stored at export",
                 "inference cost: latency per token, cache, prompt", "where it acts", "training time"]
PEFT_NAMES = {  # what each trained method is called in PEFT's documentation
    "prefix": "PrefixTuningConfig",
    "prefix_mlp": "PrefixTuningConfig, prefix_projection=True (an MLP of encoder_hidden_size units)",
    "prompt": "PromptTuningConfig",
    "lora": "LoraConfig",
}


def _per_token(method: str, seconds: float, unit: str = " ms/token") -> str:
    """Latency per generated token; label scoring generates none (one forward scores every label)."""
    return "– (no decoding)" if method == "label_scoring" else f"{1000 * seconds:.1f}{unit}"


def metric_cell(p: float, n: int, split: str, metric: str, start: float | None = None) -> str:
    """A held-out metric with what it rests on: '62.5% (n = 24, validation; 95% interval 43–79%)'. The Wilson
    interval is for proportions (exact match); a mean score (ROUGE-L, F1) says so instead."""
    where = f"n = {n}, {split}" if n else split or "n unknown"
    if metric.startswith("exact_match") and n:
        lo, hi = wilson(p, n)
        where += f"; 95% interval {100 * lo:.0f}–{100 * hi:.0f}%"
    elif metric:
        where += "; a mean score, no interval"
    return f"{100 * p:.1f}% ({where})" + (f"; {100 * start:.1f}% at init" if start is not None else "")


def _latency(method: str, median: float, spread: tuple[float, float] | None, repeats: int) -> str:
    """Median latency per token with its 25th–75th percentile over the timed repeats."""
    cell = _per_token(method, median)
    if spread is None or method == "label_scoring":
        return cell
    return f"{cell} (median of {repeats}; 25th–75th percentile {1000 * spread[0]:.1f}–{1000 * spread[1]:.1f})"


def table_rows(results: list[MethodResult], base: BaseModel) -> list[list[str]]:
    """The comparison table (``TABLE_HEADERS``), measured: the metric first, then sizes, inference cost, where."""
    n = base.num_parameters
    rows = []
    for r in results:
        info = METHODS[r.method]
        merged = "" if r.per_token_merged_s is None else (
            f"; merged into the weights: {_latency(r.method, r.per_token_merged_s, r.per_token_merged_spread, r.timing_repeats)}")
        busy = " Timed while the machine was busy: noisy." if r.busy_note else ""
        name = info.name + (f" ({PEFT_NAMES[r.method]})" if r.method in PEFT_NAMES else "")
        rows.append([name, metric_cell(r.metric, r.n_eval, r.eval_split, r.metric_name, r.start_metric),
                     f"{r.trainable:,} ({100 * r.trainable / n:.3f}%)",
                     f"{r.stored:,} ({100 * r.stored / n:.3f}%), {r.stored_bytes / 1e6:.2f} MB file",
                     f"{_latency(r.method, r.per_token_s, r.per_token_spread, r.timing_repeats)}{merged}.{busy} "
                     f"+{r.extra_positions} KV positions ({r.kv_bytes_added / 1e6:.2f} MB), "
                     f"+{r.prompt_tokens_added} prompt tokens", info.where, f"{r.train_seconds:.1f} s"])
    return rows


def summary(results: dict[str, list[MethodResult]], base: BaseModel) -> str:
    """The table over seeds, in Markdown: metric as mean (min-max), latencies the median seed's, the rest seed 1's."""
    headers = TABLE_HEADERS + ["seeds"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for n, runs in results.items():
        typical = sorted(runs, key=lambda r: r.per_token_s)[len(runs) // 2]  # the median seed's timings
        row = table_rows([typical], base)[0]
        ms = [100 * r.metric for r in runs]
        if len(ms) > 1:
            row[1] = (f"{sum(ms) / len(ms):.1f}% ({min(ms):.1f}–{max(ms):.1f} over seeds; n = {typical.n_eval}, "
                      f"{typical.eval_split})")
        lines.append("| " + " | ".join(row + [str(len(runs))]) + " |")
    return "\n".join(lines)


X_LABEL = {"length": "virtual tokens", "init": "training examples", "mlp": "learning rate"}
ABLATION_HEADERS = ["series", "swept value", "after training (mean over seeds)", "worst–best seed",
                    "before training (at init)", "seeds"]


def ablation_rows(runs: list[dict], n: int = 0, split: str = "", metric: str = "") -> list[list]:
    """One row per cell over its seeds, for the Compare tab's ablation table; ``n`` held-out examples of
    ``split``, scored by ``metric`` (a key of metrics.METRICS), behind every number."""
    return [[p.series, f"{p.x:g}", metric_cell(p.mean, n, split, metric),
             f"{100 * p.lo:.1f}–{100 * p.hi:.1f}%" if p.n > 1 else "– (one seed)",
             metric_cell(p.start, n, split, metric), p.n] for p in aggregate(runs)]


def study_figure(runs: list[dict], study: str, metric_label: str, held_out: str = ""):
    """One study's metric after training against its swept value; with several seeds, their spread as error
    bars. ``held_out`` names the examples ("n = 24, validation")."""
    points = [p for p in aggregate(runs) if p.study == study]
    fig = ablation_figure(points, metric_label, X_LABEL[study], study != "init", bars=study == "init")
    seeds = max(p.n for p in points)
    spread = (f"mean of {seeds} seeds; error bars from the worst seed to the best" if seeds > 1 else
              "one seed, so no error bars (run 2 or 3 seeds to see the spread)")
    title = f"Held-out {metric_label} after training vs {X_LABEL[study]}<br><sup>{spread}" + (
        f"; {held_out}" if held_out else "") + "</sup>"
    fig.update_layout(title=dict(text=title), margin=dict(t=64))
    if seeds == 1:
        fig.update_traces(error_y=dict(visible=False))
    if study != "init":
        fig.update_xaxes(**log_ticks([p.x for p in points], at_values=True))
    return legend_under(fig, list(dict.fromkeys(p.series for p in points)))


def markdown_tables(data: dict) -> str:
    """The measured tables of every study in ``data`` (what docs/experiments.md quotes)."""
    s = data["settings"]
    lines = [f"Task `{s['task']}`, {s['steps']} steps of batch {s['batch_size']}, seeds {list(s['seeds'])}, "
             f"metric on the first {s['eval_examples']} examples of the {s['eval_split']} split; "
             "mean over seeds (min–max), and the same before training.", ""]
    if data.get("compare"):
        lines += ["### compare", "", "| method | metric | min–max | trainable | stored | file (MB) | ms/token* | "
                  "ms/token merged* | KV added (MB) | training s |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, runs in data["compare"].items():
            ms = [100 * r["metric"] for r in runs]
            first = runs[0]
            per_token = statistics.median(r["per_token_s"] for r in runs)  # the median seed: one noisy timing won't lead
            merged = (f"{1000 * statistics.median(r['per_token_merged_s'] for r in runs):.1f}"
                      if first.get("per_token_merged_s") else "–")
            lines.append(f"| {METHODS[name].name} | {sum(ms) / len(ms):.1f}% | {min(ms):.1f}–{max(ms):.1f} | "
                         f"{first['trainable']:,} | {first['stored']:,} | "
                         f"{first.get('stored_bytes', 0) / 1e6:.2f} | {_per_token(name, per_token, '')} | "
                         f"{merged} | {first['kv_bytes_added'] / 1e6:.2f} | "
                         f"{sum(r['train_seconds'] for r in runs) / len(runs):.1f} |")
        lines += ["", "*Median over seeds of the greedy latency per token (16 tokens, one prompt, prefill included).", ""]
    for study in ("length", "init", "mlp"):
        pts = [p for p in aggregate(data["runs"]) if p.study == study]
        if not pts:
            continue
        lines += [f"### {study}", "", f"| series | {X_LABEL[study]} | after training | min–max | std | "
                  "before training | final loss | seeds |", "|---|---|---|---|---|---|---|---|"]
        for p in pts:
            lines.append(f"| {p.series} | {p.x:g} | {100 * p.mean:.1f}% | {100 * p.lo:.1f}–{100 * p.hi:.1f} | "
                         f"{100 * p.std:.1f} | {100 * p.start:.1f}% | {p.final_loss:.3f} | {p.n} |")
        lines.append("")
    return "\n".join(lines)


def experiment_figures(data: dict) -> dict:
    """name -> plotly figure, with seed spread as error bars, for every study in ``data``."""
    metric = data.get("metric_label", "metric")
    out = {}
    if data.get("compare"):
        out["compare_steps"] = seeds_curve_figure(data["compare"], metric, "step")
        out["compare_time"] = seeds_curve_figure(data["compare"], metric, "time")
    for study in ("length", "init", "mlp"):
        runs = [r for r in data["runs"] if r["study"] == study]
        if runs:
            out[study] = study_figure(runs, study, metric)
        if runs and study == "mlp":
            out["mlp_curves"] = loss_curves_figure(runs)
    return out


TABLE_START, TABLE_END = "<!-- shipped-table:start -->", "<!-- shipped-table:end -->"


def _prompt_cell(row: dict | None) -> str:
    """The strongest prompt of a card's split: its score (spread over draws) and what it costs per query."""
    if row is None:
        return "–"
    scores = row["scores"]
    spread = f" ({100 * min(scores):.0f}–{100 * max(scores):.0f}, {len(scores)} draws)" if len(scores) > 1 else ""
    cost = (f"{row['kv_positions']} cached KV positions" if row["kv_positions"] else
            f"+{row['prompt_tokens']} prompt tokens")
    needs = f", {row['examples_needed']} examples" if row["examples_needed"] else ""
    return f"{row['label']}: {100 * row['mean']:.1f}{spread}; {cost}{needs}"


def readme_table(entries: list, total_seconds: float | None = None) -> str:
    """Markdown for prefixes/README.md from the cards in the library (shipped prefixes only)."""
    pct = lambda x: f"{100 * x:.1f}" if isinstance(x, (int, float)) else "–"  # noqa: E731
    rows = ["| prefix | metric (test n) | base | instruction | strongest prompt without training, test (cost per "
            "query) | **prefix** (cost: its virtual tokens) | fresh n: strongest prompt → prefix | bar met | "
            "validation | steps | train examples | train s | wall s | size |",
            "|---|---|---:|---:|---|---:|---|:---:|---:|---:|---:|---:|---:|---:|"]
    lessons = []
    for e in entries:
        c = e.card
        if c.get("source") != "shipped":
            continue
        m, f, v = c.get("metrics", {}), c.get("fresh") or {}, c.get("validation") or {}
        size = sum(p.stat().st_size for p in e.path.iterdir() if p.is_file())
        best_fresh = strongest_prompt(c, "fresh")
        fresh = f"{f['n']}: {pct(best_fresh and best_fresh['mean'])} → {pct(f.get('prefix'))}" if f else "–"
        bar = ("yes" if meets_bar(c) else "no") + (", a lesson" if c.get("lesson") else "")
        if c.get("lesson"):
            lessons.append(f"- `{e.name}`, a lesson in what a prefix cannot do: {c['lesson']}")
        rows.append(
            f"| `{e.name}` | {METRIC_LABELS.get(m.get('metric'), m.get('metric'))} ({m.get('n')}) | {pct(m.get('base'))} "
            f"| {pct(m.get('instruction'))} | {_prompt_cell(strongest_prompt(c, 'test'))} | **{pct(m.get('prefix'))}** "
            f"({c.get('num_virtual_tokens')} cached KV positions) | {fresh} | {bar} | {pct(v.get('prefix'))} "
            f"| {c.get('steps')} | {c.get('train_examples')} | {c.get('train_seconds')} | {c.get('wall_seconds')} "
            f"| {size / 1e6:.2f} MB |")
    out = "\n".join(rows) + "\n"
    if lessons:
        out += "\n" + "\n".join(lessons) + "\n"
    if total_seconds is not None:
        out += f"\nRetraining all of them took **{total_seconds / 60:.1f} minutes** of wall time.\n"
    return out


def write_readme(path: Path, library: Library, total_seconds: float | None = None) -> None:
    """Replace the table between the markers in ``path``, keeping the prose (and the last full run's total time)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else f"# Shipped prefixes\n\n{TABLE_START}\n{TABLE_END}\n"
    if TABLE_START not in text or TABLE_END not in text:
        text += f"\n{TABLE_START}\n{TABLE_END}\n"
    head, rest = text.split(TABLE_START, 1)
    old, tail = rest.split(TABLE_END, 1)
    if total_seconds is None:  # keep the last full run's figure
        m = re.search(r"\n\nRetraining all of them took .*\n", old)
        table = readme_table(library.entries()) + (m.group(0)[1:] if m else "")
    else:
        table = readme_table(library.entries(), total_seconds)
    path.write_text(f"{head}{TABLE_START}\n{table}{TABLE_END}{tail}", encoding="utf-8")


def baseline_cells(r: dict, metric: str = "") -> list[str]:
    """A baseline row (``BaselineResult.as_dict()``) as cells: label, score (spread over draws; for one draw of
    an exact-match ``metric``, its 95% Wilson interval), and its cost."""
    lo, hi = min(r["scores"]), max(r["scores"])
    draws = len(r["scores"])
    score = f"{100 * r['mean']:.1f}" + (f" ({100 * lo:.0f}–{100 * hi:.0f} over {draws} draws)" if draws > 1 else "")
    if draws == 1 and metric.startswith("exact_match"):  # a proportion: its interval on n examples
        lo, hi = wilson(r["mean"], r["n"])
        score += f" (95% interval {100 * lo:.0f}–{100 * hi:.0f})"
    return [r["label"], score, str(r["prompt_tokens"] or "–"), str(r["kv_positions"] or "–"),
            f"{r['ms_per_query']:.0f}", str(r["examples_needed"] or "–")]


BASELINE_HEADERS = ["prompt", "score %", "+ prompt tokens / query", "cached KV positions", "ms / query",
                    "examples at query time"]


def baseline_table(results: list) -> str:
    """Markdown: one row per baseline (``baselines.BaselineResult``), the strongest in bold."""
    rows = [r.as_dict() for r in results]
    best = max(rows, key=lambda r: r["mean"])["key"] if rows else None
    out = ["| " + " | ".join(BASELINE_HEADERS) + " |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = baseline_cells(r)
        if r["key"] == best:
            cells[0], cells[1] = f"**{cells[0]}**", f"**{cells[1]}**"
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson interval of a proportion p measured on n examples."""
    if n <= 0:
        return 0.0, 1.0
    centre, half = p + z * z / (2 * n), z * ((p * (1 - p) + z * z / (4 * n)) / n) ** 0.5
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))


def versus_best_prompt(metric: float, n: int, best: dict, paired: tuple[int, int, float] | None = None) -> str:
    """One line: the prefix against the strongest prompt (a ``BaselineResult.as_dict()``), with n, the 95%
    interval, the prompt's spread over draws and the paired difference on the same examples."""
    lo, hi = wilson(metric, n)
    draws = len(best["scores"])
    spread = (f" ({100 * min(best['scores']):.0f}–{100 * max(best['scores']):.0f}% over {draws} draws of the "
              "examples)" if draws > 1 else "")
    line = (f"prefix {100 * metric:.1f}% (n = {n}, 95% interval {100 * lo:.0f}–{100 * hi:.0f}%) vs the strongest "
            f"prompt, {best['label']}: {100 * best['mean']:.1f}%{spread}")
    if paired is not None:
        a, b, p = paired
        line += (f". Paired on the same {n} examples{' (its first draw)' if draws > 1 else ''}: the prefix did better "
                 f"on {a}, the prompt on {b} (sign test p = {p:.2g})")
    return line
