"""Unit tests on tiny models: attention mass on the prefix, and the training loop."""

from __future__ import annotations

import threading

import pytest
import torch
from peft import PeftModel

from playground.attention import prefix_attention
from playground.errors import PlaygroundError
from playground.library import Library
from playground.losses import target_loss
from playground.methods import prefix_method
from playground.prefix import PrefixSettings, create_prefix, prefix_forward
from playground.prompts import PromptFormat, pad_right
from playground.tasks import get_task
from playground.training import TrainSettings, train


def test_attention_shares_match_a_hand_computation_from_raw_attentions(tiny, tmp_path):
    P = 5
    prefix = create_prefix(tiny, PrefixSettings(num_virtual_tokens=P, init="random"), seed=4)
    Library(tmp_path).save("a", prefix)
    text = "the film was long but the ending was lovely"
    att = prefix_attention(tiny, prefix, text)
    L, H = tiny.num_layers, tiny.num_heads
    T = len(att.tokens)
    assert att.weights.shape == (L, H, T, P)  # [layer, head, q_pos, virtual_token]
    # Independent path: plain PEFT's forward with output_attentions, summed by loops.
    peft_model = PeftModel.from_pretrained(tiny.model, str(tmp_path / "a"))
    ids = torch.tensor([PromptFormat.for_tokenizer(tiny.tokenizer).encode_prompt(text, "prefix")])
    with torch.no_grad():
        raw = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True).attentions
    for layer in range(L):
        assert raw[layer].shape == (1, H, T, P + T)  # [batch, head, q_pos, k_pos]; GQA: per query head
        per_head = []
        for h in range(H):
            rows = [float(raw[layer][0, h, q, :P].sum()) for q in range(T)]
            per_head.append(sum(rows) / T)
            assert att.head_share[layer, h].item() == pytest.approx(per_head[-1], abs=1e-5)
        assert att.layer_share[layer].item() == pytest.approx(sum(per_head) / H, abs=1e-5)
    assert torch.all((att.layer_share >= 0) & (att.layer_share <= 1))
    assert att.token_share.shape == (L, T)


def test_attention_rejects_an_empty_prompt(tiny_llama):
    prefix = create_prefix(tiny_llama, PrefixSettings(num_virtual_tokens=2, init="random"))
    with pytest.raises(PlaygroundError, match="empty"):
        prefix_attention(tiny_llama, prefix, "   ")


def _run(base, task, seed, steps=6, cancel=None, **kw):
    prefix = create_prefix(base, PrefixSettings(num_virtual_tokens=4, init="task"), task.instruction, seed=seed)
    records = list(train(base, prefix_method(prefix), task, TrainSettings(steps=steps, batch_size=4, seed=seed, eval_every=3,
                                                           eval_examples=4, **kw), cancel=cancel))
    return prefix, records


def test_training_records_loss_and_is_deterministic_for_a_seed(tiny):
    task = get_task("sentiment")
    p1, r1 = _run(tiny, task, seed=7, learning_rate=1e-2)
    p2, r2 = _run(tiny, task, seed=7, learning_rate=1e-2)
    assert [r.step for r in r1] == list(range(1, 7))
    assert [r.loss for r in r1] == [r.loss for r in r2]
    assert torch.equal(p1.embeddings(), p2.embeddings())
    assert all(r.elapsed > 0 and r.examples_per_s > 0 for r in r1)
    assert [r.step for r in r1 if r.metric is not None] == [3, 6]
    _, r3 = _run(tiny, task, seed=8, learning_rate=1e-2)
    assert [r.loss for r in r3] != [r.loss for r in r1]


def test_training_lowers_the_loss(tiny_llama):
    task = get_task("sentiment")
    prefix = create_prefix(tiny_llama, PrefixSettings(num_virtual_tokens=8, init="random"), task.instruction)
    # the same fixed batch every step (batch = whole 8-example train split), so the loss must fall.
    # A random tiny model starts near uniform (ln 400 = 6.0 nats) and a prefix moves it only a
    # little; the real-model test checks that the held-out metric rises.
    small = type(task)(task.name, task.title, task.instruction, task.metric, 4,
                       splits={"train": task.split("train")[:8], "validation": task.split("validation")[:2]})
    recs = list(train(tiny_llama, prefix_method(prefix), small, TrainSettings(steps=15, batch_size=8, learning_rate=0.3, eval_every=0)))
    assert recs[-1].loss < recs[0].loss - 0.3


