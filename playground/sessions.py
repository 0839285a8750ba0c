"""Per-browser-session state: each session's training run, its just-trained prefix and its curves.

The base model is shared read-only by everyone; what belongs to one learner lives here,
keyed by the session id the UI gets from the browser (Gradio's ``request.session_hash``).
Nothing here is deep-copied per event (as ``gr.State`` would be), and a session's data goes
away when its tab closes (``drop``) or when it has been idle too long (``sweep``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

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
    state: str = "running"  # "running", "finished" or "stopped"
    discarded: bool = False  # its session is gone (tab closed, connection dropped, idle): nobody will see more
    baselines: dict[str, float] = field(default_factory=dict)  # held-out metric of base / instruction
    held_out_n: int = 0  # examples behind the held-out metric

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
    """Thread-safe map from session id to Session, bounded in size and idle time."""

    def __init__(self, max_sessions: int = 500, ttl_s: float = 3 * 3600):
        self.max_sessions, self.ttl_s = max_sessions, ttl_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Session:
        with self._lock:
            s = self._sessions.get(key)
            if s is None:
                self._sweep_locked()
                if len(self._sessions) >= self.max_sessions:  # evict the idlest finished session
                    idle = [x for x in self._sessions.values() if not (x.run and x.run.state == "running")]
                    if idle:
                        self._drop_locked(min(idle, key=lambda x: x.last_seen).key)
                s = self._sessions[key] = Session(key)
            s.last_seen = time.monotonic()
            return s

    def peek(self, key: str) -> Session | None:
        with self._lock:
            return self._sessions.get(key)

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

    def _drop_locked(self, key: str) -> None:
        s = self._sessions.pop(key, None)
        if s and s.run:
            s.run.discarded = True
            s.run.cancel.set()

    def _sweep_locked(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self._sessions.items() if now - s.last_seen > self.ttl_s]:
            self._drop_locked(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
