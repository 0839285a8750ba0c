"""The class as a whole: what the teacher shows to everyone, the exercise, the export and the reset.

Kept in the class folder beside the run records (``runlog.RunLog``) and the students' names
(``roster.Roster``):

- ``class.json``: the pushed prefixes (shown first in everyone's Switch and Attention, and
  forkable) and the exercise (a task and the settings everyone must use);
- ``exports/``: the class's results as a CSV of runs and a zip of the pushed prefixes (PEFT
  format), made before a reset and on request.

A reset clears the runs, the class's saved prefixes, the pushed list, the exercise and the
chosen names. The shipped prefixes are never touched (the library refuses to change them).
"""

from __future__ import annotations

import csv
import json
import os
import re
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import PlaygroundError
from .library import Library
from .models import BaseModel
from .peft_folder import make_card
from .roster import Roster
from .runlog import RunLog, RunRecord, write_atomic

CLASS_FILE = "class.json"
# The settings an exercise may fix, by where they live in a run record, with the label students see.
EXERCISE_FIELDS = {
    "num_virtual_tokens": ("prefix_settings", "virtual tokens"),
    "init": ("prefix_settings", "initialization"),
    "prefix_projection": ("prefix_settings", "MLP (prefix_projection)"),
    "learning_rate": ("train_settings", "learning rate"),
    "steps": ("train_settings", "steps"),
    "batch_size": ("train_settings", "batch size"),
    "seed": ("train_settings", "seed"),
    "eval_every": ("train_settings", "held-out metric every N steps"),
    "eval_examples": ("train_settings", "held-out examples"),
}
CSV_COLUMNS = ["run_id", "student", "task", "metric", "split", "n", "start %", "final %", "state", "steps_done",
               "steps", "num_virtual_tokens", "init", "prefix_projection", "learning_rate", "batch_size", "seed",
               "eval_every", "eval_examples", "precision", "forked_from", "pushed_as", "started", "command"]


@dataclass
class Exercise:
    """What the teacher fixes: the task, and some settings; students choose the rest."""

    task: str  # the built-in task everyone trains
    fixed: dict = field(default_factory=dict)  # setting name (EXERCISE_FIELDS) -> the value everyone uses
    note: str = ""  # the teacher's words to the class, shown on the Train tab

    def describe(self) -> str:
        fixed = ", ".join(f"{EXERCISE_FIELDS[k][1]} = {v}" for k, v in self.fixed.items())
        return f"task {self.task}" + (f"; {fixed}" if fixed else "")

    def check(self, task: str, prefix_settings: dict, train_settings: dict) -> None:
        """Refuse a run that leaves the exercise, naming each setting to put back."""
        wrong = [] if task == self.task else [f"task = {self.task} (not {task})"]
        for k, want in self.fixed.items():
            where, label = EXERCISE_FIELDS[k]
            got = (prefix_settings if where == "prefix_settings" else train_settings).get(k)
            same = (abs(float(got) - float(want)) <= 1e-12 * max(1.0, abs(float(want)))
                    if isinstance(want, float) and isinstance(got, (int, float)) else got == want)
            if not same:
                wrong.append(f"{label} = {want} (not {got})")
        if wrong:
            raise PlaygroundError(f"This class's exercise fixes {'; '.join(wrong)}. Set "
                                  f"{'it' if len(wrong) == 1 else 'them'} back and press Train again.")


@dataclass
class Pushed:
    """A prefix the teacher shows to the class: a library name, and the run it came from (if any)."""

    name: str
    author: str
    run_id: str = ""
    at: float = 0.0


