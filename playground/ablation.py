"""Per-layer ablation of a trained prefix: which layers' virtual tokens the answers causally depend on.

Removing the prefix from a layer means masking its key/value columns in that layer's attention
only: the cache still holds them, but the layer's queries cannot see them, while every other layer
reads them as before. The attention weights on the prefix (``attention.py``) say where the model
*looks*; this says what changes when it can no longer look there.

Each variant is scored twice on held-out examples: the task's metric on greedy answers (through
``evaluation.evaluate``, as the Train tab scores a prefix) and the log-probability of the target
answer, teacher-forced (summed over its tokens). The variants:

- ``full``: the prefix in every layer; ``none``: masked in every layer (the same logits as no prefix
  at all on a rotary model, tested: only relative positions enter attention); ``zero``: a prefix of
  the same length whose keys and values are all zero, which still changes the answers, since a zero
  key scores 0 against every query and so takes exp(0) of the softmax's mass (with a zero value);
- ``drop:l``: masked in layer l only, for every l;
- ``below:k``: only in the layers below depth k; ``from:k``: only in the layers from k up (k = 1..L-1).
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, ContextManager, Iterable, Iterator

import torch

from .attention import attention_modules
from .budget import EVAL_BATCH, eval_bytes, generate_bytes
from .errors import PlaygroundError
from .evaluation import evaluate
from .generate import greedy_mixed
from .models import BaseModel
from .prefix import Prefix
from .prompts import PromptFormat, pad_right
from .tasks import Example, Task

MAX_EXAMPLES = 64  # held-out examples per ablation: 3L + 1 variants (91 on SmolLM2) each score them all

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Variant:
    """One way of ablating the prefix: the layers whose attention may not see it, and whether it is zeroed."""

    key: str  # "full", "none", "zero", "drop:3", "below:5", "from:5"
    label: str  # what a table shows
    group: str  # "reference", "drop", "below" or "from"
    x: int | None  # the layer dropped, or the depth k; None for the references
    masked: frozenset[int]  # layers whose attention cannot see the prefix
    zero: bool = False  # keys and values replaced by zeros (same length)


def variants(num_layers: int) -> list[Variant]:
    """Every variant for a model of ``num_layers`` layers: 3 references, L single drops, 2(L-1) depths."""
    L = range(num_layers)
    out = [Variant("full", "full prefix", "reference", None, frozenset()),
           Variant("none", "no prefix (masked in every layer)", "reference", None, frozenset(L)),
           Variant("zero", "zero prefix (same length, all zeros)", "reference", None, frozenset(), zero=True)]
    out += [Variant(f"drop:{i}", f"without layer {i}", "drop", i, frozenset({i})) for i in L]
    out += [Variant(f"below:{k}", f"only {_span(0, k - 1)}", "below", k, frozenset(range(k, num_layers)))
            for k in range(1, num_layers)]
    out += [Variant(f"from:{k}", f"only {_span(k, num_layers - 1)}", "from", k, frozenset(range(k)))
            for k in range(1, num_layers)]
    return out


def _span(first: int, last: int) -> str:
    return f"layer {first}" if first == last else f"layers {first}–{last}"


# ---- the mask: per-model pre-hooks that act only in the thread that asked -------------------------------------
# The model is shared by every session and its forwards run in many threads at once (see attention.py), so the
# hooks are installed once per model and act only in a thread inside ``masked(...)``: another thread's training
# step or generation passes straight through. Hooks added and removed per call would touch the others' forwards.
_LOCAL = threading.local()
_INSTALL = threading.Lock()


def _mask_prefix(module, args, kwargs):
    """Forward pre-hook: in a masking thread, hide the first P key columns from this layer's queries.

    Eager attention adds ``attention_mask`` (float [batch, 1, q_pos, k_pos], 0 where allowed, the dtype's
    min where not) to the scores before the softmax; the decoder layer passes it by keyword, the same
    tensor to every layer, so it is copied here, never changed in place. k_pos counts the P virtual tokens
    first, in the prefill and in every decoding step.
    """
    layers = getattr(_LOCAL, "layers", None)
    if not layers or module.layer_idx not in layers:
        return None
    mask = kwargs.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4 or not mask.is_floating_point():
        raise PlaygroundError("This model's attention did not receive an additive 4D float mask, so the prefix "
                              "cannot be hidden from a layer; load it with playground.models.load_model "
                              "(eager attention).")
    P = _LOCAL.P
    mask = mask.clone()  # [batch, 1, q_pos, k_pos]
    mask[..., :P] = torch.finfo(mask.dtype).min  # exp(min - max) is exactly 0: the layer sees no virtual token
    _LOCAL.hits.add(module.layer_idx)
    return args, {**kwargs, "attention_mask": mask}


def _hooked(base: BaseModel) -> list[torch.nn.Module]:
    """The attention modules, with ``_mask_prefix`` installed on each (once per model)."""
    modules = base.derived.get("ablation_hooks")
    if modules is None:
        with _INSTALL:
            modules = base.derived.get("ablation_hooks")
            if modules is None:
                modules = attention_modules(base.model)
                for m in modules:
                    m.register_forward_pre_hook(_mask_prefix, with_kwargs=True)
                base.derived["ablation_hooks"] = modules
    return modules


@contextmanager
def masked(base: BaseModel, layers: Iterable[int], num_virtual_tokens: int) -> Iterator[None]:
    """Within the body, in this thread only, forwards of ``base`` hide the first ``num_virtual_tokens`` key
    columns (the prefix) from the attention of ``layers``; afterwards, fails if a layer never got its mask."""
    if base.model.config._attn_implementation != "eager":
        raise PlaygroundError("Hiding the prefix from a layer needs the model loaded with attn_implementation="
                              "'eager' (load it with playground.models.load_model).")
    modules = _hooked(base)
    want = frozenset(layers)
    if not want <= {m.layer_idx for m in modules}:
        raise PlaygroundError(f"This model has {len(modules)} layers; layers {sorted(want)} were asked for.")
    saved = (getattr(_LOCAL, "layers", None), getattr(_LOCAL, "P", 0), getattr(_LOCAL, "hits", None))
    _LOCAL.layers, _LOCAL.P, _LOCAL.hits = want, num_virtual_tokens, set()
    try:
        yield
        if not want <= _LOCAL.hits:
            raise PlaygroundError("The prefix could not be hidden from every layer asked for: this model's "
                                  "attention layers did not run the mask hook. Load it with "
                                  "playground.models.load_model.")
    finally:
        _LOCAL.layers, _LOCAL.P, _LOCAL.hits = saved


class MaskedPrefixMethod:
    """A prefix answering with its virtual tokens hidden from some layers: a method ``evaluation.evaluate``
    scores like ``methods.PrefixMethod`` (the same prompts, greedy decoding and metric)."""

    mode = "prefix"  # the input alone after the prefix, as the Train tab scores it

    def __init__(self, prefix: Prefix, masked_layers: Iterable[int]):
        self.prefix, self.masked_layers = prefix, frozenset(masked_layers)

    def generate(self, base: BaseModel, prompts: list[list[int]], max_new_tokens: int, stop_ids=()) -> list[list[int]]:
        # one prefix for every row: its P virtual tokens are the first P key columns of every layer
        with masked(base, self.masked_layers, self.prefix.num_virtual_tokens):
            return greedy_mixed(base, prompts, [self.prefix] * len(prompts), max_new_tokens, stop_ids)


@torch.inference_mode()
def target_logprobs(base: BaseModel, prefix: Prefix, examples: list[Example], masked_layers: Iterable[int] = (),
                    batch_size: int = EVAL_BATCH) -> list[float]:
    """Per example, log p(target | prompt) behind ``prefix`` hidden from ``masked_layers``: teacher-forced,
    summed over the target's tokens (its end token included, as training's loss counts them)."""
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    backbone = getattr(base.model, base.model.base_model_prefix)
    head = base.model.get_output_embeddings()
    out: list[float] = []
    for i in range(0, len(examples), batch_size):
        enc = [fmt.encode_example(e.input, e.target, "prefix") for e in examples[i:i + batch_size]]
        ids, mask, labels = pad_right([x for x, _ in enc], base.tokenizer.pad_token_id, [y for _, y in enc])  # [batch, T]
        ids, mask, labels = ids.to(base.device), mask.to(base.device), labels.to(base.device)
        B, P = ids.shape[0], prefix.num_virtual_tokens
        full = torch.cat([mask.new_ones(B, P), mask], dim=1)  # [batch, P + T]: the prefix's columns come first
        with masked(base, masked_layers, P):
            hidden = backbone(input_ids=ids, attention_mask=full, past_key_values=prefix.cache(B, base.dtype),
                              use_cache=False).last_hidden_state  # [batch, T, hidden]
        shifted = labels[:, 1:]  # [batch, T-1]: position t predicts token t+1
        keep = shifted != -100  # [batch, T-1]
        logp = head(hidden[:, :-1][keep]).float().log_softmax(-1)  # [targets, vocab]
        tok = logp.gather(-1, shifted[keep][:, None])[:, 0]  # [targets]
        rows = keep.nonzero()[:, 0]  # [targets]: the example each target token belongs to
        sums = torch.zeros(B, dtype=torch.float32, device=tok.device).index_add_(0, rows, tok)  # [batch]
        out += sums.tolist()
    return out


def zero_prefix(prefix: Prefix, device: torch.device | str) -> Prefix:
    """A prefix of the same length and shapes whose keys and values are all zero."""
    config, emb = prefix.exported()  # emb: [P, layer*2*token_dim]
    return Prefix.from_embeddings(config, torch.zeros_like(emb), {"task": prefix.info.get("task")}, device)


@dataclass
class AblationRow:
    """One variant scored on the held-out examples."""

    key: str  # Variant.key
    label: str
    group: str  # "reference", "drop", "below" or "from"
    x: int | None  # the layer dropped, or the depth k
    layers_with_prefix: int  # layers whose attention sees the (possibly zero) virtual tokens
    metric: float  # the task's metric on greedy answers, mean over examples in [0, 1]
    logprob_mean: float  # mean over examples of log p(target), summed over the target's tokens
    logprob_std: float  # their standard deviation over examples (0 for one example)
    n: int
    split: str
    prompt_tokens: float  # mean tokens of the prompt itself (the same for every variant)
    kv_positions: int  # virtual key/value positions the queries may attend to, in the layers that keep them
    seconds: float
    predictions: list[str] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("predictions")
        return d


@dataclass
class Ablation:
    """Every variant of one prefix on one task's held-out examples."""

    task: str
    metric: str  # a key of metrics.METRICS
    split: str
    n: int
    num_layers: int
    num_virtual_tokens: int
    rows: list[AblationRow]
    seconds: float

    def row(self, key: str) -> AblationRow:
        return next(r for r in self.rows if r.key == key)

    def group(self, name: str) -> list[AblationRow]:
        return [r for r in self.rows if r.group == name]

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "rows"} | {"rows": [r.as_dict() for r in self.rows]}


