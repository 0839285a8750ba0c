"""How much attention lands on the virtual tokens, layer by layer. Pure tensors; figures live elsewhere.

Each layer's attention with a prefix of P virtual tokens has shape
[batch, head, q_pos, k_pos] with k_pos = P + T: the first P key columns are the prefix.
GQA models (SmolLM2: 9 query heads over 3 kv heads) report every query head; the model
repeats kv heads internally, so weights come back per query head already.
"""

from __future__ import annotations

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


def prefix_shares(attentions: tuple[torch.Tensor, ...], num_virtual_tokens: int) -> dict[str, torch.Tensor]:
    """From the model's raw ``output_attentions`` (per layer [1, head, q_pos, k_pos]) to prefix shares."""
    P = num_virtual_tokens
    att = torch.stack([a[0].float() for a in attentions])  # [layer, head, q_pos, k_pos]
    weights = att[..., :P]  # [layer, head, q_pos, virtual_token]
    share = weights.sum(-1)  # [layer, head, q_pos]
    return {
        "weights": weights,
        "head_share": share.mean(-1),  # [layer, head]
        "layer_share": share.mean((-1, -2)),  # [layer]
        "token_share": share.mean(1),  # [layer, q_pos]
    }


@torch.inference_mode()
def prefix_attention(base: BaseModel, prefix: Prefix, text: str, mode: str = "prefix", instruction: str = "") -> PrefixAttention:
    """Run ``text`` (prompted as ``mode``) with ``prefix`` and measure the attention on the virtual tokens."""
    if not text.strip():
        raise PlaygroundError("The prompt is empty. Type a sentence to see where the model looks.")
    if base.model.config._attn_implementation != "eager":
        raise PlaygroundError("Attention weights need the model loaded with attn_implementation='eager' "
                              "(load it with playground.models.load_model).")
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    ids = torch.tensor([fmt.encode_prompt(text, mode, instruction)], device=base.device)  # [1, T]
    # Only the attention weights are read: logits_to_keep=1 skips the LM head on all but the last
    # position (49,152 x 576 per token, about a fifth of this forward's FLOPs on SmolLM2).
    out = prefix_forward(base, ids, torch.ones_like(ids), prefix, output_attentions=True, use_cache=False,
                         logits_to_keep=1)
    shares = prefix_shares(out.attentions, prefix.num_virtual_tokens)
    tokens = [base.tokenizer.decode([i]) for i in ids[0].tolist()]  # readable text, not BPE symbols like 'Ġ'

    return PrefixAttention(tokens=tokens, **{k: v.cpu() for k, v in shares.items()})
