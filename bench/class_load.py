"""A whole class training at once, in one process: one worker per session vs the scheduler.

    .venv/bin/python bench/class_load.py [--students 10 30] [--steps 5] [--switchers 3] [--device cpu]

One model object, one ``Playground`` per mode (fresh, on a fresh temporary copy of prefixes/ as the
shipped library). N students are threads, as Gradio's worker threads are. Student i presses Train at
a seeded random moment in the first ``--press-window`` seconds: ``start_run`` (sentiment, the UI's
prefix defaults, ``--steps`` steps at ``--batch-size``, seed i, held-out scoring only at the end on
``--eval-examples`` examples), every ``run_steps`` record, then ``score_start`` (the curve's step 0,
part of the Train event). Meanwhile ``--switchers`` other sessions click Switch (two shipped prefixes
and "(no prefix)" on one short sentence), pausing 1 s between clicks, while any student still trains.

Modes:
- workers: today's app. Each caller's thread runs its own torch work; as Gradio's concurrency limits
  do, a whole Train event holds one of ``limits.concurrent_trainings`` slots and a Switch call one of
  ``limits.concurrent_requests``.
- scheduler: ``Playground(..., scheduled=True)``; no slots, every call reaches the scheduler thread,
  which batches the class's training steps in one forward/backward and generation in one decode loop.

Per (N, mode): seconds from pressing Train to the first curve point and to the finished run (p50, p95,
max, n), Switch latency (p50, p95, n), training examples per second over the whole class (finished runs
x steps x batch / (last run finished - first Train press)), peak RSS (VmHWM, reset before each mode)
and errors. Then the goals for 30 students (met / missed, not asserted) and, last, the ratios
scheduler / workers. ``--timeout`` bounds each mode: past it the runs are stopped, what finished is
reported, and the exit status is 1 (as it is for any error).
"""

from __future__ import annotations

import argparse
import gc
import inspect
import math
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import pct  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "class_load.json"
SHIPPED = ROOT / "prefixes"
NO_PREFIX = "(no prefix)"  # as playground.service
MODES = ("workers", "scheduler")
SENTENCE = "The film was slow at first, but the ending was lovely."
GRACE_S = 60  # after the deadline: how long stopped runs get to end their current step
# Goals for a class of 30 (scheduler mode; the throughput against workers mode).
GOALS = {"first point p95 s": 10.0, "finished p95 s": 60.0, "switch p95 s": 3.0, "throughput ratio": 1.5,
         "peak RSS MB": 4096.0}
GOAL_CLASS = 30


@dataclass
class ClassConfig:
    """One class: its size, what each student trains, and who clicks Switch meanwhile."""

    students: int = 10  # threads pressing Train
    steps: int = 5  # training steps per run
    batch_size: int = 8  # the UI's default
    eval_examples: int = 16  # held-out examples scored at the end of the run and for step 0
    switchers: int = 3  # sessions clicking Switch while the class trains
    press_window: float = 2.0  # students press Train at seeded random moments in these first seconds
    switch_pause: float = 1.0  # seconds between one switcher's clicks
    timeout: float = 1800.0  # seconds for one mode; then its runs are stopped and it counts as failed
    seed: int = 0  # the press times


@dataclass
class StudentLog:
    """One student's Train event; times in seconds since the mode started."""

    index: int
    pressed: float | None = None
    first_point: float | None = None  # the first StepRecord arrived
    finished: float | None = None  # score_start returned: the whole run, its evaluations included, is done
    steps: int = 0
    error: str | None = None


@dataclass
class ModeLog:
    students: list[StudentLog]
    switches: list[float] = field(default_factory=list)  # Switch latencies, click to last answer
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def has_scheduler_flag() -> bool:
    """Whether ``Playground`` takes ``scheduled`` (the scheduler mode needs it)."""
    from playground.service import Playground

    return "scheduled" in inspect.signature(Playground.__init__).parameters


def make_playground(base, shipped_src: Path, tmp: Path, mode: str):
    """A fresh Playground on a fresh copy of ``shipped_src`` as the shipped prefixes."""
    from playground.library import Library
    from playground.service import Limits, Playground

    shipped = tmp / "prefixes"
    shutil.copytree(shipped_src, shipped)
    lib = Library(tmp / "class", shipped=shipped)
    if not has_scheduler_flag():
        if mode == "scheduler":
            raise RuntimeError("Playground takes no `scheduled` flag: the scheduler mode cannot run here")
        return Playground(base, lib, Limits())
    return Playground(base, lib, Limits(), scheduled=mode == "scheduler")


