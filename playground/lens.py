"""The logit lens: what the model would answer if it stopped after each layer. Pure tensors; figures live elsewhere.

For one prompt (the user turn, as the Train tab prompts it) and a target answer, the residual
stream at the last prompt position (the one that predicts the answer's first token) is read
after every decoder layer and sent through the model's own final norm and LM head, once
without the prefix and once with it. At the last layer this is exactly the model's output.

Why hooks and not ``output_hidden_states``: HF returns the embeddings plus every layer's output,
but its last entry has already been through the final norm, and sending it through the norm
again would be wrong. A forward hook on each decoder layer reads every layer's output before
any norm. The model is shared by every session's threads, so the hooks are installed once per
model and act only in a thread that is reading (``_LOCAL.sink``), as in ``attention.py``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import partial

import torch

from .errors import PlaygroundError
from .models import BaseModel
from .prefix import Prefix, prefix_forward
from .prompts import PromptFormat
from .tasks import Task

HELD_OUT = ("validation", "test", "fresh")  # splits never trained on: their inputs come with a gold answer


@dataclass
class LayerReadout:
    """The lens on one forward (with or without the prefix): one entry per decoder layer, in order."""

    prob: torch.Tensor  # [layer]: probability of the target's first token
    rank: torch.Tensor  # [layer]: its rank among the whole vocabulary (1 = the top token)
    top_ids: torch.Tensor  # [layer]: the top token at each layer
    top_prob: torch.Tensor  # [layer]: its probability
    top_tokens: list[str]  # the top tokens as readable text
    logits: torch.Tensor  # [layer, vocab]: the lens logits, fp32


@dataclass
class LogitLens:
    """The lens on one prompt, without and with the prefix."""

    target: str  # the answer whose first token is followed
    target_id: int
    target_token: str  # that first token as text
    prompt_tokens: int  # T, the prompt's length (the read position is its last)
    without: LayerReadout
    with_prefix: LayerReadout
    target_source: str = ""  # where the target came from (the caller says: typed, gold, the prefix's answer)


def decoder_parts(model: torch.nn.Module) -> tuple[list[torch.nn.Module], torch.nn.Module, torch.nn.Module]:
    """(decoder layers in order, final norm, LM head) of a Llama-family or GPT-2 causal LM."""
    inner = getattr(model, "model", None) or getattr(model, "transformer", None)
    layers = getattr(inner, "layers", None) or getattr(inner, "h", None)
    norm = getattr(inner, "norm", None) or getattr(inner, "ln_f", None)
    head = model.get_output_embeddings()
    if layers is None or norm is None or head is None:
        raise PlaygroundError(f"The logit lens does not know where this model ({type(model).__name__}) keeps its "
                              "layers, final norm and LM head. Use a Llama-family or GPT-2 model.")
    return list(layers), norm, head


_LOCAL = threading.local()
_INSTALL = threading.Lock()


def _collect(index: int, module, args, output) -> None:
    """Forward hook: in a reading thread, keep this layer's output at the last position, before any norm."""
    sink = getattr(_LOCAL, "sink", None)
    if sink is not None:
        h = output[0] if isinstance(output, tuple) else output  # [batch, T, hidden]
        sink[index] = h[:, -1].detach().float()  # [batch, hidden]


def _hooked_layers(base: BaseModel) -> list[torch.nn.Module]:
    """The decoder layers, with ``_collect`` installed on each (once per model)."""
    layers = base.derived.get("lens_hooks")
    if layers is None:
        with _INSTALL:
            layers = base.derived.get("lens_hooks")
            if layers is None:
                layers = decoder_parts(base.model)[0]
                for i, m in enumerate(layers):
                    m.register_forward_hook(partial(_collect, i))
                base.derived["lens_hooks"] = layers
    return layers


