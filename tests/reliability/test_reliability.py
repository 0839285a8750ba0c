"""Nothing lost, settings and passwords: kill -9 mid-save, Stop and closed tabs, the read-only
library, the server's limits as flags, and Gradio's login on the real app.

The kill tests run the saves in real child processes and kill them with SIGKILL at each step of a
save, overwrite, delete and rename: in a fresh library, and in a busy one whose worker pauses at the
chosen step and says so before it is killed (no timing involved). Then a fresh ``Library`` (what the
next server start opens) must list only complete prefixes whose card and weights belong together, as
they were before the change or after it, with no hidden leftovers. The children are forked from one
helper process that imported torch and PEFT once, so a round costs milliseconds instead of an import.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from peft import PrefixTuningConfig

import ui.app as app
from playground.errors import PlaygroundError
from playground.library import Library
from playground.models import BaseModel
from playground.peft_folder import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE
from playground.prefix import Prefix, PrefixSettings, create_prefix
from playground.service import JUST_TRAINED, Limits, Playground
from playground.tasks import get_task
from playground.training import TrainSettings

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "prefixes"
# SmolLM2-135M's prefix geometry: 30 layers x 3 kv heads x 64; 128 virtual tokens make a 5.9 MB file.
P, L, H, D = 128, 30, 3, 192

# The helper process: imports once, then forks one worker per command read from stdin. A worker
# either churns (random saves, overwrites, renames and deletes) until it reaches a chosen step of a
# chosen kind of change, where it reports and blocks until the test kills it, or does one scripted
# change and kills itself at a chosen point. Every prefix is filled with one value, and its card says
# which: a card beside another save's weights would show.
HELPER = r'''
import json, os, random, signal, sys, traceback
import torch
torch.set_num_threads(1)  # no worker threads before fork()
from peft import PrefixTuningConfig
import playground.peft_folder as peft_folder_mod
from playground.library import Library
from playground.prefix import Prefix

root = sys.argv[1]
P, L, H, D = (int(x) for x in sys.argv[2:6])
cfg = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P, num_layers=L, token_dim=D, num_attention_heads=H)


def prefix(v):
    return Prefix.from_embeddings(cfg, torch.full((P, L * 2 * D), float(v)))


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def kill_after_replace(n):
    real, calls = os.replace, [0]
    def replace(a, b):
        real(a, b)
        calls[0] += 1
        if calls[0] == n:
            die()
    os.replace = replace


def kill_mid_write():
    real = peft_folder_mod.save_file
    def half(tensors, path, metadata=None):
        real(tensors, path, metadata=metadata)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        die()
    peft_folder_mod.save_file = half


def churn(cmd, hold):
    """Random changes; from change number ``warm`` on, stop at the first ``pause`` = [kind of change, step],
    where a step is "before"/"after" the n-th weights write, os.replace or os.unlink of that change."""
    rng, lib, names = random.Random(cmd["seed"]), Library(root), ["a", "b", "c", "d"]
    ctx = {}

    def step(label):
        if ctx["armed"] and [ctx["kind"], label] == cmd["pause"]:
            print(json.dumps({"paused": os.getpid(), "before": ctx["before"], "change": ctx["change"]}), flush=True)
            os.read(hold, 1)  # blocks until the kill; returns b"" only if the helper is gone (a failed test)
            os._exit(3)

    def hook(mod, attr, what):
        real = getattr(mod, attr)
        def counted(*a, **kw):
            n = ctx["n"][what] = ctx["n"].get(what, 0) + 1
            step(f"before {what} {n}")
            out = real(*a, **kw)
            step(f"after {what} {n}")
            return out
        setattr(mod, attr, counted)

    hook(peft_folder_mod, "save_file", "write")
    hook(os, "replace", "replace")
    hook(os, "unlink", "unlink")
    for i in range(500):
        v = cmd["seed"] * 100000 + i
        have, name, r = lib.names(), rng.choice(names), rng.random()
        free = [n for n in names if n not in have]
        if r < 0.6 or name not in have:
            kind, change = ("overwrite" if name in have else "new"), ["save", name, v]
        elif r < 0.8 and free:
            kind, change = "rename", ["rename", name, rng.choice(free)]
        elif r >= 0.8:
            kind, change = "delete", ["delete", name]
        else:
            continue
        ctx.update(kind=kind, change=change, n={}, armed=i >= cmd["warm"],
                   before={e.name: e.card.get("value") for e in lib.entries()})
        if kind in ("new", "overwrite"):
            lib.save(name, prefix(v), {"value": v}, overwrite=True)
        elif kind == "rename":
            lib.rename(name, change[2])
        else:
            lib.delete(name)
    raise SystemExit(f"500 changes and never at {cmd['pause']}")


def scripted(cmd):
    lib = Library(root)
    if cmd["kill"] == "write":
        kill_mid_write()
    else:
        kill_after_replace(cmd["kill"])
    if cmd["op"] == "save":
        lib.save(cmd["name"], prefix(cmd["value"]), {"value": cmd["value"]}, overwrite=True)
    elif cmd["op"] == "delete":
        lib.delete(cmd["name"])
    else:
        lib.rename(cmd["name"], cmd["new"])


for line in sys.stdin:
    cmd = json.loads(line)
    hold, held = os.pipe()  # a pausing worker reads ``hold``; nobody writes to ``held``
    pid = os.fork()
    if pid == 0:
        os.close(held)
        code = 0
        try:
            churn(cmd, hold) if cmd["op"] == "churn" else scripted(cmd)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        os._exit(code)  # not killed: the test sees exit code 0 or 1 instead of SIGKILL
    os.close(hold)
    _, status = os.waitpid(pid, 0)  # reaped: a zombie would still look alive to recovery
    os.close(held)
    print(json.dumps({"reaped": pid, "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}), flush=True)
'''


class Helper:
    def __init__(self, root: Path, log: Path):
        self.log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-c", HELPER, str(root), str(P), str(L), str(H), str(D)],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True)
        self.messages: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.messages.put(json.loads(line))

    def send(self, cmd: dict) -> None:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait_for(self, key: str, timeout: float = 120) -> dict:
        msg = self.messages.get(timeout=timeout)
        assert key in msg, msg
        return msg

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:  # a worker still running after a failed test: its churn sees the helper go
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def helper(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill") / "lib"
    root.mkdir()
    h = Helper(root, root.parent / "helper.log")
    h.root = root
    yield h
    h.close()


@pytest.fixture(scope="module")
def geometry() -> BaseModel:
    """A stand-in base model with SmolLM2's attention geometry: all that loading a prefix checks."""
    m = torch.nn.Module()
    m.config = SimpleNamespace(num_hidden_layers=L, num_attention_heads=9, num_key_value_heads=H, head_dim=D // H)
    return BaseModel("smollm2-geometry", m, None, torch.device("cpu"), torch.float32, "none")


def leftovers(root: Path) -> list[str]:
    """Hidden temporary folders in the library, and staged cards inside prefixes."""
    out = [p.name for p in root.iterdir() if p.name.startswith(".")]
    return out + [f"{d.name}/{f.name}" for d in root.iterdir() if d.is_dir() for f in d.iterdir()
                  if f.name.startswith(".")]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}


