"""Fair use of Gradio's queue: a cap on the requests one session may have waiting.

Gradio's queue is first come, first served, with one size for everyone, so one session that
sends many requests pushes every other student back. ``cap_waiting`` wraps the queue's own
``push`` (the join path of ``/queue/join`` and ``/call/*``): a session that already has
``limit`` requests waiting gets a polite refusal (HTTP 429, shown in its page) and everyone
else keeps their place. Requests sent without a session id (plain ``/call/`` API use) are
counted per client address instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from fastapi import HTTPException


def cap_waiting(queue, limit: int, on_join: Callable[[str], None] | None = None) -> None:
    """Refuse a session's request when it already has ``limit`` waiting; ``on_join`` hears each session id."""
    push = queue.push
    joining: Counter = Counter()  # requests inside push() right now, per sender: not yet in the queue

    def sender(session_hash: str | None, request) -> str:
        if session_hash:
            return session_hash
        client = getattr(request, "client", None)
        return "address:" + (client.host if client else "unknown")

    def waiting(who: str) -> int:
        n = 0
        for q in list(queue.event_queue_per_concurrency_id.values()):
            for e in list(q.queue):
                own = e.session_hash if e.session_hash != e._id else None  # sent without one: its address
                n += sender(own, e.request) == who
        return n

    async def capped_push(body, request, username):
        who = sender(body.session_hash, request)
        if body.session_hash and on_join is not None:
            on_join(body.session_hash)
        n = waiting(who) + joining[who]
        if n >= limit:
            raise HTTPException(status_code=429, detail=f"You already have {n} requests waiting; wait for them "
                                                        "to finish.")
        joining[who] += 1
        try:
            return await push(body, request, username)
        finally:
            joining[who] -= 1
            if not joining[who]:
                del joining[who]

    queue.push = capped_push
