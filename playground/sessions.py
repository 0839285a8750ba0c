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
    key: str = ""  # the learner who started it (its turn in the scheduler's round-robin)
    # Followed by every tab of its learner (a reload, a second tab): the run goes on in its own thread.
    phase: str = "warming up"  # "warming up", "training", "scoring start", "scoring prompts", "done"
    rows: list | None = None  # the before/after rows on held-out examples, once compared
    error: str = ""  # why the run or its comparison ended with an error (a message for the learner)
    record: object = None  # its record in the class folder (a runlog.RunRecord), written again when the run ends
    forked_from: str = ""  # the pushed prefix it started from
    probe_text: str = ""  # the held-out prompt the attention on the prefix is recorded on while it trains
    probes: list = field(default_factory=list)  # probe.ProbePoint at step 0 and every few steps
    probe_note: str = ""  # why the recordings stopped ("" while they go on)
    done: threading.Event = field(default_factory=threading.Event)  # training and its comparison are over
    version: int = 0  # bumped on every change a page shows
    changed: threading.Condition = field(default_factory=threading.Condition)

    def bump(self) -> None:
        """Something a page shows changed: wake every tab that follows this run."""
        with self.changed:
            self.version += 1
            self.changed.notify_all()

    def wait_change(self, seen: int, timeout: float) -> int:
        """Block until the run changes after version ``seen`` (or ``timeout`` seconds); returns the version."""
        with self.changed:
            self.changed.wait_for(lambda: self.version != seen, timeout)
            return self.version

    @property
    def run_id(self) -> str:
        """Its record's id in the class folder ("" before the record is begun)."""
        return self.record.run_id if self.record is not None else ""

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
    tabs: set[str] = field(default_factory=set)  # the browser tabs open on it (Gradio session hashes)
    detached_at: float | None = None  # when its last tab closed: its run stops unless a tab comes back in time


class SessionStore:
    """Thread-safe map from session id to Session, bounded in size and idle time.

    A session is idle when nothing touched it (a request, or the browser's heartbeat) for
    ``ttl_s``. ``sweep`` frees idle sessions; it runs on every new session, and
    ``start_sweeper`` runs it on a timer, so memory comes back even when nobody new arrives.
    A session whose training is still running is kept until that run ends. ``on_drop`` (if
    set) hears the ids of every session freed by a sweep or an eviction.
    """

    def __init__(self, max_sessions: int = 500, ttl_s: float = 30 * 60,
                 clock: Callable[[], float] | None = None, grace_s: float = 120.0):
        self.max_sessions, self.ttl_s, self.grace_s = max_sessions, ttl_s, grace_s
        self.clock = clock or (lambda: time.monotonic())  # looked up per call, so a test can replace it
        self.on_drop: Callable[[list[str]], None] | None = None
        self.on_stop: Callable[[str], None] | None = None  # hears a learner whose run stopped with its last tab
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

    def attach(self, key: str, tab: str) -> Session:
        """A tab opened on this learner (a page load): a closed tab's grace ends, nothing stops."""
        s = self.get(key)
        with self._lock:
            s.tabs.add(tab)
            s.detached_at = None
        return s

    def detach(self, key: str, tab: str) -> bool:
        """A tab closed. With no tab left, the learner's run goes on for ``grace_s`` (a reload comes back
        within it), then stops at the next sweep. Returns whether a run is going."""
        with self._lock:
            s = self._sessions.get(key)
            if s is None:
                return False
            s.tabs.discard(tab)
            if not s.tabs:
                s.detached_at = self.clock()
            return _running(s)

    def stop(self, key: str) -> bool:
        """Ask this session's running training to stop after its current step."""
        s = self.peek(key)
        if s and s.run and s.run.state == "running":
            s.run.cancel.set()
            return True
        return False

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

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
        # every tab closed and none came back in time: nobody will see the run, so it stops
        gone = [k for k, s in self._sessions.items() if k not in idle and not s.tabs and s.detached_at is not None
                and now - s.detached_at > self.grace_s]
        for key in gone:
            if _running(self._sessions[key]) and self.on_stop is not None:
                self.on_stop(key)
        for key in idle + gone:
            self._drop_locked(key)
        return idle + gone

    def _report(self, dropped: list[str]) -> None:
        if dropped and self.on_drop is not None:
            self.on_drop(dropped)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)


def _running(s: Session) -> bool:
    return bool(s.run and s.run.state == "running")
