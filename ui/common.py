"""Helpers every tab uses: learner texts from ``assets/``, error translation, small HTML pieces."""


import functools
import html
import inspect
import logging
import re
from pathlib import Path

import gradio as gr

from playground.errors import PlaygroundError
from playground.roster import BROWSER_COOKIE, BROWSER_ID

ASSETS = Path(__file__).resolve().parent.parent / "assets"
log = logging.getLogger("prefix-playground")


def asset(name: str) -> str:
    """The text of ``assets/<name>`` (read when the UI is built, never at import)."""
    return (ASSETS / name).read_text(encoding="utf-8")


def asset_sections(name: str) -> dict[str, str]:
    """Split a Markdown asset on ``<!-- figure: key -->`` markers; the text before the first is ``intro``."""
    parts = re.split(r"<!--\s*figure:\s*(\w+)\s*-->", asset(name))
    out = {"intro": parts[0].strip()}
    out.update({parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)})
    return out


def glossary() -> dict[str, str]:
    """The hover hints of ``assets/glossary.md``: {term: meaning}, from its "- `term`: meaning" lines."""
    return {m[1]: m[2].strip() for m in re.finditer(r"^- `([^`]+)`: (.+)$", asset("glossary.md"), re.M)}


def _to_gr_error(exc: Exception) -> gr.Error:
    if isinstance(exc, PlaygroundError):
        return gr.Error(str(exc), duration=None)
    log.exception("unexpected error in a UI callback")
    return gr.Error(f"Something went wrong ({type(exc).__name__}: {exc}). The app is still running; "
                    "try again, or report this with the steps that led to it.", duration=None)


def friendly(fn):
    """Show PlaygroundError (and anything unexpected) as a readable error in the page, never a crash."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:  # noqa: BLE001 - every error must reach the learner as a message
                raise _to_gr_error(exc) from None
        return gen

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _to_gr_error(exc) from None
    return wrapper


def key(request: gr.Request | None) -> str:
    """The learner: every piece of per-learner state hangs off it. A login (``user:NAME``), else the browser's
    id cookie (``browser:ID``, given with the page by ui/guard.py, so a reload or a second tab is the same
    learner), else the tab's own session (a client without cookies)."""
    user = getattr(request, "username", None)
    if user:
        return f"user:{user}"
    try:
        cookies = getattr(request, "cookies", None) or {}
        bid = cookies.get(BROWSER_COOKIE)
    except Exception:  # noqa: BLE001 - no cookies on this request
        bid = None
    if isinstance(bid, str) and BROWSER_ID.fullmatch(bid):
        return f"browser:{bid}"
    return tab(request)


def tab(request: gr.Request | None) -> str:
    """This page (Gradio's session hash): one learner may have several."""
    return getattr(request, "session_hash", None) or "local"


def owner(request: gr.Request | None) -> str:
    """Who saves a prefix: the learner (``key``). The library stores only a hash of it, so a card names nobody
    and can't be copied to claim a prefix."""
    return key(request)


def editor(pg, request: gr.Request | None) -> str | None:
    """Who renames or deletes a prefix: the teacher may change any in the class's library (None), a student
    only their own."""
    k = key(request)
    return None if pg.is_teacher(k) else k


def esc(x) -> str:
    return html.escape(str(x))


def slots(pg, kind: str) -> int:
    """Gradio's concurrency limit for an event group ("train" or "infer"). With the scheduler, every request
    in the queue may reach it (it batches and orders their model work itself, round-robin by session); without
    it, each running event computes in its own thread, so only a few run at once."""
    if getattr(pg, "scheduled", False):
        return pg.limits.queue_size
    return pg.limits.concurrent_trainings if kind == "train" else pg.limits.concurrent_requests
