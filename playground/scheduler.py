"""One scheduler owns the model: every learner's work, batched, taken in turn, inside a memory budget.

A class shares one frozen model. Run as one worker thread per browser session, the students'
torch calls fight over the same cores and the rest wait in a first-come queue. Here a single
worker thread runs all model work, in ticks:

- **Training steps ride together.** Each waiting run's next step joins one forward/backward
  (``sharedstep.shared_step``): every row behind its own run's prefix, each run with its own
  optimizer, and its loss and gradient exactly what it would be alone (tested).
- **Generation and held-out scoring decode continuously** (``decodeloop.DecodeLoop``):
  requests join between decode steps and leave when they end, as serving engines batch
  continuously. Two loops: every student's scoring chunks decode together in one, and the
  answers a learner is watching (Switch) in another, which goes first in every round. A
  watched answer so never pays for the scoring rows' longer caches in each of its steps (on
  2 CPU cores a step of 14 mixed rows took 0.16 s, a few answer rows alone a fraction of it):
  the priority that serving engines give a request by preempting others.
- **Attention views share a forward**: every waiting view (each ticked prefix of each
  learner's request is a row) runs in one mixed-prefix forward whose hooks reduce each row to
  its own prefix's columns (``attention.prefix_attention_many``), as alone (tested).
- **Everything else takes a turn** (a measurement, the prompts' baselines, a Compare lab step,
  creating a prefix): the caller's own thread runs it while the worker waits, so it has the
  model to itself, which a timing needs anyway. A long turn pauses at its pause points (each
  decode step, each chunk of a long prefill: ``pauses.py``) while a watched answer or an
  attention view waits: the worker serves them, then hands the model back.

Fair share: work is taken round-robin by session (the session served longest ago first), so a
student who submits a lot does not starve the others, and every active run makes a step in each
pass over the waiting runs. A session may have at most ``max_waiting`` items waiting. Size: each
item is sized in token positions before it is queued; one larger than a tick may hold is refused
with a message, and a tick never holds more than ``token_budget`` positions of training or
``decode_positions`` of generation (both derived from the memory budget and the model's shapes
by ``service``). Ticks are also kept short (``slice_s`` of measured work) so that a Switch
answer is never stuck behind a whole class's training step.

Why our own and not a serving engine: vLLM and S-LoRA schedule inference only; none batches
training steps of many adapters. The queue itself is small (a list and a condition variable);
Gradio's queue stays in front of it for the web requests.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, TypeVar

import torch

from .attention import AttentionRequest, PrefixAttention, prefix_attention_many
from .budget import MemoryBudget, attention_bytes, train_step_bytes
from .decodeloop import DecodeLoop
from .errors import PlaygroundError
from .generate import greedy_mixed_rows
from .models import BaseModel
from .pauses import pausable
from .prefix import Prefix
from .prompts import PromptFormat
from .sharedstep import RunBatch, SharedRun, shared_step

T = TypeVar("T")
PARTS = ("answers", "attention", "turns", "scoring", "training")  # the kinds of work, in a round's order
EWMA = 0.3  # weight of the newest measurement in the running averages of tick times


@dataclass
class SchedulerSettings:
    """How the scheduler slices the model's time and memory."""

    token_budget: int = 60_000  # token positions one training tick may hold (rows x (virtual + prompt + target))
    decode_positions: int = 200_000  # key/value positions the shared decode loop may hold (rows x cache length)
    tick_bytes: int = 0  # the estimated peak a training tick may reach (budget.train_step_bytes); 0: no cap
    slice_s: float = 1.0  # seconds of training a tick aims at (and of turns in a row) before the others go on
    decode_slice_s: float = 1.0  # seconds the scoring loop runs on while other work waits
    interactive_slice_s: float = 3.0  # ... the watched answers' loop (Switch): a learner is waiting on every token
    # the watched answers' share of the model's time while other work waits: the share of the learners waiting on
    # answers among all learners with work waiting, but at least this
    answer_share: float = 1 / 3
    max_waiting: int = 3  # items one session may have waiting at once
    pause_turns: bool = True  # a turn pauses at its pause points while an answer or a view waits (bench/turn_pauses.py)


