"""Few-shot prompting, the strongest simple baseline a prefix must beat, and its cached form.

k training examples go before the query, either as prior chat turns (user: input, assistant:
target) or as one block inside the system message. The query itself is prompted as in prefix
mode (the user turn alone), so the demonstrations sit exactly where a prefix would:

    [system: instruction] [user: x1] [assistant: y1] ... [user: x] [assistant:

``TextCache`` runs that head through the model once and keeps its key/values: an untrained
"prefix" of H positions that answers exactly as the uncached prompt does (tested), at the cost
of H cached positions per layer instead of H prompt tokens per query.
"""

from __future__ import annotations

import random

import torch

from .models import BaseModel
from .pauses import pause_point
from .prompts import PromptFormat
from .tasks import Example

BASELINE_SHOTS = 4  # demonstrations in the Train tab's few-shot baseline
PREFILL_CHUNK = 512  # head tokens per forward when caching a long head
STYLES = ("turns", "block")  # demonstrations as prior chat turns, or as one block in the system message


def demonstrations(train: list[Example], k: int, seed: int = 0) -> list[Example]:
    """k training examples drawn with ``seed`` (another seed, another draw: the spread of few-shot)."""
    return random.Random(seed).sample(train, min(k, len(train)))


def head_text(fmt: PromptFormat, instruction: str, demos: list[Example], style: str = "turns") -> str:
    """What comes before the query's user turn: the instruction and the demonstrations."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if not fmt.chat:  # "Input: x\nOutput: y\n" per demonstration, then the query's "Input: x\nOutput:"
        return f"{instruction}\n" + "".join(f"Input: {e.input}\nOutput:{fmt.target(e.target)}" for e in demos)
    if style == "block":
        block = "".join(f"\nInput: {e.input}\nOutput: {e.target}" for e in demos)
        system = f"{instruction}\n\nExamples:{block}" if demos else instruction
        return fmt.tokenizer.apply_chat_template([{"role": "system", "content": system}], tokenize=False)
    msgs = [{"role": "system", "content": instruction}]
    for e in demos:
        msgs += [{"role": "user", "content": e.input}, {"role": "assistant", "content": e.target}]
    return fmt.tokenizer.apply_chat_template(msgs, tokenize=False)


def head_ids(base: BaseModel, instruction: str, demos: list[Example], style: str = "turns") -> list[int]:
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    return base.tokenizer(head_text(fmt, instruction, demos, style), add_special_tokens=False)["input_ids"]


class TextCache:
    """The key/values of a token sequence, computed once; used like a prefix of ``len(ids)`` positions.

    It has what ``generate.mixed_prefix_cache`` reads of a prefix (``num_virtual_tokens`` and
    ``key_values``), so the mixed batch, Switch and the decode loop take it as they take a prefix.
    The keys carry the rotary positions 0..H-1, and the query's tokens come next at H, H+1, ...
    """

    def __init__(self, base: BaseModel, ids: list[int]):
        # A long head goes through in chunks (chunked prefill, as serving engines do): the same key/values up to
        # float rounding; eager attention's [H, H] weights shrink to [chunk, H]; and between chunks a learner
        # waiting on an answer may go first (pauses.py). A head of one chunk or less is one forward.
        cache = None
        with torch.inference_mode():
            for start in range(0, len(ids), PREFILL_CHUNK):
                if start:
                    pause_point()
                x = torch.tensor([ids[start:start + PREFILL_CHUNK]], device=base.device)  # [1, chunk]
                mask = torch.ones(1, start + x.shape[1], dtype=torch.long, device=base.device)  # [1, start + chunk]
                out = base.model(input_ids=x, attention_mask=mask, past_key_values=cache, use_cache=True,
                                 logits_to_keep=1)
                cache = out.past_key_values
        # per layer (key, value), each [1, kv_head, H, head_dim]
        self._kv = [(layer.keys.clone(), layer.values.clone()) for layer in out.past_key_values.layers]
        self.ids = list(ids)

    @property
    def num_virtual_tokens(self) -> int:
        return len(self.ids)

    def key_values(self, batch: int, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (key, value), each [batch, kv_head, H, head_dim]."""
        return [(k.to(dtype).expand(batch, -1, -1, -1), v.to(dtype).expand(batch, -1, -1, -1)) for k, v in self._kv]

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self._kv)
