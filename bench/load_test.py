"""Load test: a class of simulated students shares one running app, through its real API.

    .venv/bin/python bench/load_test.py [--students 30] [--steps 3] [--timeout 900] [APP FLAGS ...]

Starts ``python app.py`` on 127.0.0.1 with an empty temporary library (flags this script does not
know go to app.py, e.g. ``--concurrent-trainings 4``). Each student is its own
``gradio_client.Client``, so its own browser session. They connect, then all press Train at the
same moment, then click through the tabs the way a learner does:

1. connect    the page opens (the client reads the app's config and API description);
2. train      the Train button's endpoint (``/train``): the student's task and seed, a few steps,
              the held-out metric on a few examples at the end, then the before/after table;
3. refresh    the Attention and Switch prefix pickers (what selecting each tab runs);
4. attention  "Show attention" (``/attention``) on "(just trained)", this session's prefix;
5. switch     Enter in Switch (``/switch``) with "(just trained)" and "(no prefix)".

Every call records its latency, its error if any, and the queue positions the server announced
(Gradio's ``estimation`` messages: ``rank`` and ``queue_size``, which a browser shows as "queue:
3/7"). A thread samples the server's RSS every 0.5 s.

Isolation: students differ in task (cycling through the six built-in ones), seed and prefix length,
so every output says whose it is (``check_student``): the progress bar counts the student's steps,
the before/after table holds its own task's held-out examples, the attention view reports its own
number of virtual tokens, and all loss curves differ. An observer session that never trains polls
the pickers throughout and must never be offered "(just trained)", nor be able to use it. At the
end, a few students are replayed alone in fresh sessions and must get the same loss curve, table,
attention and Switch answer as under load.

The teacher: the app starts with a teacher's login (``--teacher-auth``, a random password unless
the flags bring one), and a teacher session signs in, then refreshes the Class tab the way its
timer does (every 3 s, skipping a tick while one is still pending) from the moment the students
press Train until they are done, then once more. Each view must show the class growing live: every
student with a run, and more loss points as the runs step. ``--no-teacher`` runs the class without
anyone watching, to measure what watching costs.

One deadline (``--timeout``) bounds the whole run: past it, the students stop, what completed is
printed, and the exit status is 1 (as it is for any error or isolation problem). Prints a table per
action and writes everything to ``bench/results/load_test.json``. ``tests/reliability/test_load.py`` runs this
harness with 6 students.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import re
import secrets
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import pct  # noqa: E402
from bench.driver import start_app, stop_app  # noqa: E402
from bench.hostile_student import TRAIN_STEPS as HOSTILE_TRAIN_STEPS  # noqa: E402
from bench.hostile_student import hostile_student  # noqa: E402

TASKS = ("sentiment", "topic", "fr_en", "headline", "shout", "capitals")
JUST_TRAINED, NO_PREFIX, NONE = "(just trained)", "(no prefix)", "(none)"  # as playground.service / ui.attention
ACTIONS = ("connect", "train", "refresh", "attention", "switch")
# The students replayed alone at the end (the first ``replay``) train in fp32, under load and alone: a run in the
# scheduler's shared ticks then gets exactly what it gets alone (tests/unit/test_scheduler.py), so any difference
# is a leak. Under bf16 autocast a tick pads a run's rows to its longest row, the bf16 kernels round differently
# for that shape, and AdamW turns the tiny differences into visible ones within a few steps (2% on the loss at
# step 3, measured): no tolerance would tell that from a leak. The rest of the class trains at the default.
RESULTS = ROOT / "bench" / "results" / "load_test.json"


@dataclass
class LoadConfig:
    """One load test: how many students, what they do, and the app's flags."""

    students: int = 30  # simulated learners, one session each
    steps: int = 3  # training steps per student
    eval_examples: int = 4  # held-out examples scored at the end of training (the UI's minimum)
    batch_size: int = 8  # the UI's default
    timeout: float = 900  # seconds for the whole run, app start included
    replay: int = 6  # students replayed alone at the end to compare with their results under load
    observer_every: float = 2.0  # seconds between the observer's picker refreshes
    cleanup_wait: float = 45  # seconds to wait for the server to free the closed sessions
    precision: str = "auto"  # the Train tab's default, for every student but the replayed ones (always fp32)
    hostile: bool = False  # add one hostile student (bench/hostile_student.py) who attacks while the class runs
    app_flags: list[str] = field(default_factory=list)  # extra flags for app.py (default: its own limits)
    teacher: bool = True  # a teacher signs in and watches the Class tab while the class trains
    teacher_every: float = 3.0  # seconds between the teacher's Class views: the tab's own timer (ui.classroom.REFRESH_S)


@dataclass
class Student:
    """One simulated learner; task, seed and prefix length together say whose an output is."""

    index: int
    task: str
    seed: int
    num_virtual_tokens: int
    prompt: str  # the Attention and Switch input: one of the task's Switch examples


@dataclass
class Call:
    """One request as the student saw it; times in seconds since the run started."""

    action: str
    student: int  # -1: the observer, -2: the teacher
    submitted: float
    started: float | None = None  # the server started it (it left the queue)
    ended: float | None = None
    error: str | None = None
    positions: list[list] = field(default_factory=list)  # [position, queue size] as announced; 1 = next
    places: list[list] = field(default_factory=list)  # [learners ahead, estimated s]: the scheduler's line, as shown

    @property
    def latency(self) -> float:
        return self.ended - self.submitted

    @property
    def wait(self) -> float:
        return (self.started if self.started is not None else self.ended) - self.submitted