@dataclass(frozen=True)
class AblationPlan:
    """An ablation sized in tokens before it runs."""

    variants: int
    n: int
    prompt_tokens: int  # the longest held-out prompt (prefix mode)
    example_tokens: int  # the longest prompt + target, teacher-forced
    new_tokens: int  # the task's answer budget
    peak_bytes: int  # the larger of a generation batch's and a teacher-forced batch's peak

    @property
    def cost(self) -> int:
        """Token positions processed: variants x examples x (prompt + answer budget, then prompt + target)."""
        return self.variants * self.n * (self.prompt_tokens + self.new_tokens + self.example_tokens)


def plan(base: BaseModel, task: Task, examples: list[Example], num_virtual_tokens: int) -> AblationPlan:
    """Size ``ablate`` on ``examples`` behind ``num_virtual_tokens`` virtual tokens (refusing too many examples)."""
    if not examples:
        raise PlaygroundError(f"The task '{task.name}' has no held-out examples to score the ablation on.")
    if len(examples) > MAX_EXAMPLES:
        raise PlaygroundError(f"An ablation scores every one of its {len(variants(base.num_layers))} variants on "
                              f"each example; {len(examples)} examples is over the limit of {MAX_EXAMPLES}. "
                              f"Ask for at most {MAX_EXAMPLES} held-out examples.")
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    prompt = max(len(fmt.encode_prompt(e.input, "prefix")) for e in examples)
    full = max(len(fmt.encode_example(e.input, e.target, "prefix")[0]) for e in examples)
    B, P = min(EVAL_BATCH, len(examples)), num_virtual_tokens
    peak = max(eval_bytes(base, task, examples, P), generate_bytes(base, B, full, P, 0))
    return AblationPlan(len(variants(base.num_layers)), len(examples), prompt, full, task.max_new_tokens, peak)


