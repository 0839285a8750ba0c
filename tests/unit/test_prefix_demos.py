"""A prefix initialized from demonstrations (init "demos"): it is the cached few-shot prompt, sized honestly."""

from __future__ import annotations

import pytest
import torch

from playground.errors import PlaygroundError
from playground.fewshot import TextCache, demonstrations, head_ids
from playground.generate import mixed_prefill
from playground.methods import MethodSettings, answer, create_method, prefix_learning_rate, prefix_method
from playground.prefix import DEMO_SHOTS, PrefixSettings, create_prefix, prefix_forward, sized
from playground.prompts import PromptFormat, pad_right
from playground.tasks import get_task

TEXTS = ["a fine film", "dull and far too long for its thin story", "ok"]


def _demos_prefix(base, shots=2, seed=0):
    task = get_task("sentiment")
    return task, create_prefix(base, PrefixSettings(init="demos", init_shots=shots), task.instruction, seed,
                               task.split("train"))


def test_the_prefix_is_as_long_as_the_instruction_and_its_examples(tiny):
    task, prefix = _demos_prefix(tiny, shots=3, seed=1)
    head = head_ids(tiny, task.instruction, demonstrations(task.split("train"), 3, seed=1), "turns")
    P = len(head)
    assert prefix.num_virtual_tokens == P == prefix.info["settings"]["num_virtual_tokens"]
    c = prefix.config
    assert tuple(prefix.encoder.embedding.weight.shape) == (P, c.num_layers * 2 * c.token_dim)
    assert prefix.exported_parameters == P * c.num_layers * 2 * c.token_dim
    assert prefix.info["settings"]["init_shots"] == 3 and prefix.info["seed"] == 1
    assert [d["input"] for d in prefix.info["init_demonstrations"]] == \
        [e.input for e in demonstrations(task.split("train"), 3, seed=1)]
    # the length every planner reads before the run is the length the prefix gets
    assert sized(tiny, PrefixSettings(init="demos", init_shots=3), task.instruction, task.split("train"),
                 seed=1).num_virtual_tokens == P
    assert sized(tiny, PrefixSettings(7, "task"), task.instruction).num_virtual_tokens == 7


def test_the_untrained_prefix_gives_the_first_token_logits_of_the_uncached_few_shot_prompt(tiny):
    task, prefix = _demos_prefix(tiny, shots=DEMO_SHOTS, seed=2)
    head = head_ids(tiny, task.instruction, demonstrations(task.split("train"), DEMO_SHOTS, seed=2), "turns")
    fmt = PromptFormat.for_tokenizer(tiny.tokenizer)
    with torch.inference_mode():
        for t in TEXTS:
            q = fmt.encode_prompt(t, "prefix")
            ids = torch.tensor([q])  # [1, T]
            ours = prefix_forward(tiny, ids, torch.ones_like(ids), prefix).logits[0, -1]  # [vocab]
            x = torch.tensor([head + q])  # [1, H + T]: the plain few-shot prompt
            plain = tiny.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, -1]
            assert torch.allclose(ours, plain, atol=1e-4), t
    # and, batched and padded, the same as the cached few-shot prompt (fewshot.TextCache)
    prompts = [fmt.encode_prompt(t, "prefix") for t in TEXTS]
    with torch.inference_mode():
        a, _, _ = mixed_prefill(tiny, prompts, [prefix] * len(prompts))  # logits [batch, 1, vocab]
        b, _, _ = mixed_prefill(tiny, prompts, [TextCache(tiny, head)] * len(prompts))
    assert torch.allclose(a.logits[:, -1], b.logits[:, -1], atol=1e-4)


def test_it_answers_as_the_cached_few_shot_method_and_then_trains(tiny_llama):
    task = get_task("sentiment")
    train = task.split("train")
    ms = MethodSettings("prefix", init="demos", init_shots=2)
    method = create_method(tiny_llama, ms, task.instruction, seed=4, train=train)
    cached = create_method(tiny_llama, MethodSettings("few_shot_cached", shots=2), task.instruction, seed=4,
                           train=train)
    assert method.extra_positions == cached.extra_positions
    assert answer(tiny_llama, method, TEXTS, task.instruction, 5) == answer(tiny_llama, cached, TEXTS,
                                                                            task.instruction, 5)
    fmt = PromptFormat.for_tokenizer(tiny_llama.tokenizer)
    ids, labels = zip(*(fmt.encode_example(e.input, e.target) for e in train[:4]))
    ids, mask = pad_right(list(ids), tiny_llama.tokenizer.pad_token_id)
    labels, _ = pad_right(list(labels), -100)
    loss = method.loss(tiny_llama, ids, mask, labels)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.parameters())


def test_the_draw_follows_the_seed(tiny_llama):
    _, a = _demos_prefix(tiny_llama, seed=5)
    _, b = _demos_prefix(tiny_llama, seed=5)
    _, c = _demos_prefix(tiny_llama, seed=6)
    assert torch.equal(a.encoder.embedding.weight, b.encoder.embedding.weight)
    assert a.info["init_demonstrations"] == b.info["init_demonstrations"] != c.info["init_demonstrations"]
    assert answer(tiny_llama, prefix_method(a), TEXTS, "", 5) == answer(tiny_llama, prefix_method(b), TEXTS, "", 5)


def test_settings_are_checked_with_a_fix(tiny_llama):
    task = get_task("sentiment")
    for k in (0, 9, 1.5, True):
        with pytest.raises(PlaygroundError, match="from 1 to 8 training examples"):
            PrefixSettings(init="demos", init_shots=k).validate()
    PrefixSettings(init="task", init_shots=0).validate()  # only read with init 'demos'
    with pytest.raises(PlaygroundError, match="needs the task's training examples"):
        create_prefix(tiny_llama, PrefixSettings(init="demos"), task.instruction)
    with pytest.raises(PlaygroundError, match="no instruction text"):
        create_prefix(tiny_llama, PrefixSettings(init="demos"), "", train=task.split("train"))
    with pytest.raises(PlaygroundError, match="prefix_projection off"):
        PrefixSettings(init="demos", prefix_projection=True).validate()
    with pytest.raises(PlaygroundError, match="prefix tuning only"):
        MethodSettings("prompt", init="demos").validate()
    with pytest.raises(PlaygroundError, match="from 1 to 8 training examples"):
        MethodSettings("prefix", init="demos", init_shots=20).validate()
    assert prefix_learning_rate(False, "demos") == prefix_learning_rate(False, "task")
