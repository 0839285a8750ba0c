"""The Switch tab: one frozen model, several prefixes, one input, outputs side by side."""


import json

import gradio as gr

from playground.service import NO_PREFIX, Playground, SwitchResult
from playground.tasks import BUILTIN

from .common import asset, esc, friendly, key


def cards_html(res: SwitchResult) -> str:
    """Side-by-side output cards, with the batch's latency and the switch time."""
    cards = "".join(
        f'<div class="pp-card" data-name="{esc(o.name)}"><div class="pp-card-name">{esc(o.name)}</div>'
        f'<div class="pp-card-out">{esc(o.text) or "<i>(empty)</i>"}</div>'
        f'<div class="pp-card-lat">{1000 * o.seconds:.0f} ms{" (shared batch)" if res.batched else ""}</div></div>'
        for o in res.outputs)
    how = (f"all {len(res.outputs)} outputs were generated in one mixed batch (a row per prefix, each with its own "
           f"key/value cache) in <b>{1000 * res.outputs[0].seconds:.0f} ms</b>") if res.batched and res.outputs else ""
    return (f'<div id="pp-switch" class="pp-cards">{cards}</div>'
            f'<p class="pp-switch-time">Switching to {len(res.outputs)} prefix(es) took '
            f'<b>{1000 * res.switch_seconds:.1f} ms</b> (a prefix is a per-call key/value cache; the model is not '
            f'touched) · {how + " · " if how else ""}{res.total_seconds:.2f} s in all.</p>')


def build(pg: Playground):
    gr.Markdown(asset("switch.md"))
    with gr.Row():
        chosen = gr.CheckboxGroup([NO_PREFIX], value=[NO_PREFIX], label="Prefixes to compare", elem_id="sw-choice")
    text = gr.Textbox(label="Input", placeholder="Type anything, or pick an example below", elem_id="sw-input")
    out = gr.HTML('<div id="pp-switch" class="pp-cards"></div>', elem_id="sw-out")
    examples = json.loads(asset("switch_examples.json"))
    lessons = pg.lessons()  # prefixes shipped to show a limit: not among the default examples
    with gr.Accordion("Example inputs for each task", open=True):
        for name, inputs in examples.items():
            if name not in lessons:
                title = BUILTIN[name].title if name in BUILTIN else name
                gr.Examples([[x] for x in inputs], inputs=[text], label=title, examples_per_page=8)
    if lessons:
        with gr.Accordion("What a prefix cannot do: the lesson prefixes", open=False, elem_id="sw-lessons"):
            for name, lesson in lessons.items():
                gr.Markdown(f"**{name}**: {lesson}")
                if name in examples:
                    gr.Examples([[x] for x in examples[name]], inputs=[text], label=BUILTIN[name].title
                                if name in BUILTIN else name, examples_per_page=8)

    @friendly
    def on_change(names, t, request: gr.Request):
        if not t or not t.strip() or not names:
            return gr.update()  # nothing to run yet; Enter on an empty box says why
        return cards_html(pg.switch(key(request), names, t))

    @friendly
    def on_submit(names, t, request: gr.Request):
        return cards_html(pg.switch(key(request), names, t))

    kw = dict(concurrency_id="infer", concurrency_limit=pg.limits.concurrent_requests, trigger_mode="always_last",
              show_progress="minimal")
    chosen.change(on_change, [chosen, text], out, **kw)
    text.change(on_change, [chosen, text], out, **kw)
    text.submit(on_submit, [chosen, text], out, api_name="switch", **kw)

    def refresh(current, request: gr.Request):
        names = [NO_PREFIX] + pg.prefix_choices(key(request))
        return gr.update(choices=names, value=[n for n in (current or []) if n in names])

    return refresh, [chosen], [chosen]