def check_complete(root: Path, base: BaseModel) -> dict[str, float]:
    """What the next start sees: only complete prefixes, each loading with weights that match its card."""
    lib = Library(root)  # recovers
    assert leftovers(root) == []
    assert sorted(p.name for p in root.iterdir()) == lib.names()  # no other folder is visible at all
    values = {}
    for e in lib.entries():
        assert {f.name for f in e.path.iterdir()} == {CONFIG_FILE, WEIGHTS_FILE, CARD_FILE}, e.name
        assert e.card["name"] == e.name
        emb = lib.load(e.name, base).embeddings()
        assert emb.shape == (P, L * 2 * D)
        assert torch.all(emb == e.card["value"]), f"{e.name}: its weights are not the save its card describes"
        values[e.name] = e.card["value"]
    return values


def const_prefix(v: float) -> Prefix:
    cfg = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P, num_layers=L, token_dim=D,
                             num_attention_heads=H)
    return Prefix.from_embeddings(cfg, torch.full((P, L * 2 * D), float(v)))


# (what is there before, the change and where it is killed: after the n-th os.replace or mid-write, what is there after)
KILLS = [
    ("overwrite, killed between its two renames", {"o1": 1}, dict(op="save", name="o1", value=2, kill=1), {"o1": 1}),
    ("overwrite, killed once the new one is in", {"o2": 1}, dict(op="save", name="o2", value=2, kill=2), {"o2": 2}),
    ("overwrite, killed dropping the old one", {"o3": 1}, dict(op="save", name="o3", value=2, kill=3), {"o3": 2}),
    ("overwrite, killed mid-write", {"o4": 1}, dict(op="save", name="o4", value=2, kill="write"), {"o4": 1}),
    ("new save, killed mid-write", {}, dict(op="save", name="n1", value=2, kill="write"), {}),
    ("new save, killed right after its rename", {}, dict(op="save", name="n2", value=2, kill=1), {"n2": 2}),
    ("delete, killed after the rename out", {"d1": 1}, dict(op="delete", name="d1", kill=1), {}),
    ("rename, killed before its card is in place", {"r1": 1}, dict(op="rename", name="r1", new="r2", kill=1),
     {"r2": 1}),
]


