"""The per-layer ablation of a prefix (playground/ablation.py) on tiny in-process models: masking a layer's
prefix columns is exactly removing the prefix from that layer, and only in the thread that asked."""

from __future__ import annotations

import threading

import pytest
import torch

from playground.ablation import (
    MAX_EXAMPLES,
    MaskedPrefixMethod,
    ablate,
    masked,
    plan,
    target_logprobs,
    variants,
    zero_prefix,
)
from playground.attention import prefix_attention
from playground.errors import PlaygroundError
from playground.evaluation import evaluate
from playground.figures import ablation_depth_figure, ablation_layer_figure
from playground.losses import target_loss
from playground.methods import prefix_method
from playground.prefix import PrefixSettings, create_prefix, prefix_forward
from playground.prompts import PromptFormat, pad_left, pad_right
from playground.tasks import get_task

TEXTS = ["A warm, funny film that I loved.", "Dull and far too long.", "Fine."]


def _prefix(base, P: int = 4, seed: int = 3):
    return create_prefix(base, PrefixSettings(num_virtual_tokens=P, init="random"), seed=seed)


def _batch(base):
    """Left-padded prompts of different lengths: ids, mask [batch, T]."""
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    return pad_left([fmt.encode_prompt(t, "prefix") for t in TEXTS], base.tokenizer.pad_token_id)


@torch.inference_mode()
def _forward(base, prefix, layers=None, **kw):
    """The model's output on _batch behind ``prefix`` (None: no prefix), hidden from ``layers`` (None: not masked)."""
    ids, mask = _batch(base)
    if layers is None:
        return prefix_forward(base, ids, mask, prefix, **kw)
    with masked(base, layers, prefix.num_virtual_tokens):
        return prefix_forward(base, ids, mask, prefix, **kw)


def _real(out, mask):
    """Logits at the real (not padded) positions: [real tokens, vocab]."""
    return out.logits[mask.bool()]


def test_rope_is_relative_so_shifting_positions_by_P_changes_nothing(tiny_llama):
    ids, mask = _batch(tiny_llama)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # [batch, T]
    with torch.inference_mode():
        a = tiny_llama.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        b = tiny_llama.model(input_ids=ids, attention_mask=mask, position_ids=pos + 7).logits
    assert torch.allclose(a[mask.bool()], b[mask.bool()], atol=1e-5)


def test_masking_every_layer_is_no_prefix(tiny_llama):
    """Masked everywhere, the P columns take exactly zero weight; what is left differs from the model without a
    prefix only by positions shifted by P, which rotary attention does not see (the test above)."""
    prefix = _prefix(tiny_llama)
    _, mask = _batch(tiny_llama)
    none = _real(_forward(tiny_llama, None), mask)
    gone = _real(_forward(tiny_llama, prefix, range(tiny_llama.num_layers)), mask)
    full = _real(_forward(tiny_llama, prefix), mask)
    assert torch.allclose(gone, none, atol=1e-5)
    assert not torch.allclose(full, none, atol=1e-3)  # the prefix itself does change the logits


def test_masking_no_layer_is_the_full_prefix(tiny):
    prefix = _prefix(tiny)
    _, mask = _batch(tiny)
    assert torch.equal(_real(_forward(tiny, prefix, []), mask), _real(_forward(tiny, prefix), mask))


def test_masking_layer_l_changes_hidden_states_from_l_only(tiny):
    """hidden_states[i] is the input to layer i: masking layer l leaves inputs 0..l as they were and changes
    layer l's output (hidden_states[l + 1]) on."""
    prefix = _prefix(tiny)
    _, mask = _batch(tiny)
    keep = mask.bool()
    full = _forward(tiny, prefix, output_hidden_states=True).hidden_states
    for layer in range(tiny.num_layers):
        hs = _forward(tiny, prefix, [layer], output_hidden_states=True).hidden_states
        for i in range(layer + 1):
            assert torch.equal(hs[i][keep], full[i][keep]), (layer, i)
        for i in range(layer + 1, len(hs)):
            assert not torch.allclose(hs[i][keep], full[i][keep], atol=1e-4), (layer, i)


def test_zero_prefix_still_takes_attention_and_changes_the_logits(tiny_llama):
    """A zero key scores 0 against every query: exp(0) is a real share of the softmax, spent on zero values."""
    prefix = _prefix(tiny_llama)
    zero = zero_prefix(prefix, tiny_llama.device)
    assert zero.num_virtual_tokens == prefix.num_virtual_tokens
    assert not zero.embeddings().any()
    _, mask = _batch(tiny_llama)
    none = _real(_forward(tiny_llama, None), mask)
    zeroed = _real(_forward(tiny_llama, zero), mask)
    assert not torch.allclose(zeroed, none, atol=1e-3)
    att = prefix_attention(tiny_llama, zero, TEXTS[0])
    assert (att.layer_share > 0.01).all()  # [layer]: mass on the zero keys in every layer
    masked_zero = _real(_forward(tiny_llama, zero, range(tiny_llama.num_layers)), mask)
    assert torch.allclose(masked_zero, none, atol=1e-5)  # hidden from every layer, it is gone again