def test_cancel_stops_at_a_step_and_keeps_the_prefix(tiny_llama):
    task = get_task("topic")
    prefix = create_prefix(tiny_llama, PrefixSettings(num_virtual_tokens=4, init="random"), seed=1)
    before = prefix.embeddings().detach().clone()
    cancel = threading.Event()
    records = []
    for rec in train(tiny_llama, prefix_method(prefix), task, TrainSettings(steps=50, batch_size=2, eval_every=0, eval_examples=2,
                                                             learning_rate=1e-2), cancel=cancel):
        records.append(rec)
        if rec.step == 3:
            cancel.set()
    assert [r.step for r in records] == [1, 2, 3]
    assert not torch.equal(prefix.embeddings().detach(), before)  # trained so far is kept


@pytest.mark.parametrize("bad, match", [
    (dict(steps=0), "steps"), (dict(steps=10**6), "steps"), (dict(batch_size=0), "batch"),
    (dict(learning_rate=0.0), "learning rate"), (dict(learning_rate=50.0), "learning rate"),
])
def test_absurd_training_settings_are_refused(tiny_llama, bad, match):
    task = get_task("sentiment")
    prefix = create_prefix(tiny_llama, PrefixSettings(num_virtual_tokens=2, init="random"))
    with pytest.raises(PlaygroundError, match=match):
        next(train(tiny_llama, prefix_method(prefix), task, TrainSettings(**bad)))


@pytest.mark.parametrize("bad, match", [
    (dict(num_virtual_tokens=0), "num_virtual_tokens"), (dict(num_virtual_tokens=100000), "num_virtual_tokens"),
    (dict(init="zeros"), "Unknown init"), (dict(init="text", init_text=" "), "init text"),
    (dict(init="task", prefix_projection=True), "MLP"),
])
def test_bad_prefix_settings_are_refused(tiny_llama, bad, match):
    with pytest.raises(PlaygroundError, match=match):
        create_prefix(tiny_llama, PrefixSettings(**bad), "an instruction")


def test_mlp_prefix_trains_and_exports(tiny_llama, tmp_path):
    task = get_task("sentiment")
    prefix = create_prefix(tiny_llama, PrefixSettings(num_virtual_tokens=4, init="random", prefix_projection=True,
                                                      encoder_hidden_size=16))
    list(train(tiny_llama, prefix_method(prefix), task, TrainSettings(steps=2, batch_size=2, eval_every=0, eval_examples=2)))
    lib = Library(tmp_path)
    lib.save("mlp", prefix)
    loaded = lib.load("mlp", tiny_llama)
    assert torch.allclose(loaded.embeddings(), prefix.embeddings().detach(), atol=1e-6)
    assert loaded.trainable_parameters == prefix.exported_parameters < prefix.trainable_parameters


def test_target_only_loss_equals_the_models_own_loss_and_gradient(tiny):
    task = get_task("fr_en")
    fmt = PromptFormat.for_tokenizer(tiny.tokenizer)
    enc = [fmt.encode_example(e.input, e.target) for e in task.split("train")[:4]]
    ids, mask, labels = pad_right([e[0] for e in enc], tiny.tokenizer.pad_token_id, [e[1] for e in enc])
    prefix = create_prefix(tiny, PrefixSettings(num_virtual_tokens=3, init="random"), seed=1)
    ours = target_loss(tiny, prefix, ids, mask, labels)
    (g_ours,) = torch.autograd.grad(ours, list(prefix.parameters()))
    ref = prefix_forward(tiny, ids, mask, prefix, labels=labels, use_cache=False).loss
    (g_ref,) = torch.autograd.grad(ref, list(prefix.parameters()))
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(g_ours, g_ref, atol=1e-6)