@pytest.mark.parametrize("setup, cmd, expect", [pytest.param(*k[1:], id=k[0]) for k in KILLS])
def test_kill_9_at_each_step_of_a_change_is_recovered_at_the_next_start(helper, geometry, setup, cmd, expect):
    lib = Library(helper.root)
    for name, v in setup.items():
        lib.save(name, const_prefix(v), {"value": v})
    others = {n: v for n, v in check_complete(helper.root, geometry).items() if n not in setup}
    helper.send(cmd)
    assert helper.wait_for("reaped")["signal"] == signal.SIGKILL, (helper.root.parent / "helper.log").read_text()
    assert leftovers(helper.root), "the kill left nothing to recover: the test missed its moment"
    assert check_complete(helper.root, geometry) == {**others, **expect}


# Where a busy library's worker is killed: (kind of change, step, what the next start must show). Steps count
# the change's own weights writes, os.replace and os.unlink calls; "before": the library as before the change.
STEPS = [
    ("new", "after write 1", "before"),  # weights written in the hidden folder, its card not yet
    ("new", "after replace 1", "after"),  # renamed into place, not yet flushed
    ("overwrite", "after write 1", "before"),
    ("overwrite", "before replace 1", "before"),  # written and flushed, the swap not begun
    ("overwrite", "after replace 1", "before"),  # mid-swap: the old one aside, its name empty
    ("overwrite", "after replace 2", "after"),  # the new one in, the old one still aside
    ("overwrite", "after replace 3", "after"),  # the old one renamed for removal
    ("overwrite", "after unlink 1", "after"),  # the old one half removed
    ("delete", "after replace 1", "after"),  # renamed out of the listing
    ("delete", "after unlink 1", "after"),  # half removed
    ("rename", "before replace 1", "before"),  # the new card staged inside the folder
    ("rename", "after replace 1", "after"),  # the folder renamed, its card still staged
]


@pytest.mark.parametrize("seed, kind, step, expect", [pytest.param(i, *k, id=f"{k[0]}, {k[1]}")
                                                      for i, k in enumerate(STEPS, 1)])
def test_kill_9_at_each_step_of_a_busy_library(helper, geometry, seed, kind, step, expect):
    """A worker makes random changes (save, overwrite, rename, delete 5.9 MB prefixes), then pauses at the
    chosen step and says so; it is killed there, and the next start must show the library as it was just
    before that change or just after it, never a mix, and a prefix nobody touched byte for byte."""
    keep = Library(helper.root)
    if "keep" not in keep.names():
        keep.save("keep", const_prefix(7), {"value": 7})
    kept = snapshot(helper.root / "keep")
    helper.send({"op": "churn", "seed": seed, "warm": 3, "pause": [kind, step]})
    msg = helper.wait_for("paused")  # bounded: 120 s, reached only if the worker hangs
    os.kill(msg["paused"], signal.SIGKILL)
    assert helper.wait_for("reaped") == {"reaped": msg["paused"], "signal": signal.SIGKILL}
    before, change = msg["before"], msg["change"]
    after = dict(before)
    if change[0] == "save":
        after[change[1]] = change[2]
    elif change[0] == "delete":
        del after[change[1]]
    else:
        after[change[2]] = after.pop(change[1])
    assert before != after
    assert leftovers(helper.root), "the kill left nothing to recover"
    assert check_complete(helper.root, geometry) == (before if expect == "before" else after), change
    assert snapshot(helper.root / "keep") == kept


