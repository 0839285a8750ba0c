"""Pause points: where long model work may hand the model over to a learner who is waiting on an answer.

A scoring of the prompts' baselines, a Compare lab step or a prefix's initialization runs in a turn
(``Scheduler.turn``): its caller's thread has the model to itself. Some of that work is long on a
small CPU (a few-shot head of 2,000 tokens takes over 10 s to cache, its 24-token answers a few
more), and a learner who clicks Switch or Show attention meanwhile would wait for all of it. So the
long loops call ``pause_point()`` between their steps (a decode step, a prefill chunk); inside a
turn the scheduler answers it by serving the waiting answers and views first, then gives the model
back (serving engines preempt a long request for the same reason). Outside a turn, and with no scheduler, it does nothing.

The hook is per thread: only the thread that holds the model pauses, and only its own work.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

_local = threading.local()


def pause_point() -> None:
    """Between two steps of long model work: let waiting answers go first, if this thread's holder says so."""
    hook = getattr(_local, "hook", None)
    if hook is not None:
        hook()


@contextmanager
def pausable(hook: Callable[[], None]) -> Iterator[None]:
    """Within the body, ``pause_point()`` in this thread calls ``hook`` (the previous hook is restored after)."""
    old = getattr(_local, "hook", None)
    _local.hook = hook
    try:
        yield
    finally:
        _local.hook = old
