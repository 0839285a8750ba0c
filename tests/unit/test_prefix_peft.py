"""Unit tests on tiny models: our prefix path equals plain PEFT (logits, generation, file format)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest
import torch
from peft import PeftModel, PrefixTuningConfig, get_peft_model
from safetensors import safe_open
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from playground.generate import generate_texts_mixed, greedy_mixed
from playground.library import Library
from playground.methods import InstructionMethod, answer
from playground.peft_folder import load_prefix
from playground.prefix import PrefixSettings, create_prefix, prefix_forward
from playground.prompts import PromptFormat, pad_right
from tests.conftest import CHAT_TEMPLATE


def _batch(base, texts):
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    return pad_right([fmt.encode_prompt(t, "prefix") for t in texts], base.tokenizer.pad_token_id)


def _randomize(prefix, seed=1):
    """Move a prefix away from its init so equality checks mean something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in prefix.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.mark.parametrize("projection", [False, True])
def test_saved_prefix_loads_in_plain_peft_with_identical_logits(tiny, tmp_path, projection):
    settings = PrefixSettings(num_virtual_tokens=6, init="random" if projection else "task",
                              prefix_projection=projection, encoder_hidden_size=32)
    prefix = create_prefix(tiny, settings, "Classify the review as positive or negative.", seed=3)
    _randomize(prefix)
    ids, mask = _batch(tiny, ["a fine film", "dull and far too long for its thin story"])
    with torch.no_grad():
        ours = prefix_forward(tiny, ids, mask, prefix).logits  # [batch, T, vocab]
    Library(tmp_path).save("p", prefix, {"task": "t"})
    peft_model = PeftModel.from_pretrained(tiny.model, str(tmp_path / "p"))
    with torch.no_grad():
        theirs = peft_model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    cfg = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "PREFIX_TUNING" and cfg["inference_mode"] is True
    with safe_open(str(tmp_path / "p" / "adapter_model.safetensors"), "pt") as f:
        # the MLP is dropped at export: only [P, layer*2*token_dim] is stored
        assert list(f.keys()) == ["prompt_embeddings"]
        assert tuple(f.get_tensor("prompt_embeddings").shape) == (6, prefix.exported_parameters // 6)
    if projection:
        assert prefix.trainable_parameters > prefix.exported_parameters


def test_prefix_saved_by_plain_peft_loads_here(tiny, tmp_path):
    torch.manual_seed(0)
    peft_model = get_peft_model(tiny.model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5))
    peft_model.save_pretrained(str(tmp_path / "peft"))
    ids, mask = _batch(tiny, ["bonjour", "le chat est noir"])
    with torch.no_grad():
        theirs = peft_model(input_ids=ids, attention_mask=mask).logits
    prefix = load_prefix(tmp_path / "peft", tiny)  # no card: PEFT wrote only its own files
    with torch.no_grad():
        ours = prefix_forward(tiny, ids, mask, prefix).logits
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_greedy_generation_matches_peft_generate(tiny, tmp_path):
    prefix = create_prefix(tiny, PrefixSettings(num_virtual_tokens=4, init="random"), seed=5)
    Library(tmp_path).save("g", prefix)
    peft_model = PeftModel.from_pretrained(tiny.model, str(tmp_path / "g"))
    fmt = PromptFormat.for_tokenizer(tiny.tokenizer)
    prompt = fmt.encode_prompt("the cat is black", "prefix")
    ids = torch.tensor([prompt])
    ref = peft_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                              eos_token_id=None, pad_token_id=tiny.tokenizer.pad_token_id, min_new_tokens=10)
    ours = greedy_mixed(tiny, [prompt], [prefix], max_new_tokens=10)
    assert ours[0] == ref[0, len(prompt):].tolist()