# =============================================================================================
# Recovery rules that a kill cannot show: live owners, other hosts, old leftovers
# =============================================================================================
def test_recovery_spares_the_changes_of_live_processes(tmp_path):
    import playground.library as library_mod

    root = tmp_path / "lib"
    root.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = library_mod._host()
        mine = root / f".tmp-a~{host}~{live.pid}~0badcafe~abcdefgh"  # another live process, this host
        other = root / ".tmp-b~another-host~1~0badcafe~abcdefgh"  # a replica elsewhere, recent
        stale = root / ".del-c~another-host~1~0badcafe~abcdefgh"  # a replica elsewhere, two hours ago
        legacy = root / ".old-d-abcdefgh"  # a leftover from before owners were recorded
        for d in (mine, other, stale, legacy):
            d.mkdir()
        os.utime(stale, (time.time() - 7200, time.time() - 7200))
        Library(root)
        assert sorted(p.name for p in root.iterdir()) == sorted([mine.name, other.name])
    finally:
        live.kill()
        live.wait()
    Library(root)
    assert sorted(p.name for p in root.iterdir()) == [other.name]  # its owner is gone now


# =============================================================================================
# Stop and closed tabs mid-training
# =============================================================================================
@pytest.fixture
def pg(tiny_llama, tmp_path) -> Playground:
    torch.set_num_threads(1)  # tiny models: one thread is faster and steadier on a busy machine
    p = Playground(tiny_llama, Library(tmp_path / "lib"), Limits(max_steps=200, max_eval_examples=8))
    p._downloads = tmp_path / "downloads"
    p.library.save("shipped", create_prefix(tiny_llama, PrefixSettings(3, "random"), seed=1),
                   {"task": "sentiment", "base_model": tiny_llama.name, "base_fingerprint": tiny_llama.fingerprint})
    return p


def train_in_thread(pg: Playground, key: str):
    """Press Train as the UI does: the run's steps consumed in a worker thread."""
    run = pg.start_run(key, get_task("sentiment"), PrefixSettings(4), TrainSettings(steps=200, batch_size=4,
                                                                                    eval_every=0, eval_examples=4))
    t = threading.Thread(target=lambda: list(pg.run_steps(run)))
    t.start()
    end = time.time() + 60
    while run.steps_done < 2 and time.time() < end:
        time.sleep(0.01)
    assert run.steps_done >= 2 and run.state == "running"
    return run, t


def test_stop_mid_training_keeps_the_library_and_the_partial_prefix_can_be_saved(pg):
    before = snapshot(pg.library.root)
    run, t = train_in_thread(pg, "k")
    assert pg.stop("k") is True
    t.join(60)
    assert not t.is_alive() and run.state == "stopped" and 2 <= run.steps_done < 200
    assert snapshot(pg.library.root) == before and leftovers(pg.library.root) == []
    pg.compare_rows(run)  # what the Train tab does once the loop ends
    path = pg.save_trained("k", "partial")  # saved on request
    card = json.loads((path / CARD_FILE).read_text())
    assert card["training"]["steps_done"] == run.steps_done and card["training"]["steps"] == 200
    assert torch.equal(pg.library.load("partial", pg.base).embeddings(), run.prefix.embeddings().detach())
    assert pg.library.names() == ["partial", "shipped"] and leftovers(pg.library.root) == []
    assert {k: v for k, v in snapshot(pg.library.root).items() if k.startswith("shipped")} == before


def test_closing_the_tab_mid_training_discards_the_partial_prefix(pg):
    before = snapshot(pg.library.root)
    run, t = train_in_thread(pg, "k")
    other, t2 = train_in_thread(pg, "other")  # another student, training at the same time
    pg.sessions.drop("k")  # what the app's unload handler does when the tab closes or the connection drops
    t.join(60)
    assert not t.is_alive() and run.state == "stopped" and run.steps_done < 200
    assert pg.sessions.peek("k") is None and run.discarded
    with pytest.raises(PlaygroundError, match="session was closed"):  # the Train tab stops there: no scoring
        pg.compare_rows(run)
    assert JUST_TRAINED not in pg.prefix_choices("k")
    with pytest.raises(PlaygroundError, match="not trained"):
        pg.get_prefix("k", JUST_TRAINED)
    with pytest.raises(PlaygroundError, match="Nothing to save"):
        pg.save_trained("k", "partial")
    assert snapshot(pg.library.root) == before and leftovers(pg.library.root) == []
    assert other.state == "running" and not other.cancel.is_set()  # the other student's run goes on
    pg.stop("other")
    t2.join(60)
    assert other.state == "stopped"


