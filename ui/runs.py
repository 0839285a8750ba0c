"""The Runs tab: a learner's own runs (the teacher: the whole class's), overlaid, with the settings that differ.

Every press of Train leaves a record in the class folder (settings, seed, the step-by-step log,
the final table, and the command that reproduces it). Pick two or more runs to overlay their
curves; the table beside them keeps only the settings that differ.
"""

import gradio as gr

from playground.classdesk import ClassDesk
from playground.runfigures import run_labels, runs_figure, settings_diff, settings_text, strongest_prompt
from playground.service import Playground

from .common import asset, friendly, key

LIST_HEADERS = ["run", "task", "state", "held-out %", "the strongest prompt, on the same examples", "steps",
                "settings"]


def listing(runs: list[dict]) -> list[list]:
    """One row per run, the newest first."""
    rows = []
    for label, r in zip(run_labels(runs), runs):
        m, held = r.get("final_metric"), r.get("held_out") or {}
        score = "—" if m is None else f"{100 * m:.1f}% (n = {held.get('n')}, {held.get('split')})"
        rows.append([label, r["task"], r["state"], score, strongest_prompt(r),
                     f"{r['steps_done']}/{(r.get('train_settings') or {}).get('steps', '?')}", settings_text(r)])
    return rows[::-1]


def build(pg: Playground):
    desk = ClassDesk(pg)
    gr.Markdown(asset("runs.md"), elem_id="runs-intro")
    table = gr.Dataframe(headers=LIST_HEADERS, label="Runs (the newest first)", interactive=False, wrap=True,
                         max_height=260, elem_id="runs-table")
    with gr.Row():
        pick = gr.Dropdown([], multiselect=True, label="Runs to overlay (two or more)", elem_id="runs-pick", scale=4)
        show = gr.Button("Overlay", elem_id="runs-show", scale=0)
    with gr.Row():
        loss = gr.Plot(elem_id="runs-loss", show_label=False)
        metric = gr.Plot(elem_id="runs-metric", show_label=False)
    diff = gr.Dataframe(label="The settings that differ", interactive=False, wrap=True, elem_id="runs-diff")
    commands = gr.Textbox(label="The commands that reproduce them (python -m playground train)", lines=2,
                          max_lines=8, interactive=False, buttons=["copy"], elem_id="runs-command")

    def everyone(k: str) -> bool:
        return pg.is_teacher(k)

    @friendly
    def runs_list(picked, request: gr.Request):
        k = key(request)
        runs = desk.runs(k, everyone(k))
        ids = [r["run_id"] for r in runs]
        choices = list(zip(run_labels(runs), ids))[::-1]
        keep = [p for p in (picked or []) if p in ids] or ids[-2:][::-1]
        return listing(runs) or None, gr.update(choices=choices, value=keep)

    @friendly
    def overlay(picked, request: gr.Request):
        k = key(request)
        if not picked:
            raise gr.Error("Pick a run or more in the list first.")
        runs = sorted(desk.with_steps(k, picked, everyone(k)), key=lambda r: r["started"])
        headers, rows = settings_diff(runs)
        return (runs_figure(runs, "loss"), runs_figure(runs, "metric"), {"headers": headers, "data": rows},
                "\n".join(r["command"] for r in runs))

    show.click(overlay, pick, [loss, metric, diff, commands])
    return runs_list, [pick], [table, pick]
