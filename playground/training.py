"""The training loop: a plain generator that yields one record per step.

The UI turns the records into live plots and a progress bar; the CLI into a terminal bar.
The loop knows nothing of what it trains: anything with ``parameters()``, a ``loss`` and a
``generate`` (``Trainable``; every method of ``playground.methods``, a ``Prefix`` through
``methods.prefix_method``) trains the same way. Only the tuning method's own parameters train (a prefix, prompt tuning's embeddings, LoRA's
adapters); the base model stays frozen and shared. The loss covers the target tokens only
(prompt positions carry label -100). Stopping is cooperative: set the ``threading.Event``
passed as ``cancel`` and the loop returns after the current step, keeping what it trained so far.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Iterable, Iterator, Protocol

import torch

from .errors import PlaygroundError
from .evaluation import EvalResult, evaluate
from .models import BaseModel, autocast_dtype
from .prompts import PromptFormat, pad_right
from .tasks import Example, Task

MAX_STEPS = 10_000
MAX_BATCH = 256
MAX_SEED = 2**32 - 1  # any whole number a learner types; torch takes up to 2**64 - 1
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainSettings:
    """How to train a prefix."""

    learning_rate: float = 1e-2  # AdamW; the direct prefix's from text (methods.METHODS holds each method's)
    steps: int = 20  # optimizer steps
    batch_size: int = 8  # examples per step
    seed: int = 0  # data order and random init; same seed, same run on CPU
    eval_every: int = 5  # steps between held-out metric points (0: only at the end)
    eval_examples: int = 48  # held-out examples scored at each point
    precision: str = "auto"  # "auto": bf16 autocast where the hardware is fast at it (see autocast_dtype), else fp32

    def validate(self) -> None:
        if not (isinstance(self.steps, int) and 1 <= self.steps <= MAX_STEPS):
            raise PlaygroundError(f"steps must be a whole number from 1 to {MAX_STEPS}; got {self.steps}.")
        if not (isinstance(self.batch_size, int) and 1 <= self.batch_size <= MAX_BATCH):
            raise PlaygroundError(f"batch size must be a whole number from 1 to {MAX_BATCH}; got {self.batch_size}.")
        if not (0 < self.learning_rate <= 1.0):
            raise PlaygroundError(f"learning rate must be above 0 and at most 1; got {self.learning_rate}.")
        if not (isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed <= MAX_SEED):
            raise PlaygroundError(f"seed must be a whole number from 0 to {MAX_SEED:,}; got {self.seed}. "
                                  "Any number in that range gives a reproducible run: pick a smaller one.")
        if self.eval_every < 0 or self.eval_examples < 1:
            raise PlaygroundError("eval_every must be 0 or more and eval_examples at least 1.")
        if self.precision not in PRECISIONS:
            raise PlaygroundError(f"Unknown precision '{self.precision}'. Choose one of: {', '.join(PRECISIONS)}.")


@dataclass
class StepRecord:
    """What one training step reports."""

    step: int  # 1-based
    loss: float  # mean cross-entropy over target tokens of this batch
    elapsed: float  # seconds spent training so far (held-out evaluation excluded)
    examples_per_s: float  # this step's throughput
    metric: float | None = None  # held-out metric in [0, 1], on the steps where it was measured
    predictions: list[str] | None = field(default=None, repr=False)  # held-out answers, where measured
    eval_seconds: float | None = None  # how long that held-out scoring took


_TWIN_LOCK = threading.Lock()


def bf16_backbone(base: BaseModel) -> torch.nn.Module:
    """The frozen backbone with its Linear weights stored once in bf16, for bf16-autocast training.

    Autocast casts every fp32 weight to bf16 at every matmul, forward after forward: for the
    frozen SmolLM2 that is about a fifth of a CPU training step. The weights never change, so
    cast them once. Under autocast the result is bit-identical (the same rounding; tested).
    Costs 2 bytes per Linear weight (212 MB for SmolLM2); built on first use and shared by all
    sessions. Embeddings, norms and buffers are the fp32 model's own objects, not copies.
    """
    twin = base.derived.get("bf16_backbone")
    if twin is None:
        with _TWIN_LOCK:
            twin = base.derived.get("bf16_backbone")
            if twin is None:
                backbone = getattr(base.model, base.model.base_model_prefix)
                shared = {id(t): t for t in (*backbone.parameters(), *backbone.buffers())}
                twin = copy.deepcopy(backbone, shared)  # new modules around the same tensors
                for m in twin.modules():
                    if isinstance(m, torch.nn.Linear):
                        m.weight = torch.nn.Parameter(m.weight.detach().to(torch.bfloat16), requires_grad=False)
                base.derived["bf16_backbone"] = twin
    return twin


def batches(n: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless shuffled index batches, one fresh permutation per epoch, reproducible from the seed."""
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=g).tolist()
        for i in range(0, n - n % batch_size or n, batch_size):
            yield perm[i:i + batch_size]


