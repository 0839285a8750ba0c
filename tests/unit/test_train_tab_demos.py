"""The Train tab and the CLI start a prefix from training examples (init "demos"), tiny model, no browser."""

from __future__ import annotations

import json

import pytest

import playground.cli as cli
import ui.app as app
import ui.train as train_tab
from playground.library import Library
from playground.methods import prefix_learning_rate
from playground.prefix import INITS
from playground.service import Limits, Playground


def _fn(demo, name: str):
    return next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == name)


def test_the_train_tab_offers_training_examples_and_trains_from_them(tiny_llama, tmp_path):
    assert set(train_tab.INITS.values()) == set(INITS)
    assert train_tab.INITS["training examples"] == "demos"
    pg = Playground(tiny_llama, Library(tmp_path / "lib"), Limits(max_virtual_tokens=512))
    demo = app.build_demo(pg)
    text, rate, shots, n_tokens = _fn(demo, "on_init")("training examples", False)
    assert shots["visible"] is True and n_tokens["interactive"] is False and text["visible"] is False
    assert rate["value"] == prefix_learning_rate(False, "demos")
    assert _fn(demo, "on_init")("task text", False)[2]["visible"] is False
    on_train = next(f.fn for f in demo.fns.values() if f.api_name == "train")
    steps = on_train("sentiment", 20, "training examples", "", False, 256, 1e-2, 2, 4, 3, 0, 4, "fp32", 1, False, "",
                     request=None)
    first = next(steps)[0]
    run = pg.sessions.get("local").run
    P = run.prefix.num_virtual_tokens
    assert P != 20 and f"{P} virtual tokens from 1 training example" in first
    assert run.prefix.info["settings"]["init_shots"] == 1 and run.prefix.info["seed"] == 3
    *_, last = steps
    assert run.state == "finished" and len(last[4]) == 5  # the before/after table: its score row, 4 examples
    assert last[4][0][0] == "score on all 4 held-out examples (exact match)" and run.start_metric is not None
    summary = last[3]  # one row per way of answering, with its cost
    assert summary[0][0] == "the model as is" and summary[-1][0] == "the trained prefix"
    assert sum(r[0].startswith("★") for r in summary) == 1 and summary[-1][3] == str(P)  # its cached positions
    assert "vs the strongest prompt" in last[0] and "Paired on the same 4 examples" in last[0]


def test_the_cli_trains_from_demonstrations_and_the_card_records_them(tiny_llama, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "load_base_verbose", lambda args: tiny_llama)
    assert cli.main(["train", "--task", "capitals", "--init", "demos", "--init-shots", "1", "--seed", "2",
                     "--steps", "1", "--eval-every", "0", "--precision", "fp32", "--library", str(tmp_path)]) == 0
    out = capsys.readouterr()
    card = json.loads((tmp_path / "capitals" / "card.json").read_text())
    P = card["num_virtual_tokens"]
    assert f"{P} virtual tokens from 1 training example" in out.err
    assert card["settings"]["init"] == "demos" and card["settings"]["init_shots"] == 1 and card["seed"] == 2
    assert len(card["init_demonstrations"]) == 1
    with pytest.raises(SystemExit):  # argparse: not an int
        cli.main(["train", "--init", "demos", "--init-shots", "two"])
    assert cli.main(["train", "--task", "capitals", "--init", "demos", "--init-shots", "0",
                     "--library", str(tmp_path / "b")]) == 2
    assert "from 1 to 8 training examples" in capsys.readouterr().err
