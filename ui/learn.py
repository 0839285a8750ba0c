"""The Learn tab: what prefix tuning is, the diagram, live numbers, what a prefix costs, prompts as caches."""

import gradio as gr

from playground.busy import busier
from playground.figures import kv_cache_figure, overhead_figure
from playground.metrics import METRIC_LABELS
from playground.overhead import fit_overhead
from playground.prefix import PrefixSettings
from playground.report import model_rows
from playground.service import Playground
from playground.tasks import BUILTIN

from .common import asset, asset_sections, friendly, slots


def build(pg: Playground) -> gr.Dataframe:
    """learn.md is split at its ``<!-- diagram -->`` marker; the diagram goes there, full width."""
    before, _, after = asset("learn.md").partition("<!-- diagram -->")
    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown(before, elem_id="learn-text")
        with gr.Column(scale=2):
            gr.Markdown("### The loaded model, live\nThe prefix rows follow the settings on the Train tab.")
            numbers = gr.Dataframe(model_rows(pg.base, PrefixSettings()), headers=["", "value"], interactive=False,
                                   elem_id="learn-numbers")
    gr.HTML(asset("prefix_diagram.svg"), elem_id="learn-diagram")
    gr.Markdown(after)
    build_overhead(pg)
    build_kv_caches(pg)
    return numbers


def build_overhead(pg: Playground) -> None:
    """'What a prefix costs at inference': a button that times a small grid live, and its chart."""
    text = asset_sections("overhead.md")
    gr.Markdown(text["intro"], elem_id="overhead-text")
    run = gr.Button("Measure on this model", variant="primary", elem_id="overhead-run")
    status = gr.Markdown(elem_id="overhead-status")
    plot = gr.Plot(elem_id="overhead-plot", show_label=False)
    gr.Markdown(text.get("plot", ""))

    @friendly
    def on_run(progress=gr.Progress()):
        before = pg.load()
        points = pg.overhead(progress=lambda frac, msg: progress(frac, desc=msg))
        load = busier(before, pg.load())
        fit = fit_overhead(points)[0]
        first, last = points[0], points[-1]  # P = 0 and the largest P, at one prompt length
        ms = lambda s: f"{1000 * s:.1f}"  # noqa: E731
        span = lambda r: f"{ms(r[0])}-{ms(r[1])}"  # noqa: E731
        msg = (f"T = {fit.T} prompt tokens, {first.new_tokens} new tokens; medians of {first.repeats} runs, with "
               f"the fastest to the slowest in brackets. **Per token:** {ms(first.per_token_s)} ms "
               f"({span(first.per_token_range_s)}) at P = {first.P}, {ms(last.per_token_s)} ms "
               f"({span(last.per_token_range_s)}) at P = {last.P} ({100 * fit.per_token_added:+.0f} %), a fitted "
               f"slope of {1000 * fit.per_token_ms_per_vt:.1f} µs per virtual token. **First token:** "
               f"{ms(first.ttft_s)} ({span(first.ttft_range_s)}) → {ms(last.ttft_s)} ms ({span(last.ttft_range_s)}), "
               f"{100 * fit.ttft_added:+.0f} %. Where the brackets overlap, the difference is noise. "
               f"**KV cache:** {first.kv_bytes_measured / 1e6:.2f} → {last.kv_bytes_measured / 1e6:.2f} MB "
               "(exact: it does not depend on load).")
        note = load.note()
        return msg + (f"\n\n⚠ {note}" if note else ""), overhead_figure(points)

    run.click(on_run, None, [status, plot], concurrency_id="infer", concurrency_limit=slots(pg, "infer"))


KV_HEADERS = ["way of prompting", "cached positions (computed once)", "prompt tokens per query",
              "head's KV per query (kB)", "ms per query: median (25th to 75th percentile)",
              "held-out score (n, split)"]


def build_kv_caches(pg: Playground) -> None:
    """'A prompt, a cached prompt, a prefix': each as a key/value cache, measured live on one task."""
    text = asset_sections("kvcache.md")
    gr.Markdown(text["intro"], elem_id="kv-text")
    tasks = pg.kv_cache_tasks()
    with gr.Row():
        task = gr.Dropdown([(BUILTIN[t].title, t) for t in tasks], value="sentiment" if "sentiment" in tasks
                           else next(iter(tasks), None), label="Task (with its shipped prefix)", elem_id="kv-task",
                           scale=3)
        run = gr.Button("Measure on this model", variant="primary", elem_id="kv-run", scale=1)
    status = gr.Markdown(elem_id="kv-status")
    plot = gr.Plot(elem_id="kv-plot", show_label=False)
    table = gr.Dataframe(headers=KV_HEADERS, interactive=False, wrap=True, elem_id="kv-table")
    gr.Markdown(text.get("plot", ""))

    @friendly
    def on_run(choice, progress=gr.Progress()):
        before = pg.load()
        rows = pg.kv_caches(choice, progress=lambda frac, msg: progress(frac, desc=msg))
        busy = busier(before, pg.load()).note()
        label = METRIC_LABELS.get(rows[0].metric, rows[0].metric)
        first = rows[0]
        msg = (f"**{BUILTIN[choice].title}**: {first.n} {first.split} examples, answered one query at a time by "
               f"each in turn; {label}. Latency is the median over the {first.n} queries, with the 25th to 75th "
               "percentile: on a shared CPU it moves between runs, so measure twice before trusting a small gap."
               + (f"\n\n⚠ {busy}" if busy else ""))
        data = [[r.label, r.cached_positions, r.prompt_tokens, round(r.kv_bytes / 1e3, 1),
                 "{:.0f} ({:.0f}-{:.0f})".format(r.ms_median, *r.ms_quartiles),
                 f"{100 * r.score:.1f}% (n={r.n}, {r.split})"] for r in rows]
        return msg, kv_cache_figure(rows, label), data

    run.click(on_run, task, [status, plot, table], concurrency_id="infer",
              concurrency_limit=slots(pg, "infer"))
