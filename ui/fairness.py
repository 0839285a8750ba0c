"""Fair use of Gradio's queue: what one session may have in flight.

Gradio's queue is first come, first served, with one size for everyone, so one session that
sends many requests pushes every other student back, and can hold every worker of a
concurrency group at once. ``cap_waiting`` wraps the queue's own ``push`` (the join path of
``/queue/join`` and ``/call/*``) and holds each session to what a browser tab does anyway:

- at most one request of each event in flight (waiting or running): a button's click waits
  for its answer before it can fire again, and Switch keeps only the last input while one
  runs, so a tab never has two;
- at most ``limit`` requests in flight in all (a training, an Attention view and a Switch at
  once is three).

Past either, the request gets a polite refusal (HTTP 429, shown in its page) and everyone else
keeps their place. Requests sent without a session id (plain ``/call/`` API use) are counted
per client address instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from fastapi import HTTPException


def cap_waiting(queue, limit: int, on_join: Callable[[str], None] | None = None) -> None:
    """Refuse a session's request past one per event or ``limit`` in all; ``on_join`` hears each session id."""
    push = queue.push
    joining: Counter = Counter()  # (sender, event) inside push() right now: not yet in the queue

    def sender(session_hash: str | None, request) -> str:
        if session_hash:
            return session_hash
        client = getattr(request, "client", None)
        return "address:" + (client.host if client else "unknown")

    def in_flight(who: str) -> Counter:
        """This sender's requests waiting in the queue or running now, by event (fn_index)."""
        waiting = [e for q in list(queue.event_queue_per_concurrency_id.values()) for e in list(q.queue)]
        running = [e for job in list(queue.active_jobs) if job for e in list(job)]
        n: Counter = Counter()
        for e in waiting + running:
            own = e.session_hash if e.session_hash != e._id else None  # sent without one: its address
            if sender(own, e.request) == who:
                n[getattr(e.data, "fn_index", None)] += 1
        for (w, fn), k in joining.items():
            if w == who:
                n[fn] += k
        return n

    async def capped_push(body, request, username):
        who, fn = sender(body.session_hash, request), body.fn_index
        if body.session_hash and on_join is not None:
            on_join(body.session_hash)
        n = in_flight(who)
        if n[fn] >= 1:
            raise HTTPException(status_code=429, detail="This request is already waiting or running for you; "
                                                        "wait for its answer before sending it again.")
        if sum(n.values()) >= limit:
            raise HTTPException(status_code=429, detail=f"You already have {sum(n.values())} requests waiting or "
                                                        "running; wait for them to finish.")
        joining[(who, fn)] += 1
        try:
            return await push(body, request, username)
        finally:
            joining[(who, fn)] -= 1
            if not joining[(who, fn)]:
                del joining[(who, fn)]

    queue.push = capped_push
