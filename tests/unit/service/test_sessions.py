"""The session store: separate sessions, idle sweeps, eviction (sessions.py)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

import playground.sessions as sessions_mod
from playground.sessions import SessionStore

from .support import make_run, rec


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(sessions_mod, "time", SimpleNamespace(monotonic=lambda: now[0], perf_counter=time.perf_counter))
    return now


def test_sessions_are_separate_and_stop_only_their_own_run():
    store = SessionStore()
    a, b = store.get("a"), store.get("b")
    assert a is not b and store.get("a") is a and len(store) == 2
    a.run, b.run = make_run(), make_run()
    assert store.stop("a") is True
    assert a.run.cancel.is_set() and not b.run.cancel.is_set()
    b.run.state = "finished"
    assert store.stop("b") is False and not b.run.cancel.is_set()  # nothing running to stop
    assert store.stop("nobody") is False and store.peek("nobody") is None  # stop doesn't create sessions


def test_drop_cancels_the_run_and_forgets_the_session():
    store = SessionStore()
    s = store.get("a")
    s.run = make_run()
    other = store.get("b")
    other.run = make_run()
    store.drop("a")
    assert s.run.cancel.is_set() and store.peek("a") is None and len(store) == 1
    assert not other.run.cancel.is_set()
    store.drop("a")  # dropping twice is harmless
    assert store.get("a") is not s  # a fresh session comes back


def test_idle_sessions_are_swept_after_the_ttl(clock):
    store = SessionStore(ttl_s=10)
    old = store.get("old")
    old.run = make_run()
    clock[0] += 5
    store.get("recent")
    clock[0] += 6  # 'old' idle 11 s, 'recent' 6 s
    store.get("new")  # a new session triggers the sweep
    # a session whose training is still running is kept until the run ends (a run's cost is bounded)
    assert store.peek("old") is old and not old.run.cancel.is_set()
    old.run.state = "finished"
    store.get("newer")
    assert store.peek("old") is None and old.run.discarded
    assert store.peek("recent") is not None and len(store) == 3


def test_seeing_a_session_keeps_it_alive(clock):
    store = SessionStore(ttl_s=10)
    store.get("a")
    for _ in range(3):
        clock[0] += 8
        store.get("a")
    store.get("b")
    assert store.peek("a") is not None


def test_max_sessions_evicts_the_idlest_session_that_is_not_training(clock):
    store = SessionStore(max_sessions=2, ttl_s=1e9)
    a = store.get("a")
    clock[0] += 1
    store.get("b")
    clock[0] += 1
    store.get("a")  # b is now the idlest
    clock[0] += 1
    store.get("c")
    assert store.peek("b") is None and store.peek("a") is a and len(store) == 2
    # A running training is never evicted: the idlest *finished* session goes instead.
    a.run = make_run()
    clock[0] += 1
    store.get("c")
    clock[0] += 1
    store.get("d")
    assert store.peek("a") is a and not a.run.cancel.is_set() and store.peek("c") is None
    assert len(store) == 2
    store.peek("d").run = make_run()  # everyone is training: nobody is evicted, the store grows past the cap
    clock[0] += 1
    store.get("e")
    assert len(store) == 3 and store.peek("a") is a and store.peek("d") is not None


def test_training_run_progress_numbers():
    run = make_run(steps=10)
    assert run.eta_seconds() is None and run.steps_done == 0 and run.metric is None
    run.records += [rec(1, 0.25), rec(2), rec(3, 0.5), rec(4)]
    run.started = time.perf_counter() - 8.0  # 2 s per step so far
    assert run.steps_done == 4 and run.metric == 0.5  # latest measured metric, not the latest record's None
    assert run.eta_seconds() == pytest.approx(2.0 * 6, rel=0.05)
    run.records.append(rec(10))
    assert run.eta_seconds() == pytest.approx(0.0, abs=1e-9)
