"""The Train tab: pick a task or upload one, set the prefix, train live, compare, save."""


from collections.abc import Callable
from dataclasses import asdict, dataclass

import gradio as gr

from playground.classdesk import ClassDesk
from playground.figures import loss_figure, metric_figure, probe_figure, probe_slots_figure
from playground.library import NameTaken
from playground.methods import prefix_learning_rate
from playground.metrics import METRIC_LABELS, METRICS
from playground.models import autocast_dtype
from playground.prefix import DEMO_SHOTS, MAX_DEMO_SHOTS, PrefixSettings
from playground.probe import probe_every
from playground.report import BASELINE_HEADERS, baseline_cells, parameter_summary, versus_best_prompt
from playground.service import Playground
from playground.sessions import TrainingRun
from playground.tasks import BUILTIN, get_task
from playground.training import PRECISIONS, TrainSettings, held_out_split

from .common import asset_sections, esc, friendly, key, owner, slots

UPLOAD = "upload"
INITS = {"task text": "task", "custom text": "text", "training examples": "demos", "random": "random"}
# The answers next to the input and target, the prefix's first; widths fit a 1280 px screen without scrolling.
TABLE_HEADERS = ["input", "target", "prefix", "strongest prompt", "base + instruction", "base model"]
TABLE_WIDTHS = ["30%", "12%", "14.5%", "14.5%", "14.5%", "14.5%"]
SUMMARY_HEADERS = ["way of answering", "score % (spread over draws, or 95% interval)", *BASELINE_HEADERS[2:]]
SUMMARY_WIDTHS = ["28%", "28%", "11%", "11%", "11%", "11%"]
METRIC_HINT = ("exact match: the answer equals the target, ignoring case, punctuation and articles; cased: "
               "capitals count; token F1: word overlap; ROUGE-L: the longest common word sequence")


@dataclass
class TrainTab:
    """Components other tabs read (the prefix settings drive Learn's live numbers)."""

    num_virtual_tokens: gr.Slider
    prefix_projection: gr.Checkbox
    encoder_hidden_size: gr.Number
    open_run: Callable  # a page opens: show (and follow) the learner's latest run
    run_outputs: list
    class_view: Callable  # the exercise and the shared prefixes
    class_inputs: list
    class_outputs: list


def rate_text(rate: float) -> str:
    """A learning rate as the docs write it: 0.001 -> "1e-3"."""
    mantissa, exp = f"{rate:.0e}".split("e")
    return f"{mantissa}e{int(exp)}"


def progress_html(run: TrainingRun | None, note: str = "", state: str | None = None) -> str:
    """A progress bar with step, ETA, throughput and the latest metric; data-* attributes for tests."""
    if run is None:
        return '<div id="pp-progress" data-state="idle" data-step="0">Press <b>Train</b> to start.</div>'
    total, done = run.train_settings.steps, run.steps_done
    parts = [f"step {done}/{total}"]
    eta = run.eta_seconds()
    if run.state == "running" and eta is not None:
        parts.append(f"ETA {eta:.0f} s")
    if run.records:
        parts.append(f"{run.records[-1].examples_per_s:.1f} examples/s")
        parts.append(f"loss {run.records[-1].loss:.3f}")
    if run.metric is not None:
        parts.append(f"held-out {METRIC_LABELS.get(run.task.metric, run.task.metric)} {100 * run.metric:.1f}%")
    state = state or run.state
    label = {"running": "Training", "finished": "Done", "stopped": "Stopped", "scoring": "Comparing"}[state]
    return (f'<div id="pp-progress" data-state="{state}" data-step="{done}" data-total="{total}">'
            f'<progress value="{done}" max="{total}" style="width:100%;height:14px"></progress>'
            f'<div><b>{label}</b> · {esc(" · ".join(parts))}{" · " + esc(note) if note else ""}</div></div>')


def probe_text_md(run: TrainingRun | None) -> str:
    """The line above the attention-while-training figures: the probe prompt, how often, and what it cost."""
    if run is None:
        return ""
    if run.probe_note:
        return run.probe_note
    ms = [1000 * p.seconds for p in run.probes]
    cost = (f" · {len(ms)} recorded so far, {sum(ms) / len(ms):.0f} ms each on average (one forward of the prompt, "
            f"waiting for the model included)") if ms else ""
    return (f"Recorded on the held-out input “{esc(' '.join(run.probe_text.split())[:120])}” at step 0 and every "
            f"{probe_every(run.train_settings.steps)} step(s){cost}.")


