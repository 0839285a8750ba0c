"""What the teacher's watching costs the class: one app, one class, the Class tab polling in some minutes only.

    .venv/bin/python bench/watch_cost.py [--students 12] [--probes 3] [--blocks 8] [--block-s 60] [--json PATH]

The load test compares a watched run with a separate unwatched run (``bench/load_test.py`` and its
``--no-teacher``). Its Switch latencies depend on how many trainings happen to share the model at the moment a
student clicks, and on how long that student's answer is, so two runs of the same code differ by far more than
watching could cost. Here the comparison is made inside one run, on identical work:

- the class: ``--students`` sessions train throughout, each run ``--steps`` long (100, the app's limit, by
  default: a steady load, every run stepping while the teacher watches, so the Class view is drawn again at
  nearly every refresh, its dearest case); a run that ends is followed by another;
- the probes: ``--probes`` other sessions repeat the same two clicks, Enter in Switch on two shipped prefixes for
  one fixed sentence (greedy decoding, so the same tokens every time: short answers, so many calls), then Show
  attention on a shipped prefix;
- the teacher: signed in with ``--teacher-auth``, refreshes the Class view every 3 s, as its timer does, during
  half of the ``--blocks`` blocks of ``--block-s`` seconds, in the order on, off, off, on, on, off, ... so that a
  slow drift (the class folder fills with runs) weighs on both sides alike.

A probe call counts for the block in which it was submitted and ended (calls straddling a switch of the teacher
are left out). Per side: Switch and Attention latency p50 and p95 with n, the server's own time for Switch, and
the class's training steps per minute (lines added to the runs' steps.jsonl). Last, the ratios watched / not
watched, with 95% bootstrap intervals over calls. Everything goes to ``bench/results/watch_cost.json``.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import machine, pct, setup, write_json  # noqa: E402
from bench.driver import start_app, stop_app  # noqa: E402
from bench.load_test import (  # noqa: E402
    NO_PREFIX,
    NONE,
    TEACHER,
    LoadConfig,
    LoadRun,
    Session,
    class_view,
    class_view_endpoint,
    make_class,
    read_switch,
    teacher_login,
    train_args,
)

RESULTS = ROOT / "bench" / "results" / "watch_cost.json"
SWITCH_PREFIXES = ["sentiment", "topic"]  # two shipped prefixes
ATTENTION_PREFIX = "sentiment"
PROMPT = "The plot is thin, but the two leads are a joy to watch."
WATCHED = (True, False, False, True)  # the teacher's pattern over blocks, repeated (ABBA)


def start_class_app(prefix: str) -> tuple:
    """The app on an empty library in a new temporary folder, with a teacher's login.
    Returns (process, url, seconds to start, folder, (user, password))."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    (workdir / "library").mkdir()
    flags, login = teacher_login(["--library", str(workdir / "library")])
    proc, url, start_s = start_app(flags, workdir / "server.log")
    return proc, url, start_s, workdir, login


def sign_in_teacher(url: str, run: LoadRun, login: tuple[str, str]) -> tuple[Session, str]:
    """The teacher's session, signed in, and the Class view's endpoint; stops the bench if either fails."""
    teacher = Session(url, TEACHER, run)
    endpoint = class_view_endpoint(teacher.client.config)
    c, _ = teacher.call("teacher_sign_in", "/teacher_sign_in", *login)
    if c.error or endpoint is None:
        raise SystemExit(f"the teacher could not sign in or find the Class view: {c.error}")
    return teacher, endpoint


def watched(block: int) -> bool:
    return WATCHED[block % len(WATCHED)]


def steps_written(workdir: Path) -> int:
    """Training steps the class has logged so far: the lines of every run's steps.jsonl."""
    n = 0
    for f in workdir.rglob("steps.jsonl"):
        with open(f, "rb") as fh:
            n += sum(1 for _ in fh)
    return n


