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
from .models import BaseModel
from .prefix import Prefix, prefix_forward
from .prompts import PromptFormat


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
# ``prefix_attention``): another thread's training step or generation passes straight through.
# Hooks added and removed per call would also see, and mix in, the other threads' layers.
_LOCAL = threading.local()
_INSTALL = threading.Lock()


def _collect(module, args, output) -> None:
    """Forward hook: in a collecting thread, reduce this layer's weights [1, head, q_pos, k_pos] at once."""
    sink = getattr(_LOCAL, "sink", None)
    if sink is not None:
        sink[module.layer_idx] = layer_shares(output[1], _LOCAL.num_virtual_tokens)


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


@torch.inference_mode()
def prefix_attention(base: BaseModel, prefix: Prefix, text: str, mode: str = "prefix", instruction: str = "") -> PrefixAttention:
    """Run ``text`` (prompted as ``mode``) with ``prefix`` and measure the attention on the virtual tokens.

    Each layer's full weights [1, head, q_pos, k_pos] are reduced to the prefix's columns as soon as
    that layer's attention returns them (a forward hook), so only one layer's matrix is alive at a
    time: the model's ``output_attentions`` would keep every layer's until the end (gigabytes at
    2,000 prompt tokens).
    """
    if not text.strip():
        raise PlaygroundError("The prompt is empty. Type a sentence to see where the model looks.")
    if base.model.config._attn_implementation != "eager":
        raise PlaygroundError("Attention weights need the model loaded with attn_implementation='eager' "
                              "(load it with playground.models.load_model).")
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    ids = torch.tensor([fmt.encode_prompt(text, mode, instruction)], device=base.device)  # [1, T]
    modules = _hooked_modules(base)
    per_layer: dict[int, dict[str, torch.Tensor]] = {}
    _LOCAL.sink, _LOCAL.num_virtual_tokens = per_layer, prefix.num_virtual_tokens
    try:
        # Only the attention weights are read: logits_to_keep=1 skips the LM head on all but the last
        # position (49,152 x 576 per token, about a fifth of this forward's FLOPs on SmolLM2).
        prefix_forward(base, ids, torch.ones_like(ids), prefix, use_cache=False, logits_to_keep=1)
    finally:
        _LOCAL.sink = None
    if not modules or sorted(per_layer) != [m.layer_idx for m in modules]:
        raise PlaygroundError("This model's attention layers did not report their weights; load it with "
                              "playground.models.load_model (eager attention).")
    shares = _stack([per_layer[m.layer_idx] for m in modules])
    tokens = [base.tokenizer.decode([i]) for i in ids[0].tolist()]  # readable text, not BPE symbols like 'Ġ'

    return PrefixAttention(tokens=tokens, **{k: v.cpu() for k, v in shares.items()})