@dataclass(frozen=True)
class Wait:
    """Where a session's waiting work stands: sessions ahead of it and the estimated wait."""

    ahead: int
    eta_s: float

    def note(self) -> str:
        who = "nobody" if self.ahead == 0 else f"{self.ahead} learner{'s' if self.ahead != 1 else ''}"
        return f"waiting for the model: {who} ahead of you, about {max(1, round(self.eta_s))} s"


class _Item:
    _seq = itertools.count()

    def __init__(self, key: str, kind: str, tokens: int):
        self.key, self.kind, self.tokens = key, kind, tokens
        self.seq = next(self._seq)
        self.done = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None

    def finish(self, result: object = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


class Ticket:
    """A training step waiting for its tick: ``wait`` for it, then read ``result``."""

    def __init__(self, item: _Item, scheduler: "Scheduler"):
        self._item, self._scheduler = item, scheduler

    def wait(self, timeout: float | None = None) -> bool:
        return self._item.done.wait(timeout)

    def result(self) -> tuple[float, float]:
        """(this run's loss, the tick's seconds); raises what the tick raised."""
        self._item.done.wait()
        if self._item.error is not None:
            raise self._item.error
        return self._item.result  # type: ignore[return-value]

    def withdraw(self) -> bool:
        """Take the step back if no tick has taken it yet (the run was stopped)."""
        return self._scheduler._withdraw(self._item)


class _Train(_Item):
    def __init__(self, key: str, tokens: int, run: SharedRun, batch: RunBatch, amp: torch.dtype | None):
        super().__init__(key, "train", tokens)
        self.run, self.batch, self.amp = run, batch, amp


class _Gen(_Item):
    def __init__(self, key: str, tokens: int, prompts, prefixes, budgets, stop_ids):
        super().__init__(key, "generate", tokens)
        self.prompts, self.prefixes, self.budgets, self.stop_ids = prompts, prefixes, budgets, stop_ids
        self.rows: queue.Queue = queue.Queue()  # (row index, ids) as rows end, or an exception
        self.interactive = False
        self.prefill = sum(len(x) + (p.num_virtual_tokens if p is not None else 0) for x, p in zip(prompts, prefixes))
        self.left = len(prompts)


class _Attend(_Item):
    def __init__(self, key: str, tokens: int, requests: list[AttentionRequest], lengths: list[int]):
        super().__init__(key, "attention", tokens)
        self.requests, self.lengths = requests, lengths  # lengths: each row's prompt tokens


class _Turn(_Item):
    def __init__(self, key: str, what: str):
        super().__init__(key, "turn", 0)
        self.what = what
        self.released = threading.Event()  # the holder is done with the model
        self.handoff = threading.Event()  # the holder hands the model to the worker: released, or paused
        self.resume = threading.Event()  # the worker hands it back after serving the answers (a pause)


class Scheduler:
    """The one owner of the model's time. ``direct=True``: no worker, every call runs in its caller's
    thread as it would without a scheduler (the "one worker per session" path, kept for comparison)."""

    def __init__(self, base: BaseModel, settings: SchedulerSettings | None = None,
                 budget: MemoryBudget | None = None, direct: bool = False):
        self.base, self.settings, self.budget, self.direct = base, settings or SchedulerSettings(), budget, direct
        self._cond = threading.Condition()
        self._train: list[_Train] = []
        self._gen: list[_Gen] = []
        self._turns: list[_Turn] = []
        self._attend: list[_Attend] = []
        self._running: list[_Gen] = []  # generation requests inside a decode loop
        self._served: dict[str, float] = {}  # session -> when it was last served (round-robin order)
        self._loops: dict[bool, DecodeLoop] = {}  # interactive (watched answers) or not -> its decode loop
        self._owed_until = 0.0  # until then the rest of the round is owed time after the answers' slice: uncut
        self._thread: threading.Thread | None = None
        self._closed = False
        self._holder: str | None = None  # the session whose turn holds the model (the worker serves only a pause)
        self._local = threading.local()  # .turn: this thread holds the model (nested calls run directly)
        # measured, for the waiting estimates and the benchmark
        self.train_rate: float | None = None  # training token positions per second
        self.tick_s: float | None = None  # seconds per training tick
        self.step_s: float | None = None  # seconds per decode step
        self.ticks = 0
        self.tick_runs: list[int] = []  # runs per training tick
        self.decode_steps = 0
        self.decode_rows: list[int] = []  # rows per decode step
        self.attention_forwards = 0
        self.attention_rows: list[int] = []  # views per attention forward
        self.turn_pauses = 0  # times a turn paused at a pause point for waiting answers or attention views
        self.busy_s = dict.fromkeys(PARTS, 0.0)  # seconds of the model's time each kind of work took

    # ---- Submitting work ------------------------------------------------------------------------
    def submit_step(self, key: str, run: SharedRun, amp: torch.dtype | None = None) -> Ticket:
        """Queue one training step of ``run`` (its next batch); it joins the next training tick."""
        batch = run.next_batch(self.base.tokenizer.pad_token_id)
        rows, T = batch.ids.shape
        tokens = rows * (run.prefix.num_virtual_tokens + T)
        item = _Train(key, tokens, run, batch, amp)
        if self.direct or self._holding():
            self._run_train([item])
            return Ticket(item, self)
        what = f"A training step of {rows} examples x {run.prefix.num_virtual_tokens + T} positions"
        fix = "Lower the batch size or num_virtual_tokens."
        self._check(tokens, self.settings.token_budget, what, fix)
        if self._too_big(rows, T, run.prefix.num_virtual_tokens, amp):
            raise PlaygroundError(f"{what} would need more memory than this server lets one batch take "
                                  f"({self.settings.tick_bytes / 2**20:,.0f} MB, from --memory-budget-mb). {fix}")
        self._submit(item, self._train)
        return Ticket(item, self)

    def generate(self, key: str, prompts: list[list[int]], prefixes: list[Prefix | None], budgets: list[int],
                 stop_ids: tuple[int, ...] = (), interactive: bool = False) -> Iterator[tuple[int, list[int]]]:
        """Greedy answer ids of each prompt behind its prefix, as (row index, ids) in finishing order.

        The rows join the shared decode loop; each gets exactly what it would alone (tested).
        ``interactive``: a learner is watching the answer appear (Switch), not waiting for a score: it joins
        the loop ahead of scoring chunks, and the loop keeps the model longer while it decodes."""
        if self.direct or self._holding():
            yield from greedy_mixed_rows(self.base, prompts, prefixes, budgets, stop_ids)
            return
        tokens = sum((p.num_virtual_tokens if p is not None else 0) + len(x) + b
                     for x, p, b in zip(prompts, prefixes, budgets, strict=True))
        self._check(tokens, self.settings.decode_positions, f"Answering {len(prompts)} prompts at once",
                    "Pick fewer prefixes, or shorten the prompt.")
        item = _Gen(key, tokens, prompts, prefixes, budgets, stop_ids)
        item.interactive = interactive
        self._submit(item, self._gen)
        got = 0
        try:
            while got < len(prompts):
                row = item.rows.get()
                if isinstance(row, BaseException):
                    raise row
                got += 1
                yield row
        finally:
            if got < len(prompts):  # the caller went away: its rows leave the loop
                self._withdraw(item)

    def attention(self, key: str, requests: list[AttentionRequest]) -> list[PrefixAttention]:
        """Attention views, one per request; they share one forward with every other waiting view."""
        if self.direct or self._holding():
            return prefix_attention_many(self.base, requests)
        if any(not r.text.strip() for r in requests):
            raise PlaygroundError("The prompt is empty. Type a sentence to see where the model looks.")
        lengths = [len(_encode(self.base, r)) for r in requests]
        tokens = sum(n + r.prefix.num_virtual_tokens for n, r in zip(lengths, requests))
        what = f"The attention view of {max(lengths, default=0):,} prompt tokens"
        fix = "Shorten the prompt, or pick fewer prefixes."
        # sized by its peak (attention_bytes): its weights grow with the square of the prompt, so a training
        # step's cost per token position says little about it
        if self._attention_too_big([requests], [lengths]):
            raise PlaygroundError(f"{what} would need more memory than this server lets one batch take "
                                  f"({self.settings.tick_bytes / 2**20:,.0f} MB, from --memory-budget-mb). {fix}")
        item = _Attend(key, tokens, requests, lengths)
        self._submit(item, self._attend)
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.result  # type: ignore[return-value]

    def hold(self, nbytes: int, what: str, fix: str):
        """Memory for work done for a caller outside a turn (held-out scoring, Switch, a Compare lab run).

        Without the scheduler (``direct``): a reservation for as long as the body runs. With it: refused up
        front when it could never fit, and nothing held meanwhile. The worker sizes its shared batches against
        the budget itself, and a caller that held memory while queued for the model would starve the very
        batches it waits for. So with the scheduler only the thread that holds the model reserves (a turn),
        and reservations never wait on each other."""
        if self.budget is None:
            return contextlib.nullcontext()
        if self.direct:
            return self.budget.reserve(nbytes, what, fix)
        self.budget.check(nbytes, what, fix)
        return contextlib.nullcontext()

    @contextmanager
    def turn(self, key: str, what: str = ""):
        """The model to this thread alone while the body runs, once the session's turn comes."""
        if self.direct or self._holding():
            yield
            return
        item = _Turn(key, what)
        self._submit(item, self._turns)
        try:
            item.done.wait()
            if item.error is not None:
                raise item.error
            self._local.turn = True
            with pausable(lambda: self._pause(item)) if self.settings.pause_turns else contextlib.nullcontext():
                yield
        finally:
            self._local.turn = False
            if not self._withdraw(item):
                item.released.set()
                item.handoff.set()

    def stepwise(self, key: str, steps: Iterator[T], what: str = "") -> Iterator[T]:
        """``steps`` advanced one item per turn: a long job (a Compare lab run) interleaved with the class."""
        while True:
            with self.turn(key, what):
                try:
                    item = next(steps)
                except StopIteration:
                    return
            yield item

    # ---- What the page shows --------------------------------------------------------------------
    def waiting(self, key: str) -> Wait | None:
        """This session's place in line, or None when it has nothing waiting."""
        with self._cond:
            queue_ = self._order(self._train + self._gen + self._turns + self._attend)
            mine = next((i for i, it in enumerate(queue_) if it.key == key), None)
            if mine is None:
                return None
            ahead = queue_[:mine]
            tokens = sum(it.tokens for it in ahead if it.kind == "train") + queue_[mine].tokens
            rate, tick = self.train_rate or 2000.0, self.tick_s or 1.0
            eta = tokens / rate + tick + (self.step_s or 0.05) * 8 * len(self._running)
            return Wait(len({it.key for it in ahead}), eta)

    def stats(self) -> dict:
        """What the scheduler measured so far: ticks, runs per tick, decode steps, rows per step, and times."""
        with self._cond:
            ticks, rows = list(self.tick_runs), list(self.decode_rows)
            views = list(self.attention_rows)
            return {"ticks": self.ticks, "runs_per_tick": sum(ticks) / max(1, len(ticks)),
                    "most_runs_in_a_tick": max(ticks, default=0), "tick_s": self.tick_s,
                    "train_positions_per_s": self.train_rate, "decode_steps": self.decode_steps,
                    "rows_per_decode_step": sum(rows) / max(1, len(rows)), "decode_step_s": self.step_s,
                    "attention_forwards": self.attention_forwards,
                    "views_per_attention_forward": sum(views) / max(1, len(views)),
                    "most_views_in_a_forward": max(views, default=0), "turn_pauses": self.turn_pauses,
                    "busy_s": dict(self.busy_s)}

    def load(self) -> dict:
        """Counts for a status line or a benchmark: waiting items by kind, rows decoding, ticks so far."""
        with self._cond:
            return {"train": len(self._train), "generate": len(self._gen), "turn": len(self._turns),
                    "attention": len(self._attend),
                    "decoding": sum(len(g.prompts) for g in self._running), "ticks": self.ticks,
                    "decode_steps": self.decode_steps}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # ---- Internals ------------------------------------------------------------------------------
    def _holding(self) -> bool:
        return getattr(self._local, "turn", False) or threading.current_thread() is self._thread

    @staticmethod
    def _check(tokens: int, cap: int, what: str, fix: str) -> None:
        if tokens > cap:
            raise PlaygroundError(f"{what} would take {tokens:,} token positions, more than this server lets one "
                                  f"batch hold ({cap:,}, from --memory-budget-mb). {fix}")

    def _submit(self, item: _Item, into: list) -> None:
        with self._cond:
            if self._closed:
                raise PlaygroundError("The server is shutting down. Reload the page in a minute.")
            mine = sum(1 for lst in self._queues() for it in lst if it.key == item.key)
            if item.key and mine >= self.settings.max_waiting:
                raise PlaygroundError(f"You already have {mine} requests waiting for the model (the limit is "
                                      f"{self.settings.max_waiting} per learner). Wait for them to finish.")
            into.append(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="model-scheduler", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _withdraw(self, item: _Item) -> bool:
        """Remove a waiting item (True), or a generation's rows from the decode loop; False if it already ran."""
        with self._cond:
            for lst in self._queues():
                if item in lst:
                    lst.remove(item)
                    return True
            if isinstance(item, _Gen) and item in self._running:
                item.left = -1  # the worker drops its rows at the next step
            return False

    def _queues(self) -> tuple[list, ...]:
        return self._train, self._gen, self._turns, self._attend

    def _order(self, items: list) -> list:
        """Round-robin: the session served longest ago first, then arrival order."""
        return sorted(items, key=lambda it: (self._served.get(it.key, 0.0), it.seq))

    def _work(self) -> None:
        while True:
            with self._cond:
                while not (self._closed or any(self._queues()) or self._running):
                    self._cond.wait()
                if self._closed:
                    self._fail_all(PlaygroundError("The server is shutting down. Reload the page in a minute."))
                    return
            try:
                self._round()
                if self.budget is not None:
                    self.budget.tidy()  # hand what the round freed back to the system (at most every few s)
            except Exception as exc:  # a fault of the scheduler itself: every waiting caller hears of it, none hangs
                with self._cond:
                    self._fail_all(exc)
                    self._loops = {}

    def _round(self) -> None:
        """The watched answers, then the rest: the waiting attention views (one forward), the turns (short ones
        all go), the scoring loop and one training tick; each part yields after about a slice when the others
        have work waiting. A new watched answer cuts the scoring loop short after the decode step under way, and
        a turn at its next pause point (``_pause``; a turn's work between pause points, such as a training step
        of a Compare lab run, goes on to its end).
        But answers get only their share of the model's time while other work waits, by session (``_answer_share``:
        the learners waiting on answers among all learners with work waiting, at least ``answer_share``): when
        they took A seconds, the rest goes on, uncut, until it has had A x (1 - share) / share seconds, so a few
        learners clicking Switch without pause cannot hold a class's scoring and training back
        (bench/class_load.py), and one learner's long work cannot hold back five learners' answers."""
        self._answers()
        while True:
            self._rest()
            if not self._other_work(True) or time.perf_counter() >= self._owed_until:
                return

    def _answers(self, views: bool = False) -> float:
        """The watched answers' slice (``views``: and the waiting attention views' forward, for a paused turn); the
        rest is then owed its share of time (see ``_round``). Returns seconds."""
        share = self._answer_share()
        t0 = time.perf_counter()
        with self._timed("answers"):
            self._decode_slice(interactive=True)
        if views and self._attend:
            with self._timed("attention"):
                self._attention_forward()
        dt = time.perf_counter() - t0
        self._owed_until = time.perf_counter() + dt * (1 - share) / share
        return dt

    def _answer_share(self) -> float:
        """The watched answers' share of the model's time, by session as everything else is: the learners with an
        answer waiting over all learners with work waiting (shared work, such as the prompts' scoring, counts as
        one), and never below ``answer_share``. Five learners watching answers beside one run's long scoring get
        5/6 of the time; three beside a class of thirty training, the floor."""
        with self._cond:
            answers = {g.key for g in self._gen + self._running if g.interactive}
            others = {it.key for lst in (self._train, self._turns, self._attend) for it in lst}
            others |= {g.key for g in self._gen + self._running if not g.interactive}
            if self._holder is not None:
                others.add(self._holder)
        floor = min(max(self.settings.answer_share, 0.05), 1.0)
        return max(floor, len(answers) / len(answers | others)) if answers else 1.0

    def _rest(self) -> None:
        if self._attend:
            with self._timed("attention"):
                self._attention_forward()
        t1 = time.perf_counter()
        with self._timed("turns"):
            while self._turns and (time.perf_counter() - t1 < self.settings.slice_s
                                   or not (self._train or self._gen or self._running or self._attend)):
                self._grant_turn()
                if self._interactive_waiting():
                    break
        with self._timed("scoring"):
            self._decode_slice(interactive=False)
        if self._train:
            with self._timed("training"):
                self._train_tick()

    @contextmanager
    def _timed(self, part: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            with self._cond:
                self.busy_s[part] += dt

    def _fail_all(self, error: BaseException) -> None:
        for it in self._train + self._turns + self._attend:
            it.finish(error=error)
        for g in self._gen + self._running:
            g.rows.put(error)
        self._train, self._gen, self._turns, self._attend, self._running = [], [], [], [], []

    # training ticks
    def _train_tick(self) -> None:
        with self._cond:
            order = self._order(self._train)
            # a tick aims at slice_s of measured work, at least one run, never over the token budget
            cap = self.settings.token_budget
            if self.train_rate:
                cap = min(cap, max(1, int(self.train_rate * self.settings.slice_s)))
            # sized as it will run: every row padded to the tick's longest row and prefix, so one run of long rows
            # would make a shared tick cost as if every row were long; a run that does not fit waits for the next
            # tick, where it is first (served longest ago), and shorter runs behind it may still join this one
            take, total, rows, T, P = [], 0, 0, 0, 0
            for it in order:
                r, t = it.batch.ids.shape
                p = it.run.prefix.num_virtual_tokens
                padded = (rows + r) * (max(P, p) + max(T, t))  # token positions of the tick with this run
                if take and (padded > cap or self._too_big(rows + r, max(T, t), max(P, p), it.amp)):
                    continue
                take.append(it)
                total, rows, T, P = padded, rows + r, max(T, t), max(P, p)
            for it in take:
                self._train.remove(it)
        t0 = time.perf_counter()
        self._run_train(take)
        dt = time.perf_counter() - t0
        now = time.monotonic()
        with self._cond:
            for it in take:
                self._served[it.key] = now
            self.ticks += 1
            self.tick_runs.append(len(take))
            self.train_rate = _ewma(self.train_rate, total / max(dt, 1e-6))
            self.tick_s = _ewma(self.tick_s, dt)

    def _run_train(self, items: list[_Train]) -> None:
        t0 = time.perf_counter()
        try:
            for amp in dict.fromkeys(it.amp for it in items):  # one forward per autocast dtype
                group = [it for it in items if it.amp == amp]
                losses = shared_step(self.base, [it.run for it in group], [it.batch for it in group], amp)
                dt = time.perf_counter() - t0
                for it, loss in zip(group, losses):
                    it.finish((loss, dt))
        except Exception as exc:  # the tick's runs all get the error; the others go on
            for it in items:
                if not it.done.is_set():
                    it.finish(error=exc)

    def _too_big(self, rows: int, T: int, P: int, amp: torch.dtype | None) -> bool:
        """Whether a tick of ``rows`` rows padded to T behind P virtual tokens would pass ``tick_bytes``."""
        cap = self.settings.tick_bytes
        return bool(cap) and train_step_bytes(self.base, rows, T, P, T, amp) > cap

    # the decode loops
    def _decode_slice(self, interactive: bool) -> None:
        """Step the watched answers' loop (``interactive``) or the scoring loop until its rows end, or for its
        slice when other work waits."""
        limit = self.settings.interactive_slice_s if interactive else self.settings.decode_slice_s
        t0 = time.perf_counter()
        while True:
            self._admit(interactive)
            with self._cond:
                mine = [g for g in self._running if g.interactive == interactive]
                for g in [g for g in mine if g.left < 0]:  # withdrawn by their callers
                    self._loops[interactive].drop(g)
                    self._running.remove(g)
                    mine.remove(g)
                if not mine:
                    return
            loop = self._loops[interactive]
            s0 = time.perf_counter()
            try:
                ended = loop.step()
            except Exception as exc:
                with self._cond:
                    for g in mine:
                        g.rows.put(exc)
                        self._running.remove(g)
                    self._loops.pop(interactive, None)
                return
            with self._cond:
                self.decode_steps += 1
                self.decode_rows.append(sum(len(g.prompts) for g in mine))
                self.step_s = _ewma(self.step_s, time.perf_counter() - s0)
                for g, i, ids in ended:
                    g.rows.put((i, ids))
                    if g.left > 0:
                        g.left -= 1
                    if g.left == 0:
                        self._running.remove(g)
                        self._served[g.key] = time.monotonic()
            if self._other_work(interactive) and time.perf_counter() - t0 >= limit:
                return
            if not interactive and self._answer_waiting():  # a learner is waiting on an answer: it goes first
                return

    def _other_work(self, interactive: bool) -> bool:
        """Whether work other than this decode loop's (``interactive``: the watched answers') is waiting."""
        with self._cond:
            return bool(self._train or self._turns or self._attend or self._holder is not None
                        or any(g.interactive != interactive for g in self._gen + self._running))

    def _answer_waiting(self) -> bool:
        """A watched answer waits (queued, or cut at its slice), and the rest of the round has had its share (so
        the answer may cut in)."""
        if time.perf_counter() < self._owed_until:
            return False
        with self._cond:
            return any(g.interactive for g in self._gen + self._running)

    def _admit(self, interactive: bool) -> None:
        """Waiting generation requests of this loop join it, round-robin, while its positions fit."""
        with self._cond:
            waiting = [g for g in self._gen if g.interactive == interactive]
            if not waiting:
                return
            loop = self._loops.get(interactive)
            if loop is None:
                loop = self._loops[interactive] = DecodeLoop(self.base)
            held = sum(g.tokens for g in self._running)
            # chunked admission, as serving engines cap the prompt tokens of one step: a flood of evaluation
            # chunks joins over several steps instead of stalling the rows already decoding behind one prefill
            cap = max(256, int((self.train_rate or 4000.0) * self.settings.slice_s / 2))
            prefill = 0
            for g in self._order(waiting):
                if self._running and held + g.tokens > self.settings.decode_positions:
                    break
                if prefill and prefill + g.prefill > cap:
                    break
                self._gen.remove(g)
                try:
                    loop.join(g, g.prompts, g.prefixes, g.budgets, g.stop_ids)
                except ValueError as exc:  # a malformed request (an empty prompt): its caller hears why
                    g.rows.put(exc)
                    continue
                self._running.append(g)
                held += g.tokens
                prefill += g.prefill

    # attention views
    def _attention_too_big(self, batches: list[list[AttentionRequest]], lengths: list[list[int]]) -> bool:
        """Whether these requests' views in one forward would pass ``tick_bytes``."""
        cap = self.settings.tick_bytes
        rows = [r for b in batches for r in b]
        T = max((n for ls in lengths for n in ls), default=0)
        P = max((r.prefix.num_virtual_tokens for r in rows), default=0)
        return bool(cap) and attention_bytes(self.base, T, P, len(rows)) > cap

    def _attention_forward(self) -> None:
        """Every waiting view that fits (round-robin, at least one request) in one forward."""
        with self._cond:
            take: list[_Attend] = []
            total = 0
            for it in self._order(self._attend):
                if take and (total + it.tokens > self.settings.token_budget or self._attention_too_big(
                        [t.requests for t in take] + [it.requests], [t.lengths for t in take] + [it.lengths])):
                    continue
                take.append(it)
                total += it.tokens
            for it in take:
                self._attend.remove(it)
        try:  # requests are checked when queued (empty prompts refused), so an error here is the forward's own
            views = prefix_attention_many(self.base, [r for it in take for r in it.requests])
        except Exception as exc:
            for it in take:
                it.finish(error=exc)
        else:
            start = 0
            for it in take:
                it.finish(views[start:start + len(it.requests)])
                start += len(it.requests)
        now = time.monotonic()
        with self._cond:
            self.attention_forwards += 1
            self.attention_rows.append(sum(len(it.requests) for it in take))
            for it in take:
                self._served[it.key] = now

    # turns
    def _grant_turn(self) -> None:
        """Hand the model to the next turn's thread until it releases it, serving the watched answers each time
        it pauses (their time is the answers', not the turn's)."""
        with self._cond:
            if not self._turns:
                return
            item = self._order(self._turns)[0]
            self._turns.remove(item)
            self._holder = item.key
        item.finish()
        paused = 0.0
        while True:
            item.handoff.wait()
            item.handoff.clear()
            if item.released.is_set():
                break
            try:
                paused += self._answers(views=True)
            except Exception as exc:  # the answers hear of it; the turn goes on, and the worker waits for its end
                with self._cond:
                    for g in [g for g in self._gen + self._running if g.interactive]:
                        g.rows.put(exc)
                        (self._gen if g in self._gen else self._running).remove(g)
                    self._loops.pop(True, None)
            finally:
                item.resume.set()
        with self._cond:
            self._holder = None
            self._served[item.key] = time.monotonic()
            self.busy_s["turns"] -= paused  # counted in "answers"; _timed adds the whole turn to "turns"

    def _interactive_waiting(self) -> bool:
        """A learner waits on a watched answer or an attention view, and the rest has had its share."""
        if self._answer_waiting():
            return True
        with self._cond:
            return bool(self._attend) and time.perf_counter() >= self._owed_until

    def _pause(self, item: _Turn) -> None:
        """At a pause point of the turn's thread: while a learner waits on a watched answer or an attention view,
        hand the model to the worker until it has served them."""
        if not self._interactive_waiting():
            return
        with self._cond:
            self.turn_pauses += 1
        item.resume.clear()
        item.handoff.set()
        item.resume.wait()


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else (1 - EWMA) * old + EWMA * new



def _encode(base: BaseModel, r: AttentionRequest) -> list[int]:
    return PromptFormat.for_tokenizer(base.tokenizer).encode_prompt(r.text, r.mode, r.instruction)
