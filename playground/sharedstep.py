"""One training forward/backward for several runs at once: each row behind its own run's prefix.

The backbone is frozen and shared, so the batches of different students' runs can ride in one
forward, as the mixed-prefix batch already does for generation (``generate.mixed_prefix_cache``):
row i's P_i virtual tokens sit right-aligned in Pmax slots, the slots before them are zeros and
masked, and its real tokens take positions P_i, P_i + 1, ... exactly as alone. Each run's loss is
the mean cross-entropy over its own rows' target tokens (``losses.head_loss``), so its value and
its gradient equal the run trained alone: a row never attends to another run's prefix (masked
keys get a softmax weight of exactly 0), so no gradient crosses from one run to another.
``tests/unit/test_shared_step.py`` checks both against ``losses.target_loss`` run by run, and
checks that runs trained step by step together (``shared_step``, each with its own optimizer)
end with the same losses and the same prefix as each trained alone by ``training.train``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from .losses import head_loss
from .models import BaseModel
from .prefix import Prefix
from .prompts import PromptFormat, pad_right
from .tasks import Task
from .training import TrainSettings, batches, bf16_backbone


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


@dataclass
class SharedRun:
    """One run trained in shared steps: its prefix, its own data order and its own optimizer, set up as
    ``training.train`` sets up a run alone (the same encoding, batch order and AdamW)."""

    prefix: Prefix
    encoded: list[tuple[list[int], list[int]]]  # (ids, labels) per training example
    order: Iterator[list[int]]  # index batches, as training.batches draws them from the run's seed
    opt: torch.optim.Optimizer
    losses: list[float] = field(default_factory=list)  # one per step taken

    @classmethod
    def start(cls, base: BaseModel, prefix: Prefix, task: Task, settings: TrainSettings) -> "SharedRun":
        settings.validate()
        fmt = PromptFormat.for_tokenizer(base.tokenizer)
        encoded = [fmt.encode_example(e.input, e.target, "prefix") for e in task.split("train")]
        params = [p for p in prefix.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
        order = batches(len(encoded), min(settings.batch_size, len(encoded)), settings.seed)
        return cls(prefix, encoded, order, opt)

    def next_batch(self, pad_id: int) -> RunBatch:
        idx = next(self.order)
        ids, mask, labels = pad_right([self.encoded[i][0] for i in idx], pad_id, [self.encoded[i][1] for i in idx])
        return RunBatch(self.prefix, ids, mask, labels)


def shared_step(base: BaseModel, runs: list[SharedRun], batches: list[RunBatch] | None = None,
                amp: torch.dtype | None = None) -> list[float]:
    """One training step of every run, in one forward and one backward; returns each run's loss.

    ``batches``: each run's batch (default: its next one). ``amp``: the autocast dtype, as
    ``training.train`` uses it (None: plain fp32); an fp32 model under bf16 autocast uses the bf16
    twin of the backbone, as ``training.train`` does. Each optimizer steps on its own prefix's
    gradient, which is that run's alone (see ``shared_losses``).
    """
    if batches is None:
        batches = [r.next_batch(base.tokenizer.pad_token_id) for r in runs]
    backbone = bf16_backbone(base) if amp == torch.bfloat16 and base.dtype == torch.float32 else None
    with torch.autocast(base.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        losses = shared_losses(base, batches, backbone)
    for r in runs:
        r.opt.zero_grad(set_to_none=True)
    torch.stack(losses).sum().backward()  # the sum: each prefix's gradient is its own run's loss's
    for r, loss in zip(runs, losses):
        r.opt.step()
        r.losses.append(loss.item())
    return [r.losses[-1] for r in runs]
