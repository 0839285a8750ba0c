"""Continuous batching: one greedy decode loop that rows behind different prefixes join and leave between steps.

A serving engine keeps one running batch and lets requests in and out of it at every step: a new
request is prefilled and joins the rows already decoding, a finished row leaves at once, so a short
answer never waits for a long one and a new request never waits for the batch to drain. Here every
row may sit behind its own prefix (or none), each with its own answer budget and stop ids.

The loop is our own for two reasons. PEFT cannot mix prefixes in one batch (``set_adapter`` is
global, its mixed-adapter batches cover LoRA-like tuners only), and ``model.generate`` fixes its
batch at the first call: rows can leave it at best, never join it.

The running state is a key/value cache [batch, kv_head, k_pos, head_dim] per layer, a mask
[batch, k_pos] (1 on a row's real keys), each row's last position [batch, 1] and its next id
[batch] (the argmax of its pending logits). One ``step()``:

1. prefills the rows that joined since the last step in one ``mixed_prefill`` forward, pads the
   shorter of the two caches (running, joined) on the left with masked zeros to one k_pos and
   stacks them along the batch; a joined row's pending logits are its prefill's last ones;
2. appends every row's next id; a row ends at a stop id (kept) or its budget and its cache rows are
   dropped, together with the leading key columns that no row left attends to;
3. runs the rows still going one token forward (mask plus one column of ones, position plus one)
   for their next ids.

So a row's first token comes from its prefill, in the step it joins, and it gets one more token per
step, exactly the ids it would get alone (``greedy_mixed``): the padding keys have zero attention
weight, and positions come from each row's own count, never from its column in the cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from .generate import mixed_prefill
from .models import BaseModel
from .prefix import Prefix


@dataclass
class _Row:
    """One request row: who asked (tag, index within its join call), its budget, stop ids and new ids so far."""

    tag: object
    index: int
    budget: int
    stops: frozenset[int]
    prompt: list[int]
    prefix: Prefix | None
    ids: list[int] = field(default_factory=list)


def _pad_left(t: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """``t`` with zeros put before it along ``dim`` up to length k (masked keys: they take no attention)."""
    n = k - t.shape[dim]
    if n == 0:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim % t.dim()) + [n, 0]  # F.pad lists the last dimension first
    return F.pad(t, pad)


def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (key, value), each [batch, kv_head, k_pos, head_dim]."""
    return [(layer.keys, layer.values) for layer in cache.layers]