def reset_peak_rss() -> bool:
    """Reset the kernel's resident high-water mark (VmHWM) to the current RSS; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return math.nan


def warm_up(base, shipped_src: Path, mode: str) -> float:
    """One short run and one Switch in ``mode``, untimed, so that the first class measured does not pay the
    first forward, backward and generation alone. Returns its seconds."""
    from playground.prefix import PrefixSettings
    from playground.tasks import get_task
    from playground.training import TrainSettings

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="class-load-") as tmp:
        pg = make_playground(base, shipped_src, Path(tmp), mode)
        try:
            run = pg.start_run("warm-up", get_task("sentiment"), PrefixSettings(),
                               TrainSettings(steps=1, eval_every=0, eval_examples=2))
            for _ in pg.run_steps(run):
                pass
            pg.score_start(run)
            pg.switch("warm-up", [*pg.switch_defaults(2), NO_PREFIX], SENTENCE)
            pg.close_session("warm-up")
        finally:
            if callable(getattr(pg, "close", None)):
                pg.close()
    return time.perf_counter() - t0


def run_mode(base, shipped_src: Path, cfg: ClassConfig, mode: str, say=print) -> dict:
    """One class in one mode; returns its figures (``summarize``) and the raw logs."""
    import torch

    from playground.busy import machine_load
    from playground.prefix import PrefixSettings
    from playground.tasks import get_task
    from playground.training import TrainSettings

    gc.collect()
    cuda = base.device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    rss_reset = reset_peak_rss()
    load_before = machine_load()  # 1-minute average: other jobs, and the tail of this benchmark's previous mode
    sched = None  # the scheduler's own counts (scheduler mode)
    with tempfile.TemporaryDirectory(prefix="class-load-") as tmp:
        pg = make_playground(base, shipped_src, Path(tmp), mode)
        try:
            names = [*pg.switch_defaults(2), NO_PREFIX]
            log = ModeLog([StudentLog(i) for i in range(cfg.students)])
            rng = random.Random(cfg.seed)
            press = [rng.uniform(0, cfg.press_window) for _ in range(cfg.students)]
            gated = mode == "workers"  # Gradio's concurrency limits, as the app sets them today
            train_gate = threading.BoundedSemaphore(pg.limits.concurrent_trainings) if gated else None
            switch_gate = threading.BoundedSemaphore(pg.limits.concurrent_requests) if gated else None
            stop, class_done = threading.Event(), threading.Event()
            t0 = time.perf_counter()
            deadline = t0 + cfg.timeout

            def clock() -> float:
                return time.perf_counter() - t0

            def left() -> float:
                return max(0.0, deadline - time.perf_counter())

            def student(s: StudentLog):
                key = f"student-{s.index}"
                if stop.wait(press[s.index]):
                    return
                s.pressed = clock()
                held = train_gate is not None and train_gate.acquire(timeout=left())
                if train_gate is not None and not held:
                    s.error = "deadline while waiting for a training slot"
                    return
                try:
                    if stop.is_set():
                        return
                    ts = TrainSettings(steps=cfg.steps, batch_size=cfg.batch_size, seed=s.index, eval_every=0,
                                       eval_examples=cfg.eval_examples)
                    run = pg.start_run(key, get_task("sentiment"), PrefixSettings(), ts)
                    if stop.is_set():
                        run.cancel.set()
                    for rec in pg.run_steps(run):
                        if rec is None:  # a heartbeat while waiting (none are asked for): not a curve point
                            continue
                        s.first_point = s.first_point if s.first_point is not None else clock()
                        s.steps += 1
                    if run.state == "finished" and not stop.is_set():
                        pg.score_start(run)
                        s.finished = clock()
                except Exception as exc:  # noqa: BLE001 - every error is a result
                    s.error = f"{type(exc).__name__}: {exc}"
                finally:
                    if held:
                        train_gate.release()

            def switcher(j: int):
                key = f"switcher-{j}"
                if class_done.wait(j * cfg.switch_pause / max(1, cfg.switchers)):  # staggered first clicks
                    return
                while not class_done.is_set():
                    c = clock()
                    held = switch_gate is not None and switch_gate.acquire(timeout=left())
                    if switch_gate is not None and not held:
                        return
                    try:
                        pg.switch(key, names, SENTENCE)
                        with log.lock:
                            log.switches.append(clock() - c)
                    except Exception as exc:  # noqa: BLE001
                        with log.lock:
                            log.errors.append(f"switch (switcher {j}): {type(exc).__name__}: {exc}")
                    finally:
                        if held:
                            switch_gate.release()
                    class_done.wait(cfg.switch_pause)

            say(f"-- {mode}: {cfg.students} students x {cfg.steps} steps x batch {cfg.batch_size}, "
                f"{cfg.switchers} switching {names}")
            threads = [threading.Thread(target=student, args=(s,), daemon=True) for s in log.students]
            sw = [threading.Thread(target=switcher, args=(j,), daemon=True) for j in range(cfg.switchers)]
            for t in threads + sw:
                t.start()
            for t in threads:
                t.join(left())
            timed_out = any(t.is_alive() for t in threads)
            if timed_out:  # stop every run after its current step, and wait a little for them
                stop.set()
                for s in log.students:
                    pg.stop(f"student-{s.index}")
                end = time.perf_counter() + GRACE_S
                for t in threads:
                    t.join(max(0.0, end - time.perf_counter()))
            class_done.set()
            for t in sw:
                t.join(GRACE_S)
            stragglers = sum(t.is_alive() for t in threads + sw)
            wall = clock()
            for k in [*(f"student-{i}" for i in range(cfg.students)), *(f"switcher-{j}" for j in range(cfg.switchers))]:
                pg.close_session(k)
            sessions_left = len(pg.sessions)
            sched = pg.scheduler.stats() if mode == "scheduler" else None
        finally:
            if callable(getattr(pg, "close", None)):
                pg.close()
    log.errors[:0] = [f"student {s.index}: {s.error}" for s in log.students if s.error]
    rep = summarize(log, cfg)
    rep.update(mode=mode, students=cfg.students, timed_out=timed_out, stragglers=stragglers, wall_s=round(wall, 1),
               sessions_left=sessions_left,
               peak_rss_mb=round(peak_rss_mb(), 1), rss_reset=rss_reset, switch_names=names,
               load_before=asdict(load_before), busy_note=load_before.note(),
               student_logs=[asdict(s) for s in log.students], switch_latencies_s=log.switches, scheduler=sched)
    if cuda:
        rep["gpu_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return rep


# ---- figures -------------------------------------------------------------------------------------
def spread(xs: list[float]) -> dict:
    return {"p50_s": pct(xs, 0.5), "p95_s": pct(xs, 0.95), "max_s": max(xs, default=math.nan), "n": len(xs)}


def summarize(log: ModeLog, cfg: ClassConfig) -> dict:
    ss = log.students
    done = [s for s in ss if s.finished is not None]
    pressed = [s.pressed for s in ss if s.pressed is not None]
    span = max((s.finished for s in done), default=math.nan) - min(pressed, default=math.nan)
    examples = len(done) * cfg.steps * cfg.batch_size
    return {"first_point": spread([s.first_point - s.pressed for s in ss if s.first_point is not None]),
            "finished": spread([s.finished - s.pressed for s in done]),
            "switch": spread(log.switches),
            "runs_finished": len(done), "steps_done": sum(s.steps for s in ss),
            "examples_per_s": examples / span if done and span > 0 else math.nan,
            "errors": log.errors}


def mode_line(r: dict) -> str:
    f, d, w = r["first_point"], r["finished"], r["switch"]
    return (f"{r['students']:>4} students, {r['mode']:<9}: first point p50 {f['p50_s']:.1f} p95 {f['p95_s']:.1f} "
            f"max {f['max_s']:.1f} s (n={f['n']}); finished p50 {d['p50_s']:.1f} p95 {d['p95_s']:.1f} max "
            f"{d['max_s']:.1f} s (n={d['n']}); switch p50 {w['p50_s']:.2f} p95 {w['p95_s']:.2f} s (n={w['n']}); "
            f"{r['examples_per_s']:.1f} examples/s; peak RSS {r['peak_rss_mb']:.0f} MB; errors {len(r['errors'])}"
            + ("; TIMED OUT" if r["timed_out"] else "")
            + (f"\n      scheduler: {r['scheduler']['ticks']} training ticks, {r['scheduler']['runs_per_tick']:.1f} runs "
               f"per tick (most {r['scheduler']['most_runs_in_a_tick']}), {r['scheduler']['decode_steps']} decode steps, "
               f"{r['scheduler']['rows_per_decode_step']:.1f} rows per step" + busy_text(r['scheduler'].get("busy_s"))
               if r.get("scheduler") else ""))


def busy_text(busy: dict | None) -> str:
    """Where the model's time went: seconds per kind of work and its share of the busy time."""
    if not busy:
        return ""
    total = sum(busy.values()) or 1.0
    return "; model time: " + ", ".join(f"{k} {v:.0f} s ({100 * v / total:.0f}%)" for k, v in busy.items())


