"""The Learn tab: what prefix tuning is, the diagram, and the loaded model's live numbers."""

import gradio as gr

from playground.prefix import PrefixSettings
from playground.service import Playground

from .common import asset

def build(pg: Playground) -> gr.Dataframe:
    """learn.md is split at its ``<!-- diagram -->`` marker; the diagram goes there, full width."""
    before, _, after = asset("learn.md").partition("<!-- diagram -->")
    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown(before, elem_id="learn-text")
        with gr.Column(scale=2):
            gr.Markdown("### The loaded model, live\nThe prefix rows follow the settings on the Train tab.")
            numbers = gr.Dataframe(pg.model_rows(PrefixSettings()), headers=["", "value"], interactive=False,
                                   elem_id="learn-numbers")
    gr.HTML(asset("prefix_diagram.svg"), elem_id="learn-diagram")
    gr.Markdown(after)
    return numbers