# =============================================================================================
# --read-only-library, through the app's flags and the service
# =============================================================================================
def test_read_only_library_protects_the_shipped_prefixes(tiny_llama, tmp_path):
    lib_dir = tmp_path / "prefixes"
    shutil.copytree(SHIPPED, lib_dir)
    shipped = sorted(p.name for p in lib_dir.iterdir() if (p / CONFIG_FILE).is_file())
    assert len(shipped) >= 6
    before = snapshot(lib_dir)
    args = app.parse_args(["--library", str(tmp_path / "class"), "--shipped", str(lib_dir)])
    pg = Playground(tiny_llama, app.make_library(args), args.limits)
    pg._downloads = tmp_path / "downloads"
    assert pg.library.protected == set(shipped)
    run = pg.start_run("k", get_task("sentiment"), PrefixSettings(4), TrainSettings(steps=2, batch_size=4,
                                                                                  eval_every=0, eval_examples=4))
    list(pg.run_steps(run))
    # an upload that fits the loaded (tiny) model, so that only the read-only rule can refuse it
    src = Library(tmp_path / "src")
    src.save("x", create_prefix(tiny_llama, PrefixSettings(3, "random")), {"base_fingerprint": tiny_llama.fingerprint})
    z = tmp_path / "x.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in (src.root / "x").iterdir():
            zf.write(f, f"x/{f.name}")
    for name in shipped:
        for action in (lambda: pg.delete(name), lambda: pg.rename(name, "stolen"),
                       lambda: pg.save_trained("k", name, overwrite=True),
                       lambda: pg.import_upload([str(z)], name, overwrite=True)):
            with pytest.raises(PlaygroundError, match="read-only"):
                action()
    assert snapshot(lib_dir) == before  # not a byte changed
    pg.save_trained("k", "mine")  # students still save, rename and delete their own, in the class's folder
    pg.rename("mine", "mine2")
    assert (tmp_path / "class" / "mine2").is_dir()
    pg.delete("mine2")
    assert snapshot(lib_dir) == before and leftovers(lib_dir) == [] and leftovers(tmp_path / "class") == []
    # --read-only-library: the class's folder is read-only too
    frozen = app.make_library(app.parse_args(["--library", str(tmp_path / "class"), "--shipped", str(lib_dir),
                                              "--read-only-library"]))
    with pytest.raises(PlaygroundError, match="read-only"):
        frozen.save("new", run.prefix)
    assert frozen.protected == set(shipped)


