"""One training forward/backward for several runs at once: each row behind its own run's prefix.

The backbone is frozen and shared, so the batches of different students' runs can ride in one
forward, as the mixed-prefix batch already does for generation (``generate.mixed_prefix_cache``):
row i's P_i virtual tokens sit right-aligned in Pmax slots, the slots before them are zeros and
masked, and its real tokens take positions P_i, P_i + 1, ... exactly as alone. Each run's loss is
the mean cross-entropy over its own rows' target tokens (``losses.head_loss``), so its value and
its gradient equal the run trained alone: a row never attends to another run's prefix (masked
keys get a softmax weight of exactly 0), so no gradient crosses from one run to another.
``tests/unit/test_shared_step.py`` checks both against ``losses.target_loss`` run by run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from .losses import head_loss
from .models import BaseModel
from .prefix import Prefix


@dataclass
class RunBatch:
    """One run's share of a shared step: its prefix and its own right-padded batch."""

    prefix: Prefix
    ids: torch.Tensor  # [rows, T_run]
    mask: torch.Tensor  # [rows, T_run], 1 on real tokens
    labels: torch.Tensor  # [rows, T_run], -100 where there is no target


def _pad_right(t: torch.Tensor, T: int, value: int) -> torch.Tensor:
    return F.pad(t, (0, T - t.shape[1]), value=value)  # [rows, T]


def shared_losses(base: BaseModel, runs: list[RunBatch], backbone: torch.nn.Module | None = None) -> list[torch.Tensor]:
    """Each run's training loss from one forward of all their rows; differentiable in every prefix.

    Returns one scalar per run, in order: the mean cross-entropy over that run's target tokens.
    """
    if not runs:
        return []
    dev, dtype = base.device, base.dtype
    T = max(r.ids.shape[1] for r in runs)
    pad = base.tokenizer.pad_token_id
    ids = torch.cat([_pad_right(r.ids, T, pad) for r in runs]).to(dev)  # [batch, T]
    mask = torch.cat([_pad_right(r.mask, T, 0) for r in runs]).to(dev)  # [batch, T]
    labels = torch.cat([_pad_right(r.labels, T, -100) for r in runs]).to(dev)  # [batch, T]
    Pmax = max(r.prefix.num_virtual_tokens for r in runs)
    kvs, pmasks = [], []
    for r in runs:
        n, P = r.ids.shape[0], r.prefix.num_virtual_tokens
        layers = r.prefix.key_values(n, dtype)  # per layer (key, value), each [rows, kv_head, P, head_dim]
        # [layer*2, rows, kv_head, Pmax, head_dim]: the run's P slots right-aligned, zeros (masked) before them
        kvs.append(F.pad(torch.stack([t for pair in layers for t in pair]), (0, 0, Pmax - P, 0)))
        pm = torch.zeros(n, Pmax, dtype=mask.dtype, device=dev)  # [rows, Pmax]
        pm[:, Pmax - P:] = 1
        pmasks.append(pm)
    kv = torch.cat(kvs, dim=1).to(dev)  # [layer*2, batch, kv_head, Pmax, head_dim]
    full = torch.cat([torch.cat(pmasks), mask], dim=1)  # [batch, Pmax + T]
    # positions count row i's real tokens after its own P_i virtual ones, as alone
    pos = (full.cumsum(-1) - 1).clamp(min=0)[:, Pmax:]  # [batch, T]
    cache = DynamicCache([(kv[2 * i], kv[2 * i + 1]) for i in range(kv.shape[0] // 2)])
    backbone = backbone if backbone is not None else getattr(base.model, base.model.base_model_prefix)
    hidden = backbone(input_ids=ids, attention_mask=full, position_ids=pos, past_key_values=cache,
                      use_cache=False).last_hidden_state  # [batch, T, hidden]
    head = base.model.get_output_embeddings()
    out, start = [], 0
    for r in runs:
        rows = slice(start, start + r.ids.shape[0])
        out.append(head_loss(head, hidden[rows], labels[rows]))
        start = rows.stop
    return out
