"""Unit tests: the library (atomic saves, bad folders, other models), tasks, data files, metrics, devices."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

import playground.peft_folder as peft_folder_mod
from playground.errors import PlaygroundError
from playground.library import Library
from playground.metrics import exact_match, exact_match_cased, normalize, rouge_l, score, token_f1
from playground.models import load_model, resolve_device
from playground.peft_folder import load_prefix
from playground.prefix import PrefixSettings, create_prefix
from playground.tasks import BUILTIN, get_task, read_examples, split_examples, user_task
from tests.conftest import make_tiny


@pytest.fixture
def saved(tiny_llama, tmp_path):
    lib = Library(tmp_path / "lib")
    prefix = create_prefix(tiny_llama, PrefixSettings(num_virtual_tokens=3, init="random"))
    lib.save("p", prefix, {"task": "sentiment", "base_model": tiny_llama.name, "base_fingerprint": tiny_llama.fingerprint})
    return lib, prefix


def test_library_lists_loads_renames_and_deletes(saved, tiny_llama):
    lib, prefix = saved
    assert lib.names() == ["p"]
    assert lib.entries()[0].card["task"] == "sentiment"
    assert torch.equal(lib.load("p", tiny_llama).embeddings(), prefix.embeddings().detach())
    lib.rename("p", "q")
    assert lib.names() == ["q"] and lib.entries()[0].card["name"] == "q"
    lib.delete("q")
    assert lib.names() == []


def test_a_crash_during_save_leaves_nothing_half_written(saved, tiny_llama, monkeypatch):
    lib, prefix = saved
    old = (lib.root / "p" / "adapter_model.safetensors").read_bytes()

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(peft_folder_mod, "save_file", crash)
    with pytest.raises(OSError):
        lib.save("new", prefix)
    with pytest.raises(OSError):
        lib.save("p", prefix, overwrite=True)
    assert lib.names() == ["p"]  # no half-written 'new'
    assert (lib.root / "p" / "adapter_model.safetensors").read_bytes() == old  # the old 'p' is intact
    assert [d.name for d in lib.root.iterdir()] == ["p"]  # temporary folders are gone


def test_existing_names_shipped_prefixes_and_a_read_only_library_are_protected(saved, tiny_llama, tmp_path):
    lib, prefix = saved
    with pytest.raises(PlaygroundError, match="already exists"):
        lib.save("p", prefix)
    both = Library(tmp_path / "class", shipped=lib.root)  # lib's 'p' is a shipped prefix here
    assert both.names() == ["p"] and both.protected == {"p"}
    for action in (lambda: both.delete("p"), lambda: both.save("p", prefix, overwrite=True),
                   lambda: both.rename("p", "z")):
        with pytest.raises(PlaygroundError, match="read-only"):
            action()
    both.save("mine", prefix)  # the class's own folder takes new names
    both.rename("mine", "mine2")
    assert both.names() == ["mine2", "p"] and [p.name for p in lib.root.iterdir()] == ["p"]
    both.delete("mine2")
    ro = Library(lib.root, read_only=True)  # read-only: nothing changes at all
    for action in (lambda: ro.delete("p"), lambda: ro.save("p", prefix, overwrite=True), lambda: ro.rename("p", "z"),
                   lambda: ro.save("new", prefix)):
        with pytest.raises(PlaygroundError, match="read-only"):
            action()
    with pytest.raises(PlaygroundError, match="valid prefix name"):
        lib.save("../escape", prefix)


def test_a_prefix_for_another_model_is_refused_with_a_clear_message(saved, tiny_llama):
    lib, _ = saved
    gpt2 = make_tiny("gpt2")
    with pytest.raises(PlaygroundError, match="made for another model"):
        lib.load("p", gpt2)
    other = make_tiny("llama", seed=99)  # same shapes, other weights: the fingerprint catches it
    with pytest.raises(PlaygroundError, match="different model"):
        lib.load("p", other)


@pytest.mark.parametrize("breakage, match", [
    ("no_weights", "has no adapter_model.safetensors"),
    ("pickle_only", "pickle"),
    ("no_config", "has no adapter_config.json"),
    ("bad_json", "not valid JSON"),
    ("lora", "not a prefix-tuning adapter"),
    ("wrong_shape", "holds a"),
    ("nan", "NaN"),
    ("garbage_weights", "not a valid safetensors"),
])
def test_broken_prefix_folders_give_one_clear_message(saved, tiny_llama, breakage, match):
    lib, _ = saved
    d = lib.root / "p"
    w, c = d / "adapter_model.safetensors", d / "adapter_config.json"
    if breakage in ("no_weights", "pickle_only"):
        w.unlink()
        if breakage == "pickle_only":
            (d / "adapter_model.bin").write_bytes(b"\x80\x04not loaded")
    elif breakage == "no_config":
        c.unlink()
    elif breakage == "bad_json":
        c.write_text("{not json")
    elif breakage == "lora":
        c.write_text(json.dumps({"peft_type": "LORA"}))
    elif breakage == "wrong_shape":
        save_file({"prompt_embeddings": torch.zeros(3, 7)}, str(w))
    elif breakage == "nan":
        cfg = json.loads(c.read_text())
        save_file({"prompt_embeddings": torch.full((3, cfg["num_layers"] * 2 * cfg["token_dim"]), float("nan"))}, str(w))
    elif breakage == "garbage_weights":
        w.write_bytes(b"\x80\x04 a pickle renamed")
    with pytest.raises(PlaygroundError, match=match):
        load_prefix(d, tiny_llama)


def test_builtin_tasks_have_enough_examples_loaded_through_datasets():
    assert len(BUILTIN) >= 6
    for name in BUILTIN:
        task = get_task(name)
        assert len(task.split("train")) >= 150, name
        assert len(task.split("test")) >= 50, name
        assert task.instruction and task.metric
        train = {e.input for e in task.split("train")}
        assert not train & {e.input for e in task.split("test")}, f"{name}: test inputs leak into train"
    shout = get_task("shout")
    assert all(e.target == e.input[:-1].upper() + "!" for e in shout.split("test"))


def test_user_csv_with_chosen_columns_is_split_into_train_and_test(tmp_path):
    f = tmp_path / "mine.csv"
    f.write_text("question,answer\n" + "".join(f"q{i},a{i}\n" for i in range(20)))
    task = user_task(f, input_col="question", target_col="answer")
    assert len(task.split("train")) == 16 and len(task.split("test")) == 4
    assert {e.input for e in task.split("train")}.isdisjoint(e.input for e in task.split("test"))
    assert split_examples(task.split("train"), seed=0) == split_examples(task.split("train"), seed=0)


@pytest.mark.parametrize("name, content, match", [
    ("empty.jsonl", "", "is empty"),
    ("bad.jsonl", '{"input": "a", "target": "b"}\n{"input": oops}\n', "line 2 is not valid JSON"),
    ("array.jsonl", '[{"input": "a", "target": "b"}]\n', "not an object"),
    ("cols.jsonl", '{"text": "a", "label": "b"}\n', "no column 'input', 'target'"),
    ("cols.csv", "text,label\na,b\n", "no column"),
    ("blank.jsonl", '{"input": "", "target": "b"}\n', "empty 'input'"),
    ("notes.txt", "hello", "not a .jsonl or .csv"),
])
def test_bad_data_files_give_one_clear_message(tmp_path, name, content, match):
    f = tmp_path / name
    f.write_text(content)
    with pytest.raises(PlaygroundError, match=match):
        read_examples(f)


def test_unknown_task_and_missing_file():
    with pytest.raises(PlaygroundError, match="Unknown task 'poetry'.*sentiment"):
        get_task("poetry")
    with pytest.raises(PlaygroundError, match="does not exist"):
        read_examples("/nonexistent/file.jsonl")


def test_metrics():
    assert normalize("The  Capital, is BRASÍLIA!") == "capital is brasilia"
    assert exact_match("Positive.", "positive") == 1.0
    assert exact_match("the cat is black", "cat is black") == 1.0
    assert exact_match_cased("HELLO THERE!", "HELLO THERE!") == 1.0
    assert exact_match_cased("hello there!", "HELLO THERE!") == 0.0
    assert rouge_l("city council approves new park", "council approves park plan") == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert token_f1("x y z", "x y w") == pytest.approx(2 / 3)
    assert score("exact_match", ["yes", "no"], ["yes", "yes"]) == 0.5


@pytest.mark.parametrize("spec", ["tpu", "cuda:7", "gpu please"])
def test_a_wrong_device_is_refused(spec):
    with pytest.raises(PlaygroundError, match="[Dd]evice|GPU"):
        resolve_device(spec)


def test_offline_hub_model_fails_with_a_clear_message():
    with pytest.raises(PlaygroundError, match="offline"):
        load_model("some-org/model-that-is-not-cached-anywhere")


def test_a_local_model_folder_loads_with_eager_attention(tmp_path):
    tiny = make_tiny("gpt2")
    tiny.model.save_pretrained(tmp_path / "m")
    tiny.tokenizer.save_pretrained(tmp_path / "m")
    base = load_model(str(tmp_path / "m"), device="cpu")
    assert base.model.config._attn_implementation == "eager"
    assert base.fingerprint == tiny.fingerprint
    assert not any(p.requires_grad for p in base.model.parameters())
    shutil.rmtree(tmp_path / "m")
