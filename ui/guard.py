"""The web app's front door: an ASGI middleware in front of Gradio's routes.

Gradio checks the login on most routes but leaves some open (the heartbeat, whose closing runs
the tab-close handler; ``/cancel``; ``/reset``; ``/stream/*``), and its ``/logout`` ends every
session of the user name, which with one shared class login is every student. ``Guard`` wraps
the whole app and, with a login configured, lets an anonymous request reach only the pages the
login form needs. It also:

- limits failed logins per minute, per client address and per user name (429);
- logs out only the caller's own token;
- caps each upload request (number of files, bytes, also while a chunked body streams) and the
  disk that Gradio's upload folder may hold (413, 507);
- reports every heartbeat as activity of its session (``on_activity``), so a tab that is only
  being read stays alive;
- gives each browser a random id in a cookie (``BROWSER_COOKIE``) with the page, so a learner
  without a login is the same learner after a reload or in a second tab (``ui.common.key``).

The login itself is Gradio's: the same cookies and the same token table (``app.tokens``).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs

from starlette.formparsers import MultiPartException

from playground.roster import BROWSER_COOKIE, BROWSER_ID

API = "/gradio_api"
# What an anonymous browser needs to show the login form (the page, its scripts and styles).
PUBLIC = {"/", "/login", "/login/", "/logout", "/favicon.ico", "/robots.txt", "/manifest.json", "/theme.css",
          f"{API}/theme.css", f"{API}/login_check", f"{API}/login_check/", f"{API}/user", f"{API}/user/",
          f"{API}/startup-events"}  # launch() calls the last one itself, once
PUBLIC_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon")
WINDOW_S = 60.0  # the login limit's window
MAX_LOGIN_BODY = 16 * 1024  # a login form is a user name and a password
MB = 1024 * 1024


class UploadRefused(MultiPartException):
    """Raised inside Gradio's multipart parser, which then deletes the files it had started."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Guard:
    """Pure ASGI middleware; ``limits`` is a ``playground.service.Limits``."""

    def __init__(self, app, limits, on_activity: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.app, self.limits, self.on_activity, self.clock = app, limits, on_activity, clock
        self._failures: dict[tuple[str, str], deque] = {}
        self._lock = threading.Lock()
        self._in_flight = 0  # upload bytes received by requests still being parsed
        self._disk = (0.0, 0)  # (when measured, bytes) of the upload folder

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and scope["app"].auth is not None and self._user(scope["app"], scope) is None:
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        gradio_app, path = scope["app"], scope["path"]
        if gradio_app.auth is not None:
            if path in ("/login", "/login/") and scope["method"] == "POST":
                return await self._login(scope, receive, send)
            if path == "/logout":
                return await self._logout(gradio_app, scope, receive, send)
            if self._user(gradio_app, scope) is None and not _public(path):
                return await _reply(send, 401, {"detail": {"error": "Not authenticated",
                                                           "auth_message": gradio_app.get_blocks().auth_message}})
        if path == "/" and scope["method"] == "GET" and not _browser_id(scope):
            return await self.app(scope, receive, _with_browser_cookie(send))
        if path.startswith(f"{API}/heartbeat/"):
            return await self._heartbeat(path.rsplit("/", 1)[-1], scope, receive, send)
        if path.rstrip("/") == f"{API}/upload" and scope["method"] == "POST":
            return await self._upload(gradio_app, scope, receive, send)
        return await self.app(scope, receive, send)

    # ---- login, logout --------------------------------------------------------------------
    @staticmethod
    def _token(gradio_app, scope) -> str | None:
        """The caller's login token, read the way Gradio reads it (``routes.get_current_user``)."""
        jar = SimpleCookie()
        for name, value in scope["headers"]:
            if name == b"cookie":
                try:
                    jar.load(value.decode("latin-1"))
                except Exception:  # noqa: BLE001 - a malformed cookie header is no login
                    return None
        cid = gradio_app.cookie_id
        found = jar.get(f"access-token-{cid}") or jar.get(f"access-token-unsecure-{cid}")
        return found.value if found else None

    def _user(self, gradio_app, scope) -> str | None:
        return gradio_app.tokens.get(self._token(gradio_app, scope))

    async def _login(self, scope, receive, send):
        body, more = b"", True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > MAX_LOGIN_BODY:
                return await _reply(send, 413, {"detail": "A login form is a user name and a password; this "
                                                          "request is far larger."})
        user = (parse_qs(body.decode("latin-1")).get("username") or [""])[0].strip()
        keys = [("address", _client(scope)), ("user", user)]
        wait = self._login_wait(keys)
        if wait:
            return await _reply(send, 429, {"detail": f"Too many failed logins: at most "
                                f"{self.limits.login_attempts_per_minute} per minute from one address or for one "
                                f"user name. Try again in {wait} s."}, [(b"retry-after", str(wait).encode())])
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def watch(msg):
            if msg["type"] == "http.response.start" and msg["status"] in (400, 401):
                self._login_failed(keys)
            await send(msg)

        await self.app(scope, replay, watch)

    def _login_wait(self, keys) -> int:
        """Seconds until these keys may try again (0: now)."""
        now, cap = self.clock(), self.limits.login_attempts_per_minute
        with self._lock:
            wait = 0.0
            for k in keys:
                q = self._failures.get(k)
                while q and now - q[0] > WINDOW_S:
                    q.popleft()
                if q is not None and not q:
                    del self._failures[k]
                elif q is not None and len(q) >= cap:
                    wait = max(wait, WINDOW_S - (now - q[-cap]))
            return int(wait) + 1 if wait else 0

    def _login_failed(self, keys) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) > 100_000:  # a flood of made-up user names cannot grow this forever
                self._failures.clear()
            for k in keys:
                self._failures.setdefault(k, deque(maxlen=self.limits.login_attempts_per_minute)).append(now)

    async def _logout(self, gradio_app, scope, receive, send):
        """Gradio's ``/logout`` ends every token of the user name; end the caller's own only."""
        gradio_app.tokens.pop(self._token(gradio_app, scope), None)
        # Gradio then clears the browser's cookies and redirects; with all_session=false it
        # deletes no other token.
        await self.app({**scope, "query_string": b"all_session=false"}, receive, send)

    # ---- heartbeat ------------------------------------------------------------------------
    async def _heartbeat(self, session_hash: str, scope, receive, send):
        touch = self.on_activity or (lambda _k: None)
        touch(session_hash)

        async def beat(msg):
            if msg["type"] == "http.response.body" and msg.get("body"):
                touch(session_hash)  # each "ALIVE" the server sends to an open tab
            await send(msg)

        await self.app(scope, receive, beat)

    # ---- uploads --------------------------------------------------------------------------
    def _disk_used(self, folder: str) -> int:
        now, (when, used) = self.clock(), self._disk
        if now - when > 1.0:
            used = _folder_bytes(Path(folder))
            self._disk = (now, used)
        return used

    async def _upload(self, gradio_app, scope, receive, send):
        L = self.limits
        per_request, on_disk = L.max_upload_request_mb * MB, L.upload_disk_mb * MB
        length = _header(scope, b"content-length")
        declared = int(length) if length and length.isdigit() else 0
        if declared > per_request:
            return await _text(send, 413, _too_big(L))
        used = self._disk_used(gradio_app.uploaded_file_dir) + self._in_flight
        if used + declared > on_disk:
            return await _text(send, 507, _disk_full(L))
        boundary = _boundary(_header(scope, b"content-type") or "")
        delim = b"--" + boundary if boundary else None
        state = {"bytes": 0, "delims": 0, "tail": b"", "refused": None}

        async def counted():
            msg = await receive()
            chunk = msg.get("body", b"") if msg["type"] == "http.request" else b""
            if not chunk:
                return msg
            state["bytes"] += len(chunk)
            with self._lock:
                self._in_flight += len(chunk)
            if delim:  # every part starts with the boundary; the closing one adds one more
                window = state["tail"] + chunk
                state["delims"] += window.count(delim)
                state["tail"] = window[-(len(delim) - 1):]
            refused = None
            if state["bytes"] > per_request:
                refused = UploadRefused(413, _too_big(L))
            elif state["delims"] - 1 > L.max_upload_files:
                refused = UploadRefused(413, f"Too many files in one upload: at most {L.max_upload_files}. "
                                             "Upload fewer files at a time.")
            elif used + state["bytes"] > on_disk:
                refused = UploadRefused(507, _disk_full(L))
            if refused:
                state["refused"] = refused
                raise refused
            return msg

        async def answer(msg):
            r = state["refused"]
            if r is None:
                return await send(msg)
            if msg["type"] == "http.response.start" and not state.get("answered"):
                state["answered"] = True  # Gradio's own reply to the parse error becomes ours
                await _text(send, r.status, r.message)

        try:
            await self.app(scope, counted, answer)
        except UploadRefused as r:
            if not state.get("answered"):
                state["answered"] = True
                await _text(send, r.status, r.message)
        finally:
            with self._lock:
                self._in_flight -= state["bytes"]
            self._disk = (0.0, 0)  # measure again next time: files were added or removed


