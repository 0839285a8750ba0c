"""Integration tests on the real embedded SmolLM2-135M-Instruct (CPU), and the CLI end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from peft import PeftModel

from playground.attention import prefix_attention
from playground.evaluation import evaluate, evaluate_all, per_example
from playground.library import Library
from playground.methods import prefix_method
from playground.models import DEFAULT_MODEL, cache_root, load_model
from playground.prefix import PrefixSettings, create_prefix, prefix_forward
from playground.prompts import PromptFormat, pad_right
from playground.tasks import get_task
from playground.training import TrainSettings, train
from tests.conftest import ROOT

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def trained(real):
    """A sentiment prefix trained for a few steps, with the held-out metric before and after."""
    task = get_task("sentiment")
    held_out = task.split("validation")[:48]
    prefix = create_prefix(real, PrefixSettings(), task.instruction, seed=0)
    before = evaluate(real, task, held_out, prefix_method(prefix)).score
    records = list(train(real, prefix_method(prefix), task, TrainSettings(steps=8, eval_every=4)))
    after = evaluate(real, task, held_out, prefix_method(prefix)).score
    return task, prefix, before, after, records


def test_the_embedded_model_is_cached_as_safetensors_and_reloads(real):
    folder = cache_root() / "models" / DEFAULT_MODEL
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    assert real.num_layers == 30 and real.num_heads == 9 and real.num_kv_heads == 3
    assert 130e6 < real.num_parameters < 140e6
    again = load_model(device="cpu")
    assert not again.converted and again.fingerprint == real.fingerprint
    answer = PromptFormat.for_tokenizer(real.tokenizer)
    assert answer.chat and "<|im_end|>" in answer.target("x")


def test_a_few_training_steps_raise_the_held_out_metric(trained):
    task, prefix, before, after, records = trained
    assert after >= before + 0.3, (before, after)
    assert after >= 0.8
    assert records[-1].metric is not None and records[-1].loss < records[0].loss
    assert prefix.trainable_parameters == 20 * 30 * 2 * 192


def test_evaluate_all_gives_the_three_rows(real, trained):
    task, prefix, *_ = trained
    res = evaluate_all(real, task, "test", prefix, limit=12)
    assert set(res) == {"base", "instruction", "prefix"}
    assert all(r.n == 12 and len(r.predictions) == 12 and 0 <= r.score <= 1 for r in res.values())
    assert res["prefix"].score > res["instruction"].score
    rows = per_example(task, task.split("test")[:12], res)  # the before/after table
    assert len(rows) == 12 and {"input", "target", "base", "instruction", "prefix", "prefix_score"} <= set(rows[0])
    assert sum(r["prefix_score"] for r in rows) / 12 == pytest.approx(res["prefix"].score)


def test_attention_shapes_and_shares_on_the_real_model(real, trained, tmp_path):
    _, prefix, *_ = trained
    att = prefix_attention(real, prefix, "A warm, funny film with a great cast.")
    T = len(att.tokens)
    assert att.weights.shape == (30, 9, T, 20)  # GQA: 9 query heads over 3 kv heads
    assert att.head_share.shape == (30, 9) and att.layer_share.shape == (30,)
    assert torch.all(att.weights >= 0) and torch.all(att.layer_share <= 1 + 1e-5)
    # the same shares from the raw attentions of plain PEFT's forward
    Library(tmp_path).save("s", prefix)
    peft_model = PeftModel.from_pretrained(real.model, str(tmp_path / "s"))
    ids = torch.tensor([PromptFormat.for_tokenizer(real.tokenizer).encode_prompt(att_text := "A warm, funny film with a great cast.", "prefix")])
    with torch.no_grad():
        raw = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True).attentions
    hand = torch.stack([a[0, :, :, :20].sum(-1).mean() for a in raw])  # [layer]
    assert torch.allclose(att.layer_share, hand, atol=1e-4), att_text


def test_peft_round_trip_on_the_real_model(real, trained, tmp_path):
    _, prefix, *_ = trained
    lib = Library(tmp_path)
    lib.save("rt", prefix, {"base_fingerprint": real.fingerprint})
    ids, mask = pad_right([PromptFormat.for_tokenizer(real.tokenizer).encode_prompt(t, "prefix")
                           for t in ["Dull and far too long.", "A joy from start to finish!"]], real.tokenizer.pad_token_id)
    with torch.no_grad():
        ours = prefix_forward(real, ids, mask, prefix).logits
        theirs = PeftModel.from_pretrained(real.model, str(tmp_path / "rt"))(input_ids=ids, attention_mask=mask).logits
        reloaded = prefix_forward(real, ids, mask, lib.load("rt", real)).logits
    assert torch.allclose(ours, theirs, atol=1e-4)
    assert torch.allclose(ours, reloaded, atol=1e-5)


def _cli(*args, check=True):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    res = subprocess.run([sys.executable, "-m", "playground", *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    if check:
        assert res.returncode == 0, res.stderr[-2000:]
    return res


def test_cli_train_list_eval_attention_generate(tmp_path, real):
    lib = str(tmp_path / "lib")
    r = _cli("train", "--task", "sentiment", "--steps", "3", "--eval-every", "0", "--library", lib, "--name", "s1")
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["name"] == "s1" and 0 <= last["prefix"] <= 1
    card = json.loads((tmp_path / "lib" / "s1" / "card.json").read_text())
    assert card["base_fingerprint"] == real.fingerprint and card["metrics"]["n"] == 60
    assert "s1" in _cli("list", "--library", lib).stdout
    data = tmp_path / "few.jsonl"
    data.write_text("".join(json.dumps({"input": x, "target": y}) + "\n" for x, y in
                            [("An utter delight.", "positive"), ("A total bore.", "negative")]))
    out = json.loads(_cli("eval", "--task", "sentiment", "--prefix", "s1", "--library", lib, "--data", str(data))
                     .stdout.strip().splitlines()[-1])
    assert out["metric"] == "exact_match" and out["n"] == 2 and out["score"] == out["prefix"]
    att = json.loads(_cli("attention", "--prefix", "s1", "--library", lib, "--prompt", "Great film.", "--json")
                     .stdout.strip().splitlines()[-1])
    assert len(att["layer_share"]) == 30 and att["shape"][:2] == [30, 9]
    gen = _cli("generate", "--prefix", str(tmp_path / "lib" / "s1"), "--prompt", "A lovely, moving film.").stdout
    assert "(no prefix)" in gen and "s1" in gen


@pytest.mark.parametrize("args, match", [
    (["train", "--task", "poetry"], "Unknown task 'poetry'"),
    (["train", "--task", "sentiment", "--num-virtual-tokens", "0"], "num_virtual_tokens"),
    (["train", "--task", "sentiment", "--device", "tpu"], "Unknown device"),
    (["eval", "--task", "sentiment", "--prefix", "/nonexistent/prefix"], "No prefix named|does not exist|valid prefix"),
])
def test_cli_bad_input_is_one_clear_line(args, match, tmp_path):
    r = _cli(*args, "--library", str(tmp_path / "lib"), check=False)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ")
    import re
    assert re.search(match, r.stderr), r.stderr