def test_hooks_are_inert_in_other_threads(tiny_llama):
    prefix = _prefix(tiny_llama)
    _, mask = _batch(tiny_llama)
    full = _real(_forward(tiny_llama, prefix), mask)
    seen = {}

    def other():
        seen["logits"] = _real(_forward(tiny_llama, prefix), mask)

    with masked(tiny_llama, range(tiny_llama.num_layers), prefix.num_virtual_tokens):
        t = threading.Thread(target=other)
        t.start()
        t.join()
        ids, _ = _batch(tiny_llama)
        with torch.inference_mode():
            here = _real(prefix_forward(tiny_llama, ids, mask, prefix), mask)
    assert torch.equal(seen["logits"], full)  # another thread's forward, during an active ablation
    assert not torch.allclose(here, full, atol=1e-3)  # while this thread's own forward was masked
    assert torch.equal(_real(_forward(tiny_llama, prefix), mask), full)  # and after it, nothing is left


def test_masked_generation_keeps_the_mask_while_decoding(tiny_llama):
    """Each decoding step builds a new mask; the hook hides the prefix there too, so greedy answers with the
    prefix masked everywhere are the answers of no prefix (positions shifted, which RoPE does not see)."""
    from playground.generate import greedy_mixed

    prefix = _prefix(tiny_llama)
    fmt = PromptFormat.for_tokenizer(tiny_llama.tokenizer)
    prompts = [fmt.encode_prompt(t, "prefix") for t in TEXTS]
    gone = MaskedPrefixMethod(prefix, range(tiny_llama.num_layers)).generate(tiny_llama, prompts, 8)
    assert gone == greedy_mixed(tiny_llama, prompts, [None] * len(prompts), 8)
    assert MaskedPrefixMethod(prefix, []).generate(tiny_llama, prompts, 8) == greedy_mixed(
        tiny_llama, prompts, [prefix] * len(prompts), 8)


def test_target_logprobs_match_the_training_loss(tiny_llama):
    task = get_task("sentiment")
    prefix = _prefix(tiny_llama)
    fmt = PromptFormat.for_tokenizer(tiny_llama.tokenizer)
    for e in task.split("validation")[:3]:
        lp = target_logprobs(tiny_llama, prefix, [e])[0]
        ids, labels = fmt.encode_example(e.input, e.target, "prefix")
        ids, mask, labels = pad_right([ids], tiny_llama.tokenizer.pad_token_id, [labels])
        with torch.inference_mode():
            loss = target_loss(tiny_llama, prefix, ids, mask, labels).item()  # mean over target tokens
        assert lp == pytest.approx(-loss * int((labels != -100).sum()), rel=1e-4)
    batched = target_logprobs(tiny_llama, prefix, task.split("validation")[:3], batch_size=2)
    alone = [target_logprobs(tiny_llama, prefix, [e])[0] for e in task.split("validation")[:3]]
    assert batched == pytest.approx(alone, rel=1e-4)


def test_non_eager_attention_is_refused(tiny_llama, monkeypatch):
    monkeypatch.setattr(tiny_llama.model.config, "_attn_implementation", "sdpa")
    with pytest.raises(PlaygroundError, match="eager"):
        with masked(tiny_llama, [0], 2):
            pass


def test_a_missing_mask_is_a_clear_error(tiny_llama):
    prefix = _prefix(tiny_llama)
    attn = tiny_llama.model.model.layers[0].self_attn
    drop = attn.register_forward_pre_hook(lambda m, a, k: (a, {**k, "attention_mask": None}), with_kwargs=True,
                                         prepend=True)  # runs before the ablation's own hook
    try:
        with pytest.raises(PlaygroundError, match="4D float mask"):
            _forward(tiny_llama, prefix, [0])
    finally:
        drop.remove()


@pytest.fixture(scope="module")
def result(tiny_llama):
    task = get_task("sentiment")
    prefix = _prefix(tiny_llama)
    examples = task.split("validation")[:3]
    calls = []
    ab = ablate(tiny_llama, prefix, task, examples, progress=lambda f, m: calls.append((f, m)), split="validation")
    return ab, prefix, task, examples, calls