def ratios(workers: dict, sched: dict) -> dict:
    """scheduler / workers: throughput (higher is better) and each p95 (lower is better)."""
    return {"throughput": sched["examples_per_s"] / workers["examples_per_s"],
            **{f"{k} p95": sched[k]["p95_s"] / workers[k]["p95_s"] for k in ("first_point", "finished", "switch")}}


def goals(workers: dict | None, sched: dict) -> dict[str, tuple[float, bool]]:
    """Each goal: (the measured value, met)."""
    got = {"first point p95 s": sched["first_point"]["p95_s"], "finished p95 s": sched["finished"]["p95_s"],
           "switch p95 s": sched["switch"]["p95_s"], "peak RSS MB": sched["peak_rss_mb"],
           "throughput ratio": ratios(workers, sched)["throughput"] if workers else math.nan}
    return {k: (v, v >= GOALS[k] if k == "throughput ratio" else v <= GOALS[k]) for k, v in got.items()}


def goals_line(n: int, g: dict[str, tuple[float, bool]]) -> str:
    where = f"{n} students" + ("" if n == GOAL_CLASS else f" (the goals are set for {GOAL_CLASS})")
    parts = [f"{k} {v:.2f} ({'<=' if k != 'throughput ratio' else '>='} {GOALS[k]:g}): "
             f"{'met' if ok else 'missed'}" for k, (v, ok) in g.items()]
    return f"goals at {where}: " + "; ".join(parts)


