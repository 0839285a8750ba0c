"""The Attention tab: how much each layer, head and prompt token looks at the virtual tokens."""


import gradio as gr

from playground.figures import head_figure, layer_figure, query_token_figure, virtual_token_figure
from playground.service import Playground

from .common import asset_sections, friendly, key

NONE = "(none)"
DEFAULT_PROMPT = "A warm, funny film with a clumsy ending that I still loved."


def build(pg: Playground):
    """Returns a refresh function (event + outputs) the app calls when the tab is selected."""
    text = asset_sections("attention.md")
    gr.Markdown(text["intro"])
    with gr.Row():
        prompt = gr.Textbox(DEFAULT_PROMPT, label="Prompt", scale=4, elem_id="att-prompt")
        first = gr.Dropdown([], label="Prefix", scale=2, elem_id="att-prefix")
        second = gr.Dropdown([NONE], value=NONE, label="Overlay a second prefix (per-layer line)", scale=2)
        run = gr.Button("Show attention", variant="primary", scale=1, elem_id="att-run")
    status = gr.Markdown(elem_id="att-status")
    figs = []
    for name, elem in (("layers", "att-layers"), ("heads", "att-heads"), ("virtual_tokens", "att-vt"),
                       ("query_tokens", "att-query")):
        gr.Markdown(text.get(name, ""))
        figs.append(gr.Plot(elem_id=elem, show_label=False))

    @friendly
    def on_run(p, a, b, request: gr.Request):
        names = [a] + ([b] if b and b != NONE and b != a else [])
        atts = pg.attention(key(request), p, names)
        att = atts[a]
        n_layers, n_heads = att.head_share.shape
        msg = (f"`{a}`: {att.weights.shape[-1]} virtual tokens, {n_layers} layers × {n_heads} heads, "
               f"{len(att.tokens)} prompt tokens. Mean share on the prefix: {100 * att.layer_share.mean():.1f}%.")
        return (msg, layer_figure(atts), head_figure(att, f"({a})"), virtual_token_figure(att, f"({a})"),
                query_token_figure(att, f"({a})"))

    outs = [status, *figs]
    run.click(on_run, [prompt, first, second], outs, concurrency_id="infer",
              concurrency_limit=pg.limits.concurrent_requests, api_name="attention")
    prompt.submit(on_run, [prompt, first, second], outs, concurrency_id="infer")

    def refresh(a, request: gr.Request):
        names = pg.prefix_choices(key(request))
        value = a if a in names else (names[0] if names else None)
        return gr.update(choices=names, value=value), gr.update(choices=[NONE] + names)

    return refresh, [first], [first, second]
