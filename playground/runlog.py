"""The class's record of every training run: one folder per run, and the command that reproduces it.

    runs/
        20261126-231900-alex-3f9a1c/
            run.json        the RunRecord: who, which task, settings, held-out scores, state
            steps.jsonl     one JSON line per training step, appended as the run goes
            train.jsonl     an uploaded task's examples ({"input", "target"} lines), so the
            test.jsonl      command can rerun it; absent for a built-in task
            prefix/         the trained prefix in PEFT's format (peft_folder.py), once saved

Nothing here is ever half written: a run folder appears by one rename of a hidden folder,
``run.json`` and ``prefix/`` are replaced by a rename, and a step line is written whole (a
line torn by a killed process is skipped on reading). Run ids come from browsers, so every id
is checked against the form ``new_id`` makes before the disk is touched. Settings arrive as
plain dicts (``dataclasses.asdict`` of PrefixSettings and TrainSettings), so this module
knows nothing of training; ``train_command`` turns them back into ``python -m playground
train`` flags, which ``cli.settings_from_args`` reads back field for field.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import shlex
import shutil
import time
import unicodedata
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .errors import PlaygroundError
from .models import DEFAULT_MODEL, BaseModel
from .names import check_name
from .peft_folder import MAX_CARD_CHARS, load_prefix, write_prefix
from .prefix import Prefix
from .tasks import Task

RUN_FILE = "run.json"
STEPS_FILE = "steps.jsonl"
PROBES_FILE = "attention.jsonl"  # the attention on the prefix at step 0 and every few steps (probe.py)
PREFIX_DIR = "prefix"
DATA_FILES = ("train", "test")  # an uploaded task's splits, written as <split>.jsonl
RUN_ID_RE = re.compile(r"^\d{8}-\d{6}-[a-z0-9-]{1,24}-[0-9a-f]{6}$")  # exactly what new_id makes
STATES = ("running", "finished", "stopped")


@dataclass
class RunRecord:
    """One training run as the class sees it (stored as run.json)."""

    run_id: str
    owner: str  # identity key that started it (e.g. "user:alex"); never shown
    author: str  # display name shown to the class
    task: str  # built-in task name, or "upload"
    task_title: str
    metric: str  # metric key, e.g. "exact_match"
    instruction: str
    data_fingerprint: str = ""  # sha256 (hex) of an uploaded task's examples; "" for a built-in task
    model: str = ""  # the base model's name/id as the app was started with
    prefix_settings: dict = field(default_factory=dict)  # asdict(PrefixSettings), num_virtual_tokens as run
    train_settings: dict = field(default_factory=dict)  # asdict(TrainSettings)
    started: float = 0.0  # epoch seconds
    ended: float | None = None
    state: str = "running"  # "running", "finished" or "stopped"
    steps_done: int = 0
    start_metric: float | None = None  # held-out metric at step 0
    final_metric: float | None = None  # held-out metric at the end
    held_out: dict = field(default_factory=dict)  # {"split": "validation", "n": 32}
    summary: list = field(default_factory=list)  # the final table: one dict per way of answering
    examples: list = field(default_factory=list)  # before/after rows on held-out examples
    baselines: dict = field(default_factory=dict)  # {"base": 0.1, "instruction": 0.3, ...} held-out scores
    command: str = ""  # the `python -m playground train ...` line that reproduces the run
    forked_from: str = ""  # the run_id this run's prefix started from ("" if none)
    has_prefix: bool = False  # the trained prefix is stored in the run folder (PEFT format); read from the disk
    note: str = ""  # e.g. why it stopped
    probe_text: str = ""  # the held-out prompt its attention on the prefix was recorded on (probe.py)

    @classmethod
    def from_dict(cls, d: dict) -> "RunRecord":
        """A record from run.json's object; keys this version does not know are ignored."""
        if not isinstance(d, dict):
            raise TypeError("run.json must hold an object")
        known = {f.name for f in fields(cls)}
        rec = cls(**{k: v for k, v in d.items() if k in known})
        check_id(rec.run_id)
        return rec