def make_class(n: int) -> list[Student]:
    examples = json.loads((ROOT / "assets" / "switch_examples.json").read_text(encoding="utf-8"))
    out = []
    for i in range(n):
        task = TASKS[i % len(TASKS)]
        prompts = examples[task]
        out.append(Student(i, task, seed=100 + i, num_virtual_tokens=8 + i % 120,
                           prompt=prompts[(i // len(TASKS)) % len(prompts)]))
    return out


# ---- talking to the app ------------------------------------------------------------------------
class Session:
    """A student's (or the observer's) browser session: a Client, and the calls it made."""

    def __init__(self, url: str, who: int, run: "LoadRun"):
        from gradio_client import Client

        self.who, self.run = who, run
        t = run.clock()
        try:
            self.client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
            self.connect = Call("connect", who, t, ended=run.clock())
        except Exception as exc:  # noqa: BLE001 - a failed connect is a result, not a crash
            self.client = None
            self.connect = Call("connect", who, t, ended=run.clock(), error=f"{type(exc).__name__}: {exc}")
        run.calls.append(self.connect)
        self.pickers = picker_endpoints(self.client.config) if self.client else {}

    def call(self, action: str, api_name: str, *args):
        """Submit and wait (until the deadline); returns (Call, outputs or None)."""
        from gradio_client.utils import Status

        run = self.run
        c = Call(action, self.who, run.clock())
        run.calls.append(c)
        out = job = None
        try:
            job = self.client.submit(*args, api_name=api_name)
            out = job.result(timeout=max(0.0, run.left()))
        except TimeoutError:
            job.cancel()
            c.error = "deadline"
        except Exception as exc:  # noqa: BLE001 - gr.Error arrives as AppError; every error is recorded
            c.error = f"{type(exc).__name__}: {exc}"
        c.ended = run.clock()
        if job is not None and action == "train":  # the progress bar says where the run stands in the model's line
            c.places = scheduler_places(job)
        for u in status_updates(job) if job is not None else []:
            if u.code == Status.IN_QUEUE and u.rank is not None:
                c.positions.append([u.rank + 1, u.queue_size])
            elif u.code == Status.PROCESSING and c.started is None and u.time is not None:
                c.started = u.time.timestamp() - run.t0
        return c, out

    def refresh(self, tab: str, current):
        """The tab's prefix picker, as selecting the tab refreshes it; returns the offered names."""
        c, out = self.call("refresh", self.pickers[tab], current)
        return c, picker_names(out)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def picker_endpoints(config: dict) -> dict[str, str]:
    """The API names of the refresh events that fill the Attention and Switch pickers.

    app.py wires them to tab selection (and page load) without an explicit name, so find them by
    what they update: the components with elem_id ``att-prefix`` and ``sw-choice``.
    """
    elem = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    found = {}
    for d in config["dependencies"]:
        first = elem.get(d["outputs"][0]) if d.get("outputs") else None
        if isinstance(d.get("api_name"), str) and first in ("att-prefix", "sw-choice"):
            found.setdefault("attention" if first == "att-prefix" else "switch", "/" + d["api_name"])
    return found


PLACE = re.compile(r"waiting for the model: (nobody|(\d+) learners?) ahead of you, about (\d+) s")


def scheduler_places(job) -> list[list]:
    """[learners ahead, estimated seconds] each time the Train stream showed the run waiting for the model."""
    places = []
    try:
        outs = job.outputs()
    except Exception:  # noqa: BLE001 - a failed call has no outputs to read
        return places
    for out in outs:
        first = out[0] if isinstance(out, (list, tuple)) and out else out
        m = PLACE.search(html.unescape(first)) if isinstance(first, str) else None
        if m:
            places.append([int(m.group(2) or 0), int(m.group(3))])
    return places


def status_updates(job) -> list:
    """Every status message the job received, in order (the queue behind ``async for update in job``)."""
    q = job.communicator.updates if job.communicator else None
    out = []
    while q is not None and not q.empty():
        u = q.get_nowait()
        if getattr(u, "type", None) == "status":
            out.append(u)
    return out


# ---- reading outputs ---------------------------------------------------------------------------
def picker_names(out) -> list[str]:
    """The choices of a picker update (the first output when the event updates several)."""
    upd = out[0] if isinstance(out, (list, tuple)) else out
    if not isinstance(upd, dict):
        return []
    return [c[1] if isinstance(c, (list, tuple)) else c for c in upd.get("choices") or []]


def plot_ys(plot) -> list[list[float]]:
    """The y values of each trace of a gr.Plot output (plotly JSON; arrays may be base64-typed)."""
    import numpy as np

    fig = json.loads(plot["plot"] if isinstance(plot, dict) else plot)
    ys = []
    for t in fig.get("data", []):
        y = t.get("y", [])
        if isinstance(y, dict) and "bdata" in y:
            y = np.frombuffer(base64.b64decode(y["bdata"]), dtype=np.dtype(y["dtype"])).tolist()
        ys.append([float(v) for v in y])
    return ys


def read_train(out) -> dict:
    progress, loss_plot, _metric_plot, _summary, table = out[:5]  # then the run's command
    m = re.search(r'data-state="(\w+)" data-step="(\d+)" data-total="(\d+)"', progress or "")
    rows = table.get("data", []) if isinstance(table, dict) else []
    headers = table.get("headers", []) if isinstance(table, dict) else []
    col = headers.index("prefix") if "prefix" in headers else 2
    rows = [r for r in rows if not str(r[0]).startswith("score on all")]  # the row scoring each column on all n
    return {"state": m and m.group(1), "step": m and int(m.group(2)), "total": m and int(m.group(3)),
            "loss": (plot_ys(loss_plot) or [[]])[0],
            "table": [[r[0], r[1], r[col]] for r in rows]}  # input, target, prefix's answer (with its mark)


RUN_LABEL = re.compile(r"just trained: ([^,`]+), \d\d:\d\d")  # how the pickers name the just-trained prefix


def read_attention(out) -> dict:
    msg = out[0] if isinstance(out, (list, tuple)) else out
    m = re.search(r"`(.+?)`: (\d+) virtual tokens", msg or "")
    name = m and (JUST_TRAINED if RUN_LABEL.fullmatch(m.group(1)) else m.group(1))
    # the run's label carries the minute it started: a replay a minute later is the same prefix
    return {"msg": RUN_LABEL.sub(r"just trained: \1", msg or ""), "name": name,
            "virtual_tokens": m and int(m.group(2))}


def read_switch(out) -> dict[str, str]:
    """Switch's output cards: {prefix name: answer}."""
    cards = re.findall(r'data-name="([^"]*)"><div class="pp-card-name">.*?</div>'
                       r'<div class="pp-card-out">(.*?)</div>', out or "", re.S)
    return {html.unescape(n): html.unescape(t) for n, t in cards}


# ---- one student -------------------------------------------------------------------------------
def train_args(s: Student, cfg: LoadConfig) -> tuple:
    """The Train button's inputs, in ui/train.py's order (the fork's State is no API input)."""
    from playground.prefix import DEMO_SHOTS  # the Train tab's default for its "demos" init (unused by "task text")

    return (s.task, s.num_virtual_tokens, "task text", "", False, 256, 1e-2, cfg.steps, cfg.batch_size, s.seed,
            0, cfg.eval_examples, "fp32" if s.index < cfg.replay else cfg.precision, DEMO_SHOTS, False)  # no fork


def student_flow(sess: Session, s: Student, cfg: LoadConfig, seen: dict | None = None) -> dict:
    """Train, then Attention and Switch on the just-trained prefix. Fills and returns what the student saw."""
    seen = {} if seen is None else seen
    c, out = sess.call("train", "/train", *train_args(s, cfg))
    if c.error:
        return seen
    seen["train"] = read_train(out)
    c, names = sess.refresh("attention", None)
    seen["attention_picker"] = names
    if c.error:
        return seen
    c, out = sess.call("attention", "/attention", s.prompt, JUST_TRAINED, NONE)
    if c.error:
        return seen
    seen["attention"] = read_attention(out)
    c, names = sess.refresh("switch", [NO_PREFIX])
    seen["switch_picker"] = names
    if c.error:
        return seen
    c, out = sess.call("switch", "/switch", [JUST_TRAINED, NO_PREFIX], s.prompt)
    if not c.error:
        seen["switch"] = read_switch(out)
        m = re.search(r"([\d.]+) s in all", out or "")  # the server's own time for the mixed batch
        seen["switch_server_s"] = m and float(m.group(1))
    return seen


def held_out_rows(task_name: str, n: int) -> list[list[str]]:
    from playground.tasks import get_task
    from playground.training import held_out_split

    task = get_task(task_name)
    return [[e.input, e.target] for e in task.split(held_out_split(task))[:n]]


def check_student(s: Student, seen: dict, cfg: LoadConfig) -> list[str]:
    """What in this student's outputs is not its own (or is missing). Empty: all of it is its own."""
    who = f"student {s.index} ({s.task}, seed {s.seed}, {s.num_virtual_tokens} tokens)"
    if "switch" not in seen:
        return []  # the failed call is an error already
    bad = []
    tr = seen["train"]
    if (tr["state"], tr["step"], tr["total"]) != ("finished", cfg.steps, cfg.steps):
        bad.append(f"{who}: progress says {tr['state']} step {tr['step']}/{tr['total']}")
    if len(tr["loss"]) != cfg.steps or not all(math.isfinite(v) for v in tr["loss"]):
        bad.append(f"{who}: loss curve has {len(tr['loss'])} points: {tr['loss']}")
    want = held_out_rows(s.task, min(10, cfg.eval_examples))
    if [r[:2] for r in tr["table"]] != want:
        bad.append(f"{who}: the before/after table is not its task's held-out examples: {tr['table'][:2]}")
    for tab in ("attention", "switch"):
        if JUST_TRAINED not in seen[f"{tab}_picker"]:
            bad.append(f"{who}: the {tab} picker does not offer its own prefix: {seen[f'{tab}_picker']}")
    att = seen["attention"]
    if (att["name"], att["virtual_tokens"]) != (JUST_TRAINED, s.num_virtual_tokens):
        bad.append(f"{who}: attention shows another prefix: {att['msg']}")
    if sorted(seen["switch"]) != sorted([JUST_TRAINED, NO_PREFIX]):
        bad.append(f"{who}: Switch cards are {list(seen['switch'])}")
    return bad


def check_class(students: list[Student], seen: dict[int, dict]) -> list[str]:
    """Across students: distinct seeds and tasks must give distinct loss curves."""
    by_curve: dict[tuple, int] = {}
    bad = []
    for s in students:
        loss = seen.get(s.index, {}).get("train", {}).get("loss")
        if not loss:
            continue
        key = tuple(round(v, 6) for v in loss)
        if key in by_curve:
            bad.append(f"students {by_curve[key]} and {s.index} got the same loss curve {list(key)}")
        by_curve.setdefault(key, s.index)
    return bad


# ---- the observer: a session that never trains ---------------------------------------------
def observe(sess: Session, done: threading.Event, every: float) -> list[str]:
    """Refresh both pickers until the class is done; "(just trained)" must never be offered."""
    bad = []
    while not done.is_set() and time.monotonic() < sess.run.deadline:
        for tab, current in (("attention", None), ("switch", [NO_PREFIX])):
            c, names = sess.refresh(tab, current)
            if not c.error and JUST_TRAINED in names:
                bad.append(f"the observer (never trained) was offered {JUST_TRAINED} in {tab} at {c.ended:.1f} s")
        done.wait(every)
    return bad


def intrude(sess: Session) -> dict:
    """The observer asks for "(just trained)" anyway: it must be refused, with a message."""
    c, out = sess.call("intruder", "/attention", "Whose prefix is this?", JUST_TRAINED, NONE)
    sess.run.calls.remove(c)  # an expected refusal, not one of the class's errors
    return {"refused": c.error is not None, "message": c.error or str(out)[:300]}


# ---- the teacher: a session that signs in and watches the Class tab --------------------------
TEACHER = -2  # the teacher's "student" index in the call log
TEACHER_USER = "loadtest-teacher"
TEACHER_FLAG = "--teacher-auth"
STATUS = re.compile(r'<div id="class-status" data-students="(\d+)" data-running="(\d+)"[^>]*? data-runs="(\d+)"')


def teacher_login(flags: list[str]) -> tuple[list[str], tuple[str, str]]:
    """The app's flags with a teacher's login, and the (user, password) to sign in with: the flags' own
    ``--teacher-auth`` if they have one, else a fresh one added with a random password."""
    for i, f in enumerate(flags):
        value = flags[i + 1] if f == TEACHER_FLAG and i + 1 < len(flags) else \
            f.split("=", 1)[1] if f.startswith(TEACHER_FLAG + "=") else None
        if value and ":" in value:
            user, password = value.split(":", 1)
            return list(flags), (user, password)
    password = secrets.token_urlsafe(16)
    return [*flags, TEACHER_FLAG, f"{TEACHER_USER}:{password}"], (TEACHER_USER, password)


def hide_passwords(flags: list[str]) -> list[str]:
    """The flags as reports print them: a ``--teacher-auth`` password is replaced by ``***``."""
    out = []
    for i, f in enumerate(flags):
        if i and flags[i - 1] == TEACHER_FLAG and ":" in f:
            f = f.split(":", 1)[0] + ":***"
        elif f.startswith(TEACHER_FLAG + "=") and ":" in f:
            f = f.split(":", 1)[0] + ":***"
        out.append(f)
    return out


def class_view_endpoint(config: dict) -> str | None:
    """The API name of the Class tab's timer: the tick event that updates the class status (elem_id
    ``class-status-box``); else any event that refreshes that status."""
    elem = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    found = [d for d in config["dependencies"] if isinstance(d.get("api_name"), str) and d.get("outputs")
             and elem.get(d["outputs"][0]) == "class-status-box"]
    ticks = [d for d in found if any(t[1] == "tick" for t in d.get("targets") or [])]
    return "/" + (ticks or found)[0]["api_name"] if found else None


def read_class_view(out) -> dict | None:
    """The Class view's figures: students with a run, running now, runs in the class folder (the status line),
    and the loss points over every trace of the loss plot. None: the view came back without the class."""
    status = out[0] if isinstance(out, (list, tuple)) and out else None
    m = STATUS.search(status) if isinstance(status, str) else None
    if m is None:
        return None
    loss = out[1] if len(out) > 1 else None
    points = sum(len(y) for y in plot_ys(loss)) if isinstance(loss, (dict, str)) else 0
    return {"students": int(m.group(1)), "running": int(m.group(2)), "runs": int(m.group(3)), "loss_points": points}


def watch(sess: Session, endpoint: str, done: threading.Event, every: float, go: float) -> list[list]:
    """Refresh the Class view until the class is done, as its timer does: a tick every ``every`` s, skipped
    while the previous refresh is still pending. Returns [s since Train was pressed, students, running, runs,
    loss points] per view; a view without the class is recorded as an error."""
    samples, t0 = [], time.monotonic()
    while not done.is_set() and time.monotonic() < sess.run.deadline:
        sample = class_view(sess, endpoint, go)
        if sample:
            samples.append(sample)
        ticks = math.floor((time.monotonic() - t0) / every) + 1  # the next tick the timer would fire
        done.wait(max(0.0, t0 + ticks * every - time.monotonic()))
    return samples


def class_view(sess: Session, endpoint: str, go: float) -> list | None:
    """One refresh of the Class view (the three pickers empty): the sample, or None (an error, recorded)."""
    c, out = sess.call("class_view", endpoint, None, None, None)
    if c.error:
        return None
    v = read_class_view(out)
    if v is None:
        c.error = f"the Class view came back without the class's status: {str(out)[:200]}"
        return None
    return [round(c.ended - go, 2), v["students"], v["running"], v["runs"], v["loss_points"]]


def teacher_summary(signed_in: bool, samples: list[list], latencies: list[float], errors: int,
                    class_size: int, steps: int, final: list | None = None) -> dict:
    """What the teacher saw while the class trained; ``samples`` as ``watch`` returns them."""
    pts = [s[4] for s in samples]
    times = [s[0] for s in samples]
    return {"signed_in": signed_in, "polls": len(latencies) + errors, "errors": errors,
            "latency_p50_s": pct(latencies, 0.5), "latency_p95_s": pct(latencies, 0.95),
            "all_students_seen_at_s": next((s[0] for s in samples if s[1] >= class_size), None),
            "loss_points_increases": sum(b > a for a, b in zip(pts, pts[1:])),
            "max_loss_points": max(pts, default=0), "max_students": max((s[1] for s in samples), default=0),
            "max_gap_s": round(max((b - a for a, b in zip(times, times[1:])), default=math.nan), 2),
            "class_size": class_size, "loss_points_possible": class_size * steps, "final": final, "samples": samples}


def teacher_problems(t: dict | None, steps: int, trained: int, others: int = 0, other_steps: int = 0) -> list[str]:
    """What the teacher's view got wrong. ``final`` is the view after every student's Train call returned.
    ``others``: runs of learners outside the class that finished too (the hostile student's, ``other_steps`` each),
    which the teacher rightly sees."""
    if t is None:
        return []
    class_size = t["class_size"]
    most_students, most_points = class_size + others, t["loss_points_possible"] + others * other_steps
    if not t["signed_in"]:
        return ["teacher: the teacher could not sign in, so nobody watched the class"]
    bad = []
    if t["errors"]:
        bad.append(f"teacher: {t['errors']} of {t['polls']} Class views failed")
    if t["all_students_seen_at_s"] is None:
        bad.append(f"teacher: no Class view showed all {class_size} students (at most {t['max_students']})")
    if t["loss_points_increases"] < 2:
        bad.append(f"teacher: the loss points grew in {t['loss_points_increases']} Class views while the class "
                   "trained: the view did not follow the runs live")
    extra = f" and {others} other run{'s' * (others != 1)} of {other_steps} steps" if others else ""
    if t["max_students"] > most_students or t["max_loss_points"] > most_points:
        bad.append(f"teacher: a Class view showed {t['max_students']} students and {t['max_loss_points']} loss points"
                   f"; the class is {class_size} students of {steps} steps{extra}")
    f = t["final"]
    if f is not None and (f[1], f[2], f[4]) != (trained + others, 0, trained * steps + others * other_steps):
        bad.append(f"teacher: after the class the view showed {f[1]} students, {f[2]} running and {f[4]} loss points;"
                   f" {trained} students trained {steps} steps each{extra}")
    return bad


# ---- the run -------------------------------------------------------------------------------------
class RssSampler(threading.Thread):
    """The server's resident memory every ``every`` seconds: [seconds since the run started, MB]."""

    def __init__(self, pid: int, run: "LoadRun", every: float = 0.5):
        super().__init__(daemon=True)
        import psutil

        self.proc, self.run_, self.every = psutil.Process(pid), run, every
        self.samples: list[list[float]] = []
        self.halt = threading.Event()

    def sample(self) -> float:
        try:
            mb = self.proc.memory_info().rss / 2**20
        except Exception:  # noqa: BLE001 - the server is gone (stopped by the watchdog)
            return math.nan
        self.samples.append([round(self.run_.clock(), 2), round(mb, 1)])
        return mb

    def run(self):
        while not self.halt.wait(self.every):
            self.sample()


class LoadRun:
    """Shared clock, deadline and call log of one run."""

    def __init__(self, timeout: float):
        self.deadline = time.monotonic() + timeout
        self.t0 = time.time()
        self.calls: list[Call] = []

    def clock(self) -> float:
        return time.time() - self.t0

    def left(self) -> float:
        return self.deadline - time.monotonic()


def run_load(cfg: LoadConfig, workdir: Path, say=print) -> dict:
    """Run the whole test against a fresh server in ``workdir``; returns the report (see ``summarize``)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry threads in 30 clients
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    run = LoadRun(cfg.timeout)
    lib = workdir / "library"
    lib.mkdir(parents=True, exist_ok=True)
    log = workdir / "server.log"
    flags = ["--library", str(lib), *cfg.app_flags]
    login = None
    if cfg.teacher:
        flags, login = teacher_login(flags)
    say(f"starting the app: app.py {' '.join(hide_passwords(flags))}")
    proc, url, start_s = start_app(flags, log, timeout=min(300, max(1, run.left())))
    rep: dict = {"app_start_s": round(start_s, 2), "app_flags": hide_passwords(flags)}
    # Safety net: calls give up at the deadline on their own; if anything still hangs 20 s later, stopping
    # the server makes every pending request fail at once, so the run ends and reports.
    watchdog = threading.Timer(max(0.0, run.left()) + 20, proc.kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        rss = RssSampler(proc.pid, run)
        rep["rss_idle_mb"] = round(rss.sample(), 1)
        rss.start()
        rep.update(_class(cfg, url, run, say, login))
        rep["rss_after_class_mb"] = round(rss.sample(), 1)
        rep["sessions_freed"] = _wait_freed(log, rep.pop("sessions_opened"), min(cfg.cleanup_wait, run.left()))
        rep["rss_final_mb"] = round(rss.sample(), 1)
        rss.halt.set()
        rep["rss_samples"] = rss.samples
        rep["rss_peak_mb"] = max(m for _, m in rss.samples)
    finally:
        watchdog.cancel()
        stop_app(proc)
    rep["deadline_hit"] = run.left() <= 0
    rep["total_s"] = round(run.clock(), 1)
    rep["calls"] = [dict(asdict(c), latency=c.latency, wait=c.wait) for c in run.calls if c.ended is not None]
    rep["unfinished"] = [asdict(c) for c in run.calls if c.ended is None]
    rep["errors"] = [f"{c.action} (student {c.student}): {c.error}" for c in run.calls if c.error]
    rep["actions"] = summarize(run.calls)
    rep["queue"] = queue_summary(run.calls, "train")
    return rep


def _class(cfg: LoadConfig, url: str, run: LoadRun, say, login: tuple[str, str] | None = None) -> dict:
    students = make_class(cfg.students)
    say(f"{len(students)} students connecting" + (", and the teacher" if login else ""))
    with ThreadPoolExecutor(max_workers=len(students) + 2) as pool:
        sessions = list(pool.map(lambda s: Session(url, s.index, run), students))
        observer = pool.submit(Session, url, -1, run).result()
        teacher = pool.submit(Session, url, TEACHER, run).result() if login else None
    endpoint = signed_in = None
    if teacher is not None and teacher.client is not None:
        endpoint = class_view_endpoint(teacher.client.config)
        c, _ = teacher.call("teacher_sign_in", "/teacher_sign_in", *login)
        signed_in = not c.error
        if endpoint is None:
            c.error = "the app has no Class view (no event updates elem_id class-status-box)"
    go = run.clock()
    seen: dict[int, dict] = {}
    done = threading.Event()
    obs_bad: list[str] = []
    obs = threading.Thread(target=lambda: obs_bad.extend(observe(observer, done, cfg.observer_every)), daemon=True)
    watched: list[list] = []
    watcher = threading.Thread(target=lambda: watched.extend(watch(teacher, endpoint, done, cfg.teacher_every, go)),
                               daemon=True)

    def student(i: int):
        if sessions[i].client is not None:
            student_flow(sessions[i], students[i], cfg, seen.setdefault(i, {}))

    hostile: dict = {}
    foe = threading.Thread(target=lambda: hostile.update(report=hostile_student(
        url, Path(tempfile.mkdtemp(prefix="hostile-")), done, run.deadline, students[0].prompt)), daemon=True)

    threads = [threading.Thread(target=student, args=(i,), daemon=True) for i in range(len(students))]
    say(f"all {len(students)} press Train ({cfg.steps} steps each), then Attention and Switch")
    if observer.client is not None:
        obs.start()
    if signed_in and endpoint:
        say(f"the teacher watches the Class tab ({endpoint}) every {cfg.teacher_every:g} s")
        watcher.start()
    for t in threads:
        t.start()
    if cfg.hostile:
        say("a hostile student attacks while the class runs (bench/hostile_student.py)")
        foe.start()
    for t in threads:
        t.join(max(0.0, run.left()))
    class_s = run.clock() - go
    done.set()
    if cfg.hostile:
        foe.join(max(0.0, run.left()))
    if obs.is_alive():
        obs.join(max(0.0, min(30.0, run.left())))
    rep = {"class_started_s": round(go, 2), "class_s": round(class_s, 1), "students": [asdict(s) for s in students],
           "seen": {str(i): v for i, v in seen.items()},
           "completed": sum(1 for s in students if "switch" in seen.get(s.index, {}))}
    rep["teacher"] = None
    if teacher is not None:
        if watcher.is_alive():
            watcher.join(max(0.0, min(30.0, run.left())))
        final = class_view(teacher, endpoint, go) if signed_in and endpoint and run.left() > 0 else None
        views = [c for c in run.calls if c.student == TEACHER and c.action == "class_view" and c.ended is not None]
        rep["teacher"] = teacher_summary(bool(signed_in and endpoint), watched, [c.latency for c in views if not c.error],
                                         sum(1 for c in views if c.error), len(students), cfg.steps, final)
    problems = [p for s in students for p in check_student(s, seen.get(s.index, {}), cfg)]
    problems += check_class(students, seen) + obs_bad
    others = 0
    if cfg.hostile:
        h = hostile.get("report")
        rep["hostile"] = h.summary() if h else None
        rep["hostile_broken"] = h.broken if h else ["the hostile student did not finish before the deadline"]
        others = sum(v["served"] for a, v in (rep["hostile"] or {}).items() if a.startswith("wide_csv_train"))
    problems += teacher_problems(rep["teacher"], cfg.steps, sum(1 for s in students if "train" in seen.get(s.index, {})),
                                 others, HOSTILE_TRAIN_STEPS)
    rep["intruder"] = intrude(observer) if observer.client is not None and run.left() > 0 else None
    if rep["intruder"] is not None and not rep["intruder"]["refused"]:
        problems.append(f"the observer could use {JUST_TRAINED} without training: {rep['intruder']['message']}")
    rep["replay"] = _replay(cfg, url, run, students, seen, say)
    problems += [f"replay of student {r['student']}: {r['problem']}" for r in rep["replay"] if r["problem"]]
    rep["isolation_problems"] = problems
    for sess in [*sessions, observer, *([teacher] if teacher else [])]:
        sess.close()
    rep["sessions_opened"] = len(sessions) + 1 + (teacher is not None) + len(rep["replay"])
    return rep


def _replay(cfg: LoadConfig, url: str, run: LoadRun, students: list[Student], seen: dict, say) -> list[dict]:
    """Replay the first ``cfg.replay`` completed students alone, in fresh sessions, and compare."""
    picked = [s for s in students if "switch" in seen.get(s.index, {})][: cfg.replay]
    if picked:
        say(f"replaying {len(picked)} students alone")
    out = []
    for s in picked:
        if run.left() <= 0:
            break
        sess = Session(url, s.index, run)
        run.calls.remove(sess.connect)
        calls_before = len(run.calls)
        again = student_flow(sess, s, cfg) if sess.client is not None else {}
        del run.calls[calls_before:]  # replays are checks, not part of the class's load
        sess.close()
        a, b = seen[s.index], again
        if "switch" not in b:
            out.append({"student": s.index, "problem": "the replay did not complete"})
            continue
        diff = max((abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a["train"]["loss"], b["train"]["loss"])),
                   default=math.inf)
        problem = []
        if len(a["train"]["loss"]) != len(b["train"]["loss"]) or diff > 1e-3:
            problem.append(f"loss {a['train']['loss']} under load vs {b['train']['loss']} alone")
        ta, tb = a["train"]["table"], b["train"]["table"]
        if [r[:2] for r in ta] != [r[:2] for r in tb]:  # the student's own held-out examples, in order
            problem.append("a different before/after table (its examples)")
        elif any(x[2] != y[2] for x, y in zip(ta, tb)):
            problem.append("a different before/after table (the prefix's answers)")
        if a["attention"]["msg"] != b["attention"]["msg"]:
            problem.append(f"attention {a['attention']['msg']!r} vs {b['attention']['msg']!r}")
        if a["switch"].get(JUST_TRAINED) != b["switch"].get(JUST_TRAINED):
            problem.append(f"switch {a['switch'].get(JUST_TRAINED)!r} vs {b['switch'].get(JUST_TRAINED)!r}")
        out.append({"student": s.index, "loss_max_rel_diff": diff, "problem": "; ".join(problem)})
    return out


def _wait_freed(log: Path, opened: int, wait: float) -> int:
    """Sessions the server freed after their clients closed (app.py logs each), waiting up to ``wait`` s."""
    end = time.monotonic() + max(0.0, wait)
    while True:
        n = len(re.findall(r"tab \w+ of \S+ closed", log.read_text(errors="replace")))
        if n >= opened or time.monotonic() >= end:
            return n
        time.sleep(0.5)


# ---- figures -------------------------------------------------------------------------------------
def summarize(calls: list[Call]) -> dict[str, dict]:
    """Per action: n, errors, latency p50/p95/max, queue wait p50/p95, completions per minute."""
    out = {}
    for action in ACTIONS:
        cs = [c for c in calls if c.action == action and c.ended is not None]
        ok = [c for c in cs if not c.error]
        if not cs:
            continue
        lat, wait = [c.latency for c in ok] or [math.nan], [c.wait for c in ok] or [math.nan]
        span = max(c.ended for c in cs) - min(c.submitted for c in cs)
        if action == "connect":  # no queue, and all at once: neither a wait nor a rate means anything
            wait, span = [math.nan], 0.0
        out[action] = {"n": len(cs), "errors": len(cs) - len(ok), "p50_s": pct(lat, 0.5), "p95_s": pct(lat, 0.95),
                       "max_s": max(lat), "wait_p50_s": pct(wait, 0.5), "wait_p95_s": pct(wait, 0.95),
                       "per_min": 60 * len(ok) / span if span > 0 else math.nan}
    return out


def queue_summary(calls: list[Call], action: str) -> dict:
    """What the queue told the students who pressed ``action``."""
    cs = [c for c in calls if c.action == action and c.ended is not None]
    shown = [c for c in cs if c.positions]
    return {"calls": len(cs), "shown_a_position": len(shown),
            "waited_over_1s": sum(1 for c in cs if c.wait > 1.0),
            "max_position": max((p for c in cs for p, _ in c.positions), default=0),
            "max_queue_size": max((q or 0 for c in cs for _, q in c.positions), default=0),
            "first_positions": sorted((c.positions[0][0] for c in shown), reverse=True),
            "positions_never_rose": all(all(a[0] >= b[0] for a, b in zip(c.positions, c.positions[1:])) for c in shown),
            "shown_a_place": sum(1 for c in cs if c.places),
            "max_ahead": max((a for c in cs for a, _ in c.places), default=0),
            "longest_wait_s": max((c.wait for c in cs), default=0.0)}


def table(rep: dict) -> str:
    lines = ["| action | n | errors | p50 s | p95 s | max s | queue wait p50 s | queue wait p95 s | done per min |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    f = lambda x, d=2: "–" if math.isnan(x) else f"{x:.{d}f}"  # noqa: E731
    for a, r in rep["actions"].items():
        lines.append(f"| {a} | {r['n']} | {r['errors']} | {f(r['p50_s'])} | {f(r['p95_s'])} | {f(r['max_s'])} | "
                     f"{f(r['wait_p50_s'])} | {f(r['wait_p95_s'])} | {f(r['per_min'], 1)} |")
    return "\n".join(lines)


def report_text(rep: dict) -> str:
    q = rep["queue"]
    lines = [table(rep), "",
             f"students who completed train, attention and switch: {rep['completed']}/{len(rep['students'])} "
             f"in {rep['class_s']:.1f} s (app start {rep['app_start_s']:.1f} s, whole run {rep['total_s']:.1f} s)",
             f"train queue: {q['shown_a_position']}/{q['calls']} were shown a position, {q['waited_over_1s']} waited "
             f"over 1 s, highest position {q['max_position']} (queue size up to {q['max_queue_size']}), longest wait "
             f"{q['longest_wait_s']:.1f} s, positions only went down: {q['positions_never_rose']}",
             f"the model's line (the scheduler): {q['shown_a_place']}/{q['calls']} runs were shown their place while "
             f"waiting for a step, up to {q['max_ahead']} learners ahead",
             f"server RSS: idle {rep['rss_idle_mb']:.0f} MB, peak {rep['rss_peak_mb']:.0f} MB, after the class "
             f"{rep['rss_after_class_mb']:.0f} MB, after sessions closed {rep['rss_final_mb']:.0f} MB "
             f"({rep['sessions_freed']} sessions freed)",
             f"switch: the server's own time for the mixed batch, p50 {_p50_seen(rep, 'switch_server_s'):.2f} s "
             f"(measured inside Playground.switch, so it includes sharing the cores)",
             f"isolation problems: {len(rep['isolation_problems'])}; intruder refused: "
             f"{(rep['intruder'] or {}).get('refused')}; replays: "
             + ", ".join(f"student {r['student']} {'same' if not r['problem'] else 'DIFFERENT'}" for r in rep["replay"]),
             teacher_text(rep.get("teacher")),
             f"errors: {len(rep['errors'])}; deadline hit: {rep['deadline_hit']}"]
    lines += [f"  error: {e}" for e in rep["errors"][:20]]
    lines += [f"  isolation: {p}" for p in rep["isolation_problems"][:20]]
    return "\n".join(lines)


def teacher_text(t: dict | None) -> str:
    """One paragraph: what the teacher's Class view showed while the class trained."""
    if t is None:
        return "teacher: nobody watched the Class tab in this run (--no-teacher)"
    if not t["signed_in"]:
        return "teacher: could not sign in, so nobody watched the Class tab"
    f = lambda x: "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"  # noqa: E731
    seen, fin, class_size = t["all_students_seen_at_s"], t["final"], t["class_size"]
    return (f"teacher (the Class tab, refreshed as its timer does): {t['polls']} views, {t['errors']} failed, latency "
            f"p50 {f(t['latency_p50_s'])} s, p95 {f(t['latency_p95_s'])} s, longest gap between two views while the "
            f"class trained {f(t['max_gap_s'])} s; "
            + (f"all {class_size} students seen {seen:.1f} s after they pressed Train" if seen is not None
               else f"never saw all {class_size} students (at most {t['max_students']})")
            + f"; the loss points grew in {t['loss_points_increases']} views, up to {t['max_loss_points']} (the "
              f"class has {t['loss_points_possible']})"
            + (f"; after the class: {fin[1]} students, {fin[2]} running, {fin[3]} runs, {fin[4]} loss points"
               if fin else ""))


def _p50_seen(rep: dict, key: str) -> float:
    xs = [v[key] for v in rep["seen"].values() if v.get(key) is not None]
    return pct(xs, 0.5) if xs else math.nan


def memory_budget_mb(flags: list[str]) -> int:
    """The app's --memory-budget-mb among these flags, else its default."""
    from playground.service import Limits

    for i, f in enumerate(flags):
        if f == "--memory-budget-mb" and i + 1 < len(flags):
            return int(flags[i + 1])
        if f.startswith("--memory-budget-mb="):
            return int(f.split("=", 1)[1])
    return Limits().memory_budget_mb


def passed(rep: dict) -> bool:
    ok = (not rep["errors"] and not rep["isolation_problems"] and not rep["deadline_hit"]
          and rep["completed"] == len(rep["students"]))
    if "hostile" in rep:  # the attacks broke nothing, and the server kept to its memory budget
        ok = ok and not rep["hostile_broken"] and rep["rss_peak_mb"] < memory_budget_mb(rep["app_flags"])
    return ok


P95_SLACK = 1.25  # the honest students' p95 may move by at most 25% when a hostile student joins
COMPARED = ("train", "attention", "switch")


def p95_ratios(baseline: dict, hostile: dict) -> dict[str, float]:
    """Per action: the honest students' p95 latency with the hostile student over the p95 without."""
    return {a: hostile["actions"][a]["p95_s"] / baseline["actions"][a]["p95_s"] for a in COMPARED
            if a in hostile["actions"] and a in baseline["actions"]}


def hostile_text(rep: dict, ratios: dict[str, float] | None) -> str:
    lines = ["", "hostile student (bench/hostile_student.py): what the server did with each attack",
             "| attack | served | refused | broken | example |", "|---|---:|---:|---:|---|"]
    for a, r in (rep.get("hostile") or {}).items():
        ex = (r["examples"] or [""])[0].replace("|", "/")[:120]
        lines.append(f"| {a} | {r['served']} | {r['refused']} | {r['broken']} | {ex} |")
    lines.append(f"broken: {len(rep['hostile_broken'])}; server RSS peak {rep['rss_peak_mb']:.0f} MB, budget "
                 f"{memory_budget_mb(rep['app_flags'])} MB")
    lines += [f"  broken: {b}" for b in rep["hostile_broken"][:10]]
    if ratios:
        lines.append("honest students' p95 with the hostile student / without: "
                     + ", ".join(f"{a} {r:.2f}x" for a, r in ratios.items())
                     + f" (allowed: up to {P95_SLACK:.2f}x)")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="Other flags are passed to app.py (e.g. --concurrent-trainings 4).")
    d = LoadConfig()
    ap.add_argument("--students", type=int, default=d.students)
    ap.add_argument("--steps", type=int, default=d.steps)
    ap.add_argument("--eval-examples", type=int, default=d.eval_examples)
    ap.add_argument("--timeout", type=float, default=d.timeout, help="seconds for the whole run; then exit 1")
    ap.add_argument("--replay", type=int, default=d.replay, help="students replayed alone at the end")
    ap.add_argument("--json", default=str(RESULTS), help="where to write the report ('' for nowhere)")
    ap.add_argument("--hostile", action="store_true", help="add a hostile student who attacks while the class runs")
    ap.add_argument("--baseline", action="store_true",
                    help="with --hostile: first run the same class without the hostile student, then compare p95s")
    ap.add_argument("--no-teacher", action="store_true",
                    help="nobody signs in as the teacher and watches the Class tab (to measure what watching costs)")
    args, app_flags = ap.parse_known_args()
    cfg = LoadConfig(args.students, args.steps, args.eval_examples, timeout=args.timeout, replay=args.replay,
                     app_flags=app_flags, hostile=args.hostile, teacher=not args.no_teacher)
    from bench.common import machine, write_json

    base = None
    if args.hostile and args.baseline:
        print("baseline: the same class without the hostile student")
        with tempfile.TemporaryDirectory(prefix="load-test-") as tmp:
            base = run_load(LoadConfig(**{**asdict(cfg), "hostile": False}), Path(tmp))
        print(report_text(base))
    with tempfile.TemporaryDirectory(prefix="load-test-") as tmp:
        rep = run_load(cfg, Path(tmp))
    ok = passed(rep) and (base is None or passed(base))
    ratios = p95_ratios(base, rep) if base is not None else None
    if ratios:
        ok = ok and all(r <= P95_SLACK for r in ratios.values())
    rep = {"command": " ".join(["bench/load_test.py", *sys.argv[1:]]), "machine": machine(),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "config": asdict(cfg),
           "passed": ok, **rep}
    if base is not None:
        rep["baseline"] = {k: v for k, v in base.items() if k not in ("calls", "rss_samples", "seen")}
        rep["p95_ratio_with_hostile"] = ratios
    print(report_text(rep) + (hostile_text(rep, ratios) if args.hostile else ""))
    write_json(args.json, rep)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
