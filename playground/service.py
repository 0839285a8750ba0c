"""What the web app does, without the web: one shared model and library, many sessions.

Every UI callback is a thin wrapper around one method here, so all of it is testable
without a browser. Methods raise ``PlaygroundError`` with a message for the learner; the UI
shows it. Shared caches (baseline scores per task, prefixes loaded from the library) are
guarded by locks because Gradio runs callbacks in worker threads.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Iterator

import torch

from .ablation import MAX_EXAMPLES as MAX_ABLATION_EXAMPLES
from .ablation import Ablation, ablate
from .ablation import plan as plan_ablation
from .archive import export_zip, stage_upload
from .attention import AttentionRequest, PrefixAttention, prefix_attention
from .baselines import LIVE, BaselineResult, paired, strongest
from .baselines import evaluations as baseline_evaluations
from .baselines import measure as measure_baselines
from .baselines import specs as baseline_specs
from .budget import (
    EVAL_BATCH,
    RunPlan,
    attention_bytes,
    eval_bytes,
    generate_bytes,
    plan_run,
    process_budget,
    train_step_bytes,
)
from .busy import Load, busier, machine_load
from .classroom import Classroom
from .errors import PlaygroundError
from .evaluation import EvalResult, evaluate, per_example
from .generate import answer_text, ran_out
from .kvlesson import N_EXAMPLES, CacheRow, measure_caches, peak_bytes, shipped_prefixes
from .lab import CompareLab
from .lens import LogitLens, gold_answer, lens_kept_bytes, logit_lens
from .library import Library, files_stamp
from .methods import BareMethod, added_positions, prefix_method
from .metrics import METRICS, score
from .models import BaseModel, autocast_dtype
from .nearest import Comparison, nearest_bytes, nearest_tokens, overlap
from .overhead import OverheadPoint, measure_overhead
from .peft_folder import CONFIG_FILE, load_prefix, make_card, read_card, read_config
from .prefix import MAX_VIRTUAL_TOKENS, Prefix, PrefixSettings, create_prefix, sized
from .probe import is_probe_step, probe_point, probe_text
from .prompts import PromptFormat
from .roster import Roster
from .runlog import RunLog, RunRecord, train_command
from .scheduler import Scheduler, SchedulerSettings, Wait
from .sessions import SessionStore, TrainingRun
from .sharedstep import SharedRun
from .tasks import Task, get_task, read_table, user_task
from .training import StepRecord, TrainSettings, held_out_split, train

log = logging.getLogger("prefix-playground")

JUST_TRAINED = "(just trained)"
NO_PREFIX = "(no prefix)"


def _limit(default: int, what: str, most: int | None = None):
    return field(default=default, metadata={"help": what, "max": most})  # app.py turns each into a flag


@dataclass
class Limits:
    """Server-side caps, so one click can't take the machine from a whole class.

    The defaults suit a class of 30 sharing a 2-core laptop (a training step of the embedded
    model takes 0.5 to 1 s there); ``python app.py --help`` sets each one (``--max-steps`` ...).
    """

    max_steps: int = _limit(100, "optimizer steps per training run (0.5 to 1 s each at batch 8 on 2 CPU cores)")
    max_batch_size: int = _limit(32, "training examples per step")
    max_virtual_tokens: int = _limit(128, "prefix length (num_virtual_tokens)", MAX_VIRTUAL_TOKENS)
    max_eval_examples: int = _limit(100, "held-out examples scored during and after a run")
    max_new_tokens: int = _limit(48, "tokens generated per answer in Switch")
    max_prompt_chars: int = _limit(2000, "characters in an Attention or Switch input")
    max_prompt_tokens: int = _limit(256, "tokens in an Attention or Switch input (digits and unusual characters "
                                    "take a token each or more)")
    max_switch_prefixes: int = _limit(8, "prefixes compared side by side in Switch")
    concurrent_trainings: int = _limit(2, "Train and Compare events computing at once without the scheduler (kept "
                                       "for bench/class_load.py's comparison); the app's scheduler takes every "
                                       "queued event and batches the class's steps itself")
    concurrent_requests: int = _limit(4, "attention, switch and library events at once without the scheduler (as "
                                      "above)")
    queue_size: int = _limit(64, "requests that may wait in the queue; beyond it a polite 'queue full'")
    max_upload_mb: int = _limit(64, "largest file a browser may upload, in MB")
    # Memory and cost: every model call is sized in tokens before it runs.
    memory_budget_mb: int = _limit(6144, "the most memory (RSS, model included) the server may use; work that "
                                   "would not fit waits for room or is refused")
    max_run_tokens: int = _limit(120_000, "token positions one training run may process, checked before it "
                                 "starts: steps x batch x its longest example, plus every held-out scoring (the three "
                                 "baselines included) x examples x (prompt + answer tokens); on 2 CPU cores one "
                                 "position takes about 5 to 15 ms")
    max_example_tokens: int = _limit(256, "tokens per training example (input + target); longer uploaded "
                                     "examples are cut to fit")
    # Fairness and sessions.
    max_waiting_per_session: int = _limit(3, "requests one browser session may have waiting or running at once "
                                          "(and one of each kind, as a browser tab does)")
    session_idle_minutes: int = _limit(30, "minutes without a heartbeat or a request before a session's data "
                                       "is freed")
    reload_grace_seconds: int = _limit(120, "seconds a learner's run goes on after their last tab closed (a reload "
                                       "or a new tab within them finds it still going); then it stops")
    login_attempts_per_minute: int = _limit(10, "failed logins allowed per minute from one address or for one "
                                            "user name")
    max_upload_files: int = _limit(4, "files in one upload request")
    max_upload_request_mb: int = _limit(128, "bytes in one upload request, in MB (all its files together)")
    upload_disk_mb: int = _limit(1024, "disk the uploads waiting on the server may take together, in MB")
    # The class's library (the shipped prefixes are read-only and not counted).
    library_max_prefixes: int = _limit(300, "prefixes the class's library may hold")
    library_max_mb: int = _limit(1024, "disk the class's library may take, in MB")
    max_card_kb: int = _limit(64, "size of a prefix's card.json, in KB")
    # The class's run records (one folder per press of Train, with its trained prefix).
    class_max_runs: int = _limit(3000, "run records the class folder may hold; then Train asks the teacher to "
                                 "export and reset the class")
    class_max_mb: int = _limit(2048, "disk the class's run records may take, in MB")

    def validate(self) -> "Limits":
        for f in fields(self):
            v, most = getattr(self, f.name), f.metadata["max"]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1 or (most is not None and v > most):
                span = f"from 1 to {most}" if most else "of at least 1"
                raise PlaygroundError(f"{f.name} must be a whole number {span}; got {v!r}.")
        return self

    def describe(self) -> str:
        """One line for the startup log: ``max_steps=100 max_batch_size=32 ...``."""
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


@dataclass
class SwitchOutput:
    name: str
    text: str  # the answer; it ends with "…" when the row was cut at its budget
    seconds: float  # from the start of generation until this row finished (finished rows leave the batch)
    cut: bool = False  # the row used its whole answer budget without an end token
    budget: int = 0  # the row's answer budget, in tokens
    pending: bool = False  # still generating (a snapshot taken while the other rows finish)


@dataclass
class SwitchResult:
    """One input through several prefixes on the same frozen model."""

    outputs: list[SwitchOutput]
    switch_seconds: float  # fetching the selected prefixes (library cache) before generating
    total_seconds: float
    batched: bool = True  # all outputs came from one mixed batch, a row per prefix
    input: str = ""  # the input every output answers (stripped)
    busy_note: str = ""  # busy.Load.note() of the busier reading (before or after generating): '' on an idle machine

    @property
    def done(self) -> bool:
        return not any(o.pending for o in self.outputs)


@dataclass
class _Cached:
    prefix: Prefix
    stamp: tuple = field(default=())


class Playground:
    """The app's engine facade; ``app.py`` wires its methods to components."""

    def __init__(self, base: BaseModel, library: Library, limits: Limits | None = None, scheduled: bool = True,
                 class_folder: str | Path | None = None, teachers: dict[str, str] | None = None,
                 probes: bool = True):
        """``scheduled=False`` runs each caller's model work in its own thread (one worker per session), the
        way the app ran before its scheduler; kept to measure the scheduler against (bench/class_load.py).

        ``class_folder`` holds the class's run records, names and shared state (default: beside the library,
        ``<library>-class``); ``teachers`` are the teacher's logins {user: password}. ``probes=False`` trains
        without recording the attention on the prefix every few steps (``probe``): the anchor that
        bench/probe_overhead.py measures the recordings against."""
        self.base, self.library, self.limits = base, library, (limits or Limits()).validate()
        self.sessions = SessionStore(ttl_s=60 * self.limits.session_idle_minutes,
                                     grace_s=self.limits.reload_grace_seconds)
        folder = Path(class_folder) if class_folder else library.root.with_name(library.root.name + "-class")
        self.roster = Roster(folder, teachers)
        self.runs = RunLog(folder / "runs", library=library.root)
        self.classroom = Classroom(folder, library, self.runs, self.roster)
        for rec in self.runs.records():  # cut off by a restart: no thread trains it any more
            if rec.state == "running":
                rec.state, rec.note = "stopped", "the server stopped while it trained"
                self.runs.update(rec)
        self.budget = process_budget(base, self.limits.memory_budget_mb)  # every model call reserves from it
        self.scheduled, self.probes = scheduled, probes
        self.scheduler = Scheduler(base, scheduler_settings(base, self.budget.room, self.limits), self.budget,
                                   direct=not scheduled)  # all model work goes through it
        # the Compare tab's runner: the same step and held-out limits, the same memory budget and scheduler
        self.lab = CompareLab(base, self.limits.max_steps, self.limits.max_eval_examples, budget=self.budget,
                              scheduler=self.scheduler)
        self.on_drop: Callable[[list[str]], None] | None = None  # the app's hook after sessions are freed
        self.sessions.on_drop = self._dropped  # idle or evicted sessions: their comparisons stop too
        self._baselines: dict[tuple, dict[str, EvalResult]] = {}
        self._baseline_locks: dict[tuple, threading.Lock] = {}
        self._prefixes: dict[str, _Cached] = {}
        self._tabs: dict[str, str] = {}  # an open tab (Gradio session hash) -> its learner's identity
        self._lock = threading.Lock()  # guards the two dicts above and create_prefix
        # per user: on a shared machine another user's folder of the same name is not writable
        self._downloads = Path(tempfile.gettempdir()) / f"prefix-playground-downloads-{os.getuid()}"
        library.max_prefixes, library.max_mb = self.limits.library_max_prefixes, self.limits.library_max_mb
        library.max_card_kb = self.limits.max_card_kb

    # ---- Tasks and uploads -------------------------------------------------------------------
    @staticmethod
    def file_columns(path: str | Path) -> tuple[list[str], list[dict]]:
        """Column names and the first rows of an uploaded JSONL/CSV, for picking columns."""
        rows = read_table(path)
        return list(rows[0]), rows[:8]

    def load_upload(self, key: str, path: str | Path, input_col: str, target_col: str, instruction: str,
                    metric: str) -> Task:
        if not instruction.strip():
            raise PlaygroundError("Write an instruction for your task: it is the baseline prompt and the prefix's "
                                  "initial text.")
        task = user_task(path, input_col, target_col, instruction.strip(), metric, name="upload",
                         tokenizer=self.base.tokenizer, max_example_tokens=self.limits.max_example_tokens)
        self.sessions.get(key).upload = task
        return task

    def task(self, key: str, choice: str) -> Task:
        """A built-in task by name, or this session's uploaded task."""
        if choice == "upload":
            t = self.sessions.get(key).upload
            if t is None:
                raise PlaygroundError("No uploaded task yet: upload a JSONL or CSV file and press 'Use this file'.")
            return t
        return get_task(choice)

    # ---- Training ----------------------------------------------------------------------------
    def check_settings(self, ps: PrefixSettings, ts: TrainSettings, task: Task | None = None) -> RunPlan | None:
        """Refuse settings over the server's limits; with a task, also a run too costly or too big for memory.

        init "demos" sizes the prefix from the task (its instruction and examples): without a task its length
        is not checked here."""
        ps.validate()
        ts.validate()
        L = self.limits
        if task is not None:
            ps = self._sized(ps, ts, task)
        if ps.init == "demos" and task is not None and ps.num_virtual_tokens > L.max_virtual_tokens:
            raise PlaygroundError(f"The instruction and {ps.init_shots} training example"
                                  f"{'s' if ps.init_shots != 1 else ''} take {ps.num_virtual_tokens} tokens, so the "
                                  f"prefix would have {ps.num_virtual_tokens} virtual tokens, above this server's "
                                  f"limit of {L.max_virtual_tokens}. Use fewer examples, or init 'task text'.")
        for what, value, cap in (("num_virtual_tokens", ps.num_virtual_tokens, L.max_virtual_tokens),
                                 ("steps", ts.steps, L.max_steps), ("batch size", ts.batch_size, L.max_batch_size),
                                 ("held-out examples", ts.eval_examples, L.max_eval_examples)):
            if value > cap:
                raise PlaygroundError(f"{what} = {value} is above this server's limit of {cap}. Lower it.")
        if len(ps.init_text) > L.max_prompt_chars:  # PEFT runs the model on all of it at once
            raise PlaygroundError(f"The init text has {len(ps.init_text):,} characters; the limit is "
                                  f"{L.max_prompt_chars:,} (only its first num_virtual_tokens tokens are used). "
                                  "Shorten it.")
        return self._plan(task, ps, ts) if task is not None else None

    def _plan(self, task: Task, ps: PrefixSettings, ts: TrainSettings) -> RunPlan:
        """The run sized in tokens and bytes, refused here when over the run-cost limit or the memory budget."""
        plan = plan_run(self.base, task, ps.num_virtual_tokens, ts.steps, ts.batch_size, ts.eval_every,
                        ts.eval_examples, autocast_dtype(self.base, ts.precision), task.split(held_out_split(task)),
                        baseline_evals=self._baseline_evals(task, ts.eval_examples) + 1)  # + the step-0 score
        cap = self.limits.max_run_tokens
        if plan.cost > cap:
            raise PlaygroundError(
                f"This run would process about {plan.cost:,} token positions: training {ts.steps} steps x batch "
                f"{plan.batch} x {plan.train_tokens} tokens (the longest example) = {plan.train_cost:,}, plus "
                f"held-out scoring {plan.evals} times (before training, every {ts.eval_every or ts.steps} steps, at the end and the "
                f"prompts it is compared with) x {plan.held_out} examples x {plan.prompt_tokens + plan.new_tokens} tokens = "
                f"{plan.eval_cost:,}. This server's limit is {cap:,} per run (--max-run-tokens). Lower the steps, "
                "the batch size or the held-out examples, or measure the metric less often.")
        P = ps.num_virtual_tokens
        self.budget.check(plan.step_bytes, f"A training step (batch {plan.batch} x {plan.train_tokens} tokens behind "
                          f"{P} virtual tokens)", "Lower the batch size or num_virtual_tokens, or use shorter examples.")
        self.budget.check(plan.eval_bytes, f"Scoring the held-out examples ({min(16, plan.held_out)} at a time, "
                          f"prompts up to {plan.prompt_tokens} tokens)", "Use a task with shorter inputs, or fewer "
                          "virtual tokens.")
        return plan

    def _sized(self, ps: PrefixSettings, ts: TrainSettings, task: Task) -> PrefixSettings:
        """``ps`` with its real length (init "demos": the instruction and examples drawn with the run's seed)."""
        return sized(self.base, ps, task.instruction, task.split("train"), ts.seed)

    def _baseline_evals(self, task: Task, eval_examples: int) -> int:
        """Held-out scorings of the model as is and the prompts that a run on ``task`` will start: none once
        the class has them for its held-out set (they are computed once and shared)."""
        examples = _held_out(task, eval_examples)
        return 0 if _baselines_key(task, examples) in self._baselines else baseline_evaluations(task, LIVE)

    def _reserver(self, plan: RunPlan):
        """``train``'s reserve: each step and each evaluation holds its share of the memory budget."""
        def reserve(what: str):
            if what == "step":
                return self.budget.reserve(plan.step_bytes, "Your next training step",
                                           "Lower the batch size to train beside the others.")
            return self.budget.reserve(plan.eval_bytes, "Scoring the held-out examples", "")
        return reserve

    def start_run(self, key: str, task: Task, ps: PrefixSettings, ts: TrainSettings,
                  start_from: str = "") -> TrainingRun:
        """A fresh prefix and run for this learner, recorded in the class folder; their previous run (if any)
        is stopped. ``start_from`` names a pushed prefix to fork: the run starts from its weights and takes
        its length (an MLP-trained one was exported without its MLP, so the fork trains it directly)."""
        task.split("train")  # fail early, with the task's own message, if there is nothing to train on
        exercise = self.classroom.exercise()
        if exercise is not None and not self.roster.is_teacher(key):
            exercise.check(task.name, asdict(ps), asdict(ts))
        fork = self._fork_source(start_from) if start_from else None
        if fork is not None:
            ps = replace(ps, num_virtual_tokens=fork.num_virtual_tokens, init="random", prefix_projection=False)
        plan = self.check_settings(ps, ts, task)
        ps = self._sized(ps, ts, task)  # the length check_settings planned with
        runs, size = self.runs.usage()
        if runs >= self.limits.class_max_runs or size > self.limits.class_max_mb * 2**20:
            raise PlaygroundError(f"The class folder is full ({runs} runs, {size / 2**20:.0f} MB; the limits are "
                                  f"--class-max-runs {self.limits.class_max_runs} and --class-max-mb "
                                  f"{self.limits.class_max_mb}). Ask the teacher to export and reset the class.")
        session = self.sessions.get(key)
        if session.run and session.run.state == "running":
            session.run.cancel.set()
        # A text init runs the model once on the text (repeated up to num_virtual_tokens tokens);
        # a "demos" init once on its num_virtual_tokens tokens.
        text = {"task": task.instruction, "text": ps.init_text}.get(ps.init, "")
        n = len(self.base.tokenizer(text, add_special_tokens=False)["input_ids"]) + ps.num_virtual_tokens + 32
        # the turn first: memory is reserved only by whoever holds the model (see Scheduler.hold)
        with self.scheduler.turn(key, "initializing a prefix"), \
                self.budget.reserve(generate_bytes(self.base, 1, n, 0, 0), "Initializing the prefix from its text",
                                    "Shorten the init text."), self._lock:  # create_prefix wraps the shared model
            prefix = create_prefix(self.base, ps, task.instruction, ts.seed, task.split("train"))
            if fork is not None:  # the pushed prefix's key/values, trained on from here
                with torch.no_grad():  # both [num_virtual_tokens, layer*2*token_dim], PEFT's prompt_embeddings
                    w = prefix.encoder.embedding.weight
                    w.copy_(fork.embeddings().to(w.device, w.dtype))
        run = TrainingRun(task, prefix, ps, ts, plan=plan, key=key, forked_from=start_from)
        run.start_prefix = copy.deepcopy(prefix)  # the prefix as it starts, scored as the curve's step 0 (score_start)
        run.held_out_n = len(_held_out(task, ts.eval_examples))
        run.probe_text = probe_text(task)
        self._record_begin(run)
        session.run = run
        return run

    def _fork_source(self, name: str) -> Prefix:
        if name not in {p.name for p in self.classroom.pushed()}:
            raise PlaygroundError(f"'{name}' is not a prefix the teacher shared with the class, so it can't be "
                                  "forked. Pick one from the list of shared runs.")
        return self.get_prefix("", name)

    # ---- The run's record in the class folder (runlog) -------------------------------------------
    def _record_begin(self, run: TrainingRun) -> None:
        task = run.task
        rec = RunRecord(self.runs.new_id(self.roster.name(run.key)), run.key, self.roster.name(run.key),
                        task.name, task.title, task.metric, task.instruction, model=self.base.name,
                        prefix_settings=asdict(run.prefix_settings), train_settings=asdict(run.train_settings),
                        started=time.time(), held_out={"split": held_out_split(task), "n": run.held_out_n},
                        probe_text=run.probe_text,
                        forked_from=next((p.run_id for p in self.classroom.pushed() if p.name == run.forked_from),
                                         "") if run.forked_from else "")
        upload = task.name == "upload"
        run.record = rec = self.runs.begin(rec, data=task if upload else None)
        if run.forked_from:  # the command starts from the forked prefix's folder
            rec.command = train_command(rec, self.library.root, self.runs.root / rec.run_id if upload else None,
                                        start_from=self.library.path(run.forked_from))
            self.runs.update(rec)

    def _record_step(self, run: TrainingRun, r: StepRecord) -> None:
        if run.discarded and not (self.runs.root / run.run_id).is_dir():
            return  # the class was reset meanwhile
        self.runs.step(run.run_id, {"step": r.step, "loss": r.loss, "metric": r.metric, "elapsed": r.elapsed,
                                    "examples_per_s": r.examples_per_s, "eval_seconds": r.eval_seconds})

    def _probe(self, run: TrainingRun, step: int, prefix: Prefix | None = None) -> None:
        """Record the attention on the run's prefix now (``probe``): one forward of the probe prompt, shared
        with the class's other attention views. A recording that can't be made (the model is not loaded with
        eager attention, no memory left) ends the recordings of this run, with the reason, never the run."""
        if not self.probes or run.probe_note or not run.probe_text:
            return
        prefix = prefix if prefix is not None else run.prefix
        t0 = time.perf_counter()
        try:
            T = len(PromptFormat.for_tokenizer(self.base.tokenizer).encode_prompt(run.probe_text, "prefix"))
            need = attention_bytes(self.base, T, prefix.num_virtual_tokens)
            what = "Recording the attention on the prefix while it trains"
            if self.scheduled:
                self.budget.check(need, what, "")
                att = self.scheduler.attention(run.key, [AttentionRequest(prefix, run.probe_text)])[0]
            else:
                with self.budget.reserve(need, what, ""):
                    att = prefix_attention(self.base, prefix, run.probe_text)
        except PlaygroundError as exc:
            run.probe_note = f"The attention while it trains is not recorded: {exc}"
            return
        point = probe_point(step, att, time.perf_counter() - t0)
        run.probes.append(point)
        if run.record is not None and not (run.discarded and not (self.runs.root / run.run_id).is_dir()):
            self.runs.probe(run.run_id, point.as_dict())

    def _record_end(self, run: TrainingRun) -> None:
        rec = run.record
        if rec is None or (run.discarded and not (self.runs.root / run.run_id).is_dir()):
            return  # never begun, or the class was reset meanwhile: nothing to write back
        rec.state, rec.ended, rec.steps_done = run.state, time.time(), run.steps_done
        rec.start_metric, rec.final_metric, rec.baselines = run.start_metric, run.metric, dict(run.baselines)
        rec.summary = [{k: v for k, v in r.items()} for r in run.summary]
        rec.examples = list(run.rows or [])
        rec.note = run.error or ("its tab closed and did not come back" if run.discarded else "")
        self.runs.update(rec)
        if run.records:  # the prefix as trained, for the teacher to push and a classmate to fork
            self.runs.save_prefix(run.run_id, run.prefix)

    # ---- A press of Train, in its own thread: every tab of the learner follows it -----------------
    def launch(self, run: TrainingRun) -> None:
        """Train, score step 0 and compare, in the background. A page only follows the run (``wait_change``),
        so a reload, a second tab or a dropped connection never stops it; Stop, a new run or the learner's
        last tab closing for longer than ``reload_grace_seconds`` does."""
        threading.Thread(target=self._drive, args=(run,), name=f"run-{run.run_id}", daemon=True).start()

    def _drive(self, run: TrainingRun) -> None:
        try:
            run.phase = "training"
            for rec in self.run_steps(run, heartbeat=1.0):
                if rec is not None:  # (None: a heartbeat while it waits for the model, nothing new to show)
                    self._record_step(run, rec)
                    run.bump()
            if run.discarded:
                raise PlaygroundError("This run's tabs closed and did not come back, so it was stopped.")
            if run.state == "stopped" and not self.baselines_ready(run):
                run.error = ("The prompts without training were not scored yet for this task, so there is no "
                             "comparison: let a run finish to see it.")
            else:
                if run.state != "stopped":
                    run.phase = "scoring start"
                    run.bump()
                    self.score_start(run)
                run.phase = "scoring prompts"
                run.bump()
                run.rows = self.compare_rows(run)
        except PlaygroundError as exc:
            run.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the learner sees it; the server goes on
            log.exception("a training run failed")
            run.error = f"Something went wrong ({type(exc).__name__}: {exc}). Try again, or report it."
        finally:
            try:
                self._record_end(run)
            except Exception:  # noqa: BLE001 - a full disk must not hide the run from its learner
                log.exception("the run's record could not be written")
            run.phase = "done"
            run.done.set()
            run.bump()

    def current_run(self, key: str) -> TrainingRun | None:
        """This learner's latest run, for a page that opens (a reload, a second tab) to follow."""
        s = self.sessions.peek(key)
        return s.run if s is not None else None

    def score_start(self, run: TrainingRun) -> float | None:
        """The held-out metric of the prefix as it started (a copy kept from start_run): the curve's step 0,
        counted in the run's plan. Scored after training, beside the other held-out scorings: scored before,
        the memory it leaves with the allocator would count against the first training step's share."""
        if run.start_metric is None and run.start_prefix is not None:
            task = run.task
            examples = _held_out(task, run.train_settings.eval_examples)
            with self.scheduler.hold(eval_bytes(self.base, task, examples, run.start_prefix.num_virtual_tokens),
                            "Scoring the held-out examples", "Use a task with shorter inputs."):
                run.start_metric = self._evaluate(run.key, task, examples, run.start_prefix).score
            run.start_prefix = None  # scored: nothing else needs it
        return run.start_metric

    def baselines_ready(self, run: TrainingRun) -> bool:
        """Whether the prompts this run is compared with are scored already (for this task and held-out set)."""
        examples = _held_out(run.task, run.train_settings.eval_examples)
        return _baselines_key(run.task, examples) in self._baselines

    def run_steps(self, run: TrainingRun, heartbeat: float | None = None) -> Iterator[StepRecord | None]:
        """Train, recording each step on the run; ends early when the run's Stop is pressed.

        With ``heartbeat`` (seconds), also yields None that often while the run waits for the model, so a
        page can show its place in line (``waiting``)."""
        try:
            # sized once, in start_run (the plan tokenizes the whole training split)
            plan = run.plan or self._plan(run.task, run.prefix_settings, run.train_settings)
            steps = (self._scheduled_steps(run, heartbeat) if self.scheduled else
                     train(self.base, prefix_method(run.prefix), run.task, run.train_settings, cancel=run.cancel,
                           reserve=self._reserver(plan)))
            total = run.train_settings.steps
            for rec in steps:
                if rec is not None:
                    run.records.append(rec)
                    if not run.probes and run.start_prefix is not None:
                        # step 0 from the copy of the prefix as it started: taken once the first step is done, so
                        # a run waiting for its first turn shows its place in line and can still be withdrawn
                        self._probe(run, 0, run.start_prefix)
                    if is_probe_step(rec.step, total) or run.cancel.is_set():  # a stopped run: its last step too
                        self._probe(run, rec.step)
                yield rec
        finally:  # cut short by Stop, an error, or the consumer going away: "stopped", not "finished"
            run.state = ("stopped" if run.cancel.is_set() or run.steps_done < run.train_settings.steps
                         else "finished")

    def _scheduled_steps(self, run: TrainingRun, heartbeat: float | None) -> Iterator[StepRecord | None]:
        """``training.train``'s loop with each step riding in the scheduler's shared training ticks: the same
        data order, optimizer, precision and held-out scoring, and the same losses (tests/unit/test_scheduler.py)."""
        ts, task = run.train_settings, run.task
        shared = SharedRun.start(self.base, run.prefix, task, ts)
        amp = autocast_dtype(self.base, ts.precision)
        held_out = _held_out(task, ts.eval_examples)
        trained = 0.0
        for step in range(1, ts.steps + 1):
            if run.cancel.is_set():
                return
            ticket = self.scheduler.submit_step(run.key, shared, amp)
            while not ticket.wait(heartbeat):
                if run.cancel.is_set() and ticket.withdraw():
                    return
                yield None
            loss, dt = ticket.result()
            trained += dt
            rows = min(ts.batch_size, len(shared.encoded))
            rec = StepRecord(step, loss, trained, rows / max(dt, 1e-9))
            if step == ts.steps or run.cancel.is_set() or (ts.eval_every and step % ts.eval_every == 0):
                r = self._evaluate(run.key, task, held_out, run.prefix)
                rec.metric, rec.predictions, rec.eval_seconds = r.score, r.predictions, r.seconds
            yield rec

    def _evaluate(self, key: str, task: Task, examples, prefix: Prefix) -> EvalResult:
        """``evaluation.evaluate`` of a prefix, its answers decoded in the scheduler's shared loop (chunks of
        EVAL_BATCH rows); the same answers as alone."""
        if not self.scheduled:
            return evaluate(self.base, task, examples, prefix_method(prefix))
        t0 = time.perf_counter()
        fmt = PromptFormat.for_tokenizer(self.base.tokenizer)
        preds = [""] * len(examples)
        for start in range(0, len(examples), EVAL_BATCH):
            chunk = examples[start:start + EVAL_BATCH]
            prompts = [fmt.encode_prompt(e.input, "prefix", task.instruction) for e in chunk]
            for i, ids in self.scheduler.generate(key, prompts, [prefix] * len(chunk),
                                                  [task.max_new_tokens] * len(chunk), fmt.stop_ids):
                preds[start + i] = answer_text(fmt, ids)
        s = score(task.metric, preds, [e.target for e in examples])
        return EvalResult("prefix", task.metric, s, len(examples), time.perf_counter() - t0, preds)

    def waiting(self, key: str) -> Wait | None:
        """This session's place in the scheduler's line (None: nothing waiting)."""
        return self.scheduler.waiting(key)

    def close(self) -> None:
        """Stop the scheduler's worker (work still waiting gets a clear error)."""
        self.scheduler.close()

    def baselines(self, task: Task, examples, progress=None) -> HeldOut:
        """The model as is and the prompting baselines (``baselines.LIVE``: the instruction, + format, few-shot
        over draws, label scoring) on these examples; cached, since every session shares them."""
        key = _baselines_key(task, examples)
        with self._lock:
            lock = self._baseline_locks.setdefault(key, threading.Lock())
        with lock:  # two students on the same task wait for one computation, not two
            if key not in self._baselines:
                train = task.split("train")
                H = max(added_positions(self.base, ms, task.instruction, train, seed)[0]
                        for _, _, ms, draws in baseline_specs(task, LIVE) for seed in range(draws))
                # one turn per scoring (the model as is, each prompt's each draw): the class's training goes
                # on between them instead of waiting for the whole set
                def turn():
                    return self.scheduler.turn("", "scoring the prompts without training")

                with self.scheduler.hold(eval_bytes(self.base, task, examples, H), "Scoring the base model and the prompts "
                                "on the held-out examples", "Use a task with shorter inputs."):
                    with turn():
                        bare = evaluate(self.base, task, examples, BareMethod())
                    prompts = measure_baselines(self.base, task, held_out_split(task), examples, LIVE, progress,
                                                around=turn)
                    self._baselines[key] = HeldOut(bare, prompts)
            return self._baselines[key]

    def compare_rows(self, run: TrainingRun, max_rows: int = 10, progress=None) -> list[dict]:
        """The before/after table on the held-out examples behind the live metric."""
        if run.discarded:  # the tab closed mid-run: scoring it would only take the CPU from the class
            raise PlaygroundError("This session was closed, and its run was discarded.")
        task = run.task
        examples = _held_out(task, run.train_settings.eval_examples)
        held = self.baselines(task, examples, progress)
        last = run.records[-1] if run.records else None
        if last is not None and last.predictions is not None and last.eval_seconds is not None:
            preds, score, seconds = last.predictions, last.metric, last.eval_seconds
        else:  # stopped between evaluations: score the prefix as it is now
            with self.scheduler.hold(eval_bytes(self.base, task, examples, run.prefix.num_virtual_tokens),
                            "Scoring the held-out examples", "Use a task with shorter inputs."):
                r = self._evaluate(run.key, task, examples, run.prefix)
            preds, score, seconds = r.predictions, r.score, r.seconds
            if last is not None:
                last.metric, last.predictions, last.eval_seconds = score, preds, seconds
        best = strongest(held.prompts)
        by = {r.key: r for r in held.prompts}
        run.baselines = {"base": held.bare.score, **{k: r.mean for k, r in by.items()}}
        run.strongest = best
        fn = METRICS[task.metric]
        mine = [fn(p, e.target) for p, e in zip(preds, examples)]
        run.paired = paired(mine, best.per_example[0])
        run.summary = summary_rows(held, score, len(examples), run.prefix.num_virtual_tokens,
                                   1000 * seconds / max(1, len(examples)))
        results = {"base": held.bare, "instruction": _as_eval(by["instruction"], task),
                   "best": _as_eval(best, task), "prefix": EvalResult("prefix", task.metric, score, len(examples),
                                                                       seconds, preds)}
        return per_example(task, examples[:max_rows], {m: _head(r, max_rows) for m, r in results.items()})

    def stop(self, key: str) -> bool:
        return self.sessions.stop(key)

    def stop_all(self, wait_s: float = 60.0) -> int:
        """Stop every learner's run and forget it (a reset of the class): no comparison, no record written
        after it. Waits up to ``wait_s`` for them to end; returns how many were going."""
        runs = []
        for key in self.sessions.keys():
            s = self.sessions.peek(key)
            if s is not None and s.run is not None:
                if not s.run.done.is_set():
                    runs.append(s.run)
                s.run.discarded = True
                s.run.cancel.set()
                s.run = None
        end = time.monotonic() + wait_s
        for run in runs:
            run.done.wait(max(0.0, end - time.monotonic()))
        return len(runs)

    # ---- Learners: an identity (a login, or a browser) with any number of tabs -------------------
    def attach(self, key: str, tab: str) -> None:
        """A page of this learner opened (a first visit, a reload, a second tab)."""
        self.sessions.attach(key, tab)
        with self._lock:
            self._tabs[tab] = key

    def close_tab(self, key: str, tab: str) -> bool:
        """A page closed. The learner's run goes on: a reload finds it. When no page of theirs comes back
        within ``reload_grace_seconds``, the run stops. Returns whether a run is going."""
        with self._lock:
            self._tabs.pop(tab, None)
        if key == tab:  # a page known only by itself (no login, no browser cookie) never comes back
            return self.close_session(key)
        return self.sessions.detach(key, tab)

    def touch(self, tab: str) -> None:
        """Activity from a tab (a heartbeat, a request): its learner is not idle."""
        with self._lock:
            key = self._tabs.get(tab, tab)
        self.sessions.touch(key)

    def name(self, key: str) -> str:
        return self.roster.name(key)

    def set_name(self, key: str, name: str) -> str:
        """The name this learner goes by in the class; their runs from now on carry it."""
        return self.roster.set_name(key, name)

    def is_teacher(self, key: str) -> bool:
        return self.roster.is_teacher(key)

    def teacher_sign_in(self, key: str, user: str, password: str) -> None:
        self.roster.sign_in(key, user, password)

    def close_session(self, key: str) -> bool:
        """The session is gone (tab closed): stop its training and its comparison, free its prefix.

        Returns whether a training run was still going.
        """
        s = self.sessions.peek(key)
        running = bool(s and s.run and s.run.state == "running")
        self.sessions.drop(key)
        self.lab.stop(key)
        return running

    def _dropped(self, keys: list[str]) -> None:
        gone = set(keys)
        with self._lock:
            self._tabs = {t: k for t, k in self._tabs.items() if k not in gone}
        for k in keys:
            self.lab.stop(k)
        if self.on_drop is not None:
            self.on_drop(keys)

    def save_trained(self, key: str, name: str, overwrite: bool = False, owner: str | None = None) -> Path:
        """Save this session's prefix; ``owner`` (a login or session, from the UI) alone may change it later."""
        session = self.sessions.get(key)
        run = session.run
        if run is None or not run.records:
            raise PlaygroundError("Nothing to save yet: train a prefix first.")
        if run.state == "running":
            raise PlaygroundError("Training is still running: wait for it to finish, or press Stop, then save.")
        metrics = {"split": held_out_split(run.task), "metric": run.task.metric, "n": run.held_out_n,
                   **{k: round(v, 4) for k, v in run.baselines.items()}}
        if run.metric is not None:
            metrics["prefix"] = round(run.metric, 4)
        extra = {"baselines": {metrics["split"]: run.summary[1:-1]}} if run.summary else {}  # the prompts, with cost
        card = make_card(self.base, run.task.name, {**vars(run.train_settings), "steps_done": run.steps_done},
                         metrics, train_examples=len(run.task.split("train")),
                         train_seconds=round(run.records[-1].elapsed, 2), instruction=run.task.instruction,
                         author=self.roster.name(key), run_id=run.run_id, **extra)
        return self.library.save(name.strip(), run.prefix, card, overwrite=overwrite, owner=owner)

    # ---- Prefixes by name --------------------------------------------------------------------
    def prefix_choices(self, key: str, shared: list[str] | None = None) -> list[str]:
        """This learner's just-trained prefix, then what the teacher shared (``shared``: their names, looked up
        when not given), then the rest of the library."""
        s = self.sessions.peek(key)
        mine = [JUST_TRAINED] if s and s.run and s.run.records else []
        shared = shared if shared is not None else [p.name for p in self.classroom.pushed()]
        return mine + shared + [n for n in self.library.names() if n not in shared]

    def prefix_label(self, key: str, name: str, shared: dict[str, str] | None = None) -> str:
        """How a picker shows a prefix: the just-trained one by its task and the time its run started, one the
        teacher shared with a star and its author (``shared``: {name: author}, looked up when not given)."""
        s = self.sessions.peek(key)
        if name != JUST_TRAINED or not (s and s.run):
            shared = shared if shared is not None else {p.name: p.author for p in self.classroom.pushed()}
            return f"★ {name} (shared: {shared[name]})" if name in shared else name
        return f"just trained: {s.run.task.name}, {time.strftime('%H:%M', time.localtime(s.run.wall_start))}"

    def example_input(self, key: str, name: str) -> str | None:
        """A held-out input of the task a prefix was trained on (None when its task is unknown here)."""
        s = self.sessions.peek(key)
        if name == JUST_TRAINED:
            task = s.run.task if s and s.run else None
        else:
            t = self.library_card(name).get("task")
            try:
                task = get_task(t) if isinstance(t, str) else None
            except PlaygroundError:
                task = None
        if task is None:
            return None
        held = task.split(held_out_split(task))
        return held[0].input if held else None

    def prefix_picks(self, key: str) -> list[tuple[str, str]]:
        """``prefix_choices`` as (label, name) pairs for a picker."""
        shared = {p.name: p.author for p in self.classroom.pushed()}  # one listing of the library, not three
        return [(self.prefix_label(key, n, shared), n) for n in self.prefix_choices(key, list(shared))]

    def lessons(self) -> dict[str, str]:
        """Shipped prefixes kept to show what prefix tuning cannot do: {name: the lesson, from its card}."""
        return {e.name: e.card["lesson"] for e in self.library.entries()
                if e.card.get("source") == "shipped" and isinstance(e.card.get("lesson"), str) and e.card["lesson"]}

    def get_prefix(self, key: str, name: str) -> Prefix:
        """The session's just-trained prefix, or a library prefix (cached until its file changes)."""
        if name == JUST_TRAINED:
            s = self.sessions.peek(key)
            if not (s and s.run and s.run.records):
                raise PlaygroundError("You have not trained a prefix in this session yet: train one first, or "
                                      "pick one from the library.")
            return s.run.prefix
        path = self.library.path(name)
        if not (path / CONFIG_FILE).is_file():
            raise PlaygroundError(f"No prefix named '{name}' in the library (it may have been renamed or deleted). "
                                  "Refresh the list.")
        stamp = (path, files_stamp(path))
        with self._lock:
            hit = self._prefixes.get(name)
        if hit and hit.stamp == stamp:
            return hit.prefix
        prefix = load_prefix(path, self.base, max_card_kb=self.limits.max_card_kb)
        with self._lock:
            self._prefixes[name] = _Cached(prefix, stamp)
        return prefix

    def _check_prompt(self, text: str) -> str:
        if not text or not text.strip():
            raise PlaygroundError("The prompt is empty. Type a sentence first.")
        if len(text) > self.limits.max_prompt_chars:
            raise PlaygroundError(f"The prompt has {len(text):,} characters; the limit is "
                                  f"{self.limits.max_prompt_chars:,}. Shorten it.")
        # Unusual characters take several tokens each, so cap tokens too: at what the model's positions
        # hold beside the prefix and the answer (past them GPT-2 crashes; attention memory grows as T^2).
        n = len(self.base.tokenizer(text, add_special_tokens=False)["input_ids"])
        room = getattr(self.base.config, "max_position_embeddings", None) or 10**9
        cap = min(self.limits.max_prompt_tokens,
                  room - self.limits.max_virtual_tokens - self.limits.max_new_tokens - 64)
        if n > cap:
            raise PlaygroundError(f"The prompt is {n:,} tokens long (digits and unusual characters take a token each "
                                  f"or more); the limit is {cap:,} tokens (--max-prompt-tokens). Shorten it.")
        return text.strip()

    # ---- Inside the prefix: the logit lens and the nearest tokens ------------------------------
    def _task_of(self, key: str, name: str) -> Task | None:
        """The task a prefix was trained on (the session's run's, or its card's built-in task); None if unknown."""
        if name == JUST_TRAINED:
            s = self.sessions.peek(key)
            return s.run.task if s and s.run else None
        t = self.library_card(name).get("task")
        try:
            return get_task(t) if isinstance(t, str) else None
        except PlaygroundError:
            return None

    def lens(self, key: str, name: str, text: str, target: str | None = None) -> LogitLens:
        """The logit lens on ``text`` behind the prefix ``name`` and without it, following the first token of
        ``target``: by default the gold answer when ``text`` is a held-out input of the prefix's task, else the
        prefix's own greedy answer (``target_source`` says which)."""
        text = self._check_prompt(text)
        if target is not None and len(target) > self.limits.max_prompt_chars:
            raise PlaygroundError(f"The target has {len(target):,} characters; the limit is "
                                  f"{self.limits.max_prompt_chars:,}. Only its first token is followed: shorten it.")
        if not name or name == NO_PREFIX:
            raise PlaygroundError("Pick a prefix: the lens compares the model with and without it.")
        prefix = self.get_prefix(key, name)
        task = self._task_of(key, name)
        instruction = task.instruction if task else prefix.info.get("instruction", "")
        gold = gold_answer(task, text)
        if target and target.strip():
            source = "the target you typed"
        elif gold:
            target, source = gold[0], f"the gold answer of this {gold[1]} input of {task.name}"
        else:
            target, source = None, "the prefix's own greedy answer"
        fmt = PromptFormat.for_tokenizer(self.base.tokenizer)
        ids = fmt.encode_prompt(text, "prefix", instruction)
        new = min(task.max_new_tokens if task else 32, self.limits.max_new_tokens) if target is None else 0
        need = generate_bytes(self.base, 1, len(ids), prefix.num_virtual_tokens, new) + lens_kept_bytes(self.base)
        what = f"The logit lens on {len(ids):,} prompt tokens behind {prefix.num_virtual_tokens} virtual tokens"
        # the turn first: memory is reserved only by whoever holds the model (see Scheduler.hold)
        with self.scheduler.turn(key, "the logit lens"), self.budget.reserve(need, what, "Shorten the prompt."):
            if target is None:  # inside the turn, the answer is generated at once, in this thread
                (_, row), = self.scheduler.generate(key, [ids], [prefix], [new], fmt.stop_ids)
                target = answer_text(fmt, row)
                if not target:
                    raise PlaygroundError("The prefix answered nothing to this prompt, so there is no answer to "
                                          "follow. Type a target answer.")
            out = logit_lens(self.base, prefix, text, target, instruction)
        out.target_source = source
        return out

    def held_out_scores(self, key: str, name: str) -> list[dict]:
        """A prefix's held-out figures, [{split, n, metric, score}]: its card's test and validation scores, or the
        just-trained run's last live score; [] when none is known."""
        if name == JUST_TRAINED:
            s = self.sessions.peek(key)
            run = s.run if s else None
            last = next((r for r in reversed(run.records) if r.metric is not None), None) if run else None
            return ([{"split": held_out_split(run.task), "n": run.held_out_n, "metric": run.task.metric,
                      "score": last.metric}] if last else [])
        card, out = self.library_card(name), []
        for part in ("metrics", "validation"):
            m = card.get(part)
            if isinstance(m, dict) and isinstance(m.get("prefix"), (int, float)) and m.get("split") and m.get("n"):
                out.append({"split": m["split"], "n": m["n"], "metric": m.get("metric") or card.get("metrics", {})
                            .get("metric", ""), "score": m["prefix"]})
        return out

    def nearest(self, key: str, names: list[str], k: int = 5) -> Comparison:
        """Each prefix's nearest vocabulary tokens (``nearest.py``), side by side with its held-out scores and the
        overlap of the first two word lists."""
        names = [n for n in dict.fromkeys(names or []) if n and n != NO_PREFIX]
        if not names:
            raise PlaygroundError("Pick a prefix (two, to compare their nearest words).")
        if len(names) > self.limits.max_switch_prefixes:
            raise PlaygroundError(f"{len(names)} prefixes picked; the limit is {self.limits.max_switch_prefixes}.")
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 20:
            raise PlaygroundError(f"Show from 1 to 20 nearest tokens per virtual token; got {k!r}.")
        prefixes = [self.get_prefix(key, n) for n in names]
        P = max(p.num_virtual_tokens for p in prefixes)
        with self.scheduler.turn(key, "the nearest tokens"), \
                self.budget.reserve(nearest_bytes(self.base, P), f"The nearest tokens of {P} virtual tokens",
                                    "Pick a prefix with fewer virtual tokens."):
            found = [nearest_tokens(self.base, p, k) for p in prefixes]
        score, shared = overlap(found[0], found[1]) if len(found) > 1 else (1.0, sorted(found[0].words()))
        return Comparison(names, found, [self.held_out_scores(key, n) for n in names], score, shared)

    # ---- Attention ---------------------------------------------------------------------------
    def attention(self, key: str, text: str, names: list[str]) -> dict[str, PrefixAttention]:
        text = self._check_prompt(text)
        names = [n for n in dict.fromkeys(names) if n and n != NO_PREFIX]
        if not names:
            raise PlaygroundError("Pick a prefix: the attention on the prefix needs one.")
        T = len(PromptFormat.for_tokenizer(self.base.tokenizer).encode_prompt(text, "prefix"))
        prefixes = [self.get_prefix(key, n) for n in names]
        P = max(p.num_virtual_tokens for p in prefixes)
        what = (f"The attention view of {T:,} prompt tokens behind {P} virtual tokens"
                + (f" for {len(names)} prefixes" if len(names) > 1 else ""))
        fix = "Shorten the prompt, or pick fewer prefixes or a prefix with fewer virtual tokens."
        if self.scheduled:  # one forward, shared with the other learners' waiting views
            self.budget.check(attention_bytes(self.base, T, P, len(names)), what, fix)
            views = self.scheduler.attention(key, [AttentionRequest(p, text) for p in prefixes])
            return dict(zip(names, views))
        out = {}
        for n, prefix in zip(names, prefixes):
            with self.budget.reserve(attention_bytes(self.base, T, prefix.num_virtual_tokens), what, fix):
                out[n] = prefix_attention(self.base, prefix, text)
        return out

    # ---- Attention: the prefix removed layer by layer ----------------------------------------
    def ablate(self, key: str, name: str, n: int = 8, progress=None) -> Ablation:
        """Every per-layer ablation of a prefix (``ablation.py``) on the first ``n`` held-out examples of its own
        task, one turn with the model per variant, so the class's work goes on between them."""
        cap = min(MAX_ABLATION_EXAMPLES, self.limits.max_eval_examples)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= cap:
            raise PlaygroundError(f"The ablation scores from 1 to {cap} held-out examples; got {n!r}. "
                                  "Choose a number of examples in that range.")
        prefix = self.get_prefix(key, name)
        if name == JUST_TRAINED:
            task = self.sessions.peek(key).run.task
        else:
            t = prefix.info.get("task")
            try:
                task = get_task(t) if isinstance(t, str) else None
            except PlaygroundError:
                task = None
            if task is None:
                raise PlaygroundError(f"The prefix '{name}' does not name a built-in task on its card (task: {t!r}), "
                                      "so there are no held-out examples to ablate it on. Pick a prefix trained on a "
                                      "built-in task, or train one here.")
        split = held_out_split(task)
        examples = task.split(split)[:n]
        need = plan_ablation(self.base, task, examples, prefix.num_virtual_tokens)
        what = (f"The layer ablation ({need.variants} variants x {need.n} examples, "
                f"{need.cost:,} token positions in all)")
        fix = "Choose fewer held-out examples."
        self.budget.check(need.peak_bytes, what, fix)

        @contextlib.contextmanager
        def turn():
            with self.scheduler.turn(key, "the layer ablation"), self.budget.reserve(need.peak_bytes, what, fix):
                yield

        return ablate(self.base, prefix, task, examples, progress, split=split, around=turn)

    # ---- Switch ------------------------------------------------------------------------------
    def switch_defaults(self, n: int = 3) -> list[str]:
        """What Switch has ticked when it opens: what the teacher shared last, then the first shipped prefixes
        that are not lessons, ``n`` in all."""
        lessons = self.lessons()
        shared = [p.name for p in self.classroom.pushed()]
        return (shared + [e.name for e in self.library.entries() if e.shipped and e.name not in lessons])[:n]

    def switch(self, key: str, names: list[str], text: str) -> SwitchResult:
        """``switch_stream``'s last snapshot: every output finished."""
        res = None
        for res in self.switch_stream(key, names, text):
            pass
        return res

    def switch_stream(self, key: str, names: list[str], text: str) -> Iterator[SwitchResult]:
        """One input through each named prefix, in one mixed batch; a snapshot first and as each row finishes.

        The first snapshot has every output pending; each next one has one more finished (its own
        latency, its answer cut with "…" when it ran out of budget), in finishing order, so a short
        answer is shown while a long one is still being written.
        """
        text = self._check_prompt(text)
        names = list(dict.fromkeys(names or []))
        if not names:
            raise PlaygroundError("Pick at least one prefix (or 'no prefix') to compare.")
        if len(names) > self.limits.max_switch_prefixes:
            raise PlaygroundError(f"{len(names)} prefixes picked; the limit is {self.limits.max_switch_prefixes}.")
        t0 = time.perf_counter()
        chosen = {n: (None if n == NO_PREFIX else self.get_prefix(key, n)) for n in names}
        switch_s = time.perf_counter() - t0
        # One mixed batch: each row behind its own prefix's cache, with its own answer budget.
        budgets = [min(self._answer_budget(key, n), self.limits.max_new_tokens) for n in chosen]
        modes = ["base" if p is None else "prefix" for p in chosen.values()]
        fmt = PromptFormat.for_tokenizer(self.base.tokenizer)
        T = max(len(fmt.encode_prompt(text, m)) for m in set(modes))
        P = max((p.num_virtual_tokens for p in chosen.values() if p is not None), default=0)
        need = generate_bytes(self.base, len(chosen), T, P, max(budgets))
        outs = [SwitchOutput(n, "", 0.0, budget=b, pending=True) for n, b in zip(chosen, budgets)]

        def snapshot(note: str = "") -> SwitchResult:
            return SwitchResult(list(outs), switch_s, time.perf_counter() - t0, input=text, busy_note=note)

        # Held until the last row finishes, the pauses between snapshots included: the cache lives that long.
        with self.scheduler.hold(need, f"Answering {len(chosen)} prefixes at once on {T:,} prompt tokens",
                                 "Pick fewer prefixes, or shorten the prompt."):
            t1, load = time.perf_counter(), machine_load()
            yield snapshot()
            prompts = [fmt.encode_prompt(text, m) for m in modes]
            rows = self.scheduler.generate(key, prompts, list(chosen.values()), budgets, fmt.stop_ids, interactive=True)
            for finished, (i, ids) in enumerate(rows, start=1):
                answer, cut = answer_text(fmt, ids), ran_out(ids, budgets[i], fmt.stop_ids)
                outs[i] = SwitchOutput(outs[i].name, answer + "…" if cut else answer, time.perf_counter() - t1,
                                       cut=cut, budget=budgets[i])
                last = finished == len(chosen)  # the timings are all in: say if the machine was busy meanwhile
                yield snapshot(busier(load, machine_load()).note() if last else "")

    def _answer_budget(self, key: str, name: str) -> int:
        """Generation budget: the prefix's task's own, else a default that fits a sentence."""
        if name == JUST_TRAINED:
            s = self.sessions.peek(key)
            return s.run.task.max_new_tokens if s and s.run else 32
        task = self.library_card(name).get("task") if name != NO_PREFIX else None
        try:
            return get_task(task).max_new_tokens if isinstance(task, str) else 32
        except PlaygroundError:
            return 32

    # ---- Library -----------------------------------------------------------------------------
    def library_card(self, name: str) -> dict:
        """A prefix's card; {} when it has none, or one too large or broken to read."""
        e = self.library.find(name)
        return self.library.card(e) if e else {}

    def inspect(self, name: str) -> dict:
        e = self.library.find(name)
        if e is None:
            raise PlaygroundError(f"No prefix named '{name}' (or it lacks {CONFIG_FILE}). Refresh the list.")
        try:
            config = read_config(e.path).to_dict()
        except PlaygroundError as exc:
            config = {"unreadable": str(exc)}
        try:
            card = read_card(e.path, self.limits.max_card_kb)
        except PlaygroundError as exc:  # never sent as is: it may be huge
            card = {"unreadable": str(exc)}
        files = {f.name: f.stat().st_size for f in sorted(e.path.iterdir()) if f.is_file()}
        return {"card": card, "adapter_config": config, "files (bytes)": files}

    def import_upload(self, paths: list[str], name: str = "", overwrite: bool = False,
                      owner: str | None = None) -> str:
        """Check an uploaded PEFT prefix (zip or files) against the loaded model and add it to the library.

        The upload is staged in the library's own hidden temporary folder, which the next start
        removes if this process is killed meanwhile. The importer becomes its owner, whatever
        the uploaded card says.
        """
        with self.library.staging() as tmp:
            folder, suggested = stage_upload(paths, tmp)
            name = (name or "").strip() or suggested or "uploaded"
            self.library.find(name)  # name check before any work
            P, cap = read_config(folder).num_virtual_tokens, self.limits.max_virtual_tokens
            if P > cap:
                raise PlaygroundError(f"The uploaded prefix has {P} virtual tokens; this server's limit is {cap} "
                                      f"(--max-virtual-tokens). Train it with at most {cap} tokens, then upload it.")
            prefix = load_prefix(folder, self.base, max_card_kb=self.limits.max_card_kb)  # shapes, NaNs, model
            card = read_card(folder, self.limits.max_card_kb)
            card.setdefault("source", "upload")
            self.library.save(name, prefix, card, overwrite=overwrite, owner=owner)
        return name

    def export(self, name: str) -> Path:
        """The prefix as a zip to download: one file per version of the prefix, reused until it changes."""
        e = self.library.find(name)
        if e is None:
            raise PlaygroundError(f"No prefix named '{name}'.")
        return export_zip(e.path, self._downloads, max_bytes=self.limits.library_max_mb * 2**20)

    def rename(self, old: str, new: str, owner: str | None = None) -> None:
        self.library.rename(old, new.strip(), owner=owner)

    def delete(self, name: str, owner: str | None = None) -> None:
        self.library.delete(name, owner=owner)

    # ---- Learn: what a prefix costs at inference ---------------------------------------------
    _overhead_lock = threading.Lock()  # one measurement per process: two at once would share the cores

    def overhead(self, progress=None) -> list[OverheadPoint]:
        """A small live grid for the Learn tab (P = 0, 32, 128, 512 at T = 16): a few seconds on CPU."""
        T, new = 16, 8
        room = getattr(self.base.config, "max_position_embeddings", None) or 10**9  # GPT-2: 1024 positions
        Ps = [P for P in (0, 32, 128, 512) if P + T + new <= room]
        if not self._overhead_lock.acquire(blocking=False):
            raise PlaygroundError("Another measurement is running on this server. Try again in a few seconds.")
        try:
            with self.scheduler.turn("", "the overhead measurement"), \
                    self.budget.reserve(generate_bytes(self.base, 1, T, max(Ps), new), "The overhead measurement", ""):
                return measure_overhead(self.base, Ps, (T,), new_tokens=new, repeats=2, progress=progress)
        finally:
            self._overhead_lock.release()

    # ---- Learn: a prompt, a cached prompt and a prefix are key/value caches ------------------
    @staticmethod
    def load() -> Load:
        """How busy the machine is now (a timing taken under load is noise: say so beside it)."""
        return machine_load()

    def kv_cache_tasks(self) -> dict[str, str]:
        """Built-in tasks with a shipped prefix for the loaded model: {task name: prefix name}."""
        return shipped_prefixes(self.library, self.base)

    def kv_caches(self, task_name: str, progress=None) -> list[CacheRow]:
        """The 4-shot prompt, its cached form, the cached instruction and the task's shipped prefix, each
        answering the same held-out queries one at a time (4 x 16 timed queries: minutes on a busy CPU); one
        measurement at a time, as ``overhead``."""
        shipped = self.kv_cache_tasks()
        if task_name not in shipped:
            raise PlaygroundError(f"No shipped prefix for the task '{task_name}' fits the loaded model. Pick one "
                                  f"of: {', '.join(shipped) or 'none (start the app with the shipped prefixes)'}.")
        task = get_task(task_name)
        prefix = self.get_prefix("", shipped[task_name])
        split = held_out_split(task)
        examples = task.split(split)[: min(N_EXAMPLES, self.limits.max_eval_examples)]
        need = peak_bytes(self.base, task, examples, prefix.num_virtual_tokens)
        if not self._overhead_lock.acquire(blocking=False):
            raise PlaygroundError("Another measurement is running on this server. Try again in a few seconds.")
        try:
            with self.scheduler.turn("", "the key/value cache measurement"), \
                    self.budget.reserve(need, "The key/value cache measurement", "Pick a task with shorter inputs."):
                return measure_caches(self.base, task, prefix, examples, split, progress=progress)
        finally:
            self._overhead_lock.release()


