"""How much attention lands on the virtual tokens, layer by layer. Pure tensors; figures live elsewhere.

Each layer's attention with a prefix of P virtual tokens has shape
[batch, head, q_pos, k_pos] with k_pos = P + T: the first P key columns are the prefix.
GQA models (SmolLM2: 9 query heads over 3 kv heads) report every query head; the model
repeats kv heads internally, so weights come back per query head already.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from .errors import PlaygroundError
from .generate import mixed_prefix_cache
from .models import BaseModel
from .prefix import Prefix
from .prompts import PromptFormat, pad_left


@dataclass
class PrefixAttention:
    """Attention on the prefix for one prompt."""

    tokens: list[str]  # the prompt's tokens as text, one per q_pos
    weights: torch.Tensor  # [layer, head, q_pos, virtual_token]: attention on each virtual token
    head_share: torch.Tensor  # [layer, head]: share of attention on the prefix, mean over q_pos
    layer_share: torch.Tensor  # [layer]: mean over heads and q_pos
    token_share: torch.Tensor  # [layer, q_pos]: mean over heads; which prompt tokens lean on the prefix


def layer_shares(att: torch.Tensor, num_virtual_tokens: int) -> dict[str, torch.Tensor]:
    """One layer's weights [1, head, q_pos, k_pos] reduced to what PrefixAttention keeps of them."""
    # a copy, not a view: a view of the first P columns would keep the whole matrix alive
    weights = att[0, ..., :num_virtual_tokens].to(torch.float32, copy=True)  # [head, q_pos, virtual_token]
    share = weights.sum(-1)  # [head, q_pos]
    return {
        "weights": weights,
        "head_share": share.mean(-1),  # [head]
        "layer_share": share.mean((-1, -2)),  # []
        "token_share": share.mean(0),  # [q_pos]
    }


def _stack(per_layer: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-layer reductions stacked: weights [layer, head, q_pos, P], head_share [layer, head], ..."""
    return {k: torch.stack([d[k] for d in per_layer]) for k in per_layer[0]}


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The self-attention module of every layer, in layer order (each returns (output, weights))."""
    found = [m for m in model.modules() if isinstance(getattr(m, "layer_idx", None), int)
             and type(m).__name__.endswith("Attention")]
    return sorted(found, key=lambda m: m.layer_idx)


# The model is shared by every session and its forwards run in many threads at once, so the hooks
# are installed once per model and act only in a thread that is collecting (``_LOCAL.sink`` set by
# ``prefix_attention_many``): another thread's training step or generation passes straight through.
# Hooks added and removed per call would also see, and mix in, the other threads' layers.
_LOCAL = threading.local()
_INSTALL = threading.Lock()


def _collect(module, args, output) -> None:
    """Forward hook: in a collecting thread, reduce this layer's weights [batch, head, q_pos, k_pos] at once,
    each row to its own real queries and its own prefix's columns."""
    sink = getattr(_LOCAL, "sink", None)
    if sink is not None:
        att = output[1]  # [batch, head, q_pos, k_pos]
        sink[module.layer_idx] = [layer_shares(att[i:i + 1, :, q0:, k0:k1], k1 - k0)
                                  for i, (q0, k0, k1) in enumerate(_LOCAL.rows)]


def _hooked_modules(base: BaseModel) -> list[torch.nn.Module]:
    """The attention modules, with ``_collect`` installed on each (once per model)."""
    modules = base.derived.get("attention_hooks")
    if modules is None:
        with _INSTALL:
            modules = base.derived.get("attention_hooks")
            if modules is None:
                modules = attention_modules(base.model)
                for m in modules:
                    m.register_forward_hook(_collect)
                base.derived["attention_hooks"] = modules
    return modules


@dataclass(frozen=True)
class AttentionRequest:
    """One Attention view to measure: ``text`` prompted as ``mode``, behind ``prefix``."""

    prefix: Prefix
    text: str
    mode: str = "prefix"
    instruction: str = ""


def prefix_attention(base: BaseModel, prefix: Prefix, text: str, mode: str = "prefix", instruction: str = "") -> PrefixAttention:
    """Run ``text`` (prompted as ``mode``) with ``prefix`` and measure the attention on the virtual tokens."""
    return prefix_attention_many(base, [AttentionRequest(prefix, text, mode, instruction)])[0]


@torch.inference_mode()
def prefix_attention_many(base: BaseModel, requests: list[AttentionRequest]) -> list[PrefixAttention]:
    """Several Attention views from one forward: row i is request i's prompt behind its own prefix.

    The rows are laid out as a mixed-prefix generation batch is (``generate.mixed_prefix_cache``):
    row i's P_i virtual tokens right-aligned in Pmax key slots, its prompt left-padded to T, the
    padding masked, positions counted from its own P_i. Masked keys take exactly zero weight, so
    each row's shares are what it gets alone (tested). Each layer's full weights
    [batch, head, q_pos, k_pos] are reduced to every row's own prefix columns as soon as that layer's
    attention returns them (a forward hook), so only one layer's matrix is alive at a time: the model's
    ``output_attentions`` would keep every layer's until the end (gigabytes at 2,000 prompt tokens).
    """
    if not requests:
        return []
    for r in requests:
        if not r.text.strip():
            raise PlaygroundError("The prompt is empty. Type a sentence to see where the model looks.")
    if base.model.config._attn_implementation != "eager":
        raise PlaygroundError("Attention weights need the model loaded with attn_implementation='eager' "
                              "(load it with playground.models.load_model).")
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    prompts = [fmt.encode_prompt(r.text, r.mode, r.instruction) for r in requests]
    prefixes = [r.prefix for r in requests]
    cache, pmask = mixed_prefix_cache(base, prefixes)  # pmask [batch, Pmax]
    ids, mask = pad_left(prompts, base.tokenizer.pad_token_id)  # [batch, T]
    mask = torch.cat([pmask, mask.to(base.device)], dim=1)  # [batch, Pmax + T]
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, pmask.shape[1]:]  # [batch, T]: P_i, P_i + 1, ... as alone
    Pmax, T = pmask.shape[1], ids.shape[1]
    # row i's (q_pos from, prefix columns from, to): its real queries are the last T_i, its prefix the last P_i of Pmax
    rows = [(T - len(q), Pmax - p.num_virtual_tokens, Pmax) for q, p in zip(prompts, prefixes)]
    modules = _hooked_modules(base)
    per_layer: dict[int, list[dict[str, torch.Tensor]]] = {}
    _LOCAL.sink, _LOCAL.rows = per_layer, rows
    try:
        # Only the attention weights are read: logits_to_keep=1 skips the LM head on all but the last
        # position (49,152 x 576 per token, about a fifth of this forward's FLOPs on SmolLM2).
        base.model(input_ids=ids.to(base.device), attention_mask=mask, position_ids=pos, past_key_values=cache,
                   use_cache=False, logits_to_keep=1)
    finally:
        _LOCAL.sink = None
    if not modules or sorted(per_layer) != [m.layer_idx for m in modules]:
        raise PlaygroundError("This model's attention layers did not report their weights; load it with "
                              "playground.models.load_model (eager attention).")
    out = []
    for i, q in enumerate(prompts):
        shares = _stack([per_layer[m.layer_idx][i] for m in modules])
        tokens = [base.tokenizer.decode([t]) for t in q]  # readable text, not BPE symbols like 'Ġ'
        out.append(PrefixAttention(tokens=tokens, **{k: v.cpu() for k, v in shares.items()}))
    return out
