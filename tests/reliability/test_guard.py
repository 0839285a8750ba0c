"""The web layer is fair and locked down: one hostile student cannot take the class down.

One real app server (the embedded model, a login, small limits) serves the HTTP tests: every
event goes through the queue (no ``/run/`` shortcut), one session cannot fill the queue, the
routes Gradio leaves open need the login, the tab-close handler cannot be run anonymously,
failed logins are rate-limited, ``/logout`` ends only the caller's own login, and uploads are
capped per request and on disk. Idle sessions are freed: ``SessionStore`` with a fake clock,
and the app's wiring (heartbeat and queue join keep a session alive) on a tiny in-process app.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import httpx
import pytest

import ui.app as app
from bench.driver import free_port, start_app, stop_app
from playground.library import Library
from playground.service import Limits, Playground
from playground.sessions import SessionStore, TrainingRun

WAITING, ATTEMPTS, FILES, REQUEST_MB, DISK_MB = 2, 5, 2, 1, 3
POLITE = f"You already have {WAITING} requests waiting or running; wait for them to finish."
AGAIN = "This request is already waiting or running for you; wait for its answer before sending it again."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guard")
    uploads = tmp / "uploads"  # this server's own Gradio upload folder, so the disk cap sees only its files
    old = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(uploads)
    try:
        proc, url, _ = start_app(
            ["--library", str(tmp / "lib"), "--auth", "u:p", "--auth", "w:r", "--max-new-tokens", "4",
             "--concurrent-requests", "1", "--max-waiting-per-session", str(WAITING),
             "--login-attempts-per-minute", str(ATTEMPTS), "--max-upload-files", str(FILES),
             "--max-upload-request-mb", str(REQUEST_MB), "--upload-disk-mb", str(DISK_MB)], tmp / "server.log")
    finally:
        if old is None:
            os.environ.pop("GRADIO_TEMP_DIR")
        else:
            os.environ["GRADIO_TEMP_DIR"] = old
    try:
        yield url.rstrip("/"), tmp / "server.log", uploads
    finally:
        stop_app(proc)


def login(url: str, user="u", password="p", address: str | None = None) -> httpx.Response:
    headers = {"X-Forwarded-For": address} if address else {}  # uvicorn trusts it from 127.0.0.1
    return httpx.post(url + "/login", data={"username": user, "password": password}, headers=headers, timeout=30)


def student(url: str) -> httpx.Client:
    r = login(url)
    assert r.status_code == 200, r.text
    return httpx.Client(base_url=url, cookies=r.cookies, timeout=120)


def fn_index(c: httpx.Client, api_name: str) -> int:
    return next(d["id"] for d in c.get("/config").json()["dependencies"] if d.get("api_name") == api_name)


def join_switch(c: httpx.Client, idx: int, session: str, text: str) -> httpx.Response:
    return c.post("/gradio_api/queue/join", json={"data": [["(no prefix)"], text], "fn_index": idx,
                                                   "session_hash": session, "event_data": None, "trigger_id": None})


# ---- every event goes through the queue ---------------------------------------------------------
def test_run_route_does_not_skip_the_queue(server):
    url, _, _ = server
    with student(url) as c:
        r = c.post("/gradio_api/run/switch", json={"data": [["(no prefix)"], "hello"], "session_hash": "direct"})
        assert r.status_code == 404 and "join the queue" in r.text


# ---- one session cannot fill the queue ----------------------------------------------------------
def test_a_flooding_session_is_capped_and_others_keep_their_place(server):
    url, _, _ = server
    with student(url) as flooder, student(url) as honest:
        idx = fn_index(flooder, "switch")
        codes = [join_switch(flooder, idx, "flooder", f"flood {i}") for i in range(8)]
        accepted = [r for r in codes if r.status_code == 200]
        refused = [r for r in codes if r.status_code == 429]
        # as in a browser, one Switch at a time: the first is in flight, the other 7 are refused
        assert len(accepted) == 1 and len(refused) == 7, [r.status_code for r in codes]
        assert {r.json()["detail"] for r in refused} == {AGAIN}
        # other events too, but no more than WAITING in flight in all
        # (not the name box's or the teacher's sign-in: they answer at once, so they are never in flight)
        others = [d["id"] for d in flooder.get("/config").json()["dependencies"]
                  if d.get("queue") is not False and d["id"] != idx
                  and not str(d.get("api_name")).startswith(("on_name", "teacher_sign_in"))][:3]
        more = [join_switch(flooder, i, "flooder", "other event") for i in others]
        assert [r.status_code for r in more] == [200] * (WAITING - 1) + [429] * (3 - WAITING + 1), \
            [r.status_code for r in more]
        assert more[-1].json()["detail"] == POLITE

        assert join_switch(honest, idx, "honest", "The film was great").status_code == 200
        ranks, done = [], None
        with honest.stream("GET", "/gradio_api/queue/data", params={"session_hash": "honest"}) as s:
            for line in s.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("msg") == "estimation" and msg.get("rank") is not None:
                    ranks.append(msg["rank"])
                if msg.get("msg") == "process_completed":
                    done = msg
                    break
        assert done and done["success"], done
        assert not ranks or max(ranks) <= WAITING, ranks  # behind the flooder's capped few, not all of them


# ---- routes that act on a session need the login ------------------------------------------------
ANONYMOUS = [("GET", "/gradio_api/heartbeat/someone"), ("POST", "/gradio_api/cancel"), ("POST", "/gradio_api/reset"),
             ("POST", "/gradio_api/stream/anything"), ("POST", "/gradio_api/stream/anything/close"),
             ("GET", "/gradio_api/stream/someone/run/1/playlist.m3u8"), ("GET", "/openapi.json"),
             ("GET", "/monitoring/x"),
             # Gradio refuses these itself; they must stay refused
             ("GET", "/gradio_api/openapi.json"), ("POST", "/gradio_api/upload"), ("POST", "/gradio_api/queue/join"),
             ("GET", "/gradio_api/queue/data"), ("GET", "/config")]


def test_anonymous_requests_reach_only_the_login_page(server):
    url, _, _ = server
    open_ = []
    for method, path in ANONYMOUS:
        r = httpx.request(method, url + path, timeout=10,
                          json={"session_hash": "x", "fn_index": 0, "event_id": "e", "data": []})
        if not (r.status_code == 401 and "Not authenticated" in r.text):
            open_.append((method, path, r.status_code))
    assert open_ == []
    r = httpx.get(url + "/", timeout=10)  # the page with the login form
    assert r.status_code == 200 and '"auth_required":true' in r.text.replace(" ", "")


def _open_and_close_heartbeat(url: str, session: str, cookies=None) -> int:
    with httpx.Client(base_url=url, cookies=cookies, timeout=10) as c:
        with c.stream("GET", f"/gradio_api/heartbeat/{session}") as r:
            if r.status_code == 200:
                next(r.iter_lines())  # the first "ALIVE": the stream is open; leaving closes it
            return r.status_code


def test_an_anonymous_heartbeat_cannot_close_a_students_tab(server):
    url, log, _ = server
    assert _open_and_close_heartbeat(url, "victim0001") == 401
    # The check can see it: the student's own heartbeat closing does run the handler, and the victim's
    # close (had it run) was sent first, so once the student's is logged the victim's would be too.
    with student(url) as c:
        assert _open_and_close_heartbeat(url, "mytab0001", c.cookies) == 200
    deadline = time.time() + 60
    while "tab mytab000 of" not in log.read_text() and time.time() < deadline:
        time.sleep(0.2)
    assert "tab victim00 of" not in log.read_text()
    assert "tab mytab000 of" in log.read_text()


# ---- logout ---------------------------------------------------------------------------------------
def test_logout_ends_only_the_callers_login(server):
    url, _, _ = server
    with student(url) as a, student(url) as b:  # the same shared user name, two browsers
        a.get("/logout", params={"all_session": "true"})
        assert a.get("/config").status_code == 401
        assert b.get("/config").status_code == 200


# ---- uploads --------------------------------------------------------------------------------------
def _leftovers(uploads: Path) -> list[Path]:
    return [p for p in uploads.rglob("*") if p.is_file()] if uploads.exists() else []


def test_upload_requests_are_capped(server):
    url, _, uploads = server
    with student(url) as c:
        before = _leftovers(uploads)
        files = [("files", (f"f{i}.txt", b"x" * 100, "text/plain")) for i in range(FILES + 1)]
        r = c.post("/gradio_api/upload", files=files)
        assert r.status_code == 413 and f"at most {FILES}" in r.text

        big = b"y" * (REQUEST_MB * 1024 * 1024 + 10)
        r = c.post("/gradio_api/upload", files=[("files", ("big.txt", big, "text/plain"))])
        assert r.status_code == 413 and f"larger than {REQUEST_MB} MB" in r.text  # by its Content-Length

        boundary = "b0undary"

        def chunked():  # no Content-Length: the cap must stop it while it streams
            yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"c.txt\"\r\n"
                   "Content-Type: text/plain\r\n\r\n").encode()
            for _ in range(REQUEST_MB * 4 + 4):
                yield b"z" * (256 * 1024)
            yield f"\r\n--{boundary}--\r\n".encode()

        r = c.post("/gradio_api/upload", content=chunked(),
                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 413 and f"larger than {REQUEST_MB} MB" in r.text
        assert _leftovers(uploads) == before  # the half-received file was deleted

        ok = c.post("/gradio_api/upload", files=[("files", ("ok.txt", b"fine\n", "text/plain"))])
        assert ok.status_code == 200 and len(ok.json()) == 1


def test_uploads_together_are_capped_on_disk(server):
    url, _, _ = server
    part = int(0.9 * REQUEST_MB * 1024 * 1024)
    codes = []
    with student(url) as c:
        for i in range(DISK_MB + 2):  # each under the per-request cap; together over the disk cap
            r = c.post("/gradio_api/upload", files=[("files", (f"d{i}.bin", os.urandom(part), "application/x"))])
            codes.append(r.status_code)
            if r.status_code != 200:
                assert r.status_code == 507 and f"upload space ({DISK_MB} MB) is full" in r.text
                break
    assert codes[:DISK_MB - 1] == [200] * (DISK_MB - 1) and codes[-1] == 507, codes


# ---- logins (last: these lock out addresses and a user name for a minute) ----------------------------
def test_failed_logins_are_rate_limited_per_address_and_per_user(server):
    url, _, _ = server
    for i in range(ATTEMPTS):  # user "w", one address each: only the user name's count grows
        assert login(url, "w", "wrong", address=f"10.0.1.{i}").status_code == 400
    r = login(url, "w", "r", address="10.0.1.99")  # even the right password waits now
    assert r.status_code == 429 and "Too many failed logins" in r.json()["detail"]
    assert int(r.headers["retry-after"]) > 0

    for i in range(ATTEMPTS):  # one address, many made-up names
        assert login(url, f"nobody{i}", "x", address="10.0.2.1").status_code == 400
    assert login(url, "u", "p", address="10.0.2.1").status_code == 429
    assert login(url, "u", "p", address="10.0.2.2").status_code == 200  # another student is not locked out


# ---- idle sessions ------------------------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_session_store_frees_idle_sessions_and_keeps_touched_and_running_ones():
    clock, dropped = Clock(), []
    store = SessionStore(ttl_s=60, clock=clock)
    store.on_drop = dropped.extend
    for k in ("idle", "reading", "training"):
        store.get(k)
    store.peek("training").run = TrainingRun(task=None, prefix=None, prefix_settings=None, train_settings=None)
    clock.t += 45
    store.touch("reading")  # a heartbeat
    store.touch("ghost")  # touching creates nothing
    clock.t += 30
    assert store.sweep() == ["idle"] and dropped == ["idle"]
    assert store.peek("reading") and store.peek("training") and store.peek("ghost") is None
    store.peek("training").run.state = "finished"
    clock.t += 61
    assert sorted(store.sweep()) == ["reading", "training"] and len(store) == 0

    store.get("again")  # the timer sweeps on its own, with nobody arriving
    clock.t += 61
    store.start_sweeper(every_s=0.05)
    try:
        deadline = time.time() + 5
        while len(store) and time.time() < deadline:
            time.sleep(0.02)
        assert len(store) == 0 and dropped[-1] == "again"
    finally:
        store.stop_sweeper()


def test_the_app_keeps_sessions_alive_by_heartbeat_and_requests_and_frees_the_rest(tiny_llama, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.2")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    pg = Playground(tiny_llama, Library(tmp_path / "lib"), Limits(session_idle_minutes=1))
    clock = Clock()
    pg.sessions.clock = clock
    demo = app.build_demo(pg)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.launch_options(pg, [("u", "p")]))
    try:
        url = f"http://127.0.0.1:{port}"
        for k in ("api", "tab", "asker"):
            pg.sessions.get(k)
        clock.t += 61
        with student(url) as c:
            stop, opened = threading.Event(), threading.Event()

            def tab():  # an open browser tab: its heartbeat stream stays open
                with c.stream("GET", "/gradio_api/heartbeat/tab") as r:
                    for _ in r.iter_lines():
                        opened.set()  # the first "ALIVE": the server has seen the tab
                        if stop.is_set():
                            return

            t = threading.Thread(target=tab)
            t.start()
            try:
                assert opened.wait(30), "the heartbeat stream never opened"
                idx = fn_index(c, "switch")
                assert join_switch(c, idx, "asker", "hello").status_code == 200  # a request is activity too
                assert sorted(pg.sessions.sweep()) == ["api"]  # the API session that never sent a heartbeat
                assert pg.sessions.peek("tab") and pg.sessions.peek("asker")
            finally:
                stop.set()
                t.join(5)
    finally:
        demo.close()
        pg.sessions.stop_sweeper()


# ---- the browser's id ------------------------------------------------------------------------------
def test_the_page_gives_a_browser_an_id_once(server):
    """A learner without a login is known by this cookie, so a reload or a second tab is the same learner."""
    url, _, _ = server
    r = httpx.get(url + "/", timeout=10)
    cookie = r.headers.get("set-cookie", "")
    m = re.match(r"pp-browser=([0-9a-f]{32}); Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax", cookie)
    assert r.status_code == 200 and m, cookie
    again = httpx.get(url + "/", cookies={"pp-browser": m.group(1)}, timeout=10)
    assert "pp-browser" not in again.headers.get("set-cookie", "")  # kept, not replaced
    forged = httpx.get(url + "/", cookies={"pp-browser": "../../etc"}, timeout=10)
    assert re.match(r"pp-browser=[0-9a-f]{32};", forged.headers.get("set-cookie", ""))  # a malformed one: a new id