def ratio_interval(a: list[float], b: list[float], q: float, draws: int = 2000, seed: int = 0) -> list[float]:
    """95% bootstrap interval of pct(a, q) / pct(b, q), resampling the calls on each side."""
    rng = random.Random(seed)
    rs = sorted(pct(rng.choices(a, k=len(a)), q) / pct(rng.choices(b, k=len(b)), q) for _ in range(draws))
    return [round(rs[int(0.025 * draws)], 3), round(rs[int(0.975 * draws) - 1], 3)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--students", type=int, default=12, help="sessions that keep training throughout")
    ap.add_argument("--probes", type=int, default=3, help="sessions that repeat Switch and Attention")
    ap.add_argument("--steps", type=int, default=100, help="training steps per run of the class")
    ap.add_argument("--blocks", type=int, default=8, help="blocks of time, half of them watched (a multiple of 4)")
    ap.add_argument("--block-s", type=float, default=60.0, help="seconds per block")
    ap.add_argument("--warmup-s", type=float, default=45.0, help="seconds of class before the first block")
    ap.add_argument("--json", default=str(RESULTS))
    args = ap.parse_args()
    if args.blocks % len(WATCHED):
        ap.error(f"--blocks must be a multiple of {len(WATCHED)}, so that both sides get the same drift")
    setup()
    total = args.warmup_s + args.blocks * args.block_s
    run = LoadRun(timeout=total + 600)  # the calls still pending at the end get 10 min to finish
    proc, url, start_s, workdir, login = start_class_app("watch-cost-")
    print(f"app up in {start_s:.1f} s; {args.students} students train, {args.probes} probes click, "
          f"{args.blocks} blocks of {args.block_s:.0f} s after {args.warmup_s:.0f} s of warm-up")
    stop = threading.Event()
    teacher_on = threading.Event()
    probe_calls: list[dict] = []  # {action, watched, submitted, latency, server_s}
    views: list[float] = []
    try:
        cfg = LoadConfig(students=args.students, steps=args.steps, replay=0)
        students = make_class(args.students)
        sessions = [Session(url, s.index, run) for s in students]
        probes = [Session(url, 1000 + i, run) for i in range(args.probes)]
        teacher, endpoint = sign_in_teacher(url, run, login)
        go = time.monotonic()
        t_block0 = go + args.warmup_s

        def block_of(t: float) -> int | None:
            b = int((t - t_block0) // args.block_s)
            return b if 0 <= b < args.blocks else None

        def learner(i: int):
            while not stop.is_set():
                c, _ = sessions[i].call("train", "/train", *train_args(students[i], cfg))
                if c.error and not stop.is_set():  # at the end, stopping the app cancels the runs still going
                    print(f"student {i}: {c.error}")
                    stop.wait(5)

        def probe(sess: Session):
            sess.refresh("switch", [NO_PREFIX])
            sess.refresh("attention", None)
            while not stop.is_set():
                for action, api, call_args in (("switch", "/switch", (SWITCH_PREFIXES, PROMPT)),
                                               ("attention", "/attention", (PROMPT, ATTENTION_PREFIX, NONE))):
                    t0 = time.monotonic()
                    c, out = sess.call(action, api, *call_args)
                    t1 = time.monotonic()
                    b0, b1 = block_of(t0), block_of(t1)
                    if c.error:
                        print(f"probe: {action}: {c.error}")
                        continue
                    server = None
                    if action == "switch":
                        m = re.search(r"([\d.]+) s in all", out or "")
                        server = m and float(m.group(1))
                        if sorted(read_switch(out)) != sorted(SWITCH_PREFIXES):
                            print(f"probe: Switch answered {list(read_switch(out))}")
                    if b0 is not None and b0 == b1:
                        probe_calls.append({"action": action, "block": b0, "watched": watched(b0),
                                            "latency": t1 - t0, "server_s": server})

        def teach():
            next_t = time.monotonic()
            while not stop.is_set():
                if teacher_on.is_set():
                    t0 = time.monotonic()
                    if class_view(teacher, endpoint, go) is None:
                        print("teacher: a Class view failed")
                    views.append(time.monotonic() - t0)
                next_t = max(next_t + cfg.teacher_every, time.monotonic())  # the timer skips a tick while one is pending
                stop.wait(max(0.0, next_t - time.monotonic()))

        threads = [threading.Thread(target=learner, args=(i,), daemon=True) for i in range(args.students)]
        threads += [threading.Thread(target=probe, args=(p,), daemon=True) for p in probes]
        threads.append(threading.Thread(target=teach, daemon=True))
        for t in threads:
            t.start()
        stop.wait(args.warmup_s)
        steps = []  # (block, watched, steps per minute)
        for b in range(args.blocks):
            teacher_on.set() if watched(b) else teacher_on.clear()
            n0, t0 = steps_written(workdir), time.monotonic()
            stop.wait(max(0.0, t_block0 + (b + 1) * args.block_s - time.monotonic()))
            rate = 60 * (steps_written(workdir) - n0) / (time.monotonic() - t0)
            steps.append({"block": b, "watched": watched(b), "steps_per_min": round(rate, 1)})
            print(f"block {b} ({'watched' if watched(b) else 'not watched'}): {rate:.1f} training steps/min, "
                  f"{sum(1 for c in probe_calls if c['block'] == b)} probe calls")
        stop.set()
        teacher_on.clear()
        end = time.monotonic() + 60  # a probe's call in flight ends within seconds; a class's run may take
        for t in threads[args.students:]:  # minutes more, and stopping the app below ends it
            t.join(timeout=max(0.1, end - time.monotonic()))
    finally:
        stop.set()
        stop_app(proc)
    rep = summary(probe_calls, steps, views)
    rep.update(command="bench/watch_cost.py " + " ".join(sys.argv[1:]), machine=machine(),
               date=time.strftime("%Y-%m-%dT%H:%M:%S%z"), config=vars(args), calls=probe_calls, blocks=steps)
    write_json(args.json, rep)
    print(report_text(rep))
    return 0


def summary(calls: list[dict], steps: list[dict], views: list[float]) -> dict:
    out: dict = {"teacher_view_p50_s": round(pct(views, 0.5), 3), "teacher_view_p95_s": round(pct(views, 0.95), 3),
                 "teacher_views": len(views)}
    for action, key in (("switch", "latency"), ("attention", "latency"), ("switch", "server_s")):
        on = [c[key] for c in calls if c["action"] == action and c["watched"] and c[key] is not None]
        off = [c[key] for c in calls if c["action"] == action and not c["watched"] and c[key] is not None]
        name = action if key == "latency" else f"{action}_server"
        out[name] = {side: {"n": len(xs), "p50_s": round(pct(xs, 0.5), 3), "p95_s": round(pct(xs, 0.95), 3)}
                     for side, xs in (("watched", on), ("not_watched", off))}
        if on and off:
            for q, label in ((0.5, "p50"), (0.95, "p95")):
                out[name][f"{label}_ratio"] = round(pct(on, q) / pct(off, q), 3)
                out[name][f"{label}_interval"] = ratio_interval(on, off, q)
    on = [s["steps_per_min"] for s in steps if s["watched"]]
    off = [s["steps_per_min"] for s in steps if not s["watched"]]
    out["training"] = {"watched_steps_per_min": round(sum(on) / len(on), 1),
                       "not_watched_steps_per_min": round(sum(off) / len(off), 1),
                       "ratio": round((sum(off) / len(off)) / (sum(on) / len(on)), 3)}
    return out


def report_text(rep: dict) -> str:
    lines = [f"teacher's Class views: {rep['teacher_views']}, p50 {rep['teacher_view_p50_s']} s, "
             f"p95 {rep['teacher_view_p95_s']} s", "",
             "| | watched p50 / p95 (n) | not watched p50 / p95 (n) | p50 ratio [95% interval] | p95 ratio [95% interval] |",
             "|---|---|---|---|---|"]
    for name in ("switch", "switch_server", "attention"):
        r = rep[name]
        w, n = r["watched"], r["not_watched"]
        lines.append(f"| {name} | {w['p50_s']} / {w['p95_s']} s ({w['n']}) | {n['p50_s']} / {n['p95_s']} s ({n['n']}) "
                     f"| {r.get('p50_ratio')} {r.get('p50_interval')} | {r.get('p95_ratio')} {r.get('p95_interval')} |")
    t = rep["training"]
    lines += ["", f"the class's training: {t['watched_steps_per_min']} steps/min watched, "
              f"{t['not_watched_steps_per_min']} not watched (time per step, watched / not: {t['ratio']}x)",
              f"ratio watched / not watched, Switch p50: {rep['switch'].get('p50_ratio')}x, "
              f"p95: {rep['switch'].get('p95_ratio')}x"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