@torch.inference_mode()
def read_layers(base: BaseModel, ids: list[int], prefix: Prefix | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(each layer's output at the last position [layer, hidden], the model's own last logits [vocab]), fp32."""
    layers = _hooked_layers(base)
    x = torch.tensor([ids], device=base.device)  # [1, T]
    sink: dict[int, torch.Tensor] = {}
    _LOCAL.sink = sink
    try:
        out = prefix_forward(base, x, torch.ones_like(x), prefix, use_cache=False, logits_to_keep=1)
    finally:
        _LOCAL.sink = None
    if sorted(sink) != list(range(len(layers))):
        raise PlaygroundError("This model's layers did not report their outputs; load it with "
                              "playground.models.load_model.")
    hidden = torch.cat([sink[i] for i in range(len(layers))])  # [layer, hidden]
    return hidden, out.logits[0, -1].float()  # [vocab]


@torch.inference_mode()
def lens_logits(base: BaseModel, hidden: torch.Tensor) -> torch.Tensor:
    """Layer outputs [layer, hidden] read out as the model reads its last one: final norm, then LM head."""
    _, norm, head = decoder_parts(base.model)
    h = hidden.to(base.dtype).unsqueeze(1)  # [layer, 1, hidden]: the norm and head see one position per layer
    return head(norm(h))[:, 0].float()  # [layer, vocab]


def readout(base: BaseModel, logits: torch.Tensor, target_id: int) -> LayerReadout:
    """Probability, rank and top token of each layer's lens logits [layer, vocab]."""
    probs = logits.softmax(-1)  # [layer, vocab]
    target = logits[:, target_id : target_id + 1]  # [layer, 1]
    rank = (logits > target).sum(-1) + 1  # [layer]: 1 + the tokens scored strictly higher
    top_prob, top_ids = probs.max(-1)  # [layer], [layer]
    return LayerReadout(prob=probs[:, target_id], rank=rank, top_ids=top_ids, top_prob=top_prob,
                        top_tokens=[token_text(base, int(i)) for i in top_ids], logits=logits)


def token_text(base: BaseModel, token_id: int) -> str:
    """A token as a learner can read it: decoded, with a newline shown as \\n."""
    return base.tokenizer.decode([token_id]).replace("\n", "\\n")


def gold_answer(task: Task | None, text: str) -> tuple[str, str] | None:
    """(gold answer, split) when ``text`` is one of the task's held-out inputs; None otherwise."""
    if task is None:
        return None
    for split in HELD_OUT:
        for e in task.splits.get(split) or []:
            if e.input.strip() == text.strip():
                return e.target, split
    return None


def first_target_id(base: BaseModel, target: str) -> int:
    """The answer's first token, tokenized exactly as training tokenizes a target (``PromptFormat.target``)."""
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    if not target.strip():
        raise PlaygroundError("The target answer is empty. Type the answer whose first token to follow.")
    return base.tokenizer(fmt.target(target.strip()), add_special_tokens=False)["input_ids"][0]


def logit_lens(base: BaseModel, prefix: Prefix, text: str, target: str, instruction: str = "") -> LogitLens:
    """The lens on ``text`` (prompted as "prefix" mode, ``instruction`` for models without a chat template) for
    the first token of ``target``, without and with ``prefix``."""
    if not text.strip():
        raise PlaygroundError("The prompt is empty. Type an input for the prefix's task.")
    ids = PromptFormat.for_tokenizer(base.tokenizer).encode_prompt(text, "prefix", instruction)
    tid = first_target_id(base, target)
    runs = [readout(base, lens_logits(base, read_layers(base, ids, p)[0]), tid) for p in (None, prefix)]
    return LogitLens(target=target.strip(), target_id=tid, target_token=token_text(base, tid), prompt_tokens=len(ids),
                     without=runs[0], with_prefix=runs[1])


def lens_kept_bytes(base: BaseModel, runs: int = 2) -> int:
    """What a lens keeps beside its forward: per run, the lens logits and softmax [layer, vocab] in fp32."""
    return runs * 2 * base.num_layers * base.config.vocab_size * 4
