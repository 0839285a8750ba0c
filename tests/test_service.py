"""Unit tests (tiny models, no gradio): uploads and exports, sessions, the Playground facade, figures.

Everything runs on the in-process tiny models of ``conftest.py``; nothing here loads the real model.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import time
import warnings
import zipfile
from pathlib import Path
from types import SimpleNamespace

import plotly.graph_objects as go
import pytest
import torch

import playground.archive as archive_mod
import playground.service as service_mod
import playground.sessions as sessions_mod
import playground.tasks as tasks_mod
from playground.archive import export_zip, stage_upload
from playground.attention import PrefixAttention
from playground.errors import PlaygroundError
from playground.figures import head_figure, layer_figure, loss_figure, metric_figure, query_token_figure, \
    virtual_token_figure
from playground.library import Library
from playground.methods import answer, prefix_method
from playground.peft_folder import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, load_prefix
from playground.prefix import PrefixSettings, create_prefix, parameter_counts
from playground.report import library_rows, model_rows, parameter_summary
from playground.service import JUST_TRAINED, NO_PREFIX, Limits, Playground
from playground.sessions import SessionStore, TrainingRun
from playground.tasks import Task, get_task, read_table
from playground.training import StepRecord, TrainSettings

from .conftest import make_tiny

LIMITS = dict(max_steps=10, max_batch_size=8, max_virtual_tokens=8, max_eval_examples=8, max_new_tokens=6,
              max_prompt_chars=200, max_switch_prefixes=3)


def ps(n: int = 4, init: str = "task", **kw) -> PrefixSettings:
    return PrefixSettings(num_virtual_tokens=n, init=init, **kw)


def ts(steps: int = 4, seed: int = 0, **kw) -> TrainSettings:
    return TrainSettings(**{"steps": steps, "batch_size": 4, "seed": seed, "eval_every": 2, "eval_examples": 4, **kw})


def emb(prefix) -> torch.Tensor:
    return prefix.embeddings().detach().clone()


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(autouse=True)
def _one_thread(_threads):
    # Runs after conftest's 2-thread setting: for 64-wide tiny models one thread is several times
    # faster (no thread hand-off per tiny matmul), and far steadier on a busy 2-core machine.
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_gpt2():
    return make_tiny("gpt2")


@pytest.fixture
def pg(tiny_llama, tmp_path) -> Playground:
    p = Playground(tiny_llama, Library(tmp_path / "lib"), Limits(**LIMITS))
    p._downloads = tmp_path / "downloads"  # keep exports out of the shared temp folder
    return p


def save_random(pg: Playground, name: str, seed: int = 1, n: int = 3, task: str = "sentiment",
                overwrite: bool = False) -> torch.Tensor:
    """Put a random prefix in pg's library; returns its embeddings."""
    prefix = create_prefix(pg.base, ps(n, "random"), seed=seed)
    pg.library.save(name, prefix, {"task": task, "base_model": pg.base.name, "base_fingerprint": pg.base.fingerprint},
                    overwrite=overwrite)
    return emb(prefix)


def trained(pg: Playground, key: str = "k", seed: int = 0, **kw):
    """A finished sentiment run in session ``key`` (light by default: 2 steps, scored once at the end)."""
    run = pg.start_run(key, get_task("sentiment"), ps(), ts(seed=seed, **{"steps": 2, "eval_every": 0, **kw}))
    list(pg.run_steps(run))
    return run


# =============================================================================================
# archive.py
# =============================================================================================
@pytest.fixture
def prefix_dir(tiny_llama, tmp_path) -> Path:
    lib = Library(tmp_path / "src-lib")
    prefix = create_prefix(tiny_llama, ps(3, "random"), seed=2)
    return lib.save("good", prefix, {"task": "sentiment", "base_model": tiny_llama.name,
                                     "base_fingerprint": tiny_llama.fingerprint})


