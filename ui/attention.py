"""The Attention tab: how much each layer, head and prompt token looks at the virtual tokens."""


import gradio as gr

from playground.figures import head_figure, layer_figure, query_token_figure, virtual_token_figure
from playground.service import JUST_TRAINED, Playground

from .common import asset_sections, friendly, key, slots

NONE = "(none)"
DEFAULT_PREFIX = "sentiment"  # the shipped prefix that the opening prompt (a movie review) is a task for
DEFAULT_PROMPT = "A warm, funny film with a clumsy ending that I still loved."


def build(pg: Playground):
    """Returns a refresh function (event + outputs) the app calls when the tab is selected."""
    text = asset_sections("attention.md")
    gr.Markdown(text["intro"])
    with gr.Row():
        prompt = gr.Textbox(DEFAULT_PROMPT, label="Prompt", scale=4, elem_id="att-prompt")
        first = gr.Dropdown([], label="Prefix", scale=2, elem_id="att-prefix",
                            info="the prompt follows it with one of its task's held-out inputs, until you type yours")
        second = gr.Dropdown([NONE], value=NONE, label="Overlay a second prefix (per-layer line)", scale=2)
        run = gr.Button("Show attention", variant="primary", scale=1, elem_id="att-run")
    status = gr.Markdown(elem_id="att-status")
    figs = []
    for name, elem in (("layers", "att-layers"), ("heads", "att-heads"), ("virtual_tokens", "att-vt"),
                       ("query_tokens", "att-query")):
        gr.Markdown(text.get(name, ""))
        figs.append(gr.Plot(elem_id=elem, show_label=False))
    suggested = gr.State(DEFAULT_PROMPT)  # the prompt the page put in the box: replaced when the prefix changes

    @friendly
    def on_run(p, a, b, request: gr.Request):
        k = key(request)
        names = [a] + ([b] if b and b != NONE and b != a else [])
        atts = pg.attention(k, p, names)
        att = atts[a]
        label = pg.prefix_label(k, a)
        n_layers, n_heads = att.head_share.shape
        msg = (f"`{label}`: {att.weights.shape[-1]} virtual tokens, {n_layers} layers × {n_heads} heads, "
               f"{len(att.tokens)} prompt tokens. Mean share on the prefix: {100 * att.layer_share.mean():.1f}%.")
        shown = {pg.prefix_label(k, n): v for n, v in atts.items()}
        return (msg, layer_figure(shown), head_figure(att, f"({label})"), virtual_token_figure(att, f"({label})"),
                query_token_figure(att, f"({label})"))

    outs = [status, *figs]
    run.click(on_run, [prompt, first, second], outs, concurrency_id="infer",
              concurrency_limit=slots(pg, "infer"), api_name="attention")
    prompt.submit(on_run, [prompt, first, second], outs, concurrency_id="infer")

    def on_pick(name, p, s, request: gr.Request):
        """A new prefix: an input of its own task, unless the learner typed their own prompt."""
        if not name or (p or "").strip() != (s or "").strip():
            return gr.update(), s
        x = pg.example_input(key(request), name)
        return (x, x) if x else (gr.update(), s)

    first.change(on_pick, [first, prompt, suggested], [prompt, suggested], queue=False)

    seen = gr.State("")  # the just-trained run the picker last jumped to (by its label: task and time)

    def refresh(a, last, request: gr.Request):
        k = key(request)
        picks = pg.prefix_picks(k)
        names = [n for _, n in picks]
        mine = pg.prefix_label(k, JUST_TRAINED) if JUST_TRAINED in names else ""
        if mine and mine != last:  # a new run: that is what a learner wants to look at
            value = JUST_TRAINED
        else:  # keep the pick; else the opening prompt's own task; else the first
            value = a if a in names else DEFAULT_PREFIX if DEFAULT_PREFIX in names else (names[0] if names else None)
        return gr.update(choices=picks, value=value), gr.update(choices=[(NONE, NONE)] + picks), mine or last

    return refresh, [first, seen], [first, second, seen]