def check_id(run_id) -> str:
    """``run_id`` if it has the form ``new_id`` makes (so it names a folder inside the log), else the refusal."""
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
        shown = repr(run_id) if len(repr(run_id)) <= 60 else repr(run_id)[:57] + "..."
        raise PlaygroundError(f"No run {shown} in this class: run ids look like '20260101-120000-alex-1a2b3c'. "
                              "Pick a run from the class's list.")
    return run_id


def _plain(v):
    """``v`` as strict JSON can hold it: NaN and infinities become None (so a reader never meets NaN)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _dumps(v, **kw) -> str:
    return json.dumps(_plain(v), allow_nan=False, ensure_ascii=False, **kw)


def write_atomic(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a hidden temporary file beside it, flushed, then renamed over it."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _slug(text: str) -> str:
    """'Zoë O'Neil' -> 'zoe-o-neil': ASCII letters and digits joined by single dashes."""
    ascii_ = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-")


def fingerprint(task: Task) -> str:
    """sha256 (hex) over the task's train and test examples, in order: one changed target changes it."""
    h = hashlib.sha256()
    for split in DATA_FILES:
        for e in task.splits.get(split, []):
            h.update((json.dumps([split, e.input, e.target], ensure_ascii=False) + "\n").encode("utf-8"))
    return h.hexdigest()


def train_command(rec: RunRecord, library: str | Path | None, data_dir: str | Path | None = None,
                  start_from: str | Path | None = None) -> str:
    """The shell line that reruns ``rec``: every flag of ``python -m playground train`` that the run's
    settings decide, each value quoted. Flags that don't change the run (the init text of a run that
    doesn't start from text, say) are left out. An uploaded task needs ``data_dir`` (its train.jsonl and
    test.jsonl); a forked run needs ``start_from``, the prefix folder it started from."""
    ps, ts = rec.prefix_settings, rec.train_settings
    flags: list[tuple[str, object]] = []
    if data_dir is not None:
        d = Path(data_dir)
        flags += [("--data", d / "train.jsonl"), ("--test-data", d / "test.jsonl"),
                  ("--instruction", rec.instruction), ("--metric", rec.metric)]
    else:
        flags.append(("--task", rec.task))
    init = ps.get("init", "task")
    flags += [("--num-virtual-tokens", ps.get("num_virtual_tokens", 20)), ("--init", init)]
    if init == "text":
        flags.append(("--init-text", ps.get("init_text", "")))
    if init == "demos":
        flags.append(("--init-shots", ps.get("init_shots")))
    if ps.get("prefix_projection"):
        flags += [("--prefix-projection", None), ("--encoder-hidden-size", ps.get("encoder_hidden_size"))]
    flags += [("--lr", ts.get("learning_rate")), ("--steps", ts.get("steps")), ("--batch-size", ts.get("batch_size")),
              ("--seed", ts.get("seed")), ("--eval-every", ts.get("eval_every")),
              ("--eval-examples", ts.get("eval_examples")), ("--precision", ts.get("precision", "auto")),
              ("--name", rec.run_id)]
    if library is not None:
        flags.append(("--library", library))
    if rec.model and rec.model != DEFAULT_MODEL:
        flags.append(("--model", rec.model))
    if start_from is not None:
        flags.append(("--start-from", start_from))
    words = ["python", "-m", "playground", "train"]
    for flag, value in flags:
        words.append(flag)
        if value is not None:
            words.append(shlex.quote(str(value)))  # str(float) is the shortest text that reads back the same float
    return " ".join(words)