def make_zip(path: Path, members: list, compression=zipfile.ZIP_DEFLATED) -> Path:
    """members: (name, bytes) or (ZipInfo, bytes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate names on purpose
        with zipfile.ZipFile(path, "w", compression=compression) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return path


def test_exported_zip_round_trips_through_stage_upload(prefix_dir, tiny_llama, tmp_path):
    out = tmp_path / "exports"
    z = export_zip(prefix_dir, out)
    assert z.name == "good.zip" and z.parent.parent == out
    with zipfile.ZipFile(z) as zf:
        assert sorted(zf.namelist()) == sorted(f"good/{f}" for f in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE))
    folder, suggested = stage_upload([z], tmp_path / "work")
    assert suggested == "good" and folder == tmp_path / "work" / "prefix"
    for f in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE):
        assert (folder / f).read_bytes() == (prefix_dir / f).read_bytes()
    original = load_prefix(prefix_dir, tiny_llama)
    assert torch.equal(load_prefix(folder, tiny_llama).embeddings(), original.embeddings())


def test_a_flat_zip_and_loose_files_are_accepted(prefix_dir, tmp_path):
    flat = make_zip(tmp_path / "flat-name.zip",
                    [(f, (prefix_dir / f).read_bytes()) for f in (CONFIG_FILE, WEIGHTS_FILE)])
    folder, suggested = stage_upload([flat], tmp_path / "w1")
    assert suggested == "flat-name" and sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    folder, suggested = stage_upload([prefix_dir / CONFIG_FILE, prefix_dir / WEIGHTS_FILE, None, ""], tmp_path / "w2")
    assert suggested is None
    assert (folder / WEIGHTS_FILE).read_bytes() == (prefix_dir / WEIGHTS_FILE).read_bytes()
    assert not (folder / CARD_FILE).exists()


def test_zip_droppings_and_folder_entries_are_ignored(prefix_dir, tmp_path):
    z = make_zip(tmp_path / "mac.zip", [("good/", b""), ("good/.DS_Store", b"junk"), ("__MACOSX/good/._x", b"junk")]
                 + [(f"good/{f}", (prefix_dir / f).read_bytes()) for f in (CONFIG_FILE, WEIGHTS_FILE)])
    folder, suggested = stage_upload([z], tmp_path / "work")
    assert suggested == "good"
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


GOOD = [("p/adapter_config.json", b"{}"), ("p/adapter_model.safetensors", b"\x00" * 64)]

BAD_ZIPS = {
    "dotdot": ([("p/../../adapter_config.json", b"{}")] + GOOD[1:], "unsafe path"),
    "dotdot_backslash": ([("..\\adapter_config.json", b"{}")] + GOOD[1:], "unsafe path"),
    "absolute": ([("/tmp/adapter_config.json", b"{}")] + GOOD[1:], "unsafe path"),
    "drive": ([("C:/x/adapter_config.json", b"{}")] + GOOD[1:], "unsafe path"),
    "symlink": ([(_symlink_info("p/adapter_config.json"), b"/etc/passwd")] + GOOD[1:], "symbolic link"),
    "too_deep": ([("a/b/adapter_config.json", b"{}"), ("a/b/adapter_model.safetensors", b"x")], "nested too deep"),
    "unexpected": (GOOD + [("p/run_me.py", b"import os")], "Unexpected file 'run_me.py'"),
    "pickle": ([("p/adapter_config.json", b"{}"), ("p/adapter_model.bin", b"\x80\x04never opened")], "pickle"),
    "two_folders": ([("a/adapter_config.json", b"{}"), ("b/adapter_model.safetensors", b"x")], "several folders"),
    "duplicate": (GOOD + [("p/adapter_config.json", b"{}")], "same file twice"),
    "too_many": ([(f"p/.junk{i}", b"") for i in range(archive_mod.MAX_MEMBERS)] + GOOD, "entries"),
    "bomb": ([("p/adapter_config.json", b"{}"), ("p/adapter_model.safetensors", bytes(2 * 2**20))], "zip bomb"),
    "no_weights": ([("p/adapter_config.json", b"{}"), ("p/card.json", b"{}")], "has no adapter_model.safetensors"),
}


@pytest.mark.parametrize("case", list(BAD_ZIPS))
def test_bad_zips_are_refused_with_a_clear_message_and_nothing_written_outside(case, tmp_path, monkeypatch):
    members, match = BAD_ZIPS[case]
    src = tmp_path / "in" / "upload.zip"
    src.parent.mkdir()
    make_zip(src, members)
    before = files_under(tmp_path)
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info, *a, **k: (opened.append(
        getattr(info, "filename", info)), real_open(self, info, *a, **k))[1])
    work = tmp_path / "work"
    with pytest.raises(PlaygroundError, match=match):
        stage_upload([src], work)
    written = files_under(tmp_path) - before
    assert all(w == "work" or w.startswith(f"work{os.sep}prefix") for w in written), written
    assert not (tmp_path.parent / CONFIG_FILE).exists()
    if case == "no_weights":  # all checks passed; only the files that exist were copied, into staging
        assert sorted(p.name for p in (work / "prefix").iterdir()) == [CONFIG_FILE, CARD_FILE]
    else:  # refused before a single member was opened or written
        assert opened == [] and list((work / "prefix").iterdir()) == []
    assert not any(str(n).endswith(".bin") for n in opened)


def test_upload_level_refusals(prefix_dir, tmp_path, monkeypatch):
    copies = []
    monkeypatch.setattr(archive_mod.shutil, "copyfile", lambda a, b: copies.append(a))
    with pytest.raises(PlaygroundError, match="Nothing uploaded"):
        stage_upload([], tmp_path / "w0")
    with pytest.raises(PlaygroundError, match="Nothing uploaded"):
        stage_upload([None, ""], tmp_path / "w0b")
    fake = tmp_path / "prefix.zip"
    fake.write_bytes(b"these bytes are not a zip archive")
    with pytest.raises(PlaygroundError, match="'prefix.zip' is not a valid zip"):
        stage_upload([fake], tmp_path / "w1")
    good = export_zip(prefix_dir, tmp_path / "exports")
    with pytest.raises(PlaygroundError, match="either one zip or the loose files"):
        stage_upload([good, prefix_dir / CONFIG_FILE], tmp_path / "w2")
    pickle = tmp_path / "adapter_model.bin"
    pickle.write_bytes(b"\x80\x04never opened")
    with pytest.raises(PlaygroundError, match="pickle file"):
        stage_upload([prefix_dir / CONFIG_FILE, pickle], tmp_path / "w3")
    odd = tmp_path / "notes.txt"
    odd.write_text("hi")
    with pytest.raises(PlaygroundError, match="Unexpected file 'notes.txt'"):
        stage_upload([prefix_dir / CONFIG_FILE, odd], tmp_path / "w4")
    other = tmp_path / "other"
    other.mkdir()
    (other / CONFIG_FILE).write_text("{}")
    with pytest.raises(PlaygroundError, match="uploaded twice"):
        stage_upload([prefix_dir / CONFIG_FILE, other / CONFIG_FILE], tmp_path / "w5")
    assert copies == []  # every refusal came before any copy
    monkeypatch.undo()
    with pytest.raises(PlaygroundError, match="has no adapter_model.safetensors"):
        stage_upload([prefix_dir / CONFIG_FILE], tmp_path / "w6")


def test_oversized_uploads_are_refused(prefix_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(archive_mod, "MAX_FILE_BYTES", 500)
    with pytest.raises(PlaygroundError, match="upload limit"):
        stage_upload([prefix_dir / WEIGHTS_FILE, prefix_dir / CONFIG_FILE], tmp_path / "w1")
    # a small zip whose member would unpack past the per-file limit
    z = make_zip(tmp_path / "big.zip", [("p/adapter_config.json", b"{}"), ("p/adapter_model.safetensors", bytes(1000))])
    assert z.stat().st_size < 500
    with pytest.raises(PlaygroundError, match="per file"):
        stage_upload([z], tmp_path / "w2")
    assert list((tmp_path / "w2" / "prefix").iterdir()) == []


def test_export_zip_sweeps_old_downloads_and_skips_foreign_files(prefix_dir, tmp_path):
    out = tmp_path / "exports"
    out.mkdir()
    old, fresh = out / "old.zip", out / "fresh.zip"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    (prefix_dir / "notes.txt").write_text("not part of a prefix")
    z = export_zip(prefix_dir, out, max_age_s=3600)
    assert not old.exists() and fresh.exists()
    with zipfile.ZipFile(z) as zf:
        assert "good/notes.txt" not in zf.namelist() and f"good/{WEIGHTS_FILE}" in zf.namelist()


# =============================================================================================
# sessions.py
# =============================================================================================
def make_run(steps: int = 10) -> TrainingRun:
    task = Task("t", "T", "Do it.", splits={"train": [], "test": []})
    return TrainingRun(task, prefix=None, prefix_settings=PrefixSettings(), train_settings=TrainSettings(steps=steps))


def rec(step: int, metric=None) -> StepRecord:
    return StepRecord(step, loss=1.0 / step, elapsed=0.1 * step, examples_per_s=10.0, metric=metric)


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(sessions_mod, "time", SimpleNamespace(monotonic=lambda: now[0], perf_counter=time.perf_counter))
    return now


def test_sessions_are_separate_and_stop_only_their_own_run():
    store = SessionStore()
    a, b = store.get("a"), store.get("b")
    assert a is not b and store.get("a") is a and len(store) == 2
    a.run, b.run = make_run(), make_run()
    assert store.stop("a") is True
    assert a.run.cancel.is_set() and not b.run.cancel.is_set()
    b.run.state = "finished"
    assert store.stop("b") is False and not b.run.cancel.is_set()  # nothing running to stop
    assert store.stop("nobody") is False and store.peek("nobody") is None  # stop doesn't create sessions


def test_drop_cancels_the_run_and_forgets_the_session():
    store = SessionStore()
    s = store.get("a")
    s.run = make_run()
    other = store.get("b")
    other.run = make_run()
    store.drop("a")
    assert s.run.cancel.is_set() and store.peek("a") is None and len(store) == 1
    assert not other.run.cancel.is_set()
    store.drop("a")  # dropping twice is harmless
    assert store.get("a") is not s  # a fresh session comes back


def test_idle_sessions_are_swept_after_the_ttl(clock):
    store = SessionStore(ttl_s=10)
    old = store.get("old")
    old.run = make_run()
    clock[0] += 5
    store.get("recent")
    clock[0] += 6  # 'old' idle 11 s, 'recent' 6 s
    store.get("new")  # a new session triggers the sweep
    # a session whose training is still running is kept until the run ends (a run's cost is bounded)
    assert store.peek("old") is old and not old.run.cancel.is_set()
    old.run.state = "finished"
    store.get("newer")
    assert store.peek("old") is None and old.run.discarded
    assert store.peek("recent") is not None and len(store) == 3


def test_seeing_a_session_keeps_it_alive(clock):
    store = SessionStore(ttl_s=10)
    store.get("a")
    for _ in range(3):
        clock[0] += 8
        store.get("a")
    store.get("b")
    assert store.peek("a") is not None


def test_max_sessions_evicts_the_idlest_session_that_is_not_training(clock):
    store = SessionStore(max_sessions=2, ttl_s=1e9)
    a = store.get("a")
    clock[0] += 1
    store.get("b")
    clock[0] += 1
    store.get("a")  # b is now the idlest
    clock[0] += 1
    store.get("c")
    assert store.peek("b") is None and store.peek("a") is a and len(store) == 2
    # A running training is never evicted: the idlest *finished* session goes instead.
    a.run = make_run()
    clock[0] += 1
    store.get("c")
    clock[0] += 1
    store.get("d")
    assert store.peek("a") is a and not a.run.cancel.is_set() and store.peek("c") is None
    assert len(store) == 2
    store.peek("d").run = make_run()  # everyone is training: nobody is evicted, the store grows past the cap
    clock[0] += 1
    store.get("e")
    assert len(store) == 3 and store.peek("a") is a and store.peek("d") is not None


def test_training_run_progress_numbers():
    run = make_run(steps=10)
    assert run.eta_seconds() is None and run.steps_done == 0 and run.metric is None
    run.records += [rec(1, 0.25), rec(2), rec(3, 0.5), rec(4)]
    run.started = time.perf_counter() - 8.0  # 2 s per step so far
    assert run.steps_done == 4 and run.metric == 0.5  # latest measured metric, not the latest record's None
    assert run.eta_seconds() == pytest.approx(2.0 * 6, rel=0.05)
    run.records.append(rec(10))
    assert run.eta_seconds() == pytest.approx(0.0, abs=1e-9)


# =============================================================================================
# service.py: training
# =============================================================================================
def test_a_run_records_every_step_and_finishes(pg):
    run = pg.start_run("k", get_task("sentiment"), ps(), ts(steps=4))
    assert pg.sessions.get("k").run is run and run.state == "running"
    assert run.held_out_n == 4
    assert pg.prefix_choices("k") == []  # nothing trained yet
    steps = [r.step for r in pg.run_steps(run)]
    assert steps == [1, 2, 3, 4] and [r.step for r in run.records] == steps
    assert run.state == "finished" and run.steps_done == 4
    assert [r.metric is not None for r in run.records] == [False, True, False, True]  # eval_every=2
    assert len(run.records[-1].predictions) == 4
    assert pg.prefix_choices("k") == [JUST_TRAINED]


def test_setting_cancel_mid_run_stops_it_early(pg):
    run = pg.start_run("k", get_task("sentiment"), ps(), ts(steps=8, eval_every=3))
    for r in pg.run_steps(run):
        if r.step == 2:
            run.cancel.set()
    assert run.state == "stopped" and run.steps_done == 2 and len(run.records) == 2
    assert run.records[-1].predictions is None  # stopped between evaluations
    rows = pg.compare_rows(run)  # scores the prefix as it is now
    assert run.metric is not None and len(rows) == 4 and run.records[-1].predictions is not None


def test_a_run_that_ends_abruptly_is_not_marked_finished(pg):
    run = pg.start_run("k", get_task("sentiment"), ps(), ts(steps=4))
    gen = pg.run_steps(run)
    next(gen)
    gen.close()  # the consumer went away (tab closed) or the loop raised
    assert run.state == "stopped" and run.steps_done == 1


def test_a_run_whose_training_fails_is_not_marked_finished(pg, monkeypatch):
    def failing(base, prefix, task, settings, cancel=None, reserve=None):
        yield rec(1)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(service_mod, "train", failing)
    run = pg.start_run("k", get_task("sentiment"), ps(), ts(steps=4))
    with pytest.raises(RuntimeError, match="out of memory"):
        list(pg.run_steps(run))
    assert run.state == "stopped" and run.steps_done == 1 and not run.cancel.is_set()


def test_starting_a_new_run_stops_the_sessions_previous_one(pg):
    first = pg.start_run("k", get_task("sentiment"), ps(), ts())
    gen = pg.run_steps(first)
    next(gen)
    second = pg.start_run("k", get_task("sentiment"), ps(), ts())
    assert first.cancel.is_set() and not second.cancel.is_set()
    assert pg.sessions.get("k").run is second
    list(gen)
    assert first.state == "stopped" and first.steps_done == 1


def test_two_sessions_train_independently(pg):
    task = get_task("sentiment")
    a = pg.start_run("a", task, ps(), ts(steps=4, seed=1, eval_every=0))
    b = pg.start_run("b", task, ps(), ts(steps=4, seed=2, eval_every=0))
    assert a.prefix is not b.prefix
    ga, gb = pg.run_steps(a), pg.run_steps(b)
    for _ in range(2):  # interleave the two runs step by step on the shared model
        next(ga)
        next(gb)
    assert pg.stop("a") is True
    list(ga)
    list(gb)
    assert a.state == "stopped" and a.steps_done == 2
    assert b.state == "finished" and b.steps_done == 4 and not b.cancel.is_set()
    assert not torch.allclose(emb(a.prefix), emb(b.prefix))  # different seeds, different data order
    # Interleaving changed nothing: b equals the same run done alone in another session.
    solo = trained(pg, "solo", seed=2, steps=4)
    assert torch.allclose(emb(solo.prefix), emb(b.prefix), atol=1e-6)
    assert [r.loss for r in solo.records] == pytest.approx([r.loss for r in b.records], abs=1e-5)


def test_check_settings_refuses_values_above_the_servers_limits(pg):
    cases = [(ps(9), ts(), "num_virtual_tokens = 9 .*limit of 8"),
             (ps(), ts(steps=11), "steps = 11 .*limit of 10"),
             (ps(), ts(batch_size=9), "batch size = 9 .*limit of 8"),
             (ps(), ts(eval_examples=9), "held-out examples = 9 .*limit of 8")]
    for p, t, match in cases:
        with pytest.raises(PlaygroundError, match=match):
            pg.check_settings(p, t)
        with pytest.raises(PlaygroundError, match=match):
            pg.start_run("k", get_task("sentiment"), p, t)
    assert pg.sessions.peek("k") is None or pg.sessions.peek("k").run is None
    pg.check_settings(ps(8), ts(steps=10, batch_size=8, eval_examples=8))  # at the limits is fine
    with pytest.raises(PlaygroundError, match="MLP"):  # the settings' own validation still runs
        pg.check_settings(ps(4, "task", prefix_projection=True), ts())


def test_compare_rows_gives_three_answers_and_caches_the_baselines(pg, monkeypatch):
    calls = []
    real = service_mod.evaluate

    def counting(base, task, examples, method):
        r = real(base, task, examples, method)
        calls.append((method.mode, r))
        return r

    monkeypatch.setattr(service_mod, "evaluate", counting)
    run = trained(pg, "a", seed=1)
    rows = pg.compare_rows(run, max_rows=3)
    assert sorted(m for m, _ in calls) == ["base", "instruction"]  # the prefix's answers come from the last eval
    assert len(rows) == 3
    held_out = get_task("sentiment").split("validation")[:4]
    got = {m: r for m, r in calls}
    for i, row in enumerate(rows):
        assert row["input"] == held_out[i].input and row["target"] == held_out[i].target
        assert row["base"] == got["base"].predictions[i] and row["instruction"] == got["instruction"].predictions[i]
        assert row["prefix"] == run.records[-1].predictions[i]
        assert {"base_score", "instruction_score", "prefix_score"} <= set(row)
    assert run.baselines == {"base": got["base"].score, "instruction": got["instruction"].score}
    assert pg.compare_rows(run, max_rows=3) == rows and len(calls) == 2  # second call: nothing re-evaluated
    other = trained(pg, "b", seed=2)  # another session, same task and held-out set: baselines shared
    pg.compare_rows(other)
    assert len(calls) == 2 and other.baselines == run.baselines


def test_save_trained_refuses_early_then_saves_a_card_with_metrics(pg):
    with pytest.raises(PlaygroundError, match="Nothing to save"):
        pg.save_trained("k", "mine")
    run = pg.start_run("k", get_task("sentiment"), ps(), ts(steps=2, eval_every=0))
    with pytest.raises(PlaygroundError, match="Nothing to save"):
        pg.save_trained("k", "mine")
    gen = pg.run_steps(run)
    next(gen)
    with pytest.raises(PlaygroundError, match="still running"):
        pg.save_trained("k", "mine")
    list(gen)
    pg.compare_rows(run)
    path = pg.save_trained("k", "  mine ")
    assert path == pg.library.path("mine") and pg.library.names() == ["mine"]
    card = json.loads((path / CARD_FILE).read_text())
    m = card["metrics"]
    assert m["split"] == "validation" and m["metric"] == "exact_match" and m["n"] == 4
    assert m["prefix"] == round(run.metric, 4) and m["base"] == round(run.baselines["base"], 4)
    assert m["instruction"] == round(run.baselines["instruction"], 4)
    assert card["task"] == "sentiment" and card["base_fingerprint"] == pg.base.fingerprint
    assert card["training"]["steps_done"] == 2 and card["training"]["seed"] == 0
    assert card["instruction"] == get_task("sentiment").instruction
    assert card["train_examples"] == len(get_task("sentiment").split("train"))
    assert torch.allclose(pg.library.load("mine", pg.base).embeddings(), emb(run.prefix))
    with pytest.raises(PlaygroundError, match="already exists"):
        pg.save_trained("k", "mine")
    pg.save_trained("k", "mine", overwrite=True)


# =============================================================================================
# service.py: prefixes by name, switch, attention
# =============================================================================================
def test_get_prefix_just_trained_and_library_cache(pg):
    with pytest.raises(PlaygroundError, match="not trained"):
        pg.get_prefix("k", JUST_TRAINED)
    run = trained(pg)
    assert pg.get_prefix("k", JUST_TRAINED) is run.prefix
    with pytest.raises(PlaygroundError, match="not trained"):
        pg.get_prefix("someone-else", JUST_TRAINED)
    first = save_random(pg, "p", seed=1)
    a = pg.get_prefix("k", "p")
    assert torch.equal(a.embeddings(), first) and pg.get_prefix("k", "p") is a  # cached
    folder = pg.library.path("p")
    old = {f.name: (f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir()}
    second = save_random(pg, "p", seed=2, overwrite=True)
    # Same names and sizes; give the new files the old mtimes too, as a coarse filesystem clock could.
    for f in folder.iterdir():
        assert f.stat().st_size == old[f.name][0]
        os.utime(f, ns=(old[f.name][1], old[f.name][1]))
    b = pg.get_prefix("k", "p")
    assert b is not a and torch.equal(b.embeddings(), second)  # the file changed: reloaded
    assert pg.get_prefix("k", "p") is b
    with pytest.raises(PlaygroundError, match="No prefix named 'ghost'"):
        pg.get_prefix("k", "ghost")
    with pytest.raises(PlaygroundError, match="valid prefix name"):
        pg.get_prefix("k", "../lib")


def test_switch_answers_once_per_name_with_the_right_prefix(pg, monkeypatch):
    run = trained(pg)
    save_random(pg, "p")
    text = "  A warm and funny film. "
    calls = []
    real = service_mod.generate_texts_mixed

    def spy(base, inputs, prefixes, max_new_tokens=16, modes=None, **kw):
        out = real(base, inputs, prefixes, max_new_tokens, modes, **kw)
        calls.append(dict(inputs=inputs, prefixes=prefixes, budgets=max_new_tokens, modes=modes, out=out))
        return out

    monkeypatch.setattr(service_mod, "generate_texts_mixed", spy)
    res = pg.switch("k", [NO_PREFIX, JUST_TRAINED, "p", "p"], text)
    assert [o.name for o in res.outputs] == [NO_PREFIX, JUST_TRAINED, "p"]
    assert all(isinstance(o.text, str) and o.seconds >= 0 for o in res.outputs)
    assert 0 <= res.switch_seconds <= res.total_seconds
    # One mixed batch, a row per name, each behind its own prefix with its task's answer budget capped by the limit.
    assert len(calls) == 1 and res.batched and len({o.seconds for o in res.outputs}) == 1
    c = calls[0]
    n = min(get_task("sentiment").max_new_tokens, LIMITS["max_new_tokens"])
    assert c["inputs"] == [text.strip()] * 3 and c["modes"] == ["base", "prefix", "prefix"]
    assert c["budgets"] == [LIMITS["max_new_tokens"], n, n]
    assert c["prefixes"][0] is None and c["prefixes"][1] is run.prefix
    assert c["prefixes"][2] is pg.get_prefix("k", "p")  # the library cache's object
    assert [o.text for o in res.outputs] == c["out"]
    # ... and each answer equals that prefix run alone.
    assert res.outputs[2].text == answer(pg.base, prefix_method(pg.get_prefix("k", "p")), [text.strip()],
                                         max_new_tokens=n)[0]


def test_switch_refusals(pg):
    save_random(pg, "p")
    for bad in ("", "   \n"):
        with pytest.raises(PlaygroundError, match="prompt is empty"):
            pg.switch("k", ["p"], bad)
    with pytest.raises(PlaygroundError, match="limit is 200"):
        pg.switch("k", ["p"], "x" * 201)
    with pytest.raises(PlaygroundError, match="limit is 3"):
        pg.switch("k", [NO_PREFIX, "p", "q", "r"], "hello")
    with pytest.raises(PlaygroundError, match="Pick at least one"):
        pg.switch("k", [], "hello")
    with pytest.raises(PlaygroundError, match="not trained"):
        pg.switch("k", [JUST_TRAINED], "hello")
    assert len(pg.switch("k", [NO_PREFIX], "x" * 200).outputs) == 1  # exactly at the limit is fine


def test_attention_per_prefix_name(pg):
    run = trained(pg)
    save_random(pg, "p", n=3)
    out = pg.attention("k", "  a lovely film  ", [NO_PREFIX, "p", JUST_TRAINED, "p", ""])
    assert list(out) == ["p", JUST_TRAINED]
    L, H = pg.base.num_layers, pg.base.num_heads
    for name, P in (("p", 3), (JUST_TRAINED, run.prefix.num_virtual_tokens)):
        att = out[name]
        assert isinstance(att, PrefixAttention)
        T = len(att.tokens)
        assert att.weights.shape == (L, H, T, P) and att.head_share.shape == (L, H)
        assert att.layer_share.shape == (L,) and att.token_share.shape == (L, T)
    fig = layer_figure(out)  # the figure the UI draws from this result
    assert [t.name for t in fig.data] == list(out) and all(len(t.y) == L for t in fig.data)
    with pytest.raises(PlaygroundError, match="Pick a prefix"):
        pg.attention("k", "hello", [NO_PREFIX])
    with pytest.raises(PlaygroundError, match="prompt is empty"):
        pg.attention("k", "  ", ["p"])
    with pytest.raises(PlaygroundError, match="limit is 200"):
        pg.attention("k", "y" * 201, ["p"])


# =============================================================================================
# service.py: library
# =============================================================================================
def test_export_then_import_adds_an_identical_prefix(pg, tmp_path):
    original = save_random(pg, "p")
    z = pg.export("p")
    assert z.name == "p.zip" and tmp_path / "downloads" in z.parents
    assert pg.import_upload([str(z)], " copy ") == "copy"
    assert sorted(pg.library.names()) == ["copy", "p"]
    assert torch.equal(pg.get_prefix("k", "copy").embeddings(), original)
    card = pg.library_card("copy")
    assert card["source"] == "upload" and card["task"] == "sentiment" and card["name"] == "copy"
    with pytest.raises(PlaygroundError, match="already exists"):
        pg.import_upload([str(z)])  # the zip's folder name 'p' is suggested, and taken
    pg.delete("p")
    assert pg.import_upload([str(z)]) == "p"  # suggested name from the zip's folder
    folder = pg.library.path("copy")
    assert pg.import_upload([str(folder / CONFIG_FILE), str(folder / WEIGHTS_FILE)]) == "uploaded"
    with pytest.raises(PlaygroundError, match="No prefix named 'ghost'"):
        pg.export("ghost")
    with pytest.raises(PlaygroundError, match="valid prefix name"):
        pg.import_upload([str(z)], "bad name!")


def test_import_of_a_prefix_for_the_other_tiny_model_is_refused(pg, tiny_gpt2, tmp_path):
    gpt = Playground(tiny_gpt2, Library(tmp_path / "gpt-lib"), Limits(**LIMITS))
    gpt._downloads = tmp_path / "gpt-downloads"
    save_random(gpt, "g")
    z = gpt.export("g")
    save_random(pg, "p")
    with pytest.raises(PlaygroundError, match="made for another model"):
        pg.import_upload([str(z)], "g")
    assert pg.library.names() == ["p"]
    with pytest.raises(PlaygroundError, match="made for another model"):
        gpt.import_upload([str(pg.export("p"))], "p")
    assert gpt.library.names() == ["g"]


def test_rename_delete_and_read_only_protection(pg, tiny_llama, tmp_path):
    save_random(pg, "shipped")
    pg.rename("shipped", " renamed ")
    assert pg.library.names() == ["renamed"] and pg.library_card("renamed")["name"] == "renamed"
    pg.rename("renamed", "shipped")
    # pg's folder as the shipped set of another server: read-only there, beside that server's class folder
    ro = Playground(tiny_llama, Library(tmp_path / "class", shipped=pg.library.root), Limits(**LIMITS))
    ro._downloads = tmp_path / "ro-downloads"
    z = ro.export("shipped")
    run = trained(ro)
    for action in (lambda: ro.delete("shipped"), lambda: ro.rename("shipped", "other"),
                   lambda: ro.import_upload([str(z)], "shipped", overwrite=True),
                   lambda: ro.save_trained("k", "shipped", overwrite=True)):
        with pytest.raises(PlaygroundError, match="read-only"):
            action()
    assert ro.library.names() == ["shipped"]
    assert ro.library.load("shipped", tiny_llama) is not None
    ro.save_trained("k", "mine")  # new names are fine, go to the class folder, and stay editable
    assert (tmp_path / "class" / "mine").is_dir()
    ro.rename("mine", "mine2")
    ro.delete("mine2")
    assert ro.library.names() == ["shipped"]
    with pytest.raises(PlaygroundError, match="No prefix named"):
        ro.delete("ghost")
    rows = library_rows(ro.library)
    assert rows[0][0] == "shipped" and rows[0][8] == "shipped"
    assert run.state == "finished"
    # --read-only-library: the class folder is read-only too
    frozen = Playground(tiny_llama, Library(pg.library.root, read_only=True), Limits(**LIMITS))
    trained(frozen)
    for action in (lambda: frozen.save_trained("k", "new"), lambda: frozen.import_upload([str(z)], "new"),
                   lambda: frozen.rename("shipped", "other"), lambda: frozen.delete("shipped")):
        with pytest.raises(PlaygroundError, match="read-only"):
            action()
    assert frozen.library.names() == ["shipped"]


def test_library_rows_and_inspect(pg):
    run = trained(pg)
    pg.compare_rows(run)
    pg.save_trained("k", "mine")
    save_random(pg, "plain", n=3)
    rows = {r[0]: r for r in library_rows(pg.library)}
    assert set(rows) == {"mine", "plain"}
    m = pg.library_card("mine")["metrics"]
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    assert rows["mine"][1:8] == ["sentiment", 4, "exact_match", pct(m["prefix"]), pct(m["instruction"]),
                                 pct(m["base"]), pg.base.name]
    assert rows["mine"][8] == "" and len(rows["mine"][9]) == 19
    assert rows["plain"][2] == 3 and rows["plain"][4:7] == ["–", "–", "–"]  # no metrics on its card
    info = pg.inspect("mine")
    assert set(info) == {"card", "adapter_config", "files (bytes)"}
    assert info["adapter_config"]["peft_type"] == "PREFIX_TUNING"
    assert info["adapter_config"]["num_virtual_tokens"] == 4
    folder = pg.library.path("mine")
    assert info["files (bytes)"] == {f.name: f.stat().st_size for f in folder.iterdir()}
    assert info["card"]["metrics"] == m
    with pytest.raises(PlaygroundError, match="No prefix named 'ghost'"):
        pg.inspect("ghost")


# =============================================================================================
# service.py: learn tab numbers, uploads of task data
# =============================================================================================
def test_model_rows_and_parameter_summary(pg):
    b = pg.base
    for s in (ps(5, "random"), ps(5, "random", prefix_projection=True, encoder_hidden_size=16)):
        trainable, exported = parameter_counts(b, s)
        rows = dict((r[0], r[1]) for r in model_rows(pg.base, s))
        assert rows["model"] == b.name and rows["layers"] == b.num_layers and rows["kv heads"] == b.num_kv_heads
        assert rows["attention heads (query)"] == b.num_heads and rows["head dim"] == b.head_dim
        assert rows["parameters (frozen)"] == f"{b.num_parameters:,}" and rows["virtual tokens"] == 5
        assert rows["trainable parameters"].startswith(f"{trainable:,} (")
        assert rows["stored at export"].startswith(f"{exported:,} (")
        assert rows["device / dtype"] == "cpu / float32"
        text = parameter_summary(pg.base, s)
        assert f"{trainable:,}" in text
        if s.prefix_projection:
            assert f"{exported:,}" in text and "MLP" in text and trainable > exported
        else:
            assert trainable == exported and f"{b.num_parameters:,}" in text


def write_rows(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


DATA = [{"text": f"sentence number {i}", "label": "even" if i % 2 == 0 else "odd"} for i in range(10)]


def test_file_columns_on_a_csv(tmp_path):
    cols, rows = Playground.file_columns(write_rows(tmp_path / "d.csv", DATA))
    assert cols == ["text", "label"]
    assert len(rows) == 8 and rows[0] == {"text": "sentence number 0", "label": "even"}


def test_load_upload_builds_a_session_task(pg, tmp_path):
    path = write_rows(tmp_path / "d.jsonl", DATA)
    with pytest.raises(PlaygroundError, match="No uploaded task"):
        pg.task("k", "upload")
    task = pg.load_upload("k", path, "text", "label", "  Say even or odd. ", "exact_match")
    assert task.instruction == "Say even or odd." and task.name == "upload"
    assert len(task.split("train")) + len(task.split("test")) == len(DATA)
    assert pg.task("k", "upload") is task and pg.task("k", "sentiment") is get_task("sentiment")
    with pytest.raises(PlaygroundError, match="No uploaded task"):
        pg.task("other", "upload")  # uploads are per session
    with pytest.raises(PlaygroundError, match="no column 'input'.*'text', 'label'"):
        pg.load_upload("k", path, "input", "label", "Say even or odd.", "exact_match")
    with pytest.raises(PlaygroundError, match="Write an instruction"):
        pg.load_upload("k", path, "text", "label", "   ", "exact_match")
    assert pg.task("k", "upload") is task  # failed uploads keep the previous task
    run = pg.start_run("k", task, ps(3), ts(steps=2, eval_examples=2))
    list(pg.run_steps(run))
    assert run.state == "finished" and run.held_out_n == 2


def test_read_table_refuses_a_file_over_the_size_limit(tmp_path, monkeypatch):
    path = write_rows(tmp_path / "d.jsonl", DATA)
    assert len(read_table(path)) == len(DATA)
    monkeypatch.setattr(tasks_mod, "MAX_DATA_BYTES", 64)
    with pytest.raises(PlaygroundError, match="'d.jsonl' is .* MB; the limit for a task file"):
        read_table(path)


# =============================================================================================
# prefix.parameter_counts
# =============================================================================================
@pytest.mark.parametrize("projection", [False, True])
def test_parameter_counts_match_the_real_prefix(tiny, projection):
    for n, h in ((1, 8), (6, 32)):
        s = PrefixSettings(num_virtual_tokens=n, init="random", prefix_projection=projection, encoder_hidden_size=h)
        prefix = create_prefix(tiny, s, seed=0)
        trainable, exported = parameter_counts(tiny, s)
        assert trainable == prefix.trainable_parameters
        assert trainable == sum(p.numel() for p in prefix.parameters() if p.requires_grad)
        assert exported == prefix.exported_parameters == prefix.exported()[1].numel()
        assert (trainable > exported) == projection


# =============================================================================================
# figures.py
# =============================================================================================
def fake_attention(L=3, H=4, T=5, P=2, seed=0) -> PrefixAttention:
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(L, H, T, P, generator=g) / P
    share = w.sum(-1)
    return PrefixAttention([f"t{i}" for i in range(T - 1)] + ["t0"], w, share.mean(-1), share.mean((-1, -2)),
                           share.mean(1))


def test_training_figures():
    records = [rec(1), rec(2, 0.25), rec(3), rec(4, 0.5)]
    fig = loss_figure(records, total_steps=10)
    assert isinstance(fig, go.Figure) and len(fig.data) == 1
    assert list(fig.data[0].x) == [1, 2, 3, 4] and list(fig.data[0].y) == [r.loss for r in records]
    assert tuple(fig.layout.xaxis.range) == (0.5, 10.5)
    assert len(loss_figure([]).data[0].x or ()) == 0
    fig = metric_figure(records, "exact match", 10, {"base": 0.1, "instruction": 0.3})
    assert list(fig.data[0].x) == [2, 4] and list(fig.data[0].y) == [25.0, 50.0]
    assert sorted(s.y0 for s in fig.layout.shapes) == pytest.approx([10.0, 30.0])
    assert "exact match" in fig.layout.title.text
    assert len(metric_figure(records, "exact match").layout.shapes) == 0


def test_attention_figures_have_the_right_shapes():
    L, H, T, P = 3, 4, 5, 2
    a, b = fake_attention(L, H, T, P, seed=0), fake_attention(L, H, T, P, seed=1)
    fig = layer_figure({"first": a, "second": b})
    assert [t.name for t in fig.data] == ["first", "second"]
    assert all(len(t.y) == L and list(t.x) == list(range(L)) for t in fig.data)
    assert list(fig.data[1].y) == pytest.approx(b.layer_share.tolist())
    z = head_figure(a, "first").data[0].z  # [head][layer]
    assert len(z) == H and all(len(row) == L for row in z)
    assert z[1][2] == pytest.approx(a.head_share[2, 1].item())
    z = virtual_token_figure(a).data[0].z  # [virtual token][layer]
    assert len(z) == P and all(len(row) == L for row in z)
    assert z[1][0] == pytest.approx(a.weights[0, :, :, 1].mean().item())
    fig = query_token_figure(a, "first")
    hm = fig.data[0]
    assert len(hm.z) == T and all(len(row) == L for row in hm.z) and len(hm.y) == T
    assert len(set(hm.y)) == T  # repeated tokens get distinct labels
    assert hm.z[4][1] == pytest.approx(a.token_share[1, 4].item())


def test_a_closed_or_idle_session_stops_its_comparison_too(pg):
    """The Compare lab belongs to the Playground: session teardown stops that session's lab runs."""
    task = get_task("sentiment")
    assert pg.lab.max_steps == pg.limits.max_steps and pg.lab.budget is pg.budget
    gen = pg.lab.stream("tab", task, ["prompt", "lora"], steps=2, eval_every=0, eval_examples=2)
    assert next(gen)[0] == "prompt"
    pg.sessions.get("tab")
    assert pg.close_session("tab") is False  # no Train-tab run was going
    assert all(n == "prompt" for n, _ in gen)  # the step finishes, LoRA never starts
    heard = []
    pg.on_drop = heard.append
    idle = pg.lab.stream("idle", task, ["prompt", "lora"], steps=2, eval_every=0, eval_examples=2)
    next(idle)
    pg.sessions.on_drop(["idle"])  # what a sweep reports
    assert heard == [["idle"]] and all(n == "prompt" for n, _ in idle)
