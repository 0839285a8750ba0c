"""Training losses over target tokens: the LM head applied only where a label is.

Every tuning method trains with these (``training.train`` calls the method's own ``loss``);
they live below the methods so that each method and the trainer can share them.
"""

from __future__ import annotations

import torch

from .models import BaseModel
from .prefix import Prefix, prefix_forward


def target_loss(base: BaseModel, prefix: Prefix, ids: torch.Tensor, mask: torch.Tensor,
                labels: torch.Tensor, backbone: torch.nn.Module | None = None) -> torch.Tensor:
    """Mean cross-entropy over target tokens, with the LM head applied only where a label is.

    Same value as ``model(..., labels=labels).loss`` (tested), but the 49k-vocabulary head
    runs on the few target positions instead of every position of the batch.
    ids, mask, labels: [batch, T]. ``backbone``: the LM without its head (default: the model's own).
    """
    backbone = backbone if backbone is not None else getattr(base.model, base.model.base_model_prefix)
    hidden = prefix_forward(base, ids, mask, prefix, module=backbone,
                            use_cache=False).last_hidden_state  # [batch, T, hidden]
    return head_loss(base.model.get_output_embeddings(), hidden, labels)


def head_loss(head: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the LM ``head`` at target positions only. hidden: [batch, T, hidden]; labels: [batch, T]."""
    shifted = labels[:, 1:]  # position t predicts token t+1
    keep = shifted != -100  # [batch, T-1]
    logits = head(hidden[:, :-1][keep])  # [targets, vocab]
    return torch.nn.functional.cross_entropy(logits.float(), shifted[keep])
