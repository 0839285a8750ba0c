"""The Attention tab's ablation section: the prefix removed from chosen layers, and the held-out scores again."""


import gradio as gr

from playground.figures import ablation_depth_figure, ablation_layer_figure
from playground.metrics import METRIC_LABELS
from playground.service import MAX_ABLATION_EXAMPLES, Playground

from .common import asset_sections, friendly, key, slots

DEFAULT_PREFIX = "sentiment"  # a shipped prefix whose one-word answers score in a blink
DEFAULT_EXAMPLES = 3  # held-out examples: 91 variants on SmolLM2 score them all in about 40 s on 2 busy CPU cores
HEADERS = ["variant", "layers with the prefix", "held-out metric (%)", "mean log p(target)", "std", "n", "split",
           "virtual positions seen"]


def table(ab) -> list[list]:
    """One row per variant, as the figures plot them."""
    return [[r.label, r.layers_with_prefix, round(100 * r.metric, 1), round(r.logprob_mean, 3),
             round(r.logprob_std, 3), r.n, r.split, r.kv_positions] for r in ab.rows]


def build(pg: Playground, tab) -> None:
    """The section, below the attention figures; its prefix picker follows the library when ``tab`` is selected."""
    text = asset_sections("inside_ablation.md")
    gr.Markdown(text["intro"], elem_id="abl-intro")
    with gr.Row():
        picker = gr.Dropdown([], value=None, label="Prefix to ablate", scale=3, elem_id="abl-prefix",
                             info="scored on its own task's held-out examples")
        n = gr.Number(DEFAULT_EXAMPLES, label="Held-out examples", precision=0, minimum=1,
                      maximum=min(MAX_ABLATION_EXAMPLES, pg.limits.max_eval_examples), scale=1, elem_id="abl-n",
                      info="each of the 3 × layers + 1 variants scores them all")
        run = gr.Button("Remove the prefix layer by layer", variant="primary", scale=1, elem_id="abl-run")
    status = gr.Markdown(elem_id="abl-status")
    gr.Markdown(text.get("layers", ""))
    layers = gr.Plot(elem_id="abl-layers", show_label=False)
    gr.Markdown(text.get("depth", ""))
    depth = gr.Plot(elem_id="abl-depth", show_label=False)
    rows = gr.Dataframe(headers=HEADERS, label="Every variant", interactive=False, wrap=True, elem_id="abl-table")

    @friendly
    def ablate_layers(name, count, request: gr.Request, progress=gr.Progress()):
        if not name:
            raise gr.Error("Pick a prefix first.")
        k = key(request)
        ab = pg.ablate(k, name, int(count or DEFAULT_EXAMPLES),
                       progress=lambda frac, msg: progress(frac, desc=msg))
        full, none, zero = ab.row("full"), ab.row("none"), ab.row("zero")
        msg = (f"`{pg.prefix_label(k, name)}` on {ab.task}: {ab.num_virtual_tokens} virtual tokens, {ab.num_layers} "
               f"layers, {len(ab.rows)} variants on n = {ab.n} held-out examples ({ab.split}), {ab.seconds:.1f} s. "
               f"{METRIC_LABELS.get(ab.metric, ab.metric)}: full prefix {100 * full.metric:.1f}%, no prefix {100 * none.metric:.1f}%, "
               f"zero prefix {100 * zero.metric:.1f}%.")
        return msg, ablation_layer_figure(ab), ablation_depth_figure(ab), table(ab)

    run.click(ablate_layers, [picker, n], [status, layers, depth, rows], concurrency_id="infer",
              concurrency_limit=slots(pg, "infer"), api_name="ablate_layers")

    def refresh_ablation_picker(current, request: gr.Request):
        picks = pg.prefix_picks(key(request))
        names = [v for _, v in picks]
        value = current if current in names else DEFAULT_PREFIX if DEFAULT_PREFIX in names else (
            names[0] if names else None)
        return gr.update(choices=picks, value=value)

    tab.select(refresh_ablation_picker, [picker], [picker], queue=False)
