"""The Learn tab's numbers and uploads of task data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import playground.tasks as tasks_mod
from playground.errors import PlaygroundError
from playground.prefix import parameter_counts
from playground.report import model_rows, parameter_summary
from playground.service import Playground
from playground.tasks import get_task, read_table

from .support import ps, ts


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