def held_out_split(task: Task) -> str:
    """Where the live metric is measured: validation when the task has one, else test."""
    return "validation" if task.splits.get("validation") else "test"


class Trainable(Protocol):
    """What ``train`` needs of what it trains (every method of ``playground.methods`` has it)."""

    def parameters(self) -> Iterable[torch.nn.Parameter]: ...

    def loss(self, base: BaseModel, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
             backbone: torch.nn.Module | None = None) -> torch.Tensor:
        """Mean cross-entropy over the target tokens; ids, mask, labels: [batch, T], right-padded."""

    mode: str  # how its prompts are written: "prefix", "instruction" or "base" (prompts.MODES)

    def generate(self, base: BaseModel, prompts: list[list[int]], max_new_tokens: int,
                 stop_ids=()) -> list[list[int]]:
        """Greedy answer ids for each prompt (what the held-out metric scores)."""


def train(base: BaseModel, model: Trainable, task: Task, settings: TrainSettings,
          cancel: threading.Event | None = None, eval_split: str | None = None,
          reserve: Callable[[str], ContextManager] | None = None,
          score: Callable[[list[Example]], EvalResult] | None = None) -> Iterator[StepRecord]:
    """Train ``model`` on ``task``'s train split, yielding a StepRecord after every step.

    ``model`` is any ``Trainable``: a method of ``playground.methods`` (a prefix through
    ``methods.prefix_method(prefix)``, prompt tuning, LoRA, ...). The same loop, data order,
    precision and evaluation serve the Train tab and the Compare lab.
    The held-out metric is measured every ``eval_every`` steps and at the last step, on the
    first ``eval_examples`` of ``eval_split`` (default: ``held_out_split(task)``), by ``score``
    (default: ``evaluation.evaluate``, greedy answers scored by the task's metric).
    ``reserve("step")`` and ``reserve("eval")``, when given, wrap each training step and each
    evaluation (a caller's memory reservation, say); the step's time starts once it is entered.
    """
    settings.validate()
    train_set: list[Example] = task.split("train")
    held_out = task.split(eval_split or held_out_split(task))[: settings.eval_examples]
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    encoded = [fmt.encode_example(e.input, e.target, "prefix") for e in train_set]
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise PlaygroundError("This prefix is frozen (loaded for inference); create a new prefix to train.")
    opt = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    order = batches(len(encoded), min(settings.batch_size, len(encoded)), settings.seed)
    pad = base.tokenizer.pad_token_id
    amp = autocast_dtype(base, settings.precision)
    # an fp32 model trained under bf16 autocast: use its bf16 twin, cast once instead of every step
    backbone = bf16_backbone(base) if amp == torch.bfloat16 and base.dtype == torch.float32 else None
    score = score or (lambda examples: evaluate(base, task, examples, model))
    hold = reserve or (lambda what: contextlib.nullcontext())
    trained = 0.0
    for step in range(1, settings.steps + 1):
        if cancel is not None and cancel.is_set():
            return
        idx = next(order)
        ids, mask, labels = pad_right([encoded[i][0] for i in idx], pad, [encoded[i][1] for i in idx])
        ids, mask, labels = ids.to(base.device), mask.to(base.device), labels.to(base.device)
        with hold("step"):
            t0 = time.perf_counter()
            with torch.autocast(base.device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = model.loss(base, ids, mask, labels, backbone)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            dt = time.perf_counter() - t0
        trained += dt
        rec = StepRecord(step, loss.item(), trained, len(idx) / dt)
        last = step == settings.steps or (cancel is not None and cancel.is_set())
        if last or (settings.eval_every and step % settings.eval_every == 0):
            with hold("eval"):
                r = score(held_out)
            rec.metric, rec.predictions, rec.eval_seconds = r.score, r.predictions, r.seconds
        yield rec