def ablate(base: BaseModel, prefix: Prefix, task: Task, examples: list[Example], progress: Progress | None = None,
           split: str = "", around: Callable[[], ContextManager] | None = None) -> Ablation:
    """Score every variant of ``prefix`` (``variants``) on ``examples`` of ``task`` (named ``split``).

    ``around()``, when given, wraps each variant's model work (a server's turn with the model, say), so
    that other work can go on between two variants."""
    plan(base, task, examples, prefix.num_virtual_tokens)  # refuses too many examples before any work
    say = progress or (lambda frac, msg: None)
    t0 = time.perf_counter()
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    prompt_tokens = statistics.fmean(len(fmt.encode_prompt(e.input, "prefix")) for e in examples)
    zero = zero_prefix(prefix, base.device)
    P, L = prefix.num_virtual_tokens, base.num_layers
    todo = variants(L)
    rows = []
    for i, v in enumerate(todo):
        say(i / len(todo), f"{v.label} ({i + 1} of {len(todo)})")
        t = time.perf_counter()
        p = zero if v.zero else prefix
        with around() if around is not None else contextlib.nullcontext():
            r = evaluate(base, task, examples, MaskedPrefixMethod(p, v.masked))
            lp = target_logprobs(base, p, examples, v.masked)
        kept = L - len(v.masked)
        rows.append(AblationRow(v.key, v.label, v.group, v.x, kept, r.score, statistics.fmean(lp),
                                statistics.stdev(lp) if len(lp) > 1 else 0.0, len(examples), split, prompt_tokens,
                                P if kept else 0, time.perf_counter() - t, r.predictions))
    say(1.0, "done")
    return Ablation(task.name, task.metric, split, len(examples), L, P, rows, time.perf_counter() - t0)
