"""The class's run records (playground/runlog.py) and the `train` command they print.

The key property: the command recorded for a run, read back by the CLI's own parser, gives
exactly the run's PrefixSettings, TrainSettings, task (or uploaded data), and starting prefix.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from playground import cli
from playground.errors import PlaygroundError
from playground.library import Library
from playground.methods import prefix_method
from playground.models import DEFAULT_MODEL
from playground.names import check_name
from playground.peft_folder import load_prefix
from playground.prefix import PrefixSettings, create_prefix
from playground.runlog import (
    PREFIX_DIR,
    RUN_FILE,
    RUN_ID_RE,
    STEPS_FILE,
    RunLog,
    RunRecord,
    fingerprint,
    train_command,
)
from playground.tasks import Example, Task, get_task
from playground.training import TrainSettings, train


def _record(log: RunLog, task: str = "sentiment", ps: PrefixSettings | None = None,
            ts: TrainSettings | None = None, **kw) -> RunRecord:
    ps = ps or PrefixSettings()
    ts = ts or TrainSettings()
    base = dict(run_id=log.new_id("Alex"), owner="user:alex", author="Alex", task=task, task_title=task,
                metric="exact_match", instruction="Classify the movie review as positive or negative.",
                model=DEFAULT_MODEL, prefix_settings=asdict(ps), train_settings=asdict(ts), started=1000.0)
    return RunRecord(**{**base, **kw})


def _upload(n_train: int = 6, n_test: int = 3) -> Task:
    ex = lambda i: Example(f"say 'it' #{i} & $HOME", f"it {i}")  # noqa: E731  quotes and shell characters
    return Task("upload", "Your data: mine.jsonl", "Repeat: 'it' \"now\" $x", metric="rouge_l",
                splits={"train": [ex(i) for i in range(n_train)], "test": [ex(100 + i) for i in range(n_test)]})


def _parse(command: str):
    words = shlex.split(command)
    assert words[:4] == ["python", "-m", "playground", "train"]
    return cli.build_parser().parse_args(words[3:])


def _hidden(root: Path) -> list[str]:
    """Every hidden (temporary) file or folder left anywhere under root, or beside it."""
    left = [str(p) for p in root.rglob(".*")] if root.exists() else []
    return left + [str(p) for p in root.parent.glob(f".{root.name}*")]


# ---- The command reproduces the run -----------------------------------------------------------
CASES = {
    "builtin": dict(ps=PrefixSettings(num_virtual_tokens=12), ts=TrainSettings(learning_rate=0.1 + 0.2, steps=7,
                    batch_size=4, seed=3, eval_every=2, eval_examples=32, precision="fp32")),
    "text": dict(ps=PrefixSettings(num_virtual_tokens=9, init="text", init_text="Say it; 'loudly' & \"$(rm -rf)\""),
                 ts=TrainSettings(learning_rate=3e-3)),
    "demos": dict(ps=PrefixSettings(num_virtual_tokens=57, init="demos", init_shots=3),
                  ts=TrainSettings(eval_every=0, eval_examples=16)),
    "projection": dict(ps=PrefixSettings(init="random", prefix_projection=True, encoder_hidden_size=96),
                       ts=TrainSettings(learning_rate=1e-4, precision="bf16"), model="gpt2"),
    "random": dict(ps=PrefixSettings(num_virtual_tokens=1, init="random"), ts=TrainSettings(seed=123456)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_builtin_command_parses_back_to_the_run(tmp_path, case):
    log = RunLog(tmp_path / "runs", tmp_path / "lib")
    kw = CASES[case]
    rec = log.begin(_record(log, task="topic", **kw))
    args = _parse(rec.command)
    ps, ts = cli.settings_from_args(args)
    assert asdict(ps) == rec.prefix_settings
    assert asdict(ts) == rec.train_settings
    assert (args.task, args.data, args.test_data, args.start_from) == ("topic", None, None, None)
    assert args.name == rec.run_id and args.library == str((tmp_path / "lib").resolve())
    assert args.model == (None if rec.model == DEFAULT_MODEL else rec.model)
    assert cli._task(args).name == "topic"


def test_upload_command_reruns_the_same_examples(tmp_path):
    log = RunLog(tmp_path / "runs", tmp_path / "lib")
    data = _upload()
    ps, ts = PrefixSettings(num_virtual_tokens=5, init="text", init_text="x y"), TrainSettings(eval_examples=3)
    rec = log.begin(_record(log, task="upload", ps=ps, ts=ts, instruction=data.instruction, metric=data.metric),
                    data)
    assert rec.data_fingerprint == fingerprint(data)
    args = _parse(rec.command)
    assert cli.settings_from_args(args) == (ps, ts)
    assert args.task is None and args.start_from is None
    run = log.root / rec.run_id
    assert (Path(args.data), Path(args.test_data)) == (run / "train.jsonl", run / "test.jsonl")
    again = cli._task(args)  # what `python -m playground train` would train and score on
    assert again.splits == data.splits  # same examples, same order, test held out (no 80/20 split)
    assert (again.instruction, again.metric) == (data.instruction, data.metric)
    assert fingerprint(again) == rec.data_fingerprint
    assert log.get(rec.run_id).command == rec.command


def test_forked_command_starts_from_the_parent_prefix(tmp_path, tiny_llama):
    log = RunLog(tmp_path / "runs")
    parent = log.begin(_record(log, ps=PrefixSettings(num_virtual_tokens=4)))
    log.save_prefix(parent.run_id, create_prefix(tiny_llama, PrefixSettings(num_virtual_tokens=4), "Say it."))
    child = log.begin(_record(log, ps=PrefixSettings(num_virtual_tokens=4), forked_from=parent.run_id))
    args = _parse(child.command)
    assert Path(args.start_from) == log.prefix_path(parent.run_id)
    assert asdict(cli.settings_from_args(args)[0]) == child.prefix_settings
    assert "--library" not in shlex.split(child.command)  # no library given: the CLI's default
    assert train_command(child, None) == child.command.replace(f" --start-from {shlex.quote(args.start_from)}", "")


def test_every_flag_the_command_uses_exists_and_irrelevant_ones_are_left_out(tmp_path):
    rec = _record(RunLog(tmp_path), ps=PrefixSettings(init="task", init_text="unused", init_shots=5))
    words = shlex.split(train_command(rec, tmp_path / "lib", start_from=tmp_path / "p"))
    train_parser = cli.build_parser()._subparsers._group_actions[0].choices["train"]
    known = {s for a in train_parser._actions for s in a.option_strings}
    assert {w for w in words if w.startswith("--")} <= known
    assert not {"--init-text", "--init-shots", "--prefix-projection", "--encoder-hidden-size", "--model"} & set(words)


# ---- --start-from trains ----------------------------------------------------------------------
def test_start_from_a_saved_prefix_trains_on(tmp_path, tiny_llama):
    log = RunLog(tmp_path / "runs", tmp_path / "lib")
    task = get_task("sentiment")
    rec = log.begin(_record(log, ps=PrefixSettings(num_virtual_tokens=4)))
    made = create_prefix(tiny_llama, PrefixSettings(num_virtual_tokens=4), task.instruction)
    log.save_prefix(rec.run_id, made)
    loaded = log.load_prefix(rec.run_id, tiny_llama)
    assert not any(p.requires_grad for p in loaded.parameters())  # loaded for inference ...
    with pytest.raises(PlaygroundError, match="frozen"):
        next(train(tiny_llama, prefix_method(loaded), task, TrainSettings(steps=1)))

    ts = TrainSettings(learning_rate=0.05, steps=2, batch_size=2, eval_every=0, eval_examples=2)
    fork = log.begin(_record(log, ps=PrefixSettings(num_virtual_tokens=4), forked_from=rec.run_id, ts=ts))
    args = _parse(fork.command)
    ps, ts = cli.settings_from_args(args)
    cli._check_start(args.start_from, Library(args.library), ps)
    prefix = cli.build_prefix(tiny_llama, ps, task, ts.seed, args.start_from, args.library)  # ... trained on here
    before = prefix.embeddings().detach().clone()
    assert torch.equal(before, made.exported()[1])  # starts from the saved weights, not a new init
    assert prefix.info["started_from"] == args.start_from
    steps = list(train(tiny_llama, prefix_method(prefix), task, ts))
    assert len(steps) == 2 and all(torch.isfinite(torch.tensor(s.loss)) for s in steps)
    after = prefix.embeddings().detach()
    assert not torch.equal(before, after) and torch.isfinite(after).all()

    # by library name too, once saved there
    Library(args.library).save("parent", made)
    by_name = cli.build_prefix(tiny_llama, ps, task, 0, "parent", args.library)
    assert torch.equal(by_name.embeddings().detach(), made.exported()[1])
    assert all(p.requires_grad for p in by_name.parameters())


def test_start_from_refusals(tmp_path):
    lib = Library(tmp_path / "lib")
    with pytest.raises(PlaygroundError, match="neither a prefix folder nor a prefix"):
        cli._check_start(str(tmp_path / "nowhere"), lib, PrefixSettings())
    with pytest.raises(PlaygroundError, match="neither a prefix folder nor a prefix"):
        cli._check_start("no-such-prefix", lib, PrefixSettings())
    with pytest.raises(PlaygroundError, match="--prefix-projection"):
        cli._check_start(str(tmp_path), lib, PrefixSettings(init="random", prefix_projection=True))
    args = cli.build_parser().parse_args(["train", "--task", "sentiment", "--test-data", "t.jsonl"])
    with pytest.raises(PlaygroundError, match="give --data too"):
        cli._task(args)


# ---- Records on disk --------------------------------------------------------------------------
def test_new_id_is_a_valid_prefix_name():
    log = RunLog("unused")
    for author in ("Alex", "Zoë O'Neil", "", "!!!", "a" * 80, "browser:ab12cd34ef"):
        rid = log.new_id(author)
        assert RUN_ID_RE.fullmatch(rid) and check_name(rid) == rid, rid
    assert log.new_id("Zoë O'Neil").split("-")[2:5] == ["zoe", "o", "neil"]
    assert log.new_id("x") != log.new_id("x")


def test_writes_are_whole_and_leave_no_temporary_files(tmp_path, tiny_llama, monkeypatch):
    log = RunLog(tmp_path / "runs")
    rec = log.begin(_record(log), _upload())
    assert sorted(p.name for p in (log.root / rec.run_id).iterdir()) == [RUN_FILE, "test.jsonl", "train.jsonl"]
    log.step(rec.run_id, {"step": 1, "loss": 0.5, "metric": float("nan")})
    rec.state, rec.final_metric, rec.summary = "finished", float("inf"), [{"score": float("nan")}]
    log.update(rec)
    log.save_prefix(rec.run_id, create_prefix(tiny_llama, PrefixSettings(num_virtual_tokens=3), "Say it."))
    log.save_prefix(rec.run_id, create_prefix(tiny_llama, PrefixSettings(num_virtual_tokens=3), "Say it.", seed=1))
    assert _hidden(log.root) == []

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))

    stored = strict((log.root / rec.run_id / RUN_FILE).read_text())
    assert stored["final_metric"] is None and stored["summary"] == [{"score": None}] and stored["has_prefix"]
    assert strict((log.root / rec.run_id / STEPS_FILE).read_text())["metric"] is None
    got = log.get(rec.run_id)
    assert (got.state, got.has_prefix) == ("finished", True)

    def crash(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)  # a crash at the rename: the old run.json stays whole
    rec.note = "changed"
    with pytest.raises(OSError):
        log.update(rec)
    assert log.get(rec.run_id).note == "" and _hidden(log.root) == []


def test_a_torn_last_step_line_is_skipped_and_the_next_step_stays_whole(tmp_path):
    log = RunLog(tmp_path / "runs")
    rid = log.begin(_record(log)).run_id
    for i in (1, 2):
        log.step(rid, {"step": i, "loss": 1.0 / i})
    with open(log.root / rid / STEPS_FILE, "ab") as f:
        f.write(b'{"step": 3, "lo')  # a writer killed mid-line
    assert [r["step"] for r in log.steps(rid)] == [1, 2]
    log.step(rid, {"step": 3, "loss": 0.3})
    assert [r["step"] for r in log.steps(rid)] == [1, 2, 3]
    assert log.steps(log.begin(_record(log)).run_id) == []  # no steps yet


BAD_IDS = ["../x", "..", "/etc/passwd", "20261126-231900-alex-abcdef/../../x", "20261126-231900-alex-abcdef/",
           "20261126-231900-Alex-abcdef", ".hidden", "", "a" * 300, None, 123, "20261126-231900-alex-abcdef\n"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_ids_are_refused_before_the_disk_is_touched(tmp_path, tiny_llama, bad):
    root = tmp_path / "class" / "runs"
    root.parent.mkdir()
    log = RunLog(root)
    prefix = create_prefix(tiny_llama, PrefixSettings(num_virtual_tokens=2), "Say it.")
    calls = [lambda: log.get(bad), lambda: log.steps(bad), lambda: log.step(bad, {"step": 1}),
             lambda: log.update(replace(_record(log), run_id=bad)), lambda: log.save_prefix(bad, prefix),
             lambda: log.load_prefix(bad, tiny_llama), lambda: log.prefix_path(bad),
             lambda: log.begin(replace(_record(log), run_id=bad))]
    if bad:  # forked_from "" means "not forked"
        calls.append(lambda: log.begin(replace(_record(log), forked_from=bad)))
    for call in calls:
        with pytest.raises(PlaygroundError, match="No run"):
            call()
    assert not root.exists() and sorted(os.listdir(tmp_path)) == ["class"] and os.listdir(tmp_path / "class") == []


def test_unknown_run_and_run_without_prefix(tmp_path, tiny_llama):
    log = RunLog(tmp_path / "runs")
    with pytest.raises(PlaygroundError, match="No run '20260101-000000-x-abcdef' in this class"):
        log.get("20260101-000000-x-abcdef")
    rid = log.begin(_record(log)).run_id
    with pytest.raises(PlaygroundError, match="has no saved prefix"):
        log.load_prefix(rid, tiny_llama)
    with pytest.raises(PlaygroundError, match="already exists"):
        log.begin(log.get(rid))


def test_records_oldest_first_skipping_broken_folders(tmp_path):
    log = RunLog(tmp_path / "runs")
    late = log.begin(_record(log, author="Bo", started=2000.0))
    early = log.begin(_record(log, started=1000.0))
    broken = log.begin(_record(log, started=1500.0))
    (log.root / broken.run_id / RUN_FILE).write_text('{"run_id": "', encoding="utf-8")
    (log.root / "20260101-000000-empty-abcdef").mkdir()  # a folder without run.json
    moved = log.begin(_record(log, started=1200.0))  # a run.json that names another run
    os.rename(log.root / moved.run_id, log.root / "20260101-000000-moved-abcdef")
    (log.root / "notes.txt").write_text("not a run")
    assert [r.run_id for r in log.records()] == [early.run_id, late.run_id]
    with pytest.raises(PlaygroundError, match="damaged"):
        log.get(broken.run_id)
    assert log.usage()[0] == 5 and log.usage()[1] > 0


def test_clear_deletes_every_run(tmp_path):
    log = RunLog(tmp_path / "runs")
    assert log.clear() == 0 and log.usage() == (0, 0)
    for _ in range(3):
        log.begin(_record(log), _upload())
    assert log.usage()[0] == 3
    assert log.clear() == 3
    assert log.records() == [] and log.usage() == (0, 0) and os.listdir(tmp_path) == []
    rid = log.begin(_record(log)).run_id  # the folder comes back on the next write
    assert [r.run_id for r in log.records()] == [rid]


def test_saved_prefix_loads_back_equal(tmp_path, tiny_llama):
    log = RunLog(tmp_path / "runs")
    rid = log.begin(_record(log)).run_id
    held = log.get(rid)
    prefix = create_prefix(tiny_llama, PrefixSettings(num_virtual_tokens=5), "Say it.")
    with torch.no_grad():
        prefix.encoder.embedding.weight.add_(0.25)  # away from the init, so equality means something
    log.save_prefix(rid, prefix)
    assert (log.prefix_path(rid) / "adapter_config.json").is_file() and log.prefix_path(rid).name == PREFIX_DIR
    assert not held.has_prefix
    log.update(held)  # a record held since before the save does not hide the prefix
    assert held.has_prefix and json.loads((log.root / rid / RUN_FILE).read_text())["has_prefix"]
    back = log.load_prefix(rid, tiny_llama)
    assert torch.equal(back.embeddings(), prefix.exported()[1])
    assert torch.equal(load_prefix(log.prefix_path(rid), tiny_llama).embeddings(), back.embeddings())
    assert back.info["run"] == rid and log.get(rid).has_prefix


def test_fingerprint_follows_every_example_in_order():
    data = _upload()
    fp = fingerprint(data)
    assert len(fp) == 64 and fp == fingerprint(_upload())
    one = _upload()
    one.splits["test"][1] = Example(one.splits["test"][1].input, one.splits["test"][1].target + "!")
    swapped = _upload()
    swapped.splits["train"][0], swapped.splits["train"][1] = swapped.splits["train"][1], swapped.splits["train"][0]
    moved = _upload()
    moved.splits["test"].insert(0, moved.splits["train"].pop())  # same examples, another split
    assert len({fp, fingerprint(one), fingerprint(swapped), fingerprint(moved)}) == 4
