"""The Switch tab: one frozen model, several prefixes, one input, outputs side by side."""


import json

import gradio as gr

from playground.service import NO_PREFIX, Playground, SwitchOutput, SwitchResult
from playground.tasks import BUILTIN

from .common import asset, esc, friendly, key, slots


def shorten(text: str, most: int = 80) -> str:
    return text if len(text) <= most else text[:most - 1].rstrip() + "…"


def card_html(o: SwitchOutput, answering: str, label: str | None = None) -> str:
    """One output card: the prefix (shown as ``label``), its answer (or that it is still generating), the input it
    answers, its latency."""
    if o.pending:
        state, out, lat = "pending", "<i>generating…</i>", "generating…"
    else:
        state, out = ("cut" if o.cut else "done"), esc(o.text) or "<i>(empty)</i>"
        lat = f"{1000 * o.seconds:.0f} ms" + (f" · cut at {o.budget} tokens (the answer budget)" if o.cut else "")
    return (f'<div class="pp-card pp-card-{state}" data-state="{state}" data-name="{esc(o.name)}">'
            f'<div class="pp-card-name">{esc(label or o.name)}</div><div class="pp-card-out">{out}</div>'
            f'<div class="pp-card-in" title="{esc(answering)}">answering: «{esc(shorten(answering))}»</div>'
            f'<div class="pp-card-lat">{lat}</div></div>')


def cards_html(res: SwitchResult, labels: dict[str, str] | None = None) -> str:
    """Side-by-side output cards, each with the input it answers and its own latency, and the switch time;
    ``labels`` shows some prefixes under another name (the just-trained one by its task and time)."""
    cards = "".join(card_html(o, res.input, (labels or {}).get(o.name)) for o in res.outputs)
    n, left = len(res.outputs), sum(o.pending for o in res.outputs)
    if left:
        how = f"generating: {n - left} of {n} finished"
        end = "…"
    else:
        how = ("all came from one mixed batch (a row per prefix, each with its own key/value cache); a row leaves "
               "the batch as soon as it ends, so each card shows when its own answer was ready") if res.batched else ""
        end = f" · {res.total_seconds:.2f} s in all." + (f" {esc(res.busy_note)}" if res.busy_note else "")
    return (f'<div id="pp-switch" class="pp-cards">{cards}</div>'
            f'<p class="pp-switch-time">Switching to {n} prefix(es) took '
            f'<b>{1000 * res.switch_seconds:.1f} ms</b> (a prefix is a per-call key/value cache; the model is not '
            f'touched){" · " + how if how else ""}{end}</p>')


def build(pg: Playground):
    gr.Markdown(asset("switch.md"))
    defaults = pg.switch_defaults()  # (no prefix) is left to tick: it runs on to its budget on most inputs
    with gr.Row():
        chosen = gr.CheckboxGroup([NO_PREFIX] + pg.prefix_choices(""), value=defaults, label="Prefixes to compare",
                                  elem_id="sw-choice")
    with gr.Row(equal_height=True):
        text = gr.Textbox(label="Input", placeholder="Type anything, or pick an example below, then press Enter or Run",
                          elem_id="sw-input", scale=4)
        run = gr.Button("Run", variant="primary", scale=0, min_width=120, elem_id="sw-run")
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
    def on_run(names, t, request: gr.Request):
        k = key(request)
        labels = {n: pg.prefix_label(k, n) for n in names or []}
        for res in pg.switch_stream(k, names, t):  # a card fills in as its row finishes
            yield cards_html(res, labels)

    # Runs on Enter or Run only: a run per keystroke would answer half-typed words and queue behind itself.
    gr.on([text.submit, run.click], on_run, [chosen, text], out, api_name="switch", concurrency_id="infer",
          concurrency_limit=slots(pg, "infer"), trigger_mode="always_last", show_progress="minimal")

    def refresh(current, request: gr.Request):
        picks = [(NO_PREFIX, NO_PREFIX)] + pg.prefix_picks(key(request))  # the just-trained one by task and time
        names = {n for _, n in picks}
        return gr.update(choices=picks, value=[n for n in (current or []) if n in names])

    return refresh, [chosen], [chosen]
