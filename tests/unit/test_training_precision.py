"""The training fast path keeps the semantics: bf16 autocast vs fp32, and when 'auto' picks which."""

from __future__ import annotations

import pytest
import torch

import playground.models as models
import playground.training as T
from playground.errors import PlaygroundError
from playground.losses import target_loss
from playground.methods import prefix_method
from playground.models import autocast_dtype
from playground.prefix import PrefixSettings, create_prefix
from playground.prompts import PromptFormat, pad_right
from playground.tasks import get_task
from playground.training import TrainSettings, train


def _batch(base, task, n=4):
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    enc = [fmt.encode_example(e.input, e.target, "prefix") for e in task.split("train")[:n]]
    return pad_right([e[0] for e in enc], base.tokenizer.pad_token_id, [e[1] for e in enc])


def test_auto_precision_follows_the_hardware(tiny_llama, monkeypatch):
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: True)
    assert autocast_dtype(tiny_llama, "auto") == torch.bfloat16
    assert autocast_dtype(tiny_llama, "fp32") is None
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: False)
    assert autocast_dtype(tiny_llama, "auto") is None  # emulated bf16 is slower than fp32
    assert autocast_dtype(tiny_llama, "bf16") == torch.bfloat16  # asked for explicitly


def test_a_low_precision_model_always_autocasts_to_its_own_dtype(tiny_llama):
    half = type(tiny_llama)(**{**vars(tiny_llama), "dtype": torch.bfloat16})
    assert autocast_dtype(half, "fp32") == torch.bfloat16


def test_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(PlaygroundError, match="auto, fp32, bf16"):
        TrainSettings(precision="fp8").validate()


def test_bf16_autocast_loss_and_gradient_match_fp32(tiny):
    """bf16 changes rounding, not what is computed: loss within 1%, gradient pointing the same way."""
    task = get_task("sentiment")
    prefix = create_prefix(tiny, PrefixSettings(num_virtual_tokens=6, init="random"), seed=2)
    ids, mask, labels = _batch(tiny, task)
    grads, losses = [], []
    for amp in (False, True):
        prefix.encoder.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = target_loss(tiny, prefix, ids, mask, labels)
        loss.backward()
        losses.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in prefix.parameters()]))
    assert losses[1] == pytest.approx(losses[0], rel=1e-2)
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.98
    assert all(p.dtype == torch.float32 for p in prefix.parameters())  # the optimizer's copy stays fp32


def test_fp32_setting_is_bit_for_bit_the_plain_loop(tiny_llama):
    """precision='fp32' must be exactly the straightforward loop: same losses on the same seed, run twice."""
    task = get_task("sentiment")
    runs = []
    for _ in range(2):
        prefix = create_prefix(tiny_llama, PrefixSettings(num_virtual_tokens=4, init="random"), seed=5)
        s = TrainSettings(steps=3, batch_size=4, eval_every=0, eval_examples=2, precision="fp32", learning_rate=1e-2)
        runs.append([r.loss for r in train(tiny_llama, prefix_method(prefix), task, s)])
    assert runs[0] == runs[1]




def test_the_bf16_twin_is_bit_identical_to_plain_autocast_and_shares_the_rest(tiny_llama):
    """Casting the frozen Linear weights once gives exactly what autocast's per-matmul cast gives."""
    task = get_task("sentiment")
    prefix = create_prefix(tiny_llama, PrefixSettings(num_virtual_tokens=5, init="random"), seed=4)
    ids, mask, labels = _batch(tiny_llama, task)
    twin = T.bf16_backbone(tiny_llama)
    assert T.bf16_backbone(tiny_llama) is twin  # built once, shared
    out = []
    for backbone in (None, twin):
        prefix.encoder.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = target_loss(tiny_llama, prefix, ids, mask, labels, backbone)
        loss.backward()
        out.append((loss.detach(), [p.grad.clone() for p in prefix.parameters()]))
    assert torch.equal(out[0][0], out[1][0])
    assert all(torch.equal(a, b) for a, b in zip(out[0][1], out[1][1]))
    original = tiny_llama.model.model
    assert twin.embed_tokens.weight is original.embed_tokens.weight  # shared, not copied
    assert twin.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    assert original.layers[0].self_attn.q_proj.weight.dtype == torch.float32  # the shared model is untouched


def test_a_bf16_model_trains_and_batches_prefixes_as_on_a_gpu(tiny_llama):
    """The CUDA default is the model in bf16; the same code path runs on the CPU here (no GPU in CI)."""
    import copy

    from playground.generate import greedy_mixed

    model = copy.deepcopy(tiny_llama.model).to(torch.bfloat16)
    half = type(tiny_llama)(**{**vars(tiny_llama), "model": model, "dtype": torch.bfloat16, "derived": {}})
    task = get_task("sentiment")
    prefix = create_prefix(half, PrefixSettings(num_virtual_tokens=4, init="random"), seed=6)
    recs = list(train(half, prefix_method(prefix), task, TrainSettings(steps=2, batch_size=4, eval_every=0, eval_examples=2)))
    assert all(torch.isfinite(torch.tensor(r.loss)) for r in recs)
    assert all(p.dtype == torch.float32 for p in prefix.parameters())  # the trained copy stays fp32
    assert "bf16_backbone" not in half.derived  # a bf16 model needs no bf16 twin
    other = create_prefix(half, PrefixSettings(num_virtual_tokens=7, init="random"), seed=7)
    fmt = PromptFormat.for_tokenizer(half.tokenizer)
    prompts = [fmt.encode_prompt(t, "prefix") for t in ("a fine film", "dull and far too long", "ok")]
    rows = greedy_mixed(half, prompts, [prefix, other, None], 5)
    assert rows == [greedy_mixed(half, [p], [q], 5)[0] for p, q in zip(prompts, [prefix, other, None])]
