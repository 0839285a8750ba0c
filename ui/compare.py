"""The Compare tab: several tuning methods on one task, trained in turn, with curves and a measured table."""

from dataclasses import asdict

import gradio as gr

from playground.compare import MethodResult
from playground.figures import compare_figure, loss_curves_figure
from playground.methods import METHODS
from playground.metrics import METRIC_LABELS
from playground.report import ABLATION_HEADERS, TABLE_HEADERS, X_LABEL, ablation_rows, study_figure, table_rows
from playground.service import Playground
from playground.tasks import BUILTIN, get_task

from .common import asset, esc, friendly, key


def status_html(done: list[str], current: str | None, step: int, total: int, note: str = "") -> str:
    state = "running" if current else "finished"
    parts = [f"finished: {', '.join(done)}" if done else ""]
    if current:
        parts.append(f"training <b>{esc(current)}</b>: step {step}/{total}")
    text = " · ".join(p for p in parts if p) + (f" · {esc(note)}" if note else "")
    return f'<div id="cmp-progress" data-state="{state}" data-done="{len(done)}">{text or "Press Compare."}</div>'


# Ticked by default: every method but the uncached few-shot prompt (it answers exactly as the cached one, slower)
# and label scoring (classification tasks only).
COMPARE_UNTICKED = ("few_shot", "label_scoring")


def build(pg: Playground) -> None:
    gr.Markdown(asset("compare.md"))
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            task = gr.Dropdown([(t.title, t.name) for t in BUILTIN.values()], value="sentiment", label="Task",
                               elem_id="cmp-task")
            methods = gr.CheckboxGroup([(m.name, name) for name, m in METHODS.items()], value=[m for m in METHODS if m not in COMPARE_UNTICKED],
                                       label="Methods", elem_id="cmp-methods")
            steps = gr.Slider(1, pg.lab.max_steps, value=10, step=1, label="Steps per method", elem_id="cmp-steps")
            every = gr.Slider(1, 20, value=5, step=1, label="Measure the metric every N steps")
            n_eval = gr.Slider(4, pg.lab.max_eval_examples, value=24, step=1, label="Held-out examples")
            with gr.Row():
                run = gr.Button("Compare", variant="primary", elem_id="cmp-run")
                stop = gr.Button("Stop", variant="stop", elem_id="cmp-stop")
        with gr.Column(scale=3):
            status = gr.HTML(status_html([], None, 0, 0), elem_id="cmp-status")
            with gr.Row():
                by_step = gr.Plot(label="vs steps", elem_id="cmp-by-step")
                by_time = gr.Plot(label="vs time", elem_id="cmp-by-time")
            table = gr.Dataframe(headers=TABLE_HEADERS, label="Measured on this model", wrap=True, interactive=False,
                                 elem_id="cmp-table")

    @friendly
    def on_run(task_name, names, n_steps, n_every, n, request: gr.Request):
        t = get_task(task_name)
        label = METRIC_LABELS.get(t.metric, t.metric)
        curves, results, done, flat = {}, [], [], {}
        yield status_html([], None, 0, 0, "starting"), None, None, None
        for name, item in pg.lab.stream(key(request), t, list(names or []), int(n_steps), int(n_every), int(n)):
            title = METHODS[name].name
            if isinstance(item, MethodResult):
                results.append(item)
                done.append(title)
                if not item.records:  # the baseline: a dashed line at its metric
                    flat[title] = item.metric
                yield (status_html(done, None, 0, 0), gr.update(), gr.update(), table_rows(results, pg.base))
                continue
            curves.setdefault(title, []).append(item)
            yield (status_html(done, title, item.step, int(n_steps)), compare_figure(curves, label, "step", flat),
                   compare_figure(curves, label, "time", flat), gr.update())
        yield (status_html(done, None, 0, 0, "done"), compare_figure(curves, label, "step", flat),
               compare_figure(curves, label, "time", flat), table_rows(results, pg.base))

    run.click(on_run, [task, methods, steps, every, n_eval], [status, by_step, by_time, table],
              concurrency_id="train", concurrency_limit=pg.limits.concurrent_trainings, show_progress="hidden")
    def on_stop(request: gr.Request):
        pg.lab.stop(key(request))

    stop.click(on_stop, None, None, queue=False)
    build_ablations(pg, on_stop)


STUDIES = {"Prefix length, and prompt tuning at the same length": "length", "Init in low data": "init",
           "MLP vs direct optimization": "mlp"}


def ablation_status(done: int, total: int, last: str = "", state: str = "running") -> str:
    text = f"run {done}/{total}" + (f" · last: {esc(last)}" if last else "") if total else "Press Run ablation."
    return f'<div id="abl-progress" data-state="{state}" data-done="{done}">{text}</div>'


def build_ablations(pg: Playground, on_stop) -> None:
    """The ablation panel; ``on_stop`` is the tab's Stop (one cancel per session stops either run)."""
    gr.Markdown(asset("ablations.md"))
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            a_task = gr.Dropdown([(t.title, t.name) for t in BUILTIN.values()], value="topic", label="Task",
                                 elem_id="abl-task")
            study = gr.Radio(list(STUDIES.items()), value="length", label="Study", elem_id="abl-study")
            a_steps = gr.Slider(1, pg.lab.max_steps, value=10, step=1, label="Steps per run", elem_id="abl-steps")
            seeds = gr.Slider(1, 3, value=1, step=1, label="Seeds", elem_id="abl-seeds")
            with gr.Row():
                a_run = gr.Button("Run ablation", variant="primary", elem_id="abl-run")
                a_stop = gr.Button("Stop", variant="stop", elem_id="abl-stop")
        with gr.Column(scale=3):
            a_status = gr.HTML(ablation_status(0, 0), elem_id="abl-status")
            a_plot = gr.Plot(label="metric after training", elem_id="abl-plot")
            a_curves = gr.Plot(label="loss of every seed", visible=False, elem_id="abl-curves")
            a_table = gr.Dataframe(headers=ABLATION_HEADERS, label="Per cell, over seeds", interactive=False,
                                   elem_id="abl-table")

    @friendly
    def on_ablate(task_name, study_name, n_steps, n_seeds, request: gr.Request):
        t = get_task(task_name)
        label = METRIC_LABELS.get(t.metric, t.metric)
        runs = []
        yield ablation_status(0, 0, "starting"), None, gr.update(visible=study_name == "mlp", value=None), None
        for done, total, run in pg.lab.ablate(key(request), t, study_name, int(n_steps), int(n_seeds)):
            runs.append(asdict(run))
            fig = study_figure(runs, study_name, label)
            curves = loss_curves_figure(runs) if study_name == "mlp" else None
            last = f"{run.series}, {X_LABEL[study_name]} {run.x:g}, seed {run.seed}: {100 * run.metric:.1f}%"
            yield (ablation_status(done, total, last, "finished" if done == total else "running"), fig,
                   gr.update(visible=study_name == "mlp", value=curves), ablation_rows(runs))

    a_run.click(on_ablate, [a_task, study, a_steps, seeds], [a_status, a_plot, a_curves, a_table],
                concurrency_id="train", concurrency_limit=pg.limits.concurrent_trainings, show_progress="hidden")
    a_stop.click(on_stop, None, None, queue=False)
