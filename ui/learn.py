"""The Learn tab: what prefix tuning is, the diagram, the loaded model's live numbers, and what a prefix costs."""

import gradio as gr

from playground.figures import overhead_figure
from playground.overhead import fit_overhead
from playground.prefix import PrefixSettings
from playground.report import model_rows
from playground.service import Playground

from .common import asset, asset_sections, friendly


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
        points = pg.overhead(progress=lambda frac, msg: progress(frac, desc=msg))
        fit = fit_overhead(points)[0]
        first, last = points[0], points[-1]  # P = 0 and the largest P, at one prompt length
        msg = (f"T = {fit.T} prompt tokens, {first.new_tokens} new tokens. **Per token:** "
               f"{1000 * first.per_token_s:.1f} ms at P = {first.P}, {1000 * last.per_token_s:.1f} ms at "
               f"P = {last.P} ({100 * fit.per_token_added:+.0f} %), a fitted slope of "
               f"{1000 * fit.per_token_ms_per_vt:.1f} µs per virtual token. **First token:** "
               f"{1000 * first.ttft_s:.0f} → {1000 * last.ttft_s:.0f} ms ({100 * fit.ttft_added:+.0f} %). "
               f"**KV cache:** {first.kv_bytes_measured / 1e6:.2f} → {last.kv_bytes_measured / 1e6:.2f} MB.")
        return msg, overhead_figure(points)

    run.click(on_run, None, [status, plot], concurrency_id="infer", concurrency_limit=pg.limits.concurrent_requests)
