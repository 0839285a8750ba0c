"""Nearest vocabulary tokens of a prefix's first-layer keys, on the tiny Llama (rotary, GQA)."""

from __future__ import annotations

import pytest
import torch

from playground import nearest
from playground.errors import PlaygroundError
from playground.prefix import PrefixSettings, create_prefix

TEXT = "The movie was great and the actors were good in it."
P = 8


def _text_prefix(base, text=TEXT, n=P):
    return create_prefix(base, PrefixSettings(n, init="text", init_text=text))


def test_a_text_initialized_prefix_finds_its_own_tokens_at_their_slots(tiny_llama):
    prefix = _text_prefix(tiny_llama)
    # PEFT initializes from the text as a system message (chat models): its first P tokens, at positions 0..P-1
    ids = tiny_llama.tokenizer.apply_chat_template([{"role": "system", "content": TEXT}], tokenize=True,
                                                   add_generation_prompt=False, return_dict=False)[:P]
    assert len(ids) == P
    got = nearest.nearest_tokens(tiny_llama, prefix, k=3)
    assert got.ids.shape == got.cosine.shape == (P, 3)  # [P, k]
    assert len(got.tokens) == P and all(len(row) == 3 for row in got.tokens)
    assert got.ids[:, 0].tolist() == ids  # rank 1 at every slot: the token the slot was copied from
    assert torch.allclose(got.cosine[:, 0], torch.ones(P), atol=1e-4)
    assert (got.cosine[:, 1] < 0.999).all()  # and no other token ties with it
    assert got.tokens[0][0] == tiny_llama.tokenizer.decode([ids[0]]).replace("\n", "\\n")
    assert (got.cosine[:, :-1] >= got.cosine[:, 1:]).all()  # nearest first


def test_unrotate_inverts_the_models_rope(tiny_llama):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    cos, sin = nearest._rotation(tiny_llama, 5)  # [5, head_dim]
    k = torch.randn(1, 2, 5, tiny_llama.head_dim)  # [batch, kv_head, pos, head_dim]
    _, rotated = apply_rotary_pos_emb(k, k, cos[None], sin[None])
    assert not torch.allclose(rotated, k)
    assert torch.allclose(nearest.unrotate(rotated, cos, sin), k, atol=1e-5)


def test_vocabulary_keys_are_cached_per_model(tiny_llama):
    tiny_llama.derived.pop("nearest_vocab_keys", None)
    nearest.nearest_tokens(tiny_llama, _text_prefix(tiny_llama))
    table = tiny_llama.derived["nearest_vocab_keys"]
    V = tiny_llama.model.get_input_embeddings().weight.shape[0]
    assert table.shape == (V, tiny_llama.num_kv_heads * tiny_llama.head_dim)  # [vocab, kv_head * head_dim]
    norms = table.norm(dim=-1)  # [vocab]: unit rows, except a token whose embedding is all zeros (the padding row)
    zero = tiny_llama.model.get_input_embeddings().weight.abs().sum(-1) == 0
    assert torch.allclose(norms[~zero], torch.ones(int((~zero).sum())), atol=1e-5) and (norms[zero] == 0).all()
    nearest.nearest_tokens(tiny_llama, _text_prefix(tiny_llama, "Rain fell on the old town all night long."))
    assert tiny_llama.derived["nearest_vocab_keys"] is table  # reused, not rebuilt
    assert nearest.vocab_keys(tiny_llama) is table


def test_overlap_of_two_prefixes_word_lists(tiny_llama):
    a = nearest.nearest_tokens(tiny_llama, _text_prefix(tiny_llama), k=1)
    same, shared = nearest.overlap(a, a)
    assert same == 1.0 and shared == sorted(a.words())
    b = nearest.nearest_tokens(tiny_llama, _text_prefix(tiny_llama, "Rain fell on the old town all night long."), k=1)
    score, shared = nearest.overlap(a, b)
    assert 0.0 < score < 1.0  # the chat template's opening tokens are shared, the words are not
    assert set(shared) == a.words() & b.words()


def test_a_model_without_rotary_keys_is_a_clear_error(tiny):
    prefix = create_prefix(tiny, PrefixSettings(4, init="random"))
    if tiny.name == "tiny-gpt2":
        with pytest.raises(PlaygroundError, match="no rotary first layer"):
            nearest.nearest_tokens(tiny, prefix)
    else:
        assert nearest.nearest_tokens(tiny, prefix, k=2).ids.shape == (4, 2)
