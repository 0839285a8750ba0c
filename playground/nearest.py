"""Nearest vocabulary tokens of a prefix: each virtual token's first-layer key against the keys real tokens make.

In layer 0 a real token's key depends only on the token and its position::

    key = RoPE(k_proj(input_layernorm(embed(token))), pos)

A prefix initialized from a text holds that text's keys at positions 0..P-1, so slot j is
compared with what every vocabulary token would give at position j. RoPE is a rotation per
position, so instead of rotating the whole vocabulary P times, slot j's key is rotated back
by position j and compared with the vocabulary's unrotated keys, computed once per model.

This is the projection Khashabi et al. (2022, "Prompt Waywardness") warn about: two prefixes
that solve a task equally well can sit next to unrelated words, so the nearest words do not
explain what a prefix does. ``overlap`` measures how much two prefixes' word lists share, and a
``Comparison`` holds them side by side with each prefix's held-out score.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from .errors import PlaygroundError
from .models import BaseModel
from .prefix import Prefix

CHUNK = 4096  # vocabulary rows per matmul while building the cache (keeps the temporaries near 10 MB)
_BUILD = threading.Lock()


@dataclass
class NearestTokens:
    """The k nearest vocabulary tokens of each virtual token (slot), by cosine of first-layer keys."""

    ids: torch.Tensor  # [P, k]: token ids, nearest first
    cosine: torch.Tensor  # [P, k]: their cosine similarity, in [-1, 1]
    tokens: list[list[str]]  # [P][k]: the tokens as readable text

    def words(self) -> set[str]:
        """Every listed token, stripped and lower-cased (the set ``overlap`` compares)."""
        return {t.strip().lower() for row in self.tokens for t in row if t.strip()}


def _layer0(base: BaseModel):
    """(embedding, layer 0's input norm, its attention, the rotary embedding) of a rotary (Llama-family) model."""
    inner = getattr(base.model, "model", None)
    layers = getattr(inner, "layers", None)
    rotary = getattr(inner, "rotary_emb", None)
    attn = getattr(layers[0], "self_attn", None) if layers else None
    if rotary is None or attn is None or not hasattr(attn, "k_proj") or not hasattr(layers[0], "input_layernorm"):
        raise PlaygroundError(f"Nearest tokens compare rotary keys, and this model ({type(base.model).__name__}) has "
                              "no rotary first layer (GPT-2 adds positions to its embeddings instead). Use a "
                              "Llama-family model such as the default SmolLM2.")
    return inner.embed_tokens, layers[0].input_layernorm, attn, rotary


def _rotation(base: BaseModel, P: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE's (cos, sin) at positions 0..P-1, each [P, head_dim], fp32."""
    _, _, _, rotary = _layer0(base)
    pos = torch.arange(P, device=base.device).unsqueeze(0)  # [1, P]
    probe = torch.zeros(1, device=base.device, dtype=torch.float32)
    cos, sin = rotary(probe, pos)  # each [1, P, head_dim]
    return cos[0].float(), sin[0].float()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def unrotate(key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Undo RoPE: key [..., P, head_dim] rotated by (cos, sin) [P, head_dim] back to position 0.

    RoPE maps k to k*cos + rotate_half(k)*sin, a rotation of each dimension pair scaled by the rope's
    attention scaling s (cos^2 + sin^2 = s^2); the inverse rotates by -angle and divides by s^2."""
    return (key * cos - _rotate_half(key) * sin) / (cos * cos + sin * sin)


@torch.inference_mode()
def vocab_keys(base: BaseModel) -> torch.Tensor:
    """Every vocabulary token's unrotated layer-0 key, all kv heads side by side and unit-normed:
    [vocab, kv_head * head_dim] fp32 (49,152 x 192 floats, 38 MB, for SmolLM2). Built once per model."""
    keys = base.derived.get("nearest_vocab_keys")
    if keys is not None:
        return keys
    with _BUILD:
        keys = base.derived.get("nearest_vocab_keys")
        if keys is None:
            keys = _build_vocab_keys(base)
            base.derived["nearest_vocab_keys"] = keys
    return keys


def _build_vocab_keys(base: BaseModel) -> torch.Tensor:
    embed, norm, attn, _ = _layer0(base)
    H, D = base.num_kv_heads, base.head_dim
    W = embed.weight  # [vocab, hidden]
    parts = []
    for i in range(0, W.shape[0], CHUNK):
        k = attn.k_proj(norm(W[i : i + CHUNK].unsqueeze(0)))[0]  # [chunk, kv_head * head_dim]
        k_norm = getattr(attn, "k_norm", None)  # models that norm each head's key before RoPE (Qwen3)
        if k_norm is not None:
            k = k_norm(k.view(-1, H, D)).reshape(-1, H * D)
        parts.append(k.float())
    keys = torch.cat(parts)  # [vocab, kv_head * head_dim]
    return torch.nn.functional.normalize(keys, dim=-1)


@torch.inference_mode()
def prefix_keys(base: BaseModel, prefix: Prefix) -> torch.Tensor:
    """The prefix's layer-0 keys rotated back to position 0, heads side by side: [P, kv_head * head_dim] fp32."""
    P = prefix.num_virtual_tokens
    key = prefix.key_values(1, torch.float32)[0][0][0]  # layer 0's key [kv_head, P, head_dim]
    cos, sin = _rotation(base, P)  # [P, head_dim]: slot j sits at position j
    key = unrotate(key.to(cos.device), cos, sin)  # [kv_head, P, head_dim]
    return key.permute(1, 0, 2).reshape(P, -1)  # [P, kv_head * head_dim]


@torch.inference_mode()
def nearest_tokens(base: BaseModel, prefix: Prefix, k: int = 5) -> NearestTokens:
    """The ``k`` vocabulary tokens whose layer-0 key is nearest each virtual token's.

    Cosine over the kv heads concatenated (not per head, then averaged): one ranking per slot, and
    a slot copied from a real token matches that token in every head at once, so it scores 1. Heads
    with larger keys weigh more in it, as they do in the attention scores."""
    _layer0(base)  # a clear error for a model without rotary keys, before any work
    if not 1 <= k <= 50:
        raise PlaygroundError(f"k must be from 1 to 50 nearest tokens; got {k}.")
    table = vocab_keys(base)  # [vocab, kv_head * head_dim], unit rows
    q = torch.nn.functional.normalize(prefix_keys(base, prefix), dim=-1)  # [P, kv_head * head_dim]
    sims = q @ table.T  # [P, vocab]
    cosine, ids = sims.topk(min(k, table.shape[0]), dim=-1)  # [P, k]
    tokens = [[base.tokenizer.decode([int(i)]).replace("\n", "\\n") for i in row] for row in ids]
    return NearestTokens(ids=ids.cpu(), cosine=cosine.cpu(), tokens=tokens)


@dataclass
class Comparison:
    """Several prefixes' nearest tokens side by side, with each one's held-out score and their overlap."""

    names: list[str]
    nearest: list[NearestTokens]
    scores: list[list[dict]]  # per prefix, its held-out figures: [{split, n, metric, score}] (empty: none known)
    overlap: float  # Jaccard overlap of the first two prefixes' word sets (1.0 for a single prefix)
    shared: list[str]  # the words both list


def overlap(a: NearestTokens, b: NearestTokens) -> tuple[float, list[str]]:
    """(Jaccard overlap of the two word sets, the shared words sorted): 0 means no word in common."""
    wa, wb = a.words(), b.words()
    both = wa & wb
    return (len(both) / len(wa | wb) if wa | wb else 0.0), sorted(both)


def nearest_bytes(base: BaseModel, P: int) -> int:
    """Memory of one call: the vocabulary's keys (built on the first call) and the [P, vocab] similarities."""
    V, K = base.config.vocab_size, base.num_kv_heads * base.head_dim
    build = CHUNK * (base.config.hidden_size + K) * 4 * 2
    return V * K * 4 + build + 2 * P * V * 4