def slots_at(run: TrainingRun | None, step) -> object:
    """The layer × virtual-token map of the last recording at or before ``step`` (the latest when None)."""
    if run is None or not run.probes:
        return probe_slots_figure(None)
    points = [p for p in run.probes if step is None or p.step <= step] or run.probes[:1]
    return probe_slots_figure(points[-1], run.probe_text)


def on_size(show):
    """A callback from (num_virtual_tokens, MLP on, encoder_hidden_size) to ``show(PrefixSettings)``.

    Only the prefix's size matters here, so init is irrelevant; half-typed values keep the last
    output (the Train click validates for real).
    """
    def callback(n, on, h):
        try:
            return show(PrefixSettings(int(n), "random", "", bool(on), int(h or 256)))
        except Exception:  # noqa: BLE001
            return gr.update()
    return callback


def table_rows(rows: list[dict], run: TrainingRun | None = None) -> list[list]:
    """Example by example, in TABLE_HEADERS' order; with a run, a first row scoring each column on all its n."""
    mark = lambda s: "✓" if s >= 0.999 else ("✗" if s <= 0.001 else f"{100 * s:.0f}%")  # noqa: E731
    out = [[r["input"], r["target"], f"{r['prefix']}  {mark(r['prefix_score'])}",
            f"{r['best']}  {mark(r['best_score'])}", f"{r['instruction']}  {mark(r['instruction_score'])}",
            f"{r['base']}  {mark(r['base_score'])}"]
           for r in rows]
    if run is not None and run.strongest is not None:
        n, label = run.held_out_n, METRIC_LABELS.get(run.task.metric, run.task.metric)
        pct = lambda s: f"{100 * s:.1f}%"  # noqa: E731
        head = [f"score on all {n} held-out examples ({label})", "", pct(run.metric or 0.0),
                f"{pct(run.strongest.scores[0])} (this draw)", pct(run.baselines["instruction"]),
                pct(run.baselines["base"])]
        out.insert(0, head)
    return out


def summary_rows(run: TrainingRun) -> list[list]:
    """One row per way of answering: its score (n; spread over draws, or a 95% interval) and its cost per query."""
    best = run.strongest.key if run.strongest is not None else None
    rows = []
    for r in run.summary:
        cells = baseline_cells(r, run.task.metric)
        cells[1] += f", n = {r['n']}"
        if r["key"] == best:
            cells[0] = f"★ {cells[0]} (the strongest prompt)"
        rows.append(cells)
    return rows


