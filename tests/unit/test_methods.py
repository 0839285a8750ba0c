"""The Compare lab's methods (prompt tuning, LoRA, prefix, instruction) against plain PEFT, on tiny models."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModelForCausalLM

from playground.errors import PlaygroundError
from playground.generate import generate_texts_mixed
from playground.methods import (
    METHODS,
    VIRTUAL_TOKEN_METHODS,
    MethodSettings,
    answer,
    create_method,
    default_init,
    default_learning_rate,
    prefix_learning_rate,
)
from playground.prompts import PromptFormat, pad_right
from playground.tasks import get_task

INSTRUCTION = "Classify the movie review as positive or negative."


def _batch(base, n=4, mode="prefix"):
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    enc = [fmt.encode_example(e.input, e.target, mode) for e in get_task("sentiment").split("train")[:n]]
    return pad_right([e[0] for e in enc], base.tokenizer.pad_token_id, [e[1] for e in enc])


def _shake(params, seed=1, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * scale)


def _prompts(base, texts=("a fine film", "dull and far too long for its thin story", "ok")):
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    return [fmt.encode_prompt(t, "prefix") for t in texts]


def test_prompt_tuning_text_init_is_peft_own(tiny):
    m = create_method(tiny, MethodSettings("prompt", num_virtual_tokens=6), INSTRUCTION)
    ids = tiny.tokenizer(INSTRUCTION)["input_ids"]
    ids = (ids * 6)[:6]  # PEFT repeats or cuts the text's tokens to the prefix length
    want = tiny.model.get_input_embeddings().weight[ids]
    assert torch.equal(m.encoder.embedding.weight.detach(), want)
    assert m.trainable_parameters == m.stored_parameters == 6 * tiny.model.config.hidden_size
    assert m.extra_positions == 6


def test_prompt_tuning_loss_and_tokens_equal_plain_peft(tiny):
    m = create_method(tiny, MethodSettings("prompt", num_virtual_tokens=5, init="random"), seed=2)
    _shake(m.parameters(), scale=2.0)
    peft_model = PeftModelForCausalLM(tiny.model, m.config)
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(m.encoder.embedding.weight)
    ids, mask, labels = _batch(tiny)
    with torch.no_grad():
        ours = m.loss(tiny, ids, mask, labels)
        theirs = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert torch.allclose(ours, theirs, atol=1e-5)
    prompts = _prompts(tiny)
    batched = m.generate(tiny, prompts, 6)
    for p, row in zip(prompts, batched):
        ids1 = torch.tensor([p])
        with torch.no_grad():
            out = peft_model.generate(input_ids=ids1, attention_mask=torch.ones_like(ids1), max_new_tokens=6,
                                      do_sample=False, eos_token_id=None, pad_token_id=tiny.tokenizer.pad_token_id)
        assert row == out[0, -6:].tolist()


def test_lora_lives_on_a_copy_and_equals_its_peft_model(tiny_llama):
    base = tiny_llama
    q_before = base.model.model.layers[0].self_attn.q_proj
    m = create_method(base, MethodSettings("lora", r=2, lora_alpha=4), seed=3)
    assert base.model.model.layers[0].self_attn.q_proj is q_before  # the shared model is untouched
    assert type(q_before).__name__ == "Linear" and not any("lora_" in n for n, _ in base.model.named_parameters())
    lora_q = m.model.model.layers[0].self_attn.q_proj
    assert lora_q.base_layer.weight is q_before.weight  # same tensor, no copy
    cfg = base.model.config
    per_layer = 2 * (cfg.hidden_size + cfg.num_attention_heads * cfg.head_dim) \
        + 2 * (cfg.hidden_size + cfg.num_key_value_heads * cfg.head_dim)  # r=2 on q_proj and v_proj
    assert m.trainable_parameters == cfg.num_hidden_layers * per_layer and m.extra_positions == 0
    ids, mask, labels = _batch(base)
    with torch.no_grad():
        plain = base.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        assert torch.allclose(m.loss(base, ids, mask, labels), plain, atol=1e-5)  # LoRA starts at B = 0
    _shake(m.parameters(), scale=1.0)
    with torch.no_grad():
        ours = m.loss(base, ids, mask, labels)
        theirs = m.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        assert not torch.allclose(ours, plain, atol=1e-4)
    assert torch.allclose(ours, theirs, atol=1e-5)
    for p, row in zip(_prompts(base), m.generate(base, _prompts(base), 5)):
        ids1 = torch.tensor([p])
        out = m.model.generate(input_ids=ids1, attention_mask=torch.ones_like(ids1), max_new_tokens=5,
                               do_sample=False, eos_token_id=None, pad_token_id=base.tokenizer.pad_token_id)
        assert row == out[0, -5:].tolist()


@pytest.mark.parametrize("method", ["prefix", "prefix_mlp", "prompt", "lora"])
def test_every_method_trains_only_its_own_parameters(tiny_llama, method):
    base = tiny_llama
    init = "random" if method == "prefix_mlp" else "task"
    m = create_method(base, MethodSettings(method, num_virtual_tokens=4, init=init, encoder_hidden_size=16), INSTRUCTION)
    frozen = {n: p.detach().clone() for n, p in base.model.named_parameters()}
    ids, mask, labels = _batch(base, n=8)
    opt = torch.optim.AdamW(list(m.parameters()), lr=0.1)
    losses = []
    for _ in range(8):
        loss = m.loss(base, ids, mask, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(p, frozen[n]) for n, p in base.model.named_parameters())
    assert m.trainable_parameters > 0 and m.stored_parameters > 0
    if method == "prefix_mlp":
        assert m.trainable_parameters > m.stored_parameters  # the MLP is dropped at export


def test_instruction_baseline_equals_the_evaluation_path(tiny):
    m = create_method(tiny, MethodSettings("instruction"), INSTRUCTION)
    texts = ["a fine film", "a total bore"]
    assert m.mode == "instruction"
    assert answer(tiny, m, texts, INSTRUCTION, 5) == \
        generate_texts_mixed(tiny, texts, [None, None], 5, ["instruction"] * 2, INSTRUCTION)
    with pytest.raises(PlaygroundError, match="nothing to train"):
        m.loss(tiny, None, None, None)


def test_the_registry_gives_each_method_its_validated_rate():
    assert {n: m.learning_rate for n, m in METHODS.items()} == {
        "prefix": 1e-2, "prefix_mlp": 1e-3, "prompt": 3e-2, "lora": 3e-3, "instruction": None, "few_shot": None, "instruction_format": None,
        "few_shot_cached": None, "label_scoring": None}
    assert default_learning_rate("prefix", "random") == 3e-2  # the direct prefix from random init
    assert default_learning_rate("prefix_mlp", "random") == 1e-3  # the MLP keeps its own rate from random init
    assert default_learning_rate("prompt", "random") == 3e-2
    for name in VIRTUAL_TOKEN_METHODS:  # every default init is one the method accepts
        MethodSettings(name, init=default_init(name)).validate()
    assert default_init("prefix_mlp") == "random" and not METHODS["prefix_mlp"].text_init


@pytest.mark.parametrize("projection, init, lr", [
    (False, "task", 1e-2), (False, "text", 1e-2), (False, "random", 3e-2),
    (True, "random", 1e-3),  # ticking the MLP: its validated rate, not the direct prefix's random-init 3e-2
])
def test_the_train_tab_rate_follows_the_mlp_and_the_init(projection, init, lr):
    assert prefix_learning_rate(projection, init) == lr


@pytest.mark.parametrize("settings, match", [
    (MethodSettings("adapterhub"), "Unknown method 'adapterhub'"),
    (MethodSettings("prefix_mlp", init="task"), "can't start from text"),
    (MethodSettings("prompt", num_virtual_tokens=0), "num_virtual_tokens"),
    (MethodSettings("prompt", init="text"), "needs an init text"),
    (MethodSettings("lora", r=0), "rank r"),
    (MethodSettings("lora", target_modules=()), "at least one target module"),
])
def test_bad_settings_get_one_clear_message(settings, match):
    with pytest.raises(PlaygroundError, match=match):
        settings.validate()


def test_lora_on_modules_the_model_lacks_names_the_fix(tiny):
    with pytest.raises(PlaygroundError, match="could not attach .*e.g. q_proj and v_proj for Llama, c_attn"):
        create_method(tiny, MethodSettings("lora", target_modules=("no_such_proj",)))




@pytest.mark.parametrize("method", ["prompt", "lora"])
def test_the_training_loop_runs_any_method_with_its_held_out_metric(tiny_llama, method):
    from playground.training import TrainSettings, train

    m = create_method(tiny_llama, MethodSettings(method, num_virtual_tokens=4), INSTRUCTION, seed=1)
    before = [p.detach().clone() for p in m.parameters()]
    recs = list(train(tiny_llama, m, get_task("sentiment"),
                      TrainSettings(steps=3, batch_size=4, eval_every=2, eval_examples=3, learning_rate=1e-2)))
    assert [r.step for r in recs] == [1, 2, 3] and [r.metric is not None for r in recs] == [False, True, True]
    assert len(recs[-1].predictions) == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, m.parameters()))


def test_a_prefix_scores_the_same_through_the_methods_path(tiny):
    from playground.evaluation import evaluate

    task = get_task("sentiment")
    m = create_method(tiny, MethodSettings("prefix", num_virtual_tokens=5), task.instruction, seed=4)
    _shake(m.parameters())
    examples = task.split("validation")[:5]
    res = evaluate(tiny, task, examples, m)
    assert res.mode == "prefix" and res.n == 5
    assert res.predictions == generate_texts_mixed(tiny, [e.input for e in examples], [m.prefix] * 5,
                                                   task.max_new_tokens)


def test_merged_lora_computes_the_same_with_plain_layers_and_leaves_the_shared_model(tiny_llama):
    base = tiny_llama
    m = create_method(base, MethodSettings("lora", r=2, lora_alpha=4), seed=5)
    _shake(m.parameters(), scale=1.0)
    merged = m.merged(base)
    q = merged.model.model.layers[1].self_attn.q_proj
    assert type(q) is torch.nn.Linear and q.weight is not base.model.model.layers[1].self_attn.q_proj.weight
    assert merged.model.model.layers[1].mlp.up_proj.weight is base.model.model.layers[1].mlp.up_proj.weight
    ids, mask, _ = _batch(base)
    with torch.no_grad():
        assert torch.allclose(merged.model(input_ids=ids, attention_mask=mask).logits,
                              m.model(input_ids=ids, attention_mask=mask).logits, atol=1e-5)
        assert not torch.allclose(merged.model(input_ids=ids, attention_mask=mask).logits,
                                  base.model(input_ids=ids, attention_mask=mask).logits, atol=1e-4)


@pytest.mark.parametrize("method", ["prefix_mlp", "prompt", "lora"])
def test_exported_adapters_load_in_plain_peft_and_answer_the_same(tiny_llama, method, tmp_path):
    from peft import PeftModel

    from playground.methods import _shared_copy, exported_bytes

    base = tiny_llama
    m = create_method(base, MethodSettings(method, num_virtual_tokens=4, init="random", r=2), seed=1)
    _shake(m.parameters(), scale=1.0)
    m.export(tmp_path / "a")
    weights = tmp_path / "a" / "adapter_model.safetensors"
    assert exported_bytes(m) == weights.stat().st_size
    assert weights.stat().st_size > 4 * m.stored_parameters  # fp32 values plus the safetensors header
    peft_model = PeftModel.from_pretrained(_shared_copy(base.model), str(tmp_path / "a"))  # LoRA injects: a copy
    prompts = _prompts(base)
    for p, row in zip(prompts, m.generate(base, prompts, 5)):
        ids1 = torch.tensor([p])
        with torch.no_grad():
            out = peft_model.generate(input_ids=ids1, attention_mask=torch.ones_like(ids1), max_new_tokens=5,
                                      do_sample=False, eos_token_id=None, pad_token_id=base.tokenizer.pad_token_id)
        assert row == out[0, -5:].tolist()
    assert not any("lora_" in n for n, _ in base.model.named_parameters())
    if method == "lora":  # the same keys and shapes as PEFT's own save_pretrained for the same config
        from peft import LoraConfig, get_peft_model
        from safetensors.torch import load_file

        ref = get_peft_model(_shared_copy(base.model), LoraConfig(task_type="CAUSAL_LM", r=2, lora_alpha=8,
                                                                  target_modules=["q_proj", "v_proj"]))
        ref.save_pretrained(str(tmp_path / "ref"))
        ours, theirs = load_file(str(weights)), load_file(str(tmp_path / "ref" / "adapter_model.safetensors"))
        assert sorted(ours) == sorted(theirs)
        assert all(ours[k].shape == theirs[k].shape for k in ours)
    with pytest.raises(PlaygroundError, match="nothing trained to export"):
        create_method(base, MethodSettings("instruction")).export(tmp_path / "b")
