"""Attention views of several learners from one forward: each row's shares equal its view alone."""

from __future__ import annotations

import pytest
import torch

from playground.attention import AttentionRequest, prefix_attention, prefix_attention_many
from playground.errors import PlaygroundError
from playground.prefix import PrefixSettings, create_prefix

pytestmark = pytest.mark.unit

TEXTS = ["the film was long but the ending was lovely", "hi", "le chat dort sur le tapis", "one two"]


def far_prefix(base, n: int, seed: int):
    prefix = create_prefix(base, PrefixSettings(n, "random"), seed=seed)
    with torch.no_grad():
        for p in prefix.parameters():
            p.mul_(4.0)  # far from init, so the rows' attention differs
    return prefix


def assert_same_view(got, want) -> None:
    assert got.tokens == want.tokens
    for field in ("weights", "head_share", "layer_share", "token_share"):
        a, b = getattr(got, field), getattr(want, field)
        assert a.shape == b.shape, field
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=field)


def test_views_in_one_forward_equal_each_view_alone(tiny):
    """Different prefix lengths (padded, masked), different prompt lengths (left-padded), one prefix twice."""
    prefixes = [far_prefix(tiny, n, seed=n) for n in (2, 5, 3)]
    requests = [AttentionRequest(prefixes[0], TEXTS[0]), AttentionRequest(prefixes[1], TEXTS[1]),
                AttentionRequest(prefixes[2], TEXTS[2]), AttentionRequest(prefixes[1], TEXTS[3], "base")]
    together = prefix_attention_many(tiny, requests)
    assert len(together) == len(requests)
    for got, r in zip(together, requests):
        assert_same_view(got, prefix_attention(tiny, r.prefix, r.text, r.mode))
        assert got.weights.shape[-1] == r.prefix.num_virtual_tokens  # only its own virtual tokens


def test_an_empty_prompt_in_a_batch_is_refused_by_name(tiny_llama):
    prefix = far_prefix(tiny_llama, 2, seed=1)
    with pytest.raises(PlaygroundError, match="empty"):
        prefix_attention_many(tiny_llama, [AttentionRequest(prefix, "fine"), AttentionRequest(prefix, "  ")])
    assert prefix_attention_many(tiny_llama, []) == []