def scheduler_settings(base: BaseModel, room_bytes: int, limits: Limits) -> SchedulerSettings:
    """The scheduler's budgets from the memory its batches may take and the model's shapes.

    On the CPU the batches' activations live in the process's memory: ``room_bytes``, what the memory
    budget (--memory-budget-mb) leaves beside the model. On a GPU they live in the device's memory, which
    the process budget does not count: half of what the device has free at start (the allocator's cache
    and other processes get the rest). The token budgets are that room over a typical row's cost per
    position (batch 8 x 64 tokens behind 16 virtual ones)."""
    room = room_bytes
    B, T, P = 8, 64, 16
    try:
        amp = autocast_dtype(base, "auto")
        if base.device.type == "cuda":
            room = torch.cuda.mem_get_info(base.device)[0] // 2
        per_train = train_step_bytes(base, B, T, P, T, amp) / (B * (P + T))
        per_decode = generate_bytes(base, EVAL_BATCH, T, P, 32) / (EVAL_BATCH * (P + T + 32))
    except (AttributeError, TypeError):  # a model without the usual shapes in its config: the defaults
        return SchedulerSettings(max_waiting=limits.max_waiting_per_session)
    return SchedulerSettings(token_budget=max(1, int(room / per_train)), decode_positions=max(1, int(room / per_decode)),
                             tick_bytes=max(1, room), max_waiting=limits.max_waiting_per_session)


