"""The Class tab, for the teacher only: every student's runs live, the leaderboard, sharing, the exercise,
the export and the reset.

The tab is hidden from students, and every action checks the teacher's role on the server
(``playground.classdesk``), so a student's browser can't call them either.
"""

import gradio as gr

from playground.classdesk import ClassDesk
from playground.classroom import EXERCISE_FIELDS
from playground.runfigures import run_labels
from playground.service import Playground
from playground.tasks import BUILTIN

from .common import asset, esc, friendly, key

FIXABLE = {"num_virtual_tokens": "virtual tokens", "learning_rate": "learning rate", "steps": "steps",
           "batch_size": "batch size", "seed": "seed", "eval_examples": "held-out examples"}
REFRESH_S = 3.0


def status_line(live: list[dict], everyone: list[dict]) -> str:
    """How many students have a run, train now, or are being compared with the prompts (their steps are done)."""
    running = [r for r in live if r["state"] == "running"]
    comparing = sum(len(r.get("steps", [])) >= (r.get("train_settings") or {}).get("steps", 0) for r in running)
    training = len(running) - comparing
    return (f'<div id="class-status" data-students="{len(live)}" data-running="{len(running)}" '
            f'data-training="{training}" data-comparing="{comparing}" data-runs="{len(everyone)}">'
            f'{len(live)} student{"s" * (len(live) != 1)} with a run · {training} training now · {comparing} being '
            f'compared with the prompts · {len(everyone)} run{"s" * (len(everyone) != 1)} in the class folder</div>')