def _browser_id(scope) -> str | None:
    """The browser's id from its cookie, when it has a well-formed one."""
    jar = SimpleCookie()
    try:
        jar.load(_header(scope, b"cookie") or "")
    except Exception:  # noqa: BLE001 - a malformed cookie header: a new id
        return None
    found = jar.get(BROWSER_COOKIE)
    return found.value if found and BROWSER_ID.fullmatch(found.value) else None


def _with_browser_cookie(send):
    """``send`` that adds a fresh browser id to the page's response (a year; HttpOnly: no script reads it)."""
    value = f"{BROWSER_COOKIE}={secrets.token_hex(16)}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax"

    async def sender(msg):
        if msg["type"] == "http.response.start":
            msg = {**msg, "headers": [*msg.get("headers", []), (b"set-cookie", value.encode("latin-1"))]}
        await send(msg)
    return sender


def _public(path: str) -> bool:
    return path in PUBLIC or path.startswith(PUBLIC_PREFIXES)


def _client(scope) -> str:
    c = scope.get("client")
    return c[0] if c else "unknown"


def _header(scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return None


def _boundary(content_type: str) -> bytes | None:
    for part in content_type.split(";"):
        k, _, v = part.strip().partition("=")
        if k.lower() == "boundary" and v:
            return v.strip('"').encode("latin-1")
    return None


def _folder_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass  # removed while we looked
    return total


def _too_big(L) -> str:
    return (f"This upload is larger than {L.max_upload_request_mb} MB, the most one upload may carry. "
            "Upload a smaller file, or fewer files at a time.")


def _disk_full(L) -> str:
    return (f"The server's upload space ({L.upload_disk_mb} MB) is full right now. Try again in a while, "
            "or upload a smaller file.")


async def _reply(send, status: int, payload: dict, headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def _text(send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