def build(pg: Playground) -> TrainTab:
    L = pg.limits
    desk = ClassDesk(pg)
    text = asset_sections("train.md")
    gr.Markdown(text["intro"], elem_id="train-intro")
    with gr.Accordion("How training and the comparison work", open=False):
        gr.Markdown(text.get("more", ""))
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320, elem_id="train-controls"):
            exercise_note = gr.Markdown(visible=False, elem_id="exercise-note")
            task = gr.Dropdown([(t.title, t.name) for t in BUILTIN.values()] + [("Your uploaded file", UPLOAD)],
                               value="sentiment", label="Task", elem_id="task")
            # Train sits right under the task: the defaults are sensible, and the curves beside it stay in view.
            with gr.Row():
                train_btn = gr.Button("Train", variant="primary", elem_id="train-btn")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
            preview = gr.Dataframe(initial_preview(), headers=["input", "target"], label="Examples (train split)", wrap=True,
                                   max_height=180, interactive=False, elem_id="train-preview",
                                   column_widths=["72%", "28%"])
            with gr.Accordion("Start from a run the teacher shared (fork)", open=False, elem_id="fork-box"):
                with gr.Row():
                    fork_pick = gr.Dropdown([], label="Shared with the class", elem_id="fork-pick", scale=3)
                    fork_btn = gr.Button("Fork it", elem_id="fork-btn", scale=1)
                fork_on = gr.Checkbox(False, label="Start from the shared prefix", elem_id="fork-on",
                                      info="its task and settings are set above; the prefix starts from its weights")
                fork_name = gr.State("")
            with gr.Accordion("Upload your own data (JSONL or CSV)", open=False):
                data_file = gr.File(label="Data file", file_types=[".jsonl", ".csv"], elem_id="data-file")
                with gr.Row():
                    input_col = gr.Dropdown([], label="Input column", allow_custom_value=False, elem_id="input-col")
                    target_col = gr.Dropdown([], label="Target column", allow_custom_value=False, elem_id="target-col")
                instruction = gr.Textbox(label="Instruction (the baseline prompt and the prefix's initial text)",
                                         value="Answer with the label for this text.")
                metric = gr.Dropdown([(METRIC_LABELS.get(m, m), m) for m in METRICS], value="exact_match",
                                     label="Metric", info=METRIC_HINT)
                use_file = gr.Button("Use this file")
                upload_status = gr.Markdown(elem_id="upload-status")
            n_tokens = gr.Slider(1, L.max_virtual_tokens, value=20, step=1, label="Virtual tokens (num_virtual_tokens)",
                                 elem_id="n-tokens", info="how many trained key/value slots the prefix adds in front "
                                                          "of the prompt, in every layer")
            init = gr.Radio(list(INITS), value="task text", label="Initialization: where the prefix starts",
                            info="task text: the task's instruction; training examples: the instruction and a few "
                                 "training examples (the few-shot prompt, cached); random: PEFT's default")
            init_text = gr.Textbox(label="Custom init text", visible=False)
            init_shots = gr.Slider(1, MAX_DEMO_SHOTS, value=DEMO_SHOTS, step=1, label="Training examples in the prefix",
                                   visible=False, elem_id="init-shots",
                                   info="drawn with the seed; the prefix gets as many virtual tokens as the "
                                        "instruction and these examples take (num_virtual_tokens is not used)")
            with gr.Row():
                mlp = gr.Checkbox(label="Train through an MLP (prefix_projection)", value=False, elem_id="mlp",
                                  info="the paper's reparameterization: a small MLP makes the prefix while training, "
                                       "and is dropped at export; it starts from random")
                hidden = gr.Number(256, label="MLP width (encoder_hidden_size)", precision=0, minimum=1, maximum=4096,
                                   visible=False, info="the hidden layer's size")
            with gr.Row():
                lr = gr.Number(prefix_learning_rate(False, INITS["task text"]), label="Learning rate", minimum=1e-6,
                               maximum=1.0, elem_id="lr")
                steps = gr.Slider(1, L.max_steps, value=20, step=1, label="Steps", elem_id="steps")
            with gr.Row():
                batch = gr.Slider(1, L.max_batch_size, value=8, step=1, label="Batch size")
                seed = gr.Number(0, label="Seed", precision=0, elem_id="seed")
            with gr.Accordion("Held-out evaluation", open=False):
                eval_every = gr.Slider(0, 50, value=5, step=1, label="Measure the metric every N steps (0: at the end)",
                                       elem_id="eval-every")
                eval_n = gr.Slider(4, L.max_eval_examples, value=32, step=1, label="Held-out examples", elem_id="eval-n",
                                   info="each one is worth 100/n points of the metric: with 8, one answer moves it "
                                        "12.5 points")
            with gr.Accordion("Speed", open=False):
                amp = autocast_dtype(pg.base, "auto")
                precision = gr.Radio(list(PRECISIONS), value="auto", label="Training precision", elem_id="precision",
                                     info=f"auto = {'bf16 autocast' if amp is not None else 'fp32'} on this machine "
                                          "(bf16 where the CPU/GPU multiplies it in hardware); the prefix itself "
                                          "always stays fp32")
            params = gr.Markdown(parameter_summary(pg.base, PrefixSettings()), elem_id="param-summary")
            command = gr.Textbox(label="The command that reproduces this run (python -m playground train)",
                                 interactive=False, buttons=["copy"], elem_id="run-command", lines=2, max_lines=4)
            # At the controls' end, closed: content below the row would let the page scroll the live curves away
            # from the controls (test_layout), and the live column must stay short enough to stay in view.
            with gr.Accordion("Where the model looks while the prefix learns (attention on it, layer × step)",
                              open=False, elem_id="probe-box"):
                gr.Markdown(text.get("probe", ""), elem_id="probe-intro")
                probe_md = gr.Markdown(elem_id="probe-note")
                probe_plot = gr.Plot(elem_id="probe-plot", show_label=False)
                replay = gr.Slider(0, 20, value=0, step=1, label="Replay the virtual-token map at step",
                                   elem_id="probe-step", info="the map of the last recording at or before this step")
                slots_plot = gr.Plot(elem_id="probe-slots", show_label=False)
        # The live column stays in view (assets/app.css) while the controls beside it scroll.
        with gr.Column(scale=3, elem_id="train-live"):
            progress = gr.HTML(progress_html(None), elem_id="progress-box")
            with gr.Row():
                loss_plot = gr.Plot(label="Loss", elem_id="loss-plot", show_label=False)
                metric_plot = gr.Plot(label="Held-out metric", elem_id="metric-plot", show_label=False)
    with gr.Row(elem_id="train-results"):
        with gr.Column():
            summary = gr.Dataframe(headers=SUMMARY_HEADERS, label="Every way of answering, scored on the same "
                                   "held-out examples, with what it costs per query", wrap=True, interactive=False,
                                   elem_id="summary-table", column_widths=SUMMARY_WIDTHS)
            table = gr.Dataframe(headers=TABLE_HEADERS, label="Before / after on held-out examples (the strongest "
                                 "prompt: its first draw of examples). The first row scores each column on all of "
                                 "them.", wrap=True, interactive=False, elem_id="compare-table",
                                 column_widths=TABLE_WIDTHS)
            with gr.Row():
                save_name = gr.Textbox(label="Save to the library as", placeholder="e.g. my-sentiment",
                                       elem_id="save-name", scale=3)
                overwrite = gr.Checkbox(label="Overwrite", value=False, scale=1, elem_id="save-overwrite")
                save_btn = gr.Button("Save", elem_id="save-btn", scale=1)
            with gr.Row(visible=False, elem_id="save-confirm") as save_confirm:  # an overwrite asks first
                save_ask = gr.Markdown()
                save_yes = gr.Button("Yes, overwrite", variant="stop", scale=0, elem_id="save-confirm-yes")
                save_no = gr.Button("Cancel", scale=0, elem_id="save-confirm-cancel")
            save_status = gr.Markdown(elem_id="save-status")
            save_pending = gr.State(None)  # the name to overwrite, held from the first click

    # --- wiring ---------------------------------------------------------------------------------
    @friendly
    def show_task(choice, request: gr.Request):
        t = pg.task(key(request), choice)
        return [[e.input, e.target] for e in t.split("train")[:20]]

    task.change(show_task, task, preview)

    @friendly
    def on_file(path):
        if not path:
            return gr.update(choices=[]), gr.update(choices=[]), "", gr.update()
        cols, rows = pg.file_columns(path)
        x = "input" if "input" in cols else cols[0]
        y = "target" if "target" in cols else cols[min(1, len(cols) - 1)]
        return (gr.update(choices=cols, value=x), gr.update(choices=cols, value=y),
                f"Columns: {', '.join(f'`{c}`' for c in cols)}. Pick the input and target, then press *Use this file*.",
                {"headers": [f"{x} (input)", f"{y} (target)"], "data": [[r.get(x), r.get(y)] for r in rows]})

    data_file.change(on_file, data_file, [input_col, target_col, upload_status, preview])

    @friendly
    def on_use(path, x, y, instr, m, request: gr.Request):
        if not path:
            raise gr.Error("Upload a JSONL or CSV file first.")
        t = pg.load_upload(key(request), path, x or "", y or "", instr, m)
        msg = (f"Loaded {len(t.split('train'))} training and {len(t.split('test'))} held-out examples "
               f"(split 80/20). Task set to *Your uploaded file*.")
        if t.truncated:
            msg += (f" {t.truncated} example{'s were' if t.truncated != 1 else ' was'} longer than this server's "
                    f"{pg.limits.max_example_tokens} tokens (input + target) and cut to fit: the input first, "
                    "so the target stays whole where it can.")
        # A new task: the last run's curves, tables and save name belong to the old one.
        return (gr.update(value=UPLOAD), [[e.input, e.target] for e in t.split("train")[:20]], msg,
                progress_html(None), None, None, None, None, "")

    use_file.click(on_use, [data_file, input_col, target_col, instruction, metric],
                   [task, preview, upload_status, progress, loss_plot, metric_plot, summary, table, save_name])

    def on_init(choice, on):
        rate = prefix_learning_rate(bool(on), INITS.get(choice, choice))
        demos = INITS.get(choice, choice) == "demos"
        return (gr.update(visible=choice == "custom text"), gr.update(value=rate), gr.update(visible=demos),
                gr.update(interactive=not demos))

    init.change(on_init, [init, mlp], [init_text, lr, init_shots, n_tokens])

    def on_mlp(on, choice):
        if on and choice != "random":
            rate = prefix_learning_rate(True, "random")
            gr.Info("The MLP reparameterization starts from random: PEFT can't initialize it from text. "
                    f"Init set to random (learning rate {rate_text(rate)}, the MLP's own).")
            return gr.update(visible=True), gr.update(value="random"), gr.update(value=rate)
        if not on and choice == "random":  # the MLP had moved init to random: go back to the text init
            rate = prefix_learning_rate(False, INITS["task text"])
            gr.Info(f"MLP off: init back to task text (learning rate {rate_text(rate)}, the direct prefix's own). "
                    "Pick random again if you want it without the MLP.")
            return gr.update(visible=False), gr.update(value="task text"), gr.update(value=rate)
        rate = prefix_learning_rate(bool(on), INITS.get(choice, choice))
        return gr.update(visible=bool(on)), gr.update(), gr.update(value=rate)

    mlp.change(on_mlp, [mlp, init], [hidden, init, lr])

    for c in (n_tokens, mlp, hidden):
        c.change(on_size(lambda s: parameter_summary(pg.base, s)), [n_tokens, mlp, hidden], params)

    def waiting_note(run: TrainingRun, k: str) -> str:
        """Where the run stands while it has no new step: its place in the model's line, or warming up."""
        wait = pg.waiting(k) if run.phase == "training" else None
        note = wait.note() if wait else ""
        if not run.records and not note:
            note = "warming up"
            if run.prefix_settings.init == "demos":
                k_ = run.prefix_settings.init_shots
                note += f" · {run.prefix.num_virtual_tokens} virtual tokens from {k_} training example{'s' * (k_ != 1)}"
        return note

    def view(run: TrainingRun, k: str, busy: list) -> tuple:
        """What the page shows of a run, at any moment: its progress, curves, and (once compared) its tables."""
        t, ts = run.task, run.train_settings
        label = METRIC_LABELS.get(t.metric, t.metric)
        held = f"n = {run.held_out_n}, {held_out_split(t)}"
        command = run.record.command if run.record is not None else ""

        def charts(lines=None):
            return (loss_figure(run.records, ts.steps),
                    metric_figure(run.records, label, ts.steps, lines, run.start_metric, held))

        last = run.probes[-1].step if run.probes else 0
        inside = (probe_text_md(run), probe_figure(run.probes, ts.steps, run.probe_text), slots_at(run, None),
                  gr.update(maximum=max(ts.steps, 1), value=last))
        if run.phase in ("warming up", "training"):
            return progress_html(run, waiting_note(run, k)), *charts(), None, None, command, *inside
        if run.phase == "scoring start":
            return (progress_html(run, f"scoring the prefix as it started (step 0) on {run.held_out_n} held-out "
                                  "examples", "scoring"), *charts(), None, None, command, *inside)
        if run.phase == "scoring prompts":
            return (progress_html(run, "scoring the base model and the prompts without training (the instruction, "
                                  "+ format, few-shot over draws; once per task for the whole class)", "scoring"),
                    *charts(), None, None, command, *inside)
        stopped = run.state == "stopped"
        if run.rows is None or run.strongest is None:  # stopped before any comparison, or an error
            return (progress_html(run, f"stopped at step {run.steps_done}. {run.error}" if stopped else run.error),
                    *charts(), None, None, command, *inside)
        best = run.strongest.as_dict()
        note = versus_best_prompt(run.metric or 0.0, run.held_out_n, best, run.paired)
        note = f"stopped early at step {run.steps_done} · {note}" if stopped else note
        if not busy:  # the table's milliseconds were taken just now: say if the class was busy meanwhile
            busy.append(pg.load().note())
        note = f"{note} · ⚠ {busy[0]}" if busy[0] else note
        lines = {"base": run.baselines["base"], "instruction": run.baselines["instruction"], best["label"]: best["mean"]}
        return (progress_html(run, note), *charts(lines), summary_rows(run), table_rows(run.rows, run), command,
                *inside)

    def follow(k: str, run: TrainingRun):
        """Every change of this learner's run until it is over; a newer run of theirs (another tab pressed Train)
        takes over. Between changes, only the progress line moves (the run's place in the model's line): the
        curves are drawn again only when a step or a phase is new."""
        seen, busy, shown = -1, [], None
        while run is not None:
            version = run.wait_change(seen, 1.0)
            latest = pg.current_run(k)
            if latest is not run and latest is not None:  # a newer run: follow it instead
                run, seen, busy, shown = latest, -1, [], None
                continue
            if version == seen:  # nothing new in a second
                if run.phase == "training":
                    note = waiting_note(run, k)
                    if note != shown:
                        shown = note
                        yield progress_html(run, note), *[gr.skip()] * (len(outputs) - 1)
                continue
            seen, shown = version, None
            yield view(run, k, busy)
            if run.done.is_set() and run.version == seen:
                return

    @friendly
    def on_train(choice, n, init_choice, itext, on, h, lr_, steps_, batch_, seed_, every, n_eval, prec, k_init,
                 fork_on, fork_name, request: gr.Request):
        k = key(request)
        t = pg.task(k, choice)
        ps = PrefixSettings(int(n), INITS.get(init_choice, init_choice), itext or "", bool(on), int(h or 256),
                            int(k_init or DEMO_SHOTS))
        ts = TrainSettings(float(lr_), int(steps_), int(batch_), int(seed_ or 0), int(every), int(n_eval), prec or "auto")
        run = pg.start_run(k, t, ps, ts, start_from=fork_name if fork_on and fork_name else "")
        pg.launch(run)
        yield from follow(k, run)

    @friendly
    def on_open(request: gr.Request):
        """A page opens (a reload, a second tab): show this learner's latest run, following it if it goes on."""
        k = key(request)
        run = pg.current_run(k)
        if run is None:
            yield progress_html(None), None, None, None, None, "", "", None, None, gr.skip()
            return
        yield from follow(k, run)

    outputs = [progress, loss_plot, metric_plot, summary, table, command, probe_md, probe_plot, slots_plot, replay]

    def replay_map(step, request: gr.Request):
        return slots_at(pg.current_run(key(request)), step)

    replay.release(replay_map, replay, slots_plot, queue=False, show_progress="hidden")
    train_btn.click(on_train, [task, n_tokens, init, init_text, mlp, hidden, lr, steps, batch, seed, eval_every,
                               eval_n, precision, init_shots, fork_on, fork_name], outputs,
                    concurrency_id="train", concurrency_limit=slots(pg, "train"),
                    show_progress="hidden", api_name="train")
    def on_stop(request: gr.Request):
        if pg.stop(key(request)):
            gr.Info("Stopping after the current step.")

    stop_btn.click(on_stop, None, None, queue=False)

    def saved(path, replaced: bool = False) -> str:
        return (f"Saved **{esc(path.name)}** to the library{' in place of the previous one' if replaced else ''}. "
                "It now appears in Attention, Switch and Library.")

    @friendly
    def on_save(name, over, request: gr.Request):
        if not (name or "").strip():
            raise gr.Error("Type a name to save under, such as my-sentiment.")
        try:
            path = pg.save_trained(key(request), name, False, owner=owner(request))
        except NameTaken as taken:  # the name is this student's to overwrite: ask first
            if not over:
                raise
            return ("", taken.name, gr.update(visible=True), f"Overwrite **{esc(taken.name)}** in the library with "
                    "this prefix? The prefix now under that name is lost.",
                    gr.update(value=f"Yes, overwrite {taken.name}"))
        return saved(path), None, gr.update(visible=False), gr.skip(), gr.skip()

    @friendly
    def on_overwrite(name, request: gr.Request):
        if not name:  # already done (a second click on the confirmation)
            return gr.skip(), None, gr.update(visible=False)
        path = pg.save_trained(key(request), name, True, owner=owner(request))
        return saved(path, replaced=True), None, gr.update(visible=False)

    save_btn.click(on_save, [save_name, overwrite], [save_status, save_pending, save_confirm, save_ask, save_yes])
    save_yes.click(on_overwrite, save_pending, [save_status, save_pending, save_confirm])
    save_no.click(lambda: ("Nothing was saved.", None, gr.update(visible=False)), None,
                  [save_status, save_pending, save_confirm], queue=False)
    # --- the class: the teacher's exercise, and forks of what the teacher shared -------------------------
    controls = {"num_virtual_tokens": n_tokens, "init": init, "prefix_projection": mlp, "learning_rate": lr,
                "steps": steps, "batch_size": batch, "seed": seed, "eval_every": eval_every, "eval_examples": eval_n}
    init_label = {v: k for k, v in INITS.items()}

    def class_settings(seen, picked):
        """The exercise and the list of shared prefixes, when either changed since ``seen`` (every tick of
        the timer: an unchanged page gets nothing, so an open dropdown stays open)."""
        shared = [(f"{p.name} ({p.author})", p.name) for p in desk.shared()]
        ex = desk.exercise()
        state = {"exercise": asdict(ex) if ex is not None else None, "shared": shared}
        if state == seen:
            return [gr.skip()] * (4 + len(controls))
        forks = gr.update(choices=shared, value=picked if picked in {n for _, n in shared} else None)
        if seen is not None and state["exercise"] == seen.get("exercise"):  # only the shared list changed
            return [state] + [gr.skip()] * (2 + len(controls)) + [forks]
        # Touch only the controls an exercise locks or unlocks: an update sent to a control the student may be
        # typing into (even interactive=True alone) can put back the value the page was built with.
        was = (seen or {}).get("exercise") or {}
        was_fixed = set(was.get("fixed") or {})
        if ex is None:
            return [state, gr.update(visible=False, value=""), gr.update(interactive=True) if was else gr.skip(),
                    *[gr.update(interactive=True) if name in was_fixed else gr.skip() for name in controls], forks]
        text = f"**Exercise** · {esc(ex.describe())}. The settings it fixes are locked; you choose the rest."
        if ex.note:
            text = f"{text}\n\n{esc(ex.note)}"
        ups = []
        for name in controls:
            if name in ex.fixed:
                v = ex.fixed[name]
                ups.append(gr.update(value=init_label.get(v, v) if name == "init" else v, interactive=False))
            else:
                ups.append(gr.update(interactive=True) if name in was_fixed else gr.skip())
        return [state, gr.update(visible=True, value=text), gr.update(value=ex.task, interactive=False), *ups, forks]

    seen_exercise = gr.State(None)
    class_outputs = [seen_exercise, exercise_note, task, *controls.values(), fork_pick]
    timer = gr.Timer(5.0)
    timer.tick(class_settings, [seen_exercise, fork_pick], class_outputs, queue=False, show_progress="hidden")

    @friendly
    def on_fork(name):
        if not name:
            raise gr.Error("Pick a run the teacher shared first.")
        f = desk.fork(name)
        p, t = f["prefix_settings"], f["train_settings"]
        task_name = f["task"] if f["task"] in BUILTIN else gr.skip()
        gr.Info(f"Forked {name} by {f['author']}: its task and settings are set; press Train to go on from its "
                "prefix.")
        pick = lambda d, k: d[k] if k in d else gr.skip()  # noqa: E731
        return (task_name, pick(p, "num_virtual_tokens"), False, pick(t, "learning_rate"), pick(t, "steps"),
                pick(t, "batch_size"), pick(t, "seed"), pick(t, "eval_every"), pick(t, "eval_examples"),
                gr.update(value=True, label=f"Start from {name}'s prefix (by {f['author']})"), name)

    fork_btn.click(on_fork, fork_pick, [task, n_tokens, mlp, lr, steps, batch, seed, eval_every, eval_n, fork_on,
                                        fork_name])
    return TrainTab(n_tokens, mlp, hidden, on_open, outputs, class_settings, [seen_exercise, fork_pick], class_outputs)


def initial_preview(name: str = "sentiment") -> list[list]:
    return [[e.input, e.target] for e in get_task(name).split("train")[:20]]