def test_ablate_returns_every_variant(result, tiny_llama):
    ab, prefix, task, examples, calls = result
    L = tiny_llama.num_layers
    assert [r.key for r in ab.rows] == [v.key for v in variants(L)]
    assert len(ab.rows) == 3 * L + 1 and len(calls) == len(ab.rows) + 1  # one call per variant, then done
    assert [f for f, _ in calls] == sorted(f for f, _ in calls) and calls[-1][0] == 1.0
    assert [r.x for r in ab.group("drop")] == list(range(L))
    assert [r.x for r in ab.group("below")] == [r.x for r in ab.group("from")] == list(range(1, L))
    assert [r.layers_with_prefix for r in ab.group("below")] == list(range(1, L))
    assert [r.layers_with_prefix for r in ab.group("from")] == list(range(L - 1, 0, -1))
    for r in ab.rows:
        assert r.n == 3 and r.split == "validation" and 0 <= r.metric <= 1
        assert r.logprob_mean < 0 and r.logprob_std >= 0 and len(r.predictions) == 3
    assert ab.row("none").kv_positions == 0 and ab.row("none").layers_with_prefix == 0
    assert ab.row("full").kv_positions == ab.row("zero").kv_positions == prefix.num_virtual_tokens
    assert len({r.prompt_tokens for r in ab.rows}) == 1


def test_ablate_rows_match_the_ordinary_scoring(result, tiny_llama):
    """The full row is the Train tab's scoring of the prefix; the none row is the model without one."""
    ab, prefix, task, examples, _ = result
    ref = evaluate(tiny_llama, task, examples, prefix_method(prefix))
    assert ab.row("full").metric == ref.score and ab.row("full").predictions == ref.predictions
    assert ab.row("full").logprob_mean == pytest.approx(
        sum(target_logprobs(tiny_llama, prefix, examples)) / len(examples), rel=1e-5)
    fmt = PromptFormat.for_tokenizer(tiny_llama.tokenizer)
    bare = []
    for e in examples:  # no prefix at all: the same teacher-forced sum by hand
        ids, labels = fmt.encode_example(e.input, e.target, "prefix")
        with torch.inference_mode():
            logp = tiny_llama.model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)  # [T, vocab]
        bare.append(sum(logp[t - 1, ids[t]].item() for t in range(len(ids)) if labels[t] != -100))
    assert ab.row("none").logprob_mean == pytest.approx(sum(bare) / len(bare), abs=1e-4)


def test_ablation_figures_plot_every_row(result, tiny_llama):
    ab = result[0]
    L = tiny_llama.num_layers
    fig = ablation_layer_figure(ab)
    series = [t for t in fig.data if t.name == "without this layer"]
    assert [list(t.x) for t in series] == [list(range(L))] * 2
    assert list(series[0].y) == [100 * r.metric for r in ab.group("drop")]
    assert list(series[1].y) == [r.logprob_mean for r in ab.group("drop")]
    assert list(series[1].error_y.array) == [r.logprob_std for r in ab.group("drop")]
    refs = {t.name: t.y for t in fig.data if t.name in ("full prefix", "no prefix", "zero prefix") and t.showlegend
            is not False}
    assert refs["full prefix"] == (100 * ab.row("full").metric,) * 2
    assert f"n = {ab.n}, validation" in fig.layout.title.text
    depth = ablation_depth_figure(ab)
    names = {t.name for t in depth.data}
    assert {"only in layers below k", "only in layers from k up", "full prefix", "no prefix", "zero prefix"} <= names
    assert all(t.hovertemplate for t in fig.data + depth.data)


def test_plan_sizes_the_work_and_caps_the_examples(tiny_llama):
    task = get_task("sentiment")
    examples = task.split("validation")[:4]
    p = plan(tiny_llama, task, examples, 4)
    assert p.variants == 3 * tiny_llama.num_layers + 1 and p.n == 4 and p.peak_bytes > 0
    assert p.cost == p.variants * 4 * (p.prompt_tokens + p.new_tokens + p.example_tokens)
    many = (task.split("validation") + task.split("test"))[:MAX_EXAMPLES + 1]
    with pytest.raises(PlaygroundError, match=f"at most {MAX_EXAMPLES}"):
        plan(tiny_llama, task, many, 4)
    with pytest.raises(PlaygroundError, match="no held-out examples"):
        plan(tiny_llama, task, [], 4)


def test_cli_refuses_too_many_examples_before_loading_the_model(capsys):
    from playground.cli import main

    assert main(["ablate", "--prefix", "sentiment", "--examples", str(MAX_EXAMPLES + 1)]) == 2
    assert f"--examples must be from 1 to {MAX_EXAMPLES}" in capsys.readouterr().err