def build(pg: Playground):
    desk = ClassDesk(pg)
    gr.Markdown(asset("class.md"), elem_id="class-intro")
    status = gr.HTML(elem_id="class-status-box")
    with gr.Row():
        loss = gr.Plot(elem_id="class-loss", show_label=False)
        metric = gr.Plot(elem_id="class-metric", show_label=False)
    board = gr.Dataframe(label="Leaderboard: every run, by held-out metric, per task", interactive=False, wrap=True,
                         max_height=320, elem_id="class-board")
    with gr.Accordion("Show a run or a prefix to the class", open=True):
        with gr.Row():
            run_pick = gr.Dropdown([], label="A student's run", elem_id="push-run", scale=3)
            push_btn = gr.Button("Show this run to the class", elem_id="push-btn", scale=1)
        with gr.Row():
            prefix_pick = gr.Dropdown([], label="A prefix in the library", elem_id="push-prefix", scale=3)
            push_prefix_btn = gr.Button("Show this prefix to the class", elem_id="push-prefix-btn", scale=1)
        with gr.Row():
            shared_pick = gr.Dropdown([], label="Shown to the class now", elem_id="shared-pick", scale=3)
            unpush_btn = gr.Button("Stop showing it", elem_id="unpush-btn", scale=1)
        push_status = gr.Markdown(elem_id="push-status")
    with gr.Accordion("Exercise: fix the task and some settings for everyone", open=False, elem_id="exercise-box"):
        with gr.Row():
            ex_task = gr.Dropdown([(t.title, t.name) for t in BUILTIN.values()], value="sentiment", label="Task",
                                  elem_id="ex-task")
            ex_fix = gr.CheckboxGroup([(v, k) for k, v in FIXABLE.items()], value=["num_virtual_tokens"],
                                      label="Settings everyone must use (the rest are the students' choice)",
                                      elem_id="ex-fix")
        with gr.Row():
            ex_n = gr.Number(5, label="virtual tokens", precision=0, elem_id="ex-n")
            ex_lr = gr.Number(0.01, label="learning rate", elem_id="ex-lr")
            ex_steps = gr.Number(20, label="steps", precision=0, elem_id="ex-steps")
            ex_batch = gr.Number(8, label="batch size", precision=0, elem_id="ex-batch")
            ex_seed = gr.Number(0, label="seed", precision=0, elem_id="ex-seed")
            ex_eval = gr.Number(32, label="held-out examples", precision=0, elem_id="ex-eval")
        ex_note = gr.Textbox(label="A note to the class (optional)", max_lines=3, elem_id="ex-note",
                             placeholder="e.g. choose your own learning rate: who gets the best held-out score?")
        with gr.Row():
            ex_set = gr.Button("Set the exercise", variant="primary", elem_id="ex-set")
            ex_clear = gr.Button("End the exercise", elem_id="ex-clear")
        ex_status = gr.Markdown(elem_id="ex-status")
    with gr.Accordion("Export and reset", open=False, elem_id="reset-box"):
        with gr.Row():
            export_btn = gr.Button("Export the class's results", elem_id="export-btn")
            reset_btn = gr.Button("Reset the class…", variant="stop", elem_id="reset-btn")
        files = gr.File(label="The runs (CSV) and the shared prefixes (zip, PEFT format)", file_count="multiple",
                        interactive=False, elem_id="export-files")
        with gr.Row(visible=False, elem_id="reset-confirm") as confirm:
            ask = gr.Markdown()
            yes = gr.Button("Yes, reset the class", variant="stop", scale=0, elem_id="reset-yes")
            no = gr.Button("Cancel", scale=0, elem_id="reset-cancel")
        reset_status = gr.Markdown(elem_id="reset-status")

    def choices(runs: list[dict], picked):
        def pct(r):
            return "—" if r["final_metric"] is None else f"{100 * r['final_metric']:.1f}%"
        opts = [(f"{lab} · {r['task']} · {pct(r)} · {r['state']}", r["run_id"])
                for lab, r in zip(run_labels(runs), runs)][::-1]
        return gr.update(choices=opts, value=picked if picked in {v for _, v in opts} else None)

    @friendly
    def class_view(run_picked, prefix_picked, shared_picked, request: gr.Request):
        k = key(request)
        if not pg.is_teacher(k):  # a student's page: the tab is hidden and shows nothing
            return [gr.skip()] * 7
        v = desk.view(k)  # drawn again only when a run began, stepped or changed
        headers, rows = v.board
        names = pg.library.names()
        shared = [(f"{p.name} ({p.author})", p.name) for p in desk.shared()]
        return (status_line(v.live, v.everyone), v.loss, v.metric,
                {"headers": headers, "data": rows} if rows else None, choices(v.everyone, run_picked),
                gr.update(choices=names, value=prefix_picked if prefix_picked in names else None),
                gr.update(choices=shared, value=shared_picked if shared_picked in {n for _, n in shared} else None))

    inputs = [run_pick, prefix_pick, shared_pick]
    outputs = [status, loss, metric, board, run_pick, prefix_pick, shared_pick]
    timer = gr.Timer(REFRESH_S, active=False)
    timer.tick(class_view, inputs, outputs, show_progress="hidden", concurrency_id="class-view", concurrency_limit=2,
               api_name="class_view")

    @friendly
    def on_push(run_id, request: gr.Request):
        if not run_id:
            raise gr.Error("Pick a run first.")
        p = desk.push_run(key(request), run_id)
        return f"**{esc(p.name)}** (by {esc(p.author)}) is now in everyone's Switch and Attention, and can be forked."

    @friendly
    def on_push_prefix(name, request: gr.Request):
        if not name:
            raise gr.Error("Pick a prefix first.")
        p = desk.push_prefix(key(request), name)
        return f"**{esc(p.name)}** is now shown first in everyone's Switch and Attention, and can be forked."

    @friendly
    def on_unpush(name, request: gr.Request):
        if not name:
            raise gr.Error("Pick a shared prefix first.")
        desk.unpush(key(request), name)
        return f"**{esc(name)}** is no longer shown to the class (it stays in the library)."

    push_btn.click(on_push, run_pick, push_status).then(class_view, inputs, outputs)
    push_prefix_btn.click(on_push_prefix, prefix_pick, push_status).then(class_view, inputs, outputs)
    unpush_btn.click(on_unpush, shared_pick, push_status).then(class_view, inputs, outputs)

    @friendly
    def on_exercise(task, fix, n, lr, steps, batch, seed, n_eval, note, request: gr.Request):
        values = {"num_virtual_tokens": int(n or 0), "learning_rate": float(lr or 0), "steps": int(steps or 0),
                  "batch_size": int(batch or 0), "seed": int(seed or 0), "eval_examples": int(n_eval or 0)}
        fixed = {k: values[k] for k in fix or [] if k in EXERCISE_FIELDS}
        ex = desk.set_exercise(key(request), task, fixed, note or "")
        return f"Exercise set: {esc(ex.describe())}. Students' Train tabs lock these settings within a few seconds."

    @friendly
    def on_end(request: gr.Request):
        desk.clear_exercise(key(request))
        return "The exercise is over: students choose every setting again."

    ex_set.click(on_exercise, [ex_task, ex_fix, ex_n, ex_lr, ex_steps, ex_batch, ex_seed, ex_eval, ex_note], ex_status)
    ex_clear.click(on_end, None, ex_status)

    @friendly
    def on_export(request: gr.Request):
        csv_path, zip_path = desk.export(key(request))
        return [str(csv_path), str(zip_path)]

    export_btn.click(on_export, None, files)

    @friendly
    def on_reset(request: gr.Request):
        k = key(request)
        csv_path, zip_path = desk.export(k)  # the results first, whatever the answer
        n_runs, n_prefixes = len(desk.runs(k, everyone=True)), sum(not e.shipped for e in pg.library.entries())
        text = (f"Reset the class? This stops every run and deletes **{n_runs} runs** and **{n_prefixes} saved "
                "prefixes**; the shipped prefixes stay. The export above holds the results: download it first.")
        return [str(csv_path), str(zip_path)], gr.update(visible=True), text

    @friendly
    def on_yes(request: gr.Request):
        got = desk.reset(key(request))
        return (gr.update(visible=False), f"The class is reset: {got['runs']} runs and {got['prefixes']} saved "
                "prefixes deleted. The shipped prefixes are untouched.")

    reset_btn.click(on_reset, None, [files, confirm, ask])
    yes.click(on_yes, None, [confirm, reset_status]).then(class_view, inputs, outputs)
    no.click(lambda: (gr.update(visible=False), "Nothing was deleted."), None, [confirm, reset_status], queue=False)
    return class_view, inputs, outputs, timer