def _held_out(task: Task, n: int) -> list:
    """The first ``n`` examples of the split a run's metric is measured on: the run, its step 0, the prompts."""
    return task.split(held_out_split(task))[:n]


def _baselines_key(task: Task, examples) -> tuple:
    return (task.name, task.instruction, task.metric,
            hashlib.sha1("\x00".join(e.input + "\x01" + e.target for e in examples).encode()).hexdigest())


@dataclass
class HeldOut:
    """The model as is and the prompting baselines, on one held-out set."""

    bare: EvalResult
    prompts: list[BaselineResult]


def _as_eval(r: BaselineResult, task: Task) -> EvalResult:
    """A baseline's first draw, as the per-example table shows it."""
    return EvalResult("prefix", task.metric, r.scores[0], r.n, 0.0, r.predictions)


def summary_rows(held: HeldOut, score: float, n: int, P: int, ms: float) -> list[dict]:
    """The before/after summary, one row per way of answering, in ``BaselineResult.as_dict()``'s form."""
    bare = {"key": "base", "label": "the model as is", "n": held.bare.n, "scores": [held.bare.score],
            "mean": held.bare.score, "prompt_tokens": 0, "kv_positions": 0,
            "ms_per_query": 1000 * held.bare.seconds / max(1, held.bare.n), "examples_needed": 0}
    prefix = {"key": "prefix", "label": "the trained prefix", "n": n, "scores": [score], "mean": score,
              "prompt_tokens": 0, "kv_positions": P, "ms_per_query": ms, "examples_needed": 0}
    return [bare, *(r.as_dict() for r in held.prompts), prefix]


def _head(r: EvalResult, n: int) -> EvalResult:
    return EvalResult(r.mode, r.metric, r.score, min(n, r.n), r.seconds, r.predictions[:n])
