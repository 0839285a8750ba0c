"""Turning an example into token ids, the same way for training, evaluation and the UI.

Three modes, one per row of the before/after table:
- ``base``: the model as is (a chat model gets its own default system prompt);
- ``instruction``: the task instruction as the system message, the baseline to beat;
- ``prefix``: only the user turn; the prefix sits where the system message would be.

For a chat model (SmolLM2-Instruct), prefix mode reads::

    [prefix: P virtual tokens] <|im_start|>user\\n{input}<|im_end|>\\n<|im_start|>assistant\\n

and a prefix initialized from the instruction text holds the key/values of
``<|im_start|>system\\n{instruction}<|im_end|>\\n``, so before any training it behaves like
the instruction prompt. Models without a chat template (GPT-2) use ``Input: ...\\nOutput:``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MODES = ("base", "instruction", "prefix")
_SENTINEL = "\x00SYSTEM\x00"


@dataclass
class PromptFormat:
    """The prompt format for one tokenizer."""

    tokenizer: object
    chat: bool  # True when the tokenizer has a chat template
    end_text: str  # what follows a target so the model learns to stop
    stop_ids: tuple[int, ...]  # generation ends at any of these

    @classmethod
    def for_tokenizer(cls, tok) -> "PromptFormat":
        chat = bool(getattr(tok, "chat_template", None))
        if chat:
            # convert_tokens_to_ids, not get_vocab(): that builds a 49k-entry dict (20 ms) on every call
            im_end = tok.convert_tokens_to_ids("<|im_end|>")
            end = "<|im_end|>" if im_end is not None and im_end != tok.unk_token_id else tok.eos_token
            stops = {tok.convert_tokens_to_ids(end), tok.eos_token_id}
        else:
            end = "\n"
            stops = {tok.eos_token_id, *tok("\n", add_special_tokens=False)["input_ids"]}
        return cls(tok, chat, end, tuple(sorted(i for i in stops if i is not None)))

    def init_text(self, instruction: str) -> str:
        """The text whose key/values initialize a prefix (PEFT wraps it as a system message for chat models)."""
        return instruction if self.chat else instruction + "\n"

    def prompt(self, x: str, mode: str, instruction: str = "") -> str:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not self.chat:
            head = f"{instruction}\n" if mode == "instruction" else ""
            return f"{head}Input: {x}\nOutput:"
        tpl = self.tokenizer.apply_chat_template
        if mode == "base":
            return tpl([{"role": "user", "content": x}], tokenize=False, add_generation_prompt=True)
        if mode == "instruction":
            msgs = [{"role": "system", "content": instruction}, {"role": "user", "content": x}]
            return tpl(msgs, tokenize=False, add_generation_prompt=True)
        # prefix: the user turn alone, cut from a render with a sentinel system message so
        # the template's default system prompt is not added after the prefix.
        sys_msg = [{"role": "system", "content": _SENTINEL}]
        full = tpl(sys_msg + [{"role": "user", "content": x}], tokenize=False, add_generation_prompt=True)
        head = tpl(sys_msg, tokenize=False)
        return full[len(head):] if full.startswith(head) else full.split(_SENTINEL, 1)[1]

    def target(self, y: str) -> str:
        return y + self.end_text if self.chat else f" {y}{self.end_text}"

    def encode_prompt(self, x: str, mode: str, instruction: str = "") -> list[int]:
        return self.tokenizer(self.prompt(x, mode, instruction), add_special_tokens=False)["input_ids"]

    def encode_example(self, x: str, y: str, mode: str = "prefix", instruction: str = "") -> tuple[list[int], list[int]]:
        """(input_ids, labels) where labels are -100 on the prompt: the loss covers target tokens only."""
        p = self.encode_prompt(x, mode, instruction)
        t = self.tokenizer(self.target(y), add_special_tokens=False)["input_ids"]
        return p + t, [-100] * len(p) + t


def pad_right(seqs: list[list[int]], pad_id: int, label_seqs: list[list[int]] | None = None):
    """Right-pad for training. Returns input_ids, attention_mask (and labels), each [batch, T]."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    labels = torch.full((len(seqs), T), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        if label_seqs is not None:
            labels[i, : len(s)] = torch.tensor(label_seqs[i])
    return (ids, mask, labels) if label_seqs is not None else (ids, mask)


def pad_left(seqs: list[list[int]], pad_id: int):
    """Left-pad for generation, so every row's next token comes at the same column. [batch, T]."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, T - len(s):] = torch.tensor(s)
        mask[i, T - len(s):] = 1
    return ids, mask
