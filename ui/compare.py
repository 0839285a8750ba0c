"""The Compare tab: several tuning methods on one task, trained in turn, with curves and a measured table."""

import gradio as gr

from playground.compare import TABLE_HEADERS, CompareLab, MethodResult, table_rows
from playground.figures import compare_figure
from playground.methods import METHODS
from playground.metrics import METRIC_LABELS
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


def build(pg: Playground, lab: CompareLab) -> None:
    gr.Markdown(asset("compare.md"))
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            task = gr.Dropdown([(t.title, t.name) for t in BUILTIN.values()], value="sentiment", label="Task",
                               elem_id="cmp-task")
            methods = gr.CheckboxGroup([(label, name) for name, label in METHODS.items()], value=list(METHODS),
                                       label="Methods", elem_id="cmp-methods")
            steps = gr.Slider(1, lab.max_steps, value=10, step=1, label="Steps per method", elem_id="cmp-steps")
            every = gr.Slider(1, 20, value=5, step=1, label="Measure the metric every N steps")
            n_eval = gr.Slider(4, lab.max_eval_examples, value=24, step=1, label="Held-out examples")
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
        for name, item in lab.stream(key(request), t, list(names or []), int(n_steps), int(n_every), int(n)):
            title = METHODS[name]
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
        lab.stop(key(request))

    stop.click(on_stop, None, None, queue=False)
