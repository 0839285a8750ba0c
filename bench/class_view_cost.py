"""What one refresh of the teacher's Class view costs the server, in CPU time, for a class of N finished runs.

    .venv/bin/python bench/class_view_cost.py [--students 30] [--views 40] [--json PATH]

Starts the app with a teacher's login, lets ``--students`` sessions train the load test's 3-step runs (all at
once, as a class does), then, with the machine otherwise idle, signs the teacher in and asks for the Class view
``--views`` times in a row, twice:

- unchanged: nothing moved since the last view, so the view itself is the cached one (``ClassDesk.view``) and
  what is left is Gradio's work on the seven outputs;
- changed: before each view one step is appended to one run's steps.jsonl, the way a training run logs, so the
  view is drawn again every time: the case of a class that is training.

It reads the server's own CPU time (user + system, ``/proc/PID/stat``) before and after each series: that is
everything the server did for the views, Gradio's queue and JSON included, and divided by the timer's period
(3 s) it is the share of one core a watching teacher takes from the class. Anchor: the same server's idle
CPU over the same wall time (what it spends with no view at all), printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import machine, pct, write_json  # noqa: E402
from bench.driver import stop_app  # noqa: E402
from bench.load_test import LoadConfig, LoadRun, Session, class_view, make_class, train_args  # noqa: E402
from bench.watch_cost import sign_in_teacher, start_class_app  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "class_view_cost.json"


def cpu_s(pid: int) -> float:
    """The process's CPU time so far (user + system), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--students", type=int, default=30, help="runs in the class when the teacher looks")
    ap.add_argument("--views", type=int, default=40, help="views per series")
    ap.add_argument("--json", default=str(RESULTS))
    args = ap.parse_args()
    proc, url, _, workdir, login = start_class_app("class-view-cost-")
    rep: dict = {"command": "bench/class_view_cost.py " + " ".join(sys.argv[1:]), "machine": machine(),
                 "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": vars(args)}
    try:
        run, cfg = LoadRun(timeout=3600), LoadConfig(students=args.students, replay=0)
        students = make_class(args.students)
        sessions = [Session(url, s.index, run) for s in students]
        t0 = time.monotonic()
        threads = [threading.Thread(target=sessions[i].call, args=("train", "/train", *train_args(students[i], cfg)))
                   for i in range(args.students)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"{args.students} runs of {cfg.steps} steps trained in {time.monotonic() - t0:.0f} s")
        teacher, endpoint = sign_in_teacher(url, run, login)
        logs = sorted(workdir.rglob("steps.jsonl"))
        rep["runs"] = len(logs)
        time.sleep(2)  # the last runs' clean-up
        for mode in ("unchanged", "changed"):
            lat, c0, w0 = [], cpu_s(proc.pid), time.monotonic()
            for k in range(args.views):
                if mode == "changed":
                    with open(logs[k % len(logs)], "a", encoding="utf-8") as fh:
                        fh.write(json.dumps({"step": 1000 + k, "loss": 1.0, "metric": None, "elapsed": 1.0}) + "\n")
                t = time.monotonic()
                if class_view(teacher, endpoint, 0.0) is None:
                    raise SystemExit("a Class view came back without the class")
                lat.append(time.monotonic() - t)
            wall, cpu = time.monotonic() - w0, cpu_s(proc.pid) - c0
            idle0 = cpu_s(proc.pid)
            time.sleep(wall)  # the anchor: the same server, the same wall time, no view
            idle = cpu_s(proc.pid) - idle0
            rep[mode] = {"views": args.views, "cpu_ms_per_view": round(1000 * cpu / args.views, 1),
                         "idle_cpu_ms_same_wall": round(1000 * idle / args.views, 1),
                         "latency_p50_ms": round(1000 * pct(lat, 0.5), 1),
                         "latency_p95_ms": round(1000 * pct(lat, 0.95), 1),
                         "share_of_a_core_at_3s": round((cpu - idle) / args.views / cfg.teacher_every, 4)}
            r = rep[mode]
            print(f"{mode}: {r['cpu_ms_per_view']} ms of server CPU per view (idle anchor {r['idle_cpu_ms_same_wall']} "
                  f"ms over the same wall time), latency p50 {r['latency_p50_ms']} ms, p95 {r['latency_p95_ms']} ms "
                  f"(n = {args.views}); at one view every {cfg.teacher_every:.0f} s: "
                  f"{100 * r['share_of_a_core_at_3s']:.2f}% of one core")
    finally:
        stop_app(proc)
    write_json(args.json, rep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