class RunLog:
    """The runs of one class, one folder each under ``root`` (made on the first write)."""

    def __init__(self, root: str | Path, library: str | Path | None = None):
        self.root = Path(root).expanduser().resolve()  # absolute: the commands name paths inside it
        self.library = Path(library).expanduser().resolve() if library is not None else None

    # ---- Paths: every id checked before the disk is touched ------------------------------------
    def _dir(self, run_id: str) -> Path:
        return self.root / check_id(run_id)

    def _existing(self, run_id: str) -> Path:
        d = self._dir(run_id)
        if not (d / RUN_FILE).is_file():
            raise PlaygroundError(f"No run '{run_id}' in this class: it may have been cleared. Pick a run from the "
                                  "class's list.")
        return d

    def prefix_path(self, run_id: str) -> Path:
        return self._dir(run_id) / PREFIX_DIR

    # ---- Writing -------------------------------------------------------------------------------
    def new_id(self, author: str) -> str:
        """A fresh run id, e.g. '20261126-231900-alex-3f9a1c' (UTC time, the author's name, 6 random hex)."""
        slug = _slug(author)[:24].strip("-") or "run"
        return check_name(f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{slug}-{secrets.token_hex(3)}")

    def begin(self, rec: RunRecord, data: Task | None = None) -> RunRecord:
        """Create the run's folder with run.json (and, for an uploaded task ``data``, its examples), in one
        rename; sets ``rec.data_fingerprint`` and ``rec.command``."""
        d = self._dir(rec.run_id)
        if d.exists():
            raise PlaygroundError(f"A run '{rec.run_id}' already exists in this class; start the run again.")
        start_from = self.prefix_path(rec.forked_from) if rec.forked_from else None
        if data is not None:
            rec.data_fingerprint = fingerprint(data)
        rec.command = train_command(rec, self.library, d if data is not None else None, start_from)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".new-{rec.run_id}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            if data is not None:
                for split in DATA_FILES:
                    lines = "".join(_dumps({"input": e.input, "target": e.target}) + "\n" for e in data.split(split))
                    (tmp / f"{split}.jsonl").write_text(lines, encoding="utf-8")
            (tmp / RUN_FILE).write_text(_dumps(asdict(rec), indent=1) + "\n", encoding="utf-8")
            os.rename(tmp, d)  # the run appears whole, or not at all
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return rec

    def step(self, run_id: str, row: dict) -> None:
        """Append one JSON line to the run's steps.jsonl, written whole and flushed."""
        self._append(self._existing(run_id) / STEPS_FILE, row)

    def probe(self, run_id: str, row: dict) -> None:
        """Append one recording of the attention on the prefix (``probe.ProbePoint.as_dict``) to attention.jsonl."""
        self._append(self._existing(run_id) / PROBES_FILE, row)

    @staticmethod
    def _append(path: Path, row: dict) -> None:
        line = (_dumps(row) + "\n").encode("utf-8")
        with open(path, "ab+") as f:
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a line torn by a killed writer: start a new one, so this one stays whole
                    line = b"\n" + line
            f.write(line)  # one write of the whole line, at the end (append mode)
            f.flush()

    def update(self, rec: RunRecord) -> None:
        """Rewrite the run's run.json (whole: a temporary file renamed over it). ``rec.has_prefix`` is set from
        the disk, so a record held since before ``save_prefix`` does not hide the saved prefix."""
        d = self._existing(rec.run_id)
        rec.has_prefix = (d / PREFIX_DIR).is_dir()
        write_atomic(d / RUN_FILE, _dumps(asdict(rec), indent=1) + "\n")

    def save_prefix(self, run_id: str, prefix: Prefix) -> None:
        """Store the trained prefix in PEFT's format under <run>/prefix/ (replacing one saved before), and
        set ``has_prefix``."""
        rec = self.get(run_id)
        d = self._dir(run_id)
        card = {"name": run_id, "task": rec.task[:MAX_CARD_CHARS], "run": run_id, "settings": rec.prefix_settings,
                "training": rec.train_settings}
        if rec.model and len(rec.model) <= MAX_CARD_CHARS:
            card["base_model"] = rec.model
        tmp = d / f".{PREFIX_DIR}-{secrets.token_hex(4)}"
        old = d / f".{PREFIX_DIR}-old-{secrets.token_hex(4)}"
        try:
            write_prefix(tmp, prefix, card)
            dest = d / PREFIX_DIR
            if dest.exists():
                os.rename(dest, old)  # (a kill here leaves no prefix; has_prefix still names the old one)
            os.rename(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
        self.update(self.get(run_id))  # read again: the run may have been updated while the files were written

    def load_prefix(self, run_id: str, base: BaseModel) -> Prefix:
        path = self.prefix_path(run_id)
        if not path.is_dir():
            self._existing(run_id)
            raise PlaygroundError(f"Run '{run_id}' has no saved prefix (it was stopped before one was stored). "
                                  "Pick a finished run.")
        return load_prefix(path, base)

    # ---- Reading -------------------------------------------------------------------------------
    def get(self, run_id: str) -> RunRecord:
        path = self._existing(run_id) / RUN_FILE
        try:
            rec = RunRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, PlaygroundError):
            raise PlaygroundError(f"No run '{run_id}' in this class that can be read: its {RUN_FILE} is damaged. "
                                  "Pick another run.") from None
        if rec.run_id != run_id:  # a folder copied under another name
            raise PlaygroundError(f"No run '{run_id}' in this class that can be read: its {RUN_FILE} names another "
                                  "run. Pick another run.")
        rec.has_prefix = (path.parent / PREFIX_DIR).is_dir()
        return rec

    def steps(self, run_id: str) -> list[dict]:
        """Every complete line of the run's steps.jsonl; a torn line (a writer killed mid-line) is skipped."""
        return self._lines(self._existing(run_id) / STEPS_FILE)

    def probes(self, run_id: str) -> list[dict]:
        """The run's recordings of the attention on its prefix (attention.jsonl), as ``steps`` reads lines."""
        return self._lines(self._existing(run_id) / PROBES_FILE)

    @staticmethod
    def _lines(path: Path) -> list[dict]:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        out = []
        for line in text.split("\n"):
            try:
                row = json.loads(line)
            except ValueError:
                continue  # blank, or torn
            if isinstance(row, dict):
                out.append(row)
        return out

    def _run_dirs(self) -> list[Path]:
        try:
            return [d for d in self.root.iterdir() if RUN_ID_RE.fullmatch(d.name) and d.is_dir()]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def signature(self) -> tuple:
        """What changes whenever a run is begun, steps, is updated or cleared: each run folder's name, its
        run.json's inode (every update renames a new file over it), modification time and size, and its
        steps.jsonl's size (appended to). A few stat calls, so a view can skip re-reading every record when
        nothing changed."""
        def stat(path: Path) -> tuple[int, int, int]:
            try:
                st = path.stat()
            except OSError:
                return -1, -1, -1
            return st.st_ino, st.st_mtime_ns, st.st_size
        return tuple(sorted((d.name, *stat(d / RUN_FILE), stat(d / STEPS_FILE)[2]) for d in self._run_dirs()))

    def records(self) -> list[RunRecord]:
        """Every run, oldest first; a folder whose run.json is missing or unreadable is skipped."""
        out = []
        for d in self._run_dirs():
            try:
                out.append(self.get(d.name))
            except PlaygroundError:
                continue
        return sorted(out, key=lambda r: (r.started if isinstance(r.started, (int, float)) else 0.0, r.run_id))

    def usage(self) -> tuple[int, int]:
        """(runs, bytes) under ``root``."""
        dirs = self._run_dirs()
        size = 0
        for d in dirs:
            for dirpath, _, files in os.walk(d):
                for name in files:
                    try:
                        size += os.lstat(os.path.join(dirpath, name)).st_size
                    except OSError:
                        pass  # removed while counted
        return len(dirs), size

    def clear(self) -> int:
        """Delete every run; returns how many there were. The folder is renamed aside first, so the runs
        vanish at once, then deleted (with leftovers of a clear that was killed half way)."""
        n = len(self._run_dirs())
        if self.root.exists():
            os.rename(self.root, self.root.parent / f".{self.root.name}.cleared-{secrets.token_hex(4)}")
        for old in self.root.parent.glob(f".{self.root.name}.cleared-*"):
            shutil.rmtree(old, ignore_errors=True)
        return n
