"""Fixtures: tiny random-weight Llama (GQA) and GPT-2 models built in-process, and the real default model.

The tiny models get a byte-level BPE tokenizer trained in-process on the task data, so unit
tests need no download and run in seconds. The real model is the embedded SmolLM2, converted
once into a cache shared by the whole session (set PLAYGROUND_CACHE to reuse one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from playground.models import BaseModel, weights_fingerprint

ROOT = Path(__file__).resolve().parent.parent
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _corpus():
    for f in sorted((ROOT / "playground" / "data").glob("*/train.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            yield row["input"] + " " + row["target"]


def make_tokenizer(chat: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    eos = "<|im_end|>" if chat else "<|endoftext|>"
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=eos, bos_token="<|endoftext|>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny(kind: str, seed: int = 0) -> BaseModel:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tok = make_tokenizer(chat=kind == "llama")
    if kind == "llama":
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
        model = LlamaForCausalLM(cfg)
    else:
        cfg = GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=512,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
        model = GPT2LMHeadModel(cfg)
    model.config._attn_implementation = "eager"
    model.eval().requires_grad_(False)
    return BaseModel(f"tiny-{kind}", model, tok, torch.device("cpu"), torch.float32, weights_fingerprint(model))


@pytest.fixture(scope="session", params=["llama", "gpt2"])
def tiny(request) -> BaseModel:
    return make_tiny(request.param)


@pytest.fixture(scope="session")
def tiny_llama() -> BaseModel:
    return make_tiny("llama")


@pytest.fixture(scope="session")
def real():
    """The embedded SmolLM2-135M-Instruct on CPU (converted from GGUF on first use)."""
    from playground.models import load_model

    return load_model(device="cpu")


@pytest.fixture(autouse=True)
def _threads():
    # Keep both cores for torch; the suite itself runs serially.
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


KINDS = ("unit", "integration", "browser", "reliability", "docker")  # docker: only `pytest -m docker` (pytest.ini)


def pytest_collection_modifyitems(config, items):
    """Mark each test with its kind, the folder it lives in; a unit test may not load the real model."""
    for item in items:
        kind = Path(str(item.fspath)).relative_to(ROOT / "tests").parts[0]
        if kind not in KINDS:
            raise pytest.UsageError(f"{item.nodeid}: put the test in one of tests/{{{','.join(KINDS)}}}/")
        item.add_marker(kind)
        if kind == "unit" and ("real" in item.fixturenames or item.get_closest_marker("real_model")):
            raise pytest.UsageError(f"{item.nodeid} loads the real model: move it to tests/integration/")
