"""The Compare tab: several tuning methods on one task, trained in turn, with curves and a measured table."""

from dataclasses import asdict

import gradio as gr

from playground.compare import MethodResult, Stage
from playground.figures import compare_figure, loss_curves_figure
from playground.methods import METHODS
from playground.metrics import METRIC_LABELS
from playground.report import (
    ABLATION_HEADERS,
    TABLE_HEADERS,
    X_LABEL,
    ablation_rows,
    study_figure,
    table_rows,
    wilson,
)
from playground.service import Playground
from playground.tasks import BUILTIN, get_task

from .common import asset_sections, esc, friendly, key, slots


def status_html(done: list[str], now: str = "", state: str = "running", note: str = "") -> str:
    """The comparison's status: what runs now (or how it ended), the methods done, and a note."""
    parts = [esc(now)] if now else []
    parts += [f"finished: {esc(', '.join(done))}"] if done else []
    text = " · ".join(parts) + (f"<br><small>{esc(note)}</small>" if note else "")
    return (f'<div id="cmp-progress" data-state="{state}" data-done="{len(done)}">'
            f'{text or "Press Compare."}</div>')


# Ticked by default: every method but the uncached few-shot prompt (it answers exactly as the cached one, slower)
# and label scoring (classification tasks only).
COMPARE_UNTICKED = ("few_shot", "label_scoring")
# The table spans the page: the metric (second) and the inference cost get the room, the rest wrap.
TABLE_WIDTHS = ["15%", "19%", "11%", "13%", "22%", "12%", "8%"]


def build(pg: Playground) -> None:
    text = asset_sections("compare.md")
    gr.Markdown(text["intro"])
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            task = gr.Dropdown([(t.title, t.name) for t in BUILTIN.values()], value="sentiment", label="Task",
                               elem_id="cmp-task")
            methods = gr.CheckboxGroup([(m.name, name) for name, m in METHODS.items()], value=[m for m in METHODS if m not in COMPARE_UNTICKED],
                                       label="Methods", elem_id="cmp-methods")
            steps = gr.Slider(1, pg.lab.max_steps, value=10, step=1, label="Steps per method", elem_id="cmp-steps")
            every = gr.Slider(1, 20, value=5, step=1, label="Measure the metric every N steps", elem_id="cmp-every")
            n_eval = gr.Slider(4, pg.lab.max_eval_examples, value=24, step=1, label="Held-out examples",
                               elem_id="cmp-n-eval")
            with gr.Row():
                run = gr.Button("Compare", variant="primary", elem_id="cmp-run")
                stop = gr.Button("Stop", variant="stop", elem_id="cmp-stop")
        with gr.Column(scale=2):
            status = gr.HTML(status_html([], state="idle"), elem_id="cmp-status")
            with gr.Row():
                by_step = gr.Plot(label="vs steps", elem_id="cmp-by-step", min_width=340)
                by_time = gr.Plot(label="vs time", elem_id="cmp-by-time", min_width=340)
            loss = gr.Plot(label="training loss", elem_id="cmp-loss")
    table = gr.Dataframe(headers=TABLE_HEADERS, label="Measured on this model", wrap=True, interactive=False,
                         column_widths=TABLE_WIDTHS, elem_id="cmp-table")
    gr.Markdown(text["table"], elem_id="cmp-table-notes")

    @friendly
    def on_run(task_name, names, n_steps, n_every, n, request: gr.Request):
        t = get_task(task_name)
        label = METRIC_LABELS.get(t.metric, t.metric)
        n_held, split = pg.lab.held_out(t, int(n))
        held = f"n = {n_held}, {split}"
        interval = (lambda p: wilson(p, n_held)) if t.metric.startswith("exact_match") else None
        asked = list(dict.fromkeys(x.strip() for x in names or [] if x.strip()))
        curves, starts, flat, results, done = {}, {}, {}, [], []
        now, current, last_step = "starting…", "", 0

        def figures():
            return (compare_figure(curves, label, "step", flat, starts, held_out=held, interval=interval),
                    compare_figure(curves, label, "time", flat, starts, held_out=held, interval=interval),
                    compare_figure(curves, label, y="loss"))

        yield status_html([], now), None, None, None, None
        try:
            for name, item in pg.lab.stream(key(request), t, asked, int(n_steps), int(n_every), int(n)):
                title = METHODS[name].name
                if title != current and not isinstance(item, MethodResult):
                    current, last_step = title, 0
                if isinstance(item, Stage):
                    now = item.text + "…"
                    if item.start_metric is not None:  # step 0: the trained method's metric at its init
                        starts[title] = item.start_metric
                        curves.setdefault(title, [])
                        yield (status_html(done, now), *figures(), gr.update())
                    else:
                        yield status_html(done, now), gr.update(), gr.update(), gr.update(), gr.update()
                elif isinstance(item, MethodResult):
                    results.append(item)
                    done.append(title)
                    if not item.records and item.start_metric is None:  # untrained: a dashed line at its metric
                        flat[title] = item.metric
                    now, current = "", ""
                    yield (status_html(done, now), *figures(), table_rows(results, pg.base))
                else:
                    last_step = item.step
                    curves.setdefault(title, []).append(item)
                    now = f"training {title}: step {item.step}/{int(n_steps)}"
                    following = item.step + 1
                    if following <= int(n_steps) and (following % int(n_every) == 0 or following == int(n_steps)):
                        now += f" (step {following} ends by scoring {n_held} {split} examples)"
                    yield (status_html(done, now), *figures(), gr.update())
        except Exception:
            yield status_html(done, "not run: see the message", "error"), gr.update(), gr.update(), gr.update(), \
                gr.update()
            raise
        note = next((r.busy_note for r in results if r.busy_note), "")
        if len(results) < len(asked):  # Stop: the method in progress is dropped from the table
            ended = f"stopped during {current}, after step {last_step}" if current else "stopped"
            yield (status_html(done, ended, "stopped", note), *figures(), table_rows(results, pg.base))
        else:
            yield (status_html(done, "done", "finished", note), *figures(), table_rows(results, pg.base))

    run.click(on_run, [task, methods, steps, every, n_eval], [status, by_step, by_time, loss, table],
              concurrency_id="train", concurrency_limit=slots(pg, "train"), show_progress="hidden")

    def on_stop(request: gr.Request):
        pg.lab.stop(key(request))

    stop.click(on_stop, None, None, queue=False)
    build_ablations(pg, on_stop)