# =============================================================================================
# Settings: every limit is a validated flag, shown in --help and the startup log
# =============================================================================================
def test_every_limit_is_a_flag_with_a_classroom_default(capsys):
    from dataclasses import fields

    args = app.parse_args([])
    assert args.limits == Limits() and args.host == "127.0.0.1" and args.logins == []
    assert Limits().max_steps <= 100 and Limits().concurrent_trainings <= 2  # a 2-core laptop and 30 students
    flags = []
    for i, f in enumerate(fields(Limits)):
        flag, value = "--" + f.name.replace("_", "-"), app.UI_MIN.get(f.name, 1) + i + 3
        flags += [flag, str(value)]
    args = app.parse_args(flags)
    for i, f in enumerate(fields(Limits)):
        assert getattr(args.limits, f.name) == app.UI_MIN.get(f.name, 1) + i + 3, f.name
    with pytest.raises(SystemExit) as e:
        app.parse_args(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for f in fields(Limits):
        assert f"--{f.name.replace('_', '-')} N" in text
    assert "(default: 100)" in text and "--auth USER:PASSWORD" in text and "--auth-file PATH" in text
    line = Limits().describe()
    assert all(f"{f.name}={getattr(Limits(), f.name)}" in line for f in fields(Limits))


@pytest.mark.parametrize("argv, message", [
    (["--max-steps", "0"], "argument --max-steps: must be a whole number of at least 20, got '0'"),
    (["--max-steps", "10"], "argument --max-steps: must be a whole number of at least 20"),
    (["--concurrent-trainings", "-1"], "argument --concurrent-trainings: must be a whole number of at least 1"),
    (["--queue-size", "many"], "argument --queue-size: must be a whole number of at least 1, got 'many'"),
    (["--max-upload-mb", "1.5"], "argument --max-upload-mb: must be a whole number"),
    (["--max-virtual-tokens", "600"], "argument --max-virtual-tokens: must be a whole number from 20 to 512"),
    (["--max-new-tokens", "0"], "argument --max-new-tokens: must be a whole number of at least 1"),
    (["--port", "70000"], "argument --port: must be a whole number from 1 to 65535"),
])
def test_bad_limits_stop_the_app_with_a_clear_message(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        app.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_limits_refuse_nonsense_when_built_in_code(tiny_llama, tmp_path):
    for bad in (dict(max_steps=0), dict(queue_size=-3), dict(max_virtual_tokens=513), dict(max_new_tokens=2.5)):
        with pytest.raises(PlaygroundError, match=f"{next(iter(bad))} must be a whole number"):
            Playground(tiny_llama, Library(tmp_path), Limits(**bad))


# =============================================================================================
# Passwords: Gradio's own auth
# =============================================================================================
def test_auth_flags_file_and_variable(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(app.AUTH_ENV, raising=False)
    f = tmp_path / "logins.txt"
    f.write_text("# the class\nstudent1: pw one \n\nstudent2:pw:with:colons\n")
    args = app.parse_args(["--auth", "teacher:t0p", "--auth-file", str(f)])
    assert args.logins == [("teacher", "t0p"), ("student1", "pw one"), ("student2", "pw:with:colons")]
    monkeypatch.setenv(app.AUTH_ENV, "space:s3cret")
    assert app.parse_args([]).logins == [("space", "s3cret")]
    monkeypatch.delenv(app.AUTH_ENV)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nobody yet\n")
    for argv, message in ((["--auth", "teacher"], "--auth, entry 1: expected USER:PASSWORD"),
                          (["--auth", ":hunter2"], "--auth, entry 1: expected USER:PASSWORD"),
                          (["--auth", "a:hunter2", "--auth", "a:hunter3"], "a user is given twice: a"),
                          (["--auth-file", str(empty)], "holds no USER:PASSWORD line"),
                          (["--auth-file", str(tmp_path / "missing")], "--auth-file: cannot read")):
        with pytest.raises(SystemExit):
            app.parse_args(argv)
        err = capsys.readouterr().err
        assert message in err and "hunter" not in err  # a password is never echoed


def _http(url: str, data: dict | None = None, cookie: str = "") -> tuple[int, str, str]:
    req = urllib.request.Request(url, urllib.parse.urlencode(data).encode() if data is not None else None,
                                 headers={"Cookie": cookie} if cookie else {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, r.read().decode(), "; ".join(c.split(";")[0] for c in r.headers.get_all("Set-Cookie", []))
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), ""


@pytest.mark.real_model
def test_the_real_app_asks_for_a_login(tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AuthenticationError

    from bench.driver import start_app, stop_app

    logins = tmp_path / "logins.txt"
    logins.write_text("student:st-pass-2\n")
    lib = tmp_path / "lib"
    log = tmp_path / "server.log"
    proc, url, _ = start_app(["--library", str(lib), "--auth", "teacher:te-pass-1", "--auth-file", str(logins),
                              "--max-steps", "40", "--concurrent-trainings", "1"], log)
    try:
        # Without a login, the API refuses everything: its config, its endpoints, its queue.
        for path in ("config", "gradio_api/info"):
            assert _http(url + path)[0] == 401, path
        status, body, _ = _http(url + "gradio_api/queue/join", {})
        assert status == 401 and "Not authenticated" in body
        with pytest.raises(AuthenticationError, match="credentials were not provided"):
            Client(url, verbose=False)
        assert _http(url + "login", {"username": "teacher", "password": "wrong"})[0] == 400
        # Gradio's /login opens it, for a user from --auth and one from --auth-file.
        for user, pw in (("teacher", "te-pass-1"), ("student", "st-pass-2")):
            status, _, cookie = _http(url + "login", {"username": user, "password": pw})
            assert status == 200 and "access-token" in cookie
            status, body, _ = _http(url + "config", cookie=cookie)
            assert status == 200 and json.loads(body)["components"]
        client = Client(url, auth=("student", "st-pass-2"), verbose=False)
        assert client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    finally:
        stop_app(proc)
    text = log.read_text()
    assert "password protection: on, 2 login(s): teacher, student" in text
    assert "server limits: max_steps=40 " in text and "concurrent_trainings=1 " in text
    assert "te-pass-1" not in text and "st-pass-2" not in text  # never logged