def ratio_line(n: int, r: dict) -> str:
    return (f"scheduler/workers at {n} students: throughput {r['throughput']:.2f}x, first point p95 "
            f"{r['first_point p95']:.2f}x, finished p95 {r['finished p95']:.2f}x, switch p95 {r['switch p95']:.2f}x")


def main() -> int:
    d = ClassConfig()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--students", type=int, nargs="+", default=[d.students], help="class sizes, each in every mode")
    ap.add_argument("--steps", type=int, default=d.steps)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--eval-examples", type=int, default=d.eval_examples)
    ap.add_argument("--switchers", type=int, default=d.switchers)
    ap.add_argument("--press-window", type=float, default=d.press_window)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: the device's own)")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--timeout", type=float, default=d.timeout, help="seconds per mode; past it, exit 1")
    ap.add_argument("--out", "--json", dest="out", default=str(RESULTS), help="results JSON ('' for nowhere)")
    args = ap.parse_args()

    from bench.common import machine, setup, write_json

    setup()
    from playground.models import load_model

    base = load_model(device=args.device, dtype=args.dtype)
    print(machine(), f"| model on {base.device}, {base.dtype}", flush=True)
    for mode in args.modes:
        if mode == "workers" or has_scheduler_flag():
            print(f"warm-up, {mode} (one step and one Switch, untimed): {warm_up(base, SHIPPED, mode):.1f} s",
                  flush=True)
    runs, failed, lines = [], [], []
    head = {"command": " ".join(["bench/class_load.py", *sys.argv[1:]]), "machine": machine(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    for n in args.students:
        cfg = ClassConfig(n, args.steps, args.batch_size, args.eval_examples, args.switchers, args.press_window,
                          timeout=args.timeout)
        by = {}
        for mode in args.modes:
            try:
                r = run_mode(base, SHIPPED, cfg, mode)
            except RuntimeError as exc:
                print(f"-- {mode}: not run: {exc}", flush=True)
                failed.append(f"{mode} at {n}: {exc}")
                continue
            r["config"] = asdict(cfg)
            runs.append(r)
            by[mode] = r
            print(mode_line(r), flush=True)
            if r["busy_note"]:
                print("   before it:", r["busy_note"])
            for e in r["errors"][:10]:
                print("   error:", e)
            if r["timed_out"] or r["errors"] or r["runs_finished"] < n:
                failed.append(f"{mode} at {n}")
            write_json(args.out, {**head, "failed": failed, "runs": runs})  # kept even if a later mode is killed
        if "scheduler" in by:
            lines.append((n, by.get("workers"), by["scheduler"]))
    summary = {}
    goal_n = GOAL_CLASS if any(n == GOAL_CLASS for n, _, _ in lines) else max((n for n, _, _ in lines), default=None)
    for n, w, s in lines:
        if n == goal_n:
            g = goals(w, s)
            summary["goals"] = {"students": n, **{k: {"value": v, "met": ok} for k, (v, ok) in g.items()}}
            print(goals_line(n, g))
    for n, w, s in lines:
        if w is not None:
            r = ratios(w, s)
            summary[f"ratios at {n}"] = r
            print(ratio_line(n, r))
    if not any(w is not None for _, w, _ in lines):
        print("scheduler/workers: no ratio (both modes are needed)")
    write_json(args.out, {**head, "failed": failed, **summary, "runs": runs})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