STUDIES = {"Prefix length, and prompt tuning at the same length": "length", "Init in low data": "init",
           "MLP vs direct optimization": "mlp"}


def ablation_status(done: int, total: int, text: str = "", state: str = "running") -> str:
    body = esc(text) if text or total else "Press Run ablation."
    return f'<div id="abl-progress" data-state="{state}" data-done="{done}" data-total="{total}">{body}</div>'


def build_ablations(pg: Playground, on_stop) -> None:
    """The ablation panel; ``on_stop`` is the tab's Stop (one cancel per session stops either run)."""
    text = asset_sections("ablations.md")
    gr.Markdown(text["intro"])
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            a_task = gr.Dropdown([(t.title, t.name) for t in BUILTIN.values()], value="topic", label="Task",
                                 elem_id="abl-task")
            study = gr.Radio(list(STUDIES.items()), value="length", label="Study", elem_id="abl-study")
            a_steps = gr.Slider(1, pg.lab.max_steps, value=10, step=1, label="Steps per run", elem_id="abl-steps")
            seeds = gr.Slider(1, 3, value=1, step=1, label="Seeds", elem_id="abl-seeds")
            with gr.Row():
                a_run = gr.Button("Run ablation", variant="primary", elem_id="abl-run")
                a_stop = gr.Button("Stop", variant="stop", elem_id="abl-stop")
        with gr.Column(scale=2):
            a_status = gr.HTML(ablation_status(0, 0, state="idle"), elem_id="abl-status")
            a_plot = gr.Plot(label="metric after training", elem_id="abl-plot")
            a_curves = gr.Plot(label="loss of every seed", visible=False, elem_id="abl-curves")
    a_table = gr.Dataframe(headers=ABLATION_HEADERS, label="Per cell, over seeds", wrap=True, interactive=False,
                           elem_id="abl-table")
    gr.Markdown(text["table"], elem_id="abl-table-notes")

    @friendly
    def on_ablate(task_name, study_name, n_steps, n_seeds, request: gr.Request):
        t = get_task(task_name)
        label = METRIC_LABELS.get(t.metric, t.metric)
        n_held, split = pg.lab.held_out(t)  # what every ablation run is scored on
        held = f"n = {n_held}, {split}"
        runs, done = [], 0
        total = pg.lab.ablation_runs(t, study_name, int(n_steps), int(n_seeds))
        yield (ablation_status(0, total, f"starting… {total} runs of {int(n_steps)} steps; run 1/{total} trains now"),
               None, gr.update(visible=study_name == "mlp", value=None), None)
        last = ""
        try:
            for done, total, run in pg.lab.ablate(key(request), t, study_name, int(n_steps), int(n_seeds)):
                runs.append(asdict(run))
                fig = study_figure(runs, study_name, label, held)
                curves = loss_curves_figure(runs) if study_name == "mlp" else None
                last = f"{run.series}, {X_LABEL[study_name]} {run.x:g}, seed {run.seed}: {100 * run.metric:.1f}%"
                now = "done" if done == total else f"run {done + 1}/{total} trains now"
                yield (ablation_status(done, total, f"run {done}/{total} finished ({last}) · {now}",
                                       "finished" if done == total else "running"), fig,
                       gr.update(visible=study_name == "mlp", value=curves), ablation_rows(runs, n_held, split, t.metric))
        except Exception:
            yield ablation_status(done, total, "not run: see the message", "error"), gr.update(), gr.update(), \
                gr.update()
            raise
        if done < total:  # Stop: the run in progress is dropped
            yield (ablation_status(done, total, f"stopped after run {done}/{total}" + (f" ({last})" if last else ""),
                                   "stopped"), gr.update(), gr.update(), gr.update())

    a_run.click(on_ablate, [a_task, study, a_steps, seeds], [a_status, a_plot, a_curves, a_table],
                concurrency_id="train", concurrency_limit=slots(pg, "train"), show_progress="hidden")
    a_stop.click(on_stop, None, None, queue=False)
