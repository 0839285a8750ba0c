"""Per-browser-session state: each session's training run, its just-trained prefix and its curves.

The base model is shared read-only by everyone; what belongs to one learner lives here,
keyed by the session id the UI gets from the browser (Gradio's ``request.session_hash``).
Nothing here is deep-copied per event (as ``gr.State`` would be), and a session's data goes
away when its tab closes (``drop``) or when it has been idle too long (``sweep``): no request
and no heartbeat for ``ttl_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .budget import RunPlan
from .prefix import Prefix, PrefixSettings
from .tasks import Task
from .training import StepRecord, TrainSettings


@dataclass
class TrainingRun:
    """One press of Train: its task, settings, prefix, and the records streamed so far."""

    task: Task
    prefix: Prefix
    prefix_settings: PrefixSettings
    train_settings: TrainSettings
    records: list[StepRecord] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)  # this run's Stop, nobody else's
    started: float = field(default_factory=time.perf_counter)
    wall_start: float = field(default_factory=time.time)  # the clock time it started (names the run in pickers)
    start_metric: float | None = None  # the held-out metric of the initialized prefix (step 0), once scored
    start_prefix: Prefix | None = None  # a copy of the prefix as it started, until its step 0 is scored
    state: str = "running"  # "running", "finished" or "stopped"
    discarded: bool = False  # its session is gone (tab closed, connection dropped, idle): nobody will see more
    baselines: dict[str, float] = field(default_factory=dict)  # held-out metric of the model as is and each prompt
    strongest: object = None  # the best prompting baseline on the held-out set (a baselines.BaselineResult)
    paired: tuple[int, int, float] | None = None  # (only the prefix better, only the best prompt better, sign-test p)
    summary: list[dict] = field(default_factory=list)  # one row per way of answering, with its cost
    held_out_n: int = 0  # examples behind the held-out metric
    plan: RunPlan | None = None  # the run sized in tokens and bytes before it started (its memory reservations)
    key: str = ""  # the session that started it (its turn in the scheduler's round-robin)

    @property
    def steps_done(self) -> int:
        return self.records[-1].step if self.records else 0

    @property
    def metric(self) -> float | None:
        """The latest held-out metric."""
        return next((r.metric for r in reversed(self.records) if r.metric is not None), None)

    def eta_seconds(self) -> float | None:
        """Wall time left at the pace so far (evaluation included)."""
        if not self.records:
            return None
        per_step = (time.perf_counter() - self.started) / self.steps_done
        return per_step * (self.train_settings.steps - self.steps_done)


@dataclass
class Session:
    """Everything one browser tab owns."""

    key: str
    run: TrainingRun | None = None  # the latest run; its prefix is "the one just trained"
    upload: Task | None = None  # the task built from this session's uploaded file
    last_seen: float = field(default_factory=time.monotonic)


class SessionStore:
    """Thread-safe map from session id to Session, bounded in size and idle time.

    A session is idle when nothing touched it (a request, or the browser's heartbeat) for
    ``ttl_s``. ``sweep`` frees idle sessions; it runs on every new session, and
    ``start_sweeper`` runs it on a timer, so memory comes back even when nobody new arrives.
    A session whose training is still running is kept until that run ends. ``on_drop`` (if
    set) hears the ids of every session freed by a sweep or an eviction.
    """

    def __init__(self, max_sessions: int = 500, ttl_s: float = 30 * 60,
                 clock: Callable[[], float] | None = None):
        self.max_sessions, self.ttl_s = max_sessions, ttl_s
        self.clock = clock or (lambda: time.monotonic())  # looked up per call, so a test can replace it
        self.on_drop: Callable[[list[str]], None] | None = None
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._sweeper: threading.Thread | None = None
        self._stop_sweeper = threading.Event()

    def get(self, key: str) -> Session:
        with self._lock:
            s = self._sessions.get(key)
            dropped = []
            if s is None:
                dropped = self._sweep_locked()
                if len(self._sessions) >= self.max_sessions:  # evict the idlest finished session
                    idle = [x for x in self._sessions.values() if not _running(x)]
                    if idle:
                        k = min(idle, key=lambda x: x.last_seen).key
                        self._drop_locked(k)
                        dropped.append(k)
                s = self._sessions[key] = Session(key, last_seen=self.clock())
            s.last_seen = self.clock()
        self._report(dropped)
        return s

    def peek(self, key: str) -> Session | None:
        with self._lock:
            return self._sessions.get(key)

    def touch(self, key: str) -> None:
        """Activity from this session (a request or a heartbeat): it is not idle. Creates nothing."""
        with self._lock:
            s = self._sessions.get(key)
            if s is not None:
                s.last_seen = self.clock()

    def stop(self, key: str) -> bool:
        """Ask this session's running training to stop after its current step."""
        s = self.peek(key)
        if s and s.run and s.run.state == "running":
            s.run.cancel.set()
            return True
        return False

    def drop(self, key: str) -> None:
        """Forget a session (tab closed): stop its run and release its prefix."""
        with self._lock:
            self._drop_locked(key)

    def sweep(self) -> list[str]:
        """Free every session idle for longer than ``ttl_s``; returns their ids."""
        with self._lock:
            dropped = self._sweep_locked()
        self._report(dropped)
        return dropped

    def start_sweeper(self, every_s: float = 30.0) -> None:
        """Sweep every ``every_s`` seconds on a daemon thread (once per store)."""
        if self._sweeper is not None:
            return
        def loop():
            while not self._stop_sweeper.wait(every_s):
                self.sweep()
        self._sweeper = threading.Thread(target=loop, name="session-sweeper", daemon=True)
        self._sweeper.start()

    def stop_sweeper(self) -> None:
        self._stop_sweeper.set()

    def _drop_locked(self, key: str) -> None:
        s = self._sessions.pop(key, None)
        if s and s.run:
            s.run.discarded = True
            s.run.cancel.set()

    def _sweep_locked(self) -> list[str]:
        now = self.clock()
        idle = [k for k, s in self._sessions.items() if now - s.last_seen > self.ttl_s and not _running(s)]
        for key in idle:
            self._drop_locked(key)
        return idle

    def _report(self, dropped: list[str]) -> None:
        if dropped and self.on_drop is not None:
            self.on_drop(dropped)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


def _running(s: Session) -> bool:
    return bool(s.run and s.run.state == "running")