class _Batch:
    """The running rows' tensors; the rows themselves are listed in the same order beside them."""

    def __init__(self, cache: DynamicCache, mask: torch.Tensor, pos: torch.Tensor, nxt: torch.Tensor):
        self.cache = cache  # per layer key/value [batch, kv_head, k_pos, head_dim]
        self.mask = mask  # [batch, k_pos]: 1 on a row's real keys
        self.pos = pos  # [batch, 1]: the position of each row's last token in the cache
        self.nxt = nxt  # [batch]: each row's next id, the argmax of its pending logits

    def stack(self, other: _Batch) -> _Batch:
        """This batch's rows, then ``other``'s, the shorter cache padded on the left with masked zeros."""
        k = max(self.mask.shape[1], other.mask.shape[1])
        kv = [(torch.cat([_pad_left(a, k, 2), _pad_left(b, k, 2)]),  # [batch_a + batch_b, kv_head, k, head_dim]
               torch.cat([_pad_left(va, k, 2), _pad_left(vb, k, 2)]))
              for (a, va), (b, vb) in zip(_layers(self.cache), _layers(other.cache), strict=True)]
        mask = torch.cat([_pad_left(self.mask, k, 1), _pad_left(other.mask, k, 1)])  # [batch_a + batch_b, k]
        return _Batch(DynamicCache(kv), mask, torch.cat([self.pos, other.pos]), torch.cat([self.nxt, other.nxt]))

    def select(self, keep: list[int]) -> _Batch:
        """Only the rows ``keep``, without the leading key columns that none of them attends to."""
        idx = torch.tensor(keep, device=self.mask.device)  # [kept]
        mask = self.mask[idx]  # [kept, k_pos]
        first = int(mask.any(0).int().argmax())  # the first column some kept row attends to
        kv = [(k[idx, :, first:], v[idx, :, first:]) for k, v in _layers(self.cache)]  # [kept, kv_head, k', head_dim]
        return _Batch(DynamicCache(kv), mask[:, first:], self.pos[idx], self.nxt[idx])

    @torch.inference_mode()
    def forward(self, base: BaseModel) -> None:
        """Feed every row its next id: the cache grows one column, and each row gets its next id after it."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)  # [batch, k_pos + 1]
        self.pos = self.pos + 1  # [batch, 1]
        out = base.model(input_ids=self.nxt[:, None], attention_mask=self.mask, position_ids=self.pos,
                         past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        self.nxt = out.logits[:, -1].argmax(-1)  # [batch]


class DecodeLoop:
    """Rows behind different prefixes, decoded greedily together; rows join between steps and leave when they end.

    One owner calls it (the thread that owns the model); it holds no lock.
    """

    def __init__(self, base: BaseModel):
        self.base = base
        self._waiting: list[_Row] = []  # joined, not yet prefilled
        self._running: list[_Row] = []  # in batch order
        self._batch: _Batch | None = None  # the running rows' tensors; None when no row runs

    def join(self, tag: object, prompts: list[list[int]], prefixes: list[Prefix | None], budgets: list[int],
             stop_ids: tuple[int, ...] = ()) -> None:
        """Queue rows (token-id prompts, as PromptFormat.encode_prompt gives) to enter at the next step().

        tag identifies the caller's request; step() hands each row back as (tag, its index here, its ids).
        Row i gets at most budgets[i] new ids, ending at the first of ``stop_ids`` (kept).
        """
        B = len(prompts)
        if len(prefixes) != B or len(budgets) != B:
            raise ValueError(f"{B} prompts, {len(prefixes)} prefixes and {len(budgets)} budgets: "
                             "give one prefix (or None) and one budget per prompt.")
        if any(not q for q in prompts):
            raise ValueError("An empty prompt has nothing to continue from: give every row at least one token.")
        self._waiting += [_Row(tag, i, max(0, n), frozenset(stop_ids), list(q), p)
                          for i, (q, p, n) in enumerate(zip(prompts, prefixes, budgets))]

    @torch.inference_mode()
    def step(self) -> list[tuple[object, int, list[int]]]:
        """Prefill the rows that joined since the last step (one mixed_prefill forward for all of them), merge
        them into the running batch, then run ONE decode step for every running row.

        Every running row gets one new id per step, a joined row its first (from its prefill's logits).
        Returns the rows that ended during this call as (tag, row index within its join call, its new ids;
        stop id kept), in finishing order: rows with budget 0 first (they end at once with []), then the
        rows whose last id came in this step, in batch order (earlier joins first, then by row index).
        """
        ended: list[tuple[object, int, list[int]]] = [(r.tag, r.index, []) for r in self._waiting if r.budget == 0]
        joined = [r for r in self._waiting if r.budget > 0]
        self._waiting = []
        if joined:
            out, mask, pos = mixed_prefill(self.base, [r.prompt for r in joined], [r.prefix for r in joined])
            # mask [joined, Pmax + T], pos [joined, T]; logits [joined, 1, vocab]
            new = _Batch(out.past_key_values, mask, pos[:, -1:], out.logits[:, -1].argmax(-1))
            self._batch = new if self._batch is None else self._batch.stack(new)
            self._running += joined
            for r in joined:
                r.prompt, r.prefix = [], None  # in the cache now
        if self._batch is None:
            return ended
        live = []  # batch positions of the rows that go on
        for k, (r, t) in enumerate(zip(self._running, self._batch.nxt.tolist())):
            r.ids.append(t)
            if t in r.stops or len(r.ids) >= r.budget:
                ended.append((r.tag, r.index, r.ids))
            else:
                live.append(k)
        self._keep(live)
        if self._batch is not None:
            self._batch.forward(self.base)
        return ended

    def _keep(self, live: list[int]) -> None:
        """Keep only the running rows at batch positions ``live``; the others' cache rows are freed."""
        if len(live) == len(self._running):
            return
        self._running = [self._running[k] for k in live]
        self._batch = self._batch.select(live) if live else None

    @property
    def rows(self) -> int:
        """Running and waiting rows."""
        return len(self._running) + len(self._waiting)

    @property
    def positions(self) -> int:
        """Key/value positions the running batch holds now (batch x k_pos), padding included."""
        return 0 if self._batch is None else self._batch.mask.numel()

    def drop(self, tag: object) -> None:
        """Remove every row of ``tag`` (a cancelled request), running or waiting; nothing is handed back for them."""
        self._waiting = [r for r in self._waiting if r.tag != tag]
        self._keep([k for k, r in enumerate(self._running) if r.tag != tag])