def test_left_padded_batch_equals_one_by_one(tiny):
    prefix = create_prefix(tiny, PrefixSettings(num_virtual_tokens=3, init="random"), seed=2)
    fmt = PromptFormat.for_tokenizer(tiny.tokenizer)
    prompts = [fmt.encode_prompt(t, "prefix") for t in ["hi", "a much longer sentence about the weather today"]]
    batched = greedy_mixed(tiny, prompts, [prefix] * 2, max_new_tokens=6)
    alone = [greedy_mixed(tiny, [p], [prefix], max_new_tokens=6)[0] for p in prompts]
    assert batched == alone


def test_many_prefixes_switch_on_one_model_without_reloading(tiny_llama):
    model_before = tiny_llama.model
    weights_before = {k: v.clone() for k, v in tiny_llama.model.state_dict().items()}
    prefixes = {"none": None}
    for seed in range(3):
        p = create_prefix(tiny_llama, PrefixSettings(num_virtual_tokens=4, init="random"), seed=seed)
        _randomize(p, seed)
        prefixes[f"p{seed}"] = p
    texts = ["the film was great"] * len(prefixes)
    res = generate_texts_mixed(tiny_llama, texts, list(prefixes.values()), max_new_tokens=6)
    assert len(res) == len(prefixes) and len(set(res)) > 1  # different prefixes steer the same model differently
    # the same call again gives the same answers: switching is stateless
    assert generate_texts_mixed(tiny_llama, texts, list(prefixes.values()), max_new_tokens=6) == res
    assert tiny_llama.model is model_before
    assert all(torch.equal(v, weights_before[k]) for k, v in tiny_llama.model.state_dict().items())


def test_text_init_equals_the_instruction_prompt_kv(tiny_llama):
    """A prefix initialized from the instruction holds the key/values of that system message."""
    instruction = "Translate the French phrase into English, please, in a few words."
    fmt = PromptFormat.for_tokenizer(tiny_llama.tokenizer)
    sys_ids = tiny_llama.tokenizer.apply_chat_template([{"role": "system", "content": instruction}], tokenize=True,
                                                       return_dict=False)
    n = len(sys_ids)
    prefix = create_prefix(tiny_llama, PrefixSettings(num_virtual_tokens=n, init="task"), instruction)
    x = "bonjour"
    with torch.no_grad():
        ids = torch.tensor([fmt.encode_prompt(x, "prefix")])
        with_prefix = prefix_forward(tiny_llama, ids, torch.ones_like(ids), prefix).logits[0, -1]
        full = torch.tensor([sys_ids + fmt.encode_prompt(x, "prefix")])
        with_text = tiny_llama.model(input_ids=full).logits[0, -1]
    assert torch.allclose(with_prefix, with_text, atol=1e-4)


def _answers_end_first(base):
    """``base`` whose greedy answer is <|im_end|> at once, with a tokenizer where that token is a plain added
    token, as some converted tokenizers have it: ``skip_special_tokens`` keeps it, only the stop-id filter drops it."""
    spec = json.loads(base.tokenizer.backend_tokenizer.to_str())
    for t in spec["added_tokens"]:
        t["special"] = t["content"] != "<|im_end|>"
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode([end], skip_special_tokens=True) == "<|im_end|>"
    model = copy.deepcopy(base.model)
    hidden = model.config.hidden_size
    model.lm_head = torch.nn.Linear(hidden, model.config.vocab_size, bias=True)  # untied: logits = bias
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.bias.zero_()
        model.lm_head.bias[end] = 1.0
    return replace(base, model=model, tokenizer=tok, derived={}), end


@pytest.mark.parametrize("entry", ["generate_texts_mixed", "answer"])
def test_answers_drop_the_stop_token(tiny_llama, entry):
    base, end = _answers_end_first(tiny_llama)
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    assert end in fmt.stop_ids
    assert greedy_mixed(base, [fmt.encode_prompt("one", "base")], [None], 3, fmt.stop_ids) == [[end]]  # generated
    if entry == "generate_texts_mixed":
        out = generate_texts_mixed(base, ["one", "two"], [None, None], max_new_tokens=3)
    else:
        out = answer(base, InstructionMethod("Answer."), ["one", "two"], "Answer.", 3)
    assert out == ["", ""]