class Classroom:
    def __init__(self, folder: str | Path, library: Library, runs: RunLog, roster: Roster):
        self.folder, self.library, self.runs, self.roster = Path(folder), library, runs, roster
        self._lock = threading.Lock()
        self._state: dict | None = None

    # ---- state on disk ---------------------------------------------------------------------------
    def _read(self) -> dict:
        if self._state is None:
            path = self.folder / CLASS_FILE
            try:
                data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            except (OSError, ValueError):
                data = {}
            self._state = data if isinstance(data, dict) else {}
        return self._state

    def _write(self, state: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder / CLASS_FILE, json.dumps(state, indent=1))
        self._state = state

    # ---- the exercise ----------------------------------------------------------------------------
    def exercise(self) -> Exercise | None:
        with self._lock:
            e = self._read().get("exercise")
        return Exercise(**e) if isinstance(e, dict) else None

    def set_exercise(self, task: str, fixed: dict, note: str = "") -> Exercise:
        unknown = sorted(set(fixed) - set(EXERCISE_FIELDS))
        if unknown:
            raise PlaygroundError(f"An exercise can't fix {', '.join(unknown)}; it can fix "
                                  f"{', '.join(EXERCISE_FIELDS)}.")
        if len(note) > 500:
            raise PlaygroundError("The exercise's note has more than 500 characters: shorten it.")
        ex = Exercise(task, dict(fixed), note.strip())
        with self._lock:
            self._write({**self._read(), "exercise": asdict(ex)})
        return ex

    def clear_exercise(self) -> None:
        with self._lock:
            state = dict(self._read())
            state.pop("exercise", None)
            self._write(state)

    # ---- pushed prefixes -------------------------------------------------------------------------
    def pushed(self) -> list[Pushed]:
        """The pushed prefixes still in the library, the latest first."""
        with self._lock:
            items = [Pushed(**p) for p in self._read().get("pushed", []) if isinstance(p, dict)]
        have = set(self.library.names())
        return [p for p in items if p.name in have]

    def _add(self, p: Pushed) -> Pushed:
        with self._lock:
            state = self._read()
            items = [x for x in state.get("pushed", []) if x.get("name") != p.name]
            self._write({**state, "pushed": [asdict(p), *items]})
        return p

    def push_run(self, run_id: str, base: BaseModel) -> Pushed:
        """Save a run's prefix into the library (its author still owns it) and show it to the class."""
        rec = self.runs.get(run_id)
        if not rec.has_prefix:
            raise PlaygroundError(f"The run '{run_id}' has no trained prefix yet: push it once it has finished "
                                  "or been stopped.")
        for p in self.pushed():  # pushed already: the same name again
            if p.run_id == run_id:
                return self._add(Pushed(p.name, p.author, run_id, time.time()))
        name = self._free_name(f"{_slug(rec.author)}-{rec.task}")
        prefix = self.runs.load_prefix(run_id, base)
        metrics = {"split": rec.held_out.get("split"), "metric": rec.metric, "n": rec.held_out.get("n"),
                   **{k: round(v, 4) for k, v in rec.baselines.items() if isinstance(v, (int, float))}}
        if rec.final_metric is not None:
            metrics["prefix"] = round(rec.final_metric, 4)
        card = make_card(base, rec.task, {**rec.train_settings, "steps_done": rec.steps_done}, metrics,
                         instruction=rec.instruction, author=rec.author, run_id=run_id)
        self.library.save(name, prefix, card, owner=rec.owner or None)
        return self._add(Pushed(name, rec.author, run_id, time.time()))

    def push_prefix(self, name: str) -> Pushed:
        e = self.library.find(name)
        if e is None:
            raise PlaygroundError(f"No prefix named '{name}' in the library.")
        author = self.library.card(e).get("author") or ("shipped" if e.shipped else "the class")
        return self._add(Pushed(e.name, str(author), str(self.library.card(e).get("run_id") or ""), time.time()))

    def unpush(self, name: str) -> None:
        with self._lock:
            state = self._read()
            self._write({**state, "pushed": [x for x in state.get("pushed", []) if x.get("name") != name]})

    def _free_name(self, stem: str) -> str:
        stem = stem[:56].strip("-.") or "run"
        taken = {n.casefold() for n in self.library.names()}
        for i in range(1, 1000):
            name = stem if i == 1 else f"{stem}-{i}"
            if name.casefold() not in taken:
                return name
        raise PlaygroundError("The library has too many prefixes of this name: delete some.")

    # ---- export and reset ------------------------------------------------------------------------
    def export(self, out_dir: str | Path | None = None) -> tuple[Path, Path]:
        """The class's runs as a CSV and the pushed prefixes as a zip (one PEFT folder each)."""
        out = Path(out_dir) if out_dir is not None else self.folder / "exports"
        out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        pushed = self.pushed()
        by_run = {p.run_id: p.name for p in pushed if p.run_id}
        csv_path, zip_path = out / f"class-runs-{stamp}.csv", out / f"class-prefixes-{stamp}.zip"
        tmp = csv_path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(CSV_COLUMNS)
            for r in self.runs.records():
                w.writerow(_csv_row(r, by_run.get(r.run_id, "")))
        os.replace(tmp, csv_path)
        tmp = zip_path.with_suffix(".zip.tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for p in pushed:
                e = self.library.find(p.name)
                for f in sorted(e.path.iterdir()) if e is not None else []:
                    if f.is_file() and not f.name.startswith("."):
                        z.write(f, f"{p.name}/{f.name}")
        os.replace(tmp, zip_path)
        return csv_path, zip_path

    def reset(self) -> dict:
        """Clear the class (runs, its saved prefixes, pushed list, exercise, names); the shipped set stays."""
        deleted = 0
        for e in self.library.entries():
            if not e.shipped:
                self.library.delete(e.name)
                deleted += 1
        runs = self.runs.clear()
        with self._lock:
            self._write({})
        self.roster.clear_names()
        return {"runs": runs, "prefixes": deleted}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.casefold()).strip("-")[:24] or "student"


def _csv_row(r: RunRecord, pushed_as: str) -> list:
    ps, ts = r.prefix_settings, r.train_settings
    pct = lambda v: "" if v is None else f"{100 * v:.1f}"  # noqa: E731
    return [r.run_id, r.author, r.task, r.metric, r.held_out.get("split", ""), r.held_out.get("n", ""),
            pct(r.start_metric), pct(r.final_metric), r.state, r.steps_done, ts.get("steps"),
            ps.get("num_virtual_tokens"), ps.get("init"), ps.get("prefix_projection"), ts.get("learning_rate"),
            ts.get("batch_size"), ts.get("seed"), ts.get("eval_every"), ts.get("eval_examples"), ts.get("precision"),
            r.forked_from, pushed_as, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started)), r.command]
