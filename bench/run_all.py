"""Run the whole benchmark suite, one benchmark at a time, and collect the results (``make bench``).

Each benchmark runs in its own process (so none inherits another's memory or threads), its
output goes to ``bench/results/NAME.txt``, its figures to ``bench/results/NAME.json``, and
its last line (the ratio) into ``bench/results/summary.md``. Then ``bench/charts.py`` draws
the charts that BENCHMARKS.md shows. On 2 cores the suite takes about 12 minutes (9.6 min in the run BENCHMARKS.md records, before
bench/turn_pauses.py joined it, which takes about 2 minutes).

    .venv/bin/python bench/run_all.py [--only NAME ...] [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# name -> (script, full arguments, --quick arguments): the quick set checks the plumbing in a few minutes
SUITE = {
    "time_to_accuracy": ("time_to_accuracy.py", ["--cap", "60"], ["--cap", "3"]),
    "throughput": ("throughput.py", ["--steps", "12"], ["--steps", "4"]),
    "mixed_batch": ("mixed_batch.py", [], ["--tokens", "6", "--repeats", "1"]),
    "prefix_overhead": ("prefix_overhead.py", [], ["--new-tokens", "4", "--repeats", "1"]),
    "attention_latency": ("attention_latency.py", [], ["--repeats", "3"]),
    "attention_batch": ("attention_batch.py", [], ["--views", "1", "4", "--repeats", "1"]),
    "probe_overhead": ("probe_overhead.py", [], ["--repeats", "1", "--steps", "4"]),
    "cold_start": ("cold_start.py", ["--repeats", "3"], ["--repeats", "1"]),
    "peak_memory": ("peak_memory.py", ["--steps", "20"], ["--steps", "3"]),
    "turn_pauses": ("turn_pauses.py", [], ["--rows", "12", "--digits", "300", "--eval-examples", "2"]),
    "class_load": ("class_load.py", ["--students", "10"],
                   ["--students", "2", "--steps", "2", "--eval-examples", "4", "--switchers", "1"]),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", choices=list(SUITE), help="run just these")
    ap.add_argument("--quick", action="store_true", help="tiny budgets: check that everything runs")
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    names = args.only or list(SUITE)
    summary, failed = [], []
    start = time.perf_counter()
    for name in names:
        script, full, quick = SUITE[name]
        cmd = [sys.executable, str(HERE / script), *(quick if args.quick else full), "--json", str(RESULTS / f"{name}.json")]
        print(f"== {name}: {' '.join(Path(c).name if c.endswith('.py') else c for c in cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        with open(RESULTS / f"{name}.txt", "w") as log:
            proc = subprocess.Popen(cmd, cwd=HERE.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            lines = []
            for line in proc.stdout:
                log.write(line)
                lines.append(line.rstrip("\n"))
                print("   ", line, end="", flush=True)
            proc.wait()
        secs = time.perf_counter() - t0
        last = next((ln for ln in reversed(lines) if ln.strip()), "")
        if proc.returncode:
            failed.append(name)
            last = f"FAILED (exit {proc.returncode}): {last}"
        summary.append(f"| {name} | {last} | {secs:.0f} s |")
    total = time.perf_counter() - start
    table = ["| benchmark | last line (the ratio) | wall time |", "|---|---|---|", *summary]
    (RESULTS / "summary.md").write_text("\n".join(table) + f"\n\nWhole suite: {total / 60:.1f} min\n")
    print("\n".join(table))
    print(f"whole suite: {total / 60:.1f} min")
    if not args.quick:
        subprocess.run([sys.executable, str(HERE / "charts.py")], cwd=HERE.parent)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
