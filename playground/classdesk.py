"""The class's runs for the web app: a learner's own, every run for the teacher, and the teacher's actions.

``ClassDesk`` sits on a ``Playground``: it reads the run records of the class folder (the
step-by-step logs are appended as runs train, so the teacher's view is live), and checks the
teacher's role before every action that changes the class (push, exercise, export, reset).
A student sees and compares their own runs, and forks what the teacher shared.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import plotly.graph_objects as go

from .classroom import Exercise, Pushed
from .errors import PlaygroundError
from .runfigures import leaderboard_rows, runs_figure
from .service import Playground

MAX_OVERLAY = 40  # runs one plot overlays (a class of 30, and a few runs more)


@dataclass(frozen=True)
class ClassView:
    """What the teacher's Class tab shows at one moment (shared by every teacher's page: read, never change)."""

    everyone: list[dict]  # every run record of the class, oldest first
    live: list[dict]  # each student's latest run with its steps, oldest first
    loss: go.Figure  # every live run's training loss, overlaid
    metric: go.Figure  # their held-out metric
    board: tuple[list[str], list[list]]  # the leaderboard's headers and rows


class ClassDesk:
    def __init__(self, pg: Playground):
        self.pg = pg
        self._view: tuple[tuple, ClassView] | None = None  # (the class folder's signature, the view drawn from it)
        self._view_lock = threading.Lock()

    def _teacher(self, key: str) -> None:
        if not self.pg.is_teacher(key):
            raise PlaygroundError("Only the teacher can do this. Sign in with the teacher's login first.")

    # ---- runs -----------------------------------------------------------------------------------
    def runs(self, key: str, everyone: bool = False) -> list[dict]:
        """Run records as dicts, oldest first: this learner's own, or (the teacher) the whole class's."""
        if everyone:
            self._teacher(key)
        return [asdict(r) for r in self.pg.runs.records() if everyone or r.owner == key]

    def with_steps(self, key: str, run_ids: list[str], everyone: bool = False) -> list[dict]:
        """The chosen runs (at most MAX_OVERLAY) with their step-by-step logs under ``steps``."""
        mine = {r["run_id"]: r for r in self.runs(key, everyone)}
        out = []
        for rid in list(dict.fromkeys(run_ids))[:MAX_OVERLAY]:
            if rid not in mine:
                raise PlaygroundError(f"No run '{rid}' among {'the class' if everyone else 'your'} runs. Refresh "
                                      "the list.")
            out.append({**mine[rid], "steps": self.pg.runs.steps(rid)})
        return out

    def live(self, key: str, latest: int = MAX_OVERLAY, runs: list[dict] | None = None) -> list[dict]:
        """The teacher's view: each student's latest run (running or not) with its log, newest last. ``runs``:
        the class's records when the caller has just read them (``runs(key, everyone=True)``)."""
        self._teacher(key)
        latest_by: dict[str, dict] = {}
        for r in runs if runs is not None else self.runs(key, everyone=True):
            latest_by[r["owner"]] = r  # records are oldest first: the last one wins
        recent = sorted(latest_by.values(), key=lambda r: r["started"])[-latest:]
        return [{**r, "steps": self.pg.runs.steps(r["run_id"])} for r in recent]

    def view(self, key: str) -> ClassView:
        """The teacher's view: the records, the live runs, both overlays and the leaderboard. Drawn again only
        when a run began, stepped or changed (``RunLog.signature``); otherwise every refresh, of any teacher's
        page, gets the same view for a few stat calls, so watching the class costs the class's training
        almost nothing."""
        self._teacher(key)
        with self._view_lock:
            sig = self.pg.runs.signature()
            if self._view is None or self._view[0] != sig:
                everyone = self.runs(key, everyone=True)
                live = self.live(key, runs=everyone)
                self._view = sig, ClassView(everyone, live, runs_figure(live, "loss"), runs_figure(live, "metric"),
                                            leaderboard_rows(everyone))
            return self._view[1]

    def command(self, key: str, run_id: str) -> str:
        """The ``python -m playground train ...`` line that reproduces a run (one's own, or any for the teacher)."""
        rec = self.pg.runs.get(run_id)
        if rec.owner != key:
            self._teacher(key)
        return rec.command

    # ---- sharing --------------------------------------------------------------------------------
    def push_run(self, key: str, run_id: str) -> Pushed:
        self._teacher(key)
        return self.pg.classroom.push_run(run_id, self.pg.base)

    def push_prefix(self, key: str, name: str) -> Pushed:
        self._teacher(key)
        return self.pg.classroom.push_prefix(name)

    def unpush(self, key: str, name: str) -> None:
        self._teacher(key)
        self.pg.classroom.unpush(name)

    def shared(self) -> list[Pushed]:
        return self.pg.classroom.pushed()

    def fork(self, name: str) -> dict:
        """What a fork of a shared prefix starts with: its task and settings (from its run, else its card)."""
        p = next((x for x in self.pg.classroom.pushed() if x.name == name), None)
        if p is None:
            raise PlaygroundError(f"'{name}' is not shared with the class (any more). Refresh the list.")
        if p.run_id:
            try:
                r = self.pg.runs.get(p.run_id)
                return {"task": r.task, "prefix_settings": r.prefix_settings, "train_settings": r.train_settings,
                        "name": name, "author": p.author}
            except PlaygroundError:
                pass  # the run was cleared: the card still has the training settings
        card = self.pg.library_card(name)
        return {"task": card.get("task"), "prefix_settings": {}, "train_settings": dict(card.get("training") or {}),
                "name": name, "author": p.author}

    # ---- the exercise ---------------------------------------------------------------------------
    def exercise(self) -> Exercise | None:
        return self.pg.classroom.exercise()

    def set_exercise(self, key: str, task: str, fixed: dict, note: str = "") -> Exercise:
        self._teacher(key)
        self.pg.task(key, task)  # a task this server has (an error names the choices)
        return self.pg.classroom.set_exercise(task, fixed, note)

    def clear_exercise(self, key: str) -> None:
        self._teacher(key)
        self.pg.classroom.clear_exercise()

    # ---- export and reset -----------------------------------------------------------------------
    def export(self, key: str) -> tuple[Path, Path]:
        self._teacher(key)
        return self.pg.classroom.export()

    def reset(self, key: str) -> dict:
        """Stop every student's run, then clear the class (the shipped prefixes stay)."""
        self._teacher(key)
        self.pg.stop_all()
        return self.pg.classroom.reset()
