"""The Attention tab's "what the prefix says" section: the logit lens on the answer, and the nearest words."""


import gradio as gr

from playground.figures import lens_figure
from playground.metrics import METRIC_LABELS
from playground.service import JUST_TRAINED, Playground

from .common import asset_sections, friendly, key, slots

DEFAULT_PREFIX = "sentiment"  # a shipped prefix with one-word answers: the lens follows a single token
PAIR = ("sentiment", "sentiment_wayward")  # same task, about the same accuracy, unrelated init texts (waywardness)
NEAREST_K = 5  # tokens listed per virtual token
HEADERS = ["slot", f"nearest {NEAREST_K} tokens (cosine of the first-layer keys)"]


def scores_text(scores: list[dict]) -> str:
    """A prefix's held-out figures, with n and split: 'test 98.3% exact match (n = 60) · validation ...'."""
    if not scores:
        return "no held-out score on its card"
    return " · ".join(f"{s['split']} {100 * s['score']:.1f}% {METRIC_LABELS.get(s['metric'], s['metric'])} "
                      f"(n = {s['n']})" for s in scores)


def nearest_rows(found) -> list[list]:
    """One row per virtual token: its slot and its nearest tokens with their cosine."""
    return [[j, " · ".join(f"'{t}' {c:.2f}" for t, c in zip(toks, cos))]
            for j, (toks, cos) in enumerate(zip(found.tokens, found.cosine.tolist()))]


def build(pg: Playground, tab) -> None:
    """The section, below the attention figures; its prefix pickers follow the library when ``tab`` is selected."""
    text = asset_sections("inside_lens.md")
    gr.Markdown(text["intro"], elem_id="lens-intro")
    with gr.Row():
        prompt = gr.Textbox("", label="Input", scale=4, elem_id="lens-prompt",
                            info="one of the prefix's held-out inputs, until you type yours")
        picker = gr.Dropdown([], value=None, label="Prefix", scale=2, elem_id="lens-prefix")
        target = gr.Textbox("", label="Target answer (optional)", scale=2, elem_id="lens-target",
                            info="empty: the gold answer of a held-out input, else the prefix's own answer")
        run = gr.Button("Read the answer layer by layer", variant="primary", scale=1, elem_id="lens-run")
    status = gr.Markdown(elem_id="lens-status")
    gr.Markdown(text.get("lens", ""))
    figure = gr.Plot(elem_id="lens-figure", show_label=False)
    suggested = gr.State("")  # the input the page put in the box: replaced when the prefix changes

    @friendly
    def logit_lens(p, name, t, request: gr.Request):
        if not name:
            raise gr.Error("Pick a prefix first.")
        k = key(request)
        res = pg.lens(k, name, p, t or None)
        w, b = res.with_prefix, res.without
        msg = (f"Target **'{res.target}'** ({res.target_source}); its first token '{res.target_token}' is read at "
               f"the last of {res.prompt_tokens} prompt tokens. At the last layer: with `{pg.prefix_label(k, name)}` "
               f"p = {float(w.prob[-1]):.4f} (rank {int(w.rank[-1]):,}); without it p = {float(b.prob[-1]):.4f} "
               f"(rank {int(b.rank[-1]):,}).")
        return msg, lens_figure(res, pg.prefix_label(k, name))

    run.click(logit_lens, [prompt, picker, target], [status, figure], concurrency_id="infer",
              concurrency_limit=slots(pg, "infer"), api_name="logit_lens")

    gr.Markdown(text.get("nearest", ""), elem_id="lens-nearest-intro")
    with gr.Row():
        first = gr.Dropdown([], value=None, label="Prefix", scale=2, elem_id="lens-near-a")
        second = gr.Dropdown([], value=None, label="Compared with", scale=2, elem_id="lens-near-b")
        near = gr.Button("Show the nearest words", variant="primary", scale=1, elem_id="lens-near-run")
    overlap = gr.Markdown(elem_id="lens-overlap")
    with gr.Row(elem_id="lens-near-tables"):
        with gr.Column():
            score_a = gr.Markdown(elem_id="lens-score-a")
            table_a = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True, elem_id="lens-table-a",
                                   max_height=2000, show_label=False)  # all P rows at once, no inner scrollbar
        with gr.Column():
            score_b = gr.Markdown(elem_id="lens-score-b")
            table_b = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True, elem_id="lens-table-b",
                                   max_height=2000, show_label=False)  # all P rows at once, no inner scrollbar

    @friendly
    def nearest_words(a, b, request: gr.Request):
        if not a or not b:
            raise gr.Error("Pick two prefixes first.")
        k = key(request)
        cmp = pg.nearest(k, [a, b], NEAREST_K)
        if len(cmp.names) < 2:
            raise gr.Error("Pick two different prefixes to compare.")
        labels = [pg.prefix_label(k, n) for n in cmp.names]
        scores = [f"**{lab}**: {scores_text(s)}" for lab, s in zip(labels, cmp.scores)]
        shared = ", ".join(f"'{w}'" for w in cmp.shared) or "none"
        msg = (f"Overlap of the two word lists: **{100 * cmp.overlap:.0f}%** (shared words / all words listed). "
               f"Shared: {shared}.")
        return msg, scores[0], nearest_rows(cmp.nearest[0]), scores[1], nearest_rows(cmp.nearest[1])

    near.click(nearest_words, [first, second], [overlap, score_a, table_a, score_b, table_b], concurrency_id="infer",
               concurrency_limit=slots(pg, "infer"), api_name="nearest_words")

    def on_pick_lens(name, p, s, request: gr.Request):
        """A new prefix: an input of its own task, unless the learner typed their own."""
        if not name or (p or "").strip() != (s or "").strip():
            return gr.update(), s
        x = pg.example_input(key(request), name)
        return (x, x) if x else (gr.update(), s)

    picker.change(on_pick_lens, [picker, prompt, suggested], [prompt, suggested], queue=False)

    def refresh_lens_pickers(current, a, b, request: gr.Request):
        picks = pg.prefix_picks(key(request))
        names = [v for _, v in picks]

        def keep(value, default, fallback):
            return value if value in names else default if default in names else fallback

        first_name = names[0] if names else None
        lens_pick = keep(current, JUST_TRAINED if JUST_TRAINED in names else DEFAULT_PREFIX, first_name)
        a_pick = keep(a, PAIR[0], first_name)
        b_pick = keep(b, PAIR[1], next((n for n in names if n != a_pick), first_name))
        return (gr.update(choices=picks, value=lens_pick), gr.update(choices=picks, value=a_pick),
                gr.update(choices=picks, value=b_pick))

    tab.select(refresh_lens_pickers, [picker, first, second], [picker, first, second], queue=False)
