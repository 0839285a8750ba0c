"""Greedy generation: the one decoding loop, and a batch whose rows sit behind different prefixes.

A prefix is only a key/value cache, so rows behind *different* prefixes can share a batch once
their caches are padded to one length and the padding is masked (``mixed_prefix_cache``). PEFT
cannot mix them: its mixed-adapter batches (``adapter_names=``) cover LoRA-like tuners only, and
``set_adapter`` is global, so it runs one prefix per call.

The decoding loop (``decode``) is our own rather than ``model.generate`` for two reasons: each
row has its own answer budget (``max_new_tokens`` may differ per row), and a row that ends (at a
stop id or its budget) leaves the batch, its cache rows dropped, so no step is spent on finished
rows while the others go on as they would alone. ``decode_rows`` hands each row out the step it
ends, so a caller can show a short answer while a long one is still being written; ``decode``
collects them. Tests check the tokens equal ``PeftModel.generate`` row by row.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from transformers import DynamicCache

from .models import BaseModel
from .pauses import pause_point
from .prefix import Prefix
from .prompts import PromptFormat, pad_left


def mixed_prefix_cache(base: BaseModel, prefixes: list[Prefix | None]) -> tuple[DynamicCache | None, torch.Tensor]:
    """One key/value cache for rows behind different prefixes (None: no prefix, P = 0).

    Row i's P_i virtual tokens sit right-aligned in the last P_i of Pmax slots, zeros before them.
    Returns (cache with per layer key and value [batch, kv_head, Pmax, head_dim], or None when no row
    has a prefix; mask [batch, Pmax], 1 on row i's real virtual tokens, 0 on its padding).
    """
    dev, B = base.device, len(prefixes)
    lens = [0 if p is None else p.num_virtual_tokens for p in prefixes]
    Pmax = max(lens, default=0)
    mask = torch.zeros(B, Pmax, dtype=torch.long, device=dev)  # [batch, Pmax]
    if Pmax == 0:
        return None, mask
    kv = None
    groups: dict[int, list[int]] = {}  # id(prefix) -> its rows: each prefix is turned into key/values once
    for i, p in enumerate(prefixes):
        if p is not None:
            groups.setdefault(id(p), []).append(i)
    for rows in groups.values():
        p, P = prefixes[rows[0]], lens[rows[0]]
        kvs = p.key_values(1, base.dtype)  # per layer (key, value), each [1, kv_head, P, head_dim]
        pkv = torch.cat([t for pair in kvs for t in pair]).to(dev)  # [layer*2, kv_head, P, head_dim]
        if kv is None:
            L2, H, _, D = pkv.shape
            # [layer*2, batch, kv_head, Pmax, head_dim]
            kv = torch.zeros(L2, B, H, Pmax, D, dtype=base.dtype, device=dev)
        idx = torch.tensor(rows, device=dev)
        kv[:, idx, :, Pmax - P:] = pkv[:, None]  # right-aligned: the real tokens follow right after the prefix
        mask[idx, Pmax - P:] = 1
    return DynamicCache([(kv[2 * i], kv[2 * i + 1]) for i in range(kv.shape[0] // 2)]), mask


@torch.inference_mode()
def mixed_prefill(base: BaseModel, prompts: list[list[int]], prefixes: list[Prefix | None]):
    """The first forward of a mixed batch: left-padded prompts, row i behind ``prefixes[i]``.

    Returns (the model's output: logits [batch, 1, vocab] at the last position, and the cache;
    mask [batch, Pmax + T]; position_ids [batch, T]) for the decoding loop to go on from.
    """
    dev = base.device
    cache, pmask = mixed_prefix_cache(base, prefixes)  # pmask [batch, Pmax]
    ids, mask = pad_left(prompts, base.tokenizer.pad_token_id)  # [batch, T]
    mask = torch.cat([pmask, mask.to(dev)], dim=1)  # [batch, Pmax + T]: 0 on prefix padding and prompt padding
    # Positions count row i's real tokens after its own P_i virtual ones: P_i, P_i + 1, ... as PEFT gives.
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, pmask.shape[1]:]  # [batch, T]
    out = base.model(input_ids=ids.to(dev), attention_mask=mask, position_ids=pos, past_key_values=cache,
                     use_cache=True, logits_to_keep=1)
    return out, mask, pos


@torch.inference_mode()
def greedy_mixed(base: BaseModel, prompts: list[list[int]], prefixes: list[Prefix | None],
                 max_new_tokens: int | list[int] = 16, stop_ids: tuple[int, ...] = ()) -> list[list[int]]:
    """Greedy continuation of each prompt (token ids), row i behind ``prefixes[i]``, in one batch.

    Row i gets exactly what it would alone in a batch of one: at most budget_i new ids
    (``max_new_tokens``: one for all, or one per row), ending at the first stop id (kept). A row
    leaves the batch when it ends.
    """
    new: list[list[int]] = [[] for _ in prompts]
    for r, got in greedy_mixed_rows(base, prompts, prefixes, max_new_tokens, stop_ids):
        new[r] = got
    return new


@torch.inference_mode()
def greedy_mixed_rows(base: BaseModel, prompts: list[list[int]], prefixes: list[Prefix | None],
                      max_new_tokens: int | list[int] = 16,
                      stop_ids: tuple[int, ...] = ()) -> Iterator[tuple[int, list[int]]]:
    """``greedy_mixed`` row by row: yields (row index, its new ids) as each row ends, in finishing order.

    Rows with a zero budget come first (nothing to generate); the others as their last token arrives,
    rows ending at the same step in row order. The rows still going on keep decoding meanwhile.
    """
    B = len(prompts)
    if len(prefixes) != B:
        raise ValueError(f"{B} prompts but {len(prefixes)} prefixes: give one prefix (or None) per prompt.")
    budgets = [max_new_tokens] * B if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(budgets) != B:
        raise ValueError(f"{B} prompts but {len(budgets)} budgets: give one max_new_tokens per prompt.")
    rows = [i for i in range(B) if budgets[i] > 0]  # original index of each live row
    for i in range(B):
        if budgets[i] <= 0:
            yield i, []
    if not rows:
        return
    out, mask, pos = mixed_prefill(base, [prompts[i] for i in rows], [prefixes[i] for i in rows])
    for k, got in decode_rows(base, out, mask, pos, [budgets[i] for i in rows], stop_ids):
        yield rows[k], got


@torch.inference_mode()
def decode(base: BaseModel, out, mask: torch.Tensor, pos: torch.Tensor, budgets: list[int],
           stop_ids: tuple[int, ...] = (), on_token: Callable[[], None] | None = None) -> list[list[int]]:
    """Greedy decoding after a prefill, whatever that prefill held (prefix caches, prompt embeddings).

    out: the prefill's output (logits [batch, 1, vocab] and its cache); mask: [batch, k_pos];
    pos: [batch, q_pos], the last column the last position. Row i gets at most budgets[i] (> 0) new
    ids, ending at the first stop id (kept), and leaves the batch when it ends. ``on_token`` is
    called once per step, right after that step's tokens reach the host (a clock can read it).
    """
    new: list[list[int]] = [[] for _ in budgets]
    for r, got in decode_rows(base, out, mask, pos, budgets, stop_ids, on_token):
        new[r] = got
    return new


@torch.inference_mode()
def decode_rows(base: BaseModel, out, mask: torch.Tensor, pos: torch.Tensor, budgets: list[int],
                stop_ids: tuple[int, ...] = (),
                on_token: Callable[[], None] | None = None) -> Iterator[tuple[int, list[int]]]:
    """``decode`` row by row: yields (row index, its new ids) the step each row ends, in finishing order.

    A finished row is handed out at once and its cache rows dropped, while the rows still going on
    decode as they would alone (continuous decoding: nobody waits for the longest answer).
    """
    B = len(budgets)
    new: list[list[int]] = [[] for _ in range(B)]
    rows = list(range(B))  # original index of each live row
    stops = set(stop_ids)
    for _ in range(max(budgets, default=0)):
        nxt = out.logits[:, -1].argmax(-1)  # [batch]
        live, ended = [], []  # batch positions of the rows that go on; original indices of those that end
        for k, (r, t) in enumerate(zip(rows, nxt.tolist())):
            new[r].append(t)
            if t not in stops and len(new[r]) < budgets[r]:
                live.append(k)
            else:
                ended.append(r)
        if on_token is not None:
            on_token()
        for r in ended:
            yield r, new[r]
        if not live:
            return
        if len(live) < len(rows):  # drop ended rows: the rest go on as they would alone
            keep = torch.tensor(live, device=base.device)  # [live]
            out.past_key_values.batch_select_indices(keep)
            rows = [rows[k] for k in live]
            nxt, mask, pos = nxt[keep], mask[keep], pos[keep]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)  # [batch, k_pos + 1]
        pos = pos[:, -1:] + 1  # [batch, 1]
        pause_point()  # inside a scheduler's turn, a waiting learner's answer may go first (pauses.py)
        out = base.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                         past_key_values=out.past_key_values, use_cache=True)


def ran_out(row: list[int], budget: int, stop_ids: tuple[int, ...] = ()) -> bool:
    """Whether a row of answer ids was cut at its budget: it used all of it without reaching a stop id."""
    return budget > 0 and len(row) >= budget and not (row and row[-1] in stop_ids)


def answer_text(fmt: PromptFormat, row: list[int]) -> str:
    """One row of answer ids as text: stop tokens dropped, special tokens skipped, stripped."""
    return fmt.tokenizer.decode([t for t in row if t not in fmt.stop_ids], skip_special_tokens=True).strip()


def generate_texts_mixed(base: BaseModel, inputs: list[str], prefixes: list[Prefix | None],
                         max_new_tokens: int | list[int] = 16, modes: list[str] | None = None,
                         instruction: str = "") -> list[str]:
    """Answer inputs[i] behind prefixes[i], all rows in one batch; decoded answers, stop token dropped.

    modes[i] says how row i is prompted; by default "prefix" for a prefix row, "base" for a None row.
    """
    texts = [""] * len(inputs)
    for i, text, _ in stream_texts_mixed(base, inputs, prefixes, max_new_tokens, modes, instruction):
        texts[i] = text
    return texts


def stream_texts_mixed(base: BaseModel, inputs: list[str], prefixes: list[Prefix | None],
                       max_new_tokens: int | list[int] = 16, modes: list[str] | None = None,
                       instruction: str = "") -> Iterator[tuple[int, str, bool]]:
    """``generate_texts_mixed`` row by row: yields (row index, answer, cut) as each row ends.

    cut: the row used its whole answer budget without an end token, so its answer may stop mid-way.
    """
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    modes = modes or ["base" if p is None else "prefix" for p in prefixes]
    prompts = [fmt.encode_prompt(x, m, instruction) for x, m in zip(inputs, modes, strict=True)]
    budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    for i, row in greedy_mixed_rows(base, prompts, prefixes, budgets, fmt.stop_ids):
        yield i, answer_text(fmt, row), ran_out(row, budgets[i], fmt.stop_ids)
