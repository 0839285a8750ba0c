"""Greedy generation with or without a prefix, and side-by-side outputs of several prefixes.

A small decoding loop of our own (rather than ``model.generate``) because it must work on a
model shared by many sessions with a per-call prefix cache, and the mixed-prefix batch of a
later issue extends exactly this loop. Tests check its tokens equal ``PeftModel.generate``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .models import BaseModel
from .prefix import Prefix
from .prompts import PromptFormat, pad_left


@torch.inference_mode()
def greedy(base: BaseModel, prompts: list[list[int]], prefix: Prefix | None = None, max_new_tokens: int = 16,
           stop_ids: tuple[int, ...] = ()) -> list[list[int]]:
    """Greedy continuation of each prompt (token ids), stopping at any stop id. Returns new ids per row."""
    model, dev = base.model, base.device
    ids, mask = pad_left(prompts, base.tokenizer.pad_token_id)  # [batch, T]
    ids, mask = ids.to(dev), mask.to(dev)
    B = ids.shape[0]
    P = prefix.num_virtual_tokens if prefix is not None else 0
    full_mask = torch.cat([torch.ones(B, P, dtype=mask.dtype, device=dev), mask], dim=1)  # [batch, P + T]
    # Positions count real tokens only, so a left-padded row starts right after the prefix.
    pos = (full_mask.cumsum(-1) - 1).clamp(min=0)[:, P:]  # [batch, T]
    cache = prefix.cache(B, base.dtype) if prefix is not None else None
    out = model(input_ids=ids, attention_mask=full_mask, position_ids=pos, past_key_values=cache, use_cache=True,
                logits_to_keep=1)
    stops = torch.tensor(stop_ids or [-1], device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    new = []
    for _ in range(max_new_tokens):
        nxt = out.logits[:, -1].argmax(-1)  # [batch]
        new.append(torch.where(done, -1, nxt))
        done |= torch.isin(nxt, stops)
        if bool(done.all()):
            break
        full_mask = torch.cat([full_mask, torch.ones(B, 1, dtype=mask.dtype, device=dev)], dim=1)
        pos = pos[:, -1:] + 1  # [batch, 1]
        out = model(input_ids=nxt[:, None], attention_mask=full_mask, position_ids=pos,
                    past_key_values=out.past_key_values, use_cache=True)
    rows = torch.stack(new, dim=1).tolist() if new else [[] for _ in range(B)]  # [batch, steps]
    return [[t for t in row if t != -1] for row in rows]


def generate_texts(base: BaseModel, inputs: list[str], mode: str = "base", instruction: str = "",
                   prefix: Prefix | None = None, max_new_tokens: int = 16, batch_size: int = 16) -> list[str]:
    """Answer each input (prompted as `mode` says) and return the decoded answers, stop token dropped."""
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    outs: list[str] = []
    for i in range(0, len(inputs), batch_size):
        chunk = [fmt.encode_prompt(x, mode, instruction) for x in inputs[i:i + batch_size]]
        for row in greedy(base, chunk, prefix, max_new_tokens, fmt.stop_ids):
            row = [t for t in row if t not in fmt.stop_ids]
            outs.append(base.tokenizer.decode(row, skip_special_tokens=True).strip())
    return outs


@dataclass
class SideBySide:
    """One input run through several prefixes (None = the base model as is)."""

    input: str
    outputs: dict[str, str]  # prefix name -> answer
    seconds: dict[str, float]  # prefix name -> latency of that answer


def side_by_side(base: BaseModel, text: str, prefixes: dict[str, Prefix | None], max_new_tokens: int = 24) -> SideBySide:
    """Run one input through each prefix in turn (a naive loop; a mixed batch comes later)."""
    outputs, seconds = {}, {}
    for name, prefix in prefixes.items():
        t0 = time.perf_counter()
        mode = "base" if prefix is None else "prefix"
        outputs[name] = generate_texts(base, [text], mode=mode, prefix=prefix, max_new_tokens=max_new_tokens)[0]
        seconds[name] = time.perf_counter() - t0
    return SideBySide(text, outputs, seconds)
