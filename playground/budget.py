"""What a model call costs before it runs: its peak memory from the model's geometry, a run's
token count, and the one memory budget every call of the process shares.

Every call is sized in tokens first (batch x query positions x key positions, where keys count
the P virtual tokens first), then turned into bytes here. The formulas follow what eager
attention and the MLP keep alive; ``SAFETY`` covers the allocator and what they miss, and
was measured against real peaks (``bench/memory_estimates.py``). A call that could never fit
the budget is refused at once, with the fix; one that fits but not beside the calls already
running waits its turn (first come, first served) for at most ``WAIT_S`` seconds.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .errors import PlaygroundError
from .memory import trim
from .models import BaseModel, autocast_dtype
from .prompts import PromptFormat
from .tasks import Example, Task

MB = 2**20
EVAL_BATCH = 16  # evaluation.evaluate's batch size: held-out answers are generated 16 at a time
# Estimate x SAFETY is what a call reserves. Measured on SmolLM2-135M on CPU (fp32 and bf16
# autocast; attention up to 2,000 prompt tokens, training up to batch 32 x 120 tokens behind 128
# virtual tokens, generation up to 4 x 2,000 tokens), peak RSS delta / reservation ranged 0.45-0.85
# (bench/memory_estimates.py, bench/results/memory_estimates.json); without the factor the
# closest call (attention on 1,000 tokens) would have run 6% over its estimate.
SAFETY = 1.25
WAIT_S = 120.0  # longest a call waits for room beside the others before a polite refusal
# The web server beside the model (Gradio, its event loop, per-session state, request buffers,
# an upload being read): an idle app held 535 MB where the model loaded alone held 413 MB; the
# rest is room for requests in flight.
SERVER_ALLOWANCE_MB = 300
# Any model call's own overhead (thread workspaces, allocator slack): a 250-token Attention view
# peaked at 49 MB over its tensors' 10 MB.
CALL_OVERHEAD_MB = 64
# Handing freed memory back (malloc_trim) took about 20 ms after a call that freed 300 MB; at most
# once per this many seconds keeps it near 1% of a training step's time.
TRIM_EVERY_S = 2.0


@dataclass(frozen=True)
class Geometry:
    """The sizes of the frozen model that set the memory of a call."""

    layers: int
    heads: int  # query heads (eager attention repeats kv heads up to these)
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int  # the MLP's inner width
    vocab: int

    @classmethod
    def of(cls, base: BaseModel) -> "Geometry":
        c = base.config
        hidden = c.hidden_size
        inner = getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None) or 4 * hidden
        return cls(base.num_layers, base.num_heads, base.num_kv_heads, base.head_dim, hidden, inner, c.vocab_size)


def _layer_no_grad(g: Geometry, B: int, T: int, K: int, b: int) -> int:
    """One layer's peak without autograd, plus what any call holds while it runs.

    Eager attention makes four fp32 [batch, head, q_pos, k_pos] tensors in turn (scores, scaled,
    masked, softmax) and the measured peak held about four at once, beside the float mask
    [batch, 1, q_pos, k_pos]; or the MLP's gate, up and product [batch, q_pos, inner].
    """
    att = B * T * K * (4 * g.heads * 4 + 4)
    mlp = 3 * B * T * g.intermediate * b
    return max(att, mlp) + 4 * B * T * g.hidden * b + CALL_OVERHEAD_MB * MB


def attention_bytes(base: BaseModel, T: int, P: int, B: int = 1) -> int:
    """Peak of B Attention views in one forward: [B, T] prompts behind up to P virtual tokens, weights
    reduced layer by layer.

    Kept for the result: [layer, head, q_pos, P] weights plus the shares, per view.
    """
    g = Geometry.of(base)
    b = torch.finfo(base.dtype).bits // 8
    kept = g.layers * g.heads * T * (P + 2) * 4
    return int(SAFETY * (_layer_no_grad(g, B, T, P + T, b) + B * (kept + g.vocab * 4)))


def generate_bytes(base: BaseModel, B: int, T: int, P: int, new_tokens: int) -> int:
    """Peak of greedy generation: B prompts padded to T behind up to P virtual tokens, ``new_tokens`` each.

    The prefill's widest layer, the key/value cache at its longest (its growth copies one layer
    at a time) and the logits at the last position.
    """
    g = Geometry.of(base)
    b = torch.finfo(base.dtype).bits // 8
    K = P + T + new_tokens
    # x2: the cache grows by a copy per step (torch.cat), and the freed smaller blocks rarely fit the next
    cache = 2 * g.layers * 2 * B * g.kv_heads * K * g.head_dim * b
    return int(SAFETY * (_layer_no_grad(g, B, T, P + T, b) + cache + 2 * B * g.vocab * 4))


def train_step_bytes(base: BaseModel, B: int, T: int, P: int, targets: int, amp: torch.dtype | None) -> int:
    """Peak of one training step: B examples padded to T behind P virtual tokens, ``targets`` target
    tokens per example at most.

    What autograd keeps per layer for the backward pass, in the autocast dtype (fp32 when None):
    the softmax [batch, head, q_pos, k_pos] (kept in fp32 and in the autocast dtype), the MLP's
    four [batch, q_pos, inner] tensors and about eight [batch, q_pos, hidden] ones; then the
    LM head's fp32 logits at the target positions (logits, log-softmax and their gradient).
    """
    g = Geometry.of(base)
    a = torch.finfo(amp).bits // 8 if amp is not None else torch.finfo(base.dtype).bits // 8
    K = P + T
    att = B * g.heads * T * K * (4 + a if a < 4 else 4)
    # the residual stream and the norms stay fp32 under autocast: about ten [batch, q_pos, hidden] each
    per_layer = att + B * T * ((4 * g.intermediate + 3 * g.heads * g.head_dim) * a + 10 * g.hidden * 4)
    head = 3 * B * targets * g.vocab * 4
    backward = 2 * B * g.heads * T * K * 4  # the gradient of the widest layer's scores, at the turn
    return int(SAFETY * (g.layers * per_layer + head + backward))


def eval_bytes(base: BaseModel, task: Task, examples: list[Example], P: int, extra_tokens: int = 0) -> int:
    """Peak of scoring ``examples`` behind P virtual tokens: batches of EVAL_BATCH prompts of the
    longest held-out prompt (instruction mode, the longest of the three) plus ``extra_tokens`` (a few-shot
    prompt's demonstrations), the task's answer budget."""
    if not examples:
        return 0
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    T = max(len(fmt.encode_prompt(e.input, "instruction", task.instruction)) for e in examples) + extra_tokens
    return generate_bytes(base, min(EVAL_BATCH, len(examples)), T, P, task.max_new_tokens)


@dataclass
class RunPlan:
    """A training run sized before it starts: tokens, its cost in token positions, and its peaks."""

    steps: int
    batch: int  # examples per step (the batch size, or the whole train split if smaller)
    train_tokens: int  # the longest training example, prompt template and target included
    targets: int  # the most target tokens of one example
    held_out: int  # examples scored at each evaluation
    prompt_tokens: int  # the longest held-out prompt
    new_tokens: int  # the task's answer budget
    evals: int  # held-out scorings: the run's own and the three baselines (base model, instruction, few-shot)
    step_bytes: int  # one training step's reservation
    eval_bytes: int  # one evaluation's reservation

    @property
    def train_cost(self) -> int:
        """Token positions trained: steps x batch x the longest example."""
        return self.steps * self.batch * self.train_tokens

    @property
    def eval_cost(self) -> int:
        """Token positions scored: evaluations x held-out examples x (the longest prompt + the answer budget)."""
        return self.evals * self.held_out * (self.prompt_tokens + self.new_tokens)

    @property
    def cost(self) -> int:
        return self.train_cost + self.eval_cost


def plan_run(base: BaseModel, task: Task, P: int, steps: int, batch_size: int, eval_every: int,
             eval_examples: int, amp: torch.dtype | None, held_out: list[Example], extra_tokens: int = 0,
             baseline_evals: int = 3) -> RunPlan:
    """Size a run of ``steps`` steps of ``batch_size`` examples of ``task`` behind P virtual tokens
    (``extra_tokens``: more prompt tokens on every held-out query, as a few-shot prompt's demonstrations;
    ``baseline_evals``: held-out scorings of the prompts it is compared with)."""
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    train = task.split("train")
    encoded = [fmt.encode_example(e.input, e.target, "prefix") for e in train]
    T = max(len(ids) for ids, _ in encoded)
    targets = max(sum(1 for t in labels if t != -100) for _, labels in encoded)
    B = min(batch_size, len(train))
    held = held_out[:eval_examples]
    prompt = max((len(fmt.encode_prompt(e.input, "instruction", task.instruction)) for e in held), default=0) + extra_tokens
    return RunPlan(steps, B, T, targets, len(held), prompt, task.max_new_tokens, evaluations(steps, eval_every) + baseline_evals,
                   train_step_bytes(base, B, T, P, targets, amp), eval_bytes(base, task, held, P, extra_tokens))


def evaluations(steps: int, eval_every: int) -> int:
    """How many times a run measures its held-out metric (every ``eval_every`` steps, and at the last)."""
    if eval_every <= 0:
        return 1
    return steps // eval_every + (1 if steps % eval_every else 0)


def rss_bytes() -> int:
    """This process's resident memory now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _page_size()
    except OSError:
        return 0


def _page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")


class MemoryBudget:
    """The memory the process's model calls may take together, handed out as reservations.

    ``limit``: the whole process's budget; ``held``: what it holds before any call (model, web
    server). Calls reserve their estimate for as long as they run; one that does not fit waits,
    in arrival order, until the calls before it finish.

    With ``track_rss`` the budget also follows what the process really holds: before a call is
    let in, ``held`` becomes the resident memory that the running reservations do not explain
    (plus ``allowance`` for the web server's own requests in flight). Freed memory that the
    allocator keeps, run histories and per-session state then count against the budget instead
    of pushing the process past it; and each call gives what it freed back to the system.
    """

    def __init__(self, limit_bytes: int, held_bytes: int, wait_s: float = WAIT_S, track_rss: bool = False,
                 allowance_bytes: int = 0, trim_every_s: float = TRIM_EVERY_S):
        self.limit, self.held, self.wait_s = int(limit_bytes), int(held_bytes), wait_s
        self.floor = self.held  # what the process holds at the least: the model, the web server
        self.track_rss, self.allowance = track_rss, int(allowance_bytes)
        self.trim_every_s, self._trimmed = trim_every_s, float("-inf")
        self.used = 0
        self._queue: deque = deque()
        self._cond = threading.Condition()

    @property
    def room(self) -> int:
        """What all calls together may take."""
        return self.limit - self.held

    def _follow_rss(self) -> None:
        """Set ``held`` to what the process holds beyond the running reservations, never below ``floor``
        (the caller holds the lock).

        Resident memory less the reservations running is at most what they do not explain, since a call
        uses no more than it reserved; so ``held`` never counts a running call twice.
        """
        if self.track_rss:
            self.held = max(self.floor, rss_bytes() + self.allowance - self.used)

    def check(self, nbytes: int, what: str, fix: str) -> None:
        """Refuse, with the fix, a call that would not fit even with nothing else running."""
        with self._cond:  # re-entrant: reserve calls it with the lock held
            self._follow_rss()
            never = nbytes > self.room
        if never:
            raise PlaygroundError(
                f"{what} would need about {nbytes / MB:,.0f} MB of memory, but this server's memory budget "
                f"(--memory-budget-mb {self.limit // MB:,}, of which the model and the app hold "
                f"{self.held / MB:,.0f} MB) leaves {max(0, self.room) / MB:,.0f} MB for work. {fix}")

    def tidy(self) -> None:
        """Hand what the calls freed back to the system (at most every ``trim_every_s``), so it does not count
        against the next call's share; after each reservation, and after each round of the scheduler's work."""
        if self.track_rss and time.monotonic() - self._trimmed >= self.trim_every_s:
            self._trimmed = time.monotonic()
            trim()

    @contextmanager
    def reserve(self, nbytes: int, what: str, fix: str):
        """Hold ``nbytes`` while the body runs; wait for room first (at most ``wait_s``)."""
        self.check(nbytes, what, fix)
        ticket = object()
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or self.used + nbytes > self.room:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise PlaygroundError(
                            f"The server is busy: {what} needs about {nbytes / MB:,.0f} MB of memory and the work "
                            f"of other learners holds the rest of this server's budget. Try again in a minute{fix_tail(fix)}")
                    self._cond.wait(min(left, 1.0))  # a release wakes it; memory handed back meanwhile does not
                    self.check(nbytes, what, fix)
                self.used += nbytes
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()
        try:
            yield
        finally:
            self.tidy()
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()


def fix_tail(fix: str) -> str:
    """', or <fix, lowercased first letter>' for the busy message; '.' when there is no fix."""
    return f", or {fix[0].lower()}{fix[1:]}" if fix else "."


def process_budget(base: BaseModel, limit_mb: int) -> MemoryBudget:
    """The budget of this process: ``limit_mb`` less what it holds now (the loaded model), the web
    server beside it, and the bf16 copy of the weights that bf16 training builds on first use."""
    twin = 0
    if base.dtype == torch.float32 and autocast_dtype(base, "auto") == torch.bfloat16:
        twin = sum(m.weight.numel() * 2 for m in base.model.modules() if isinstance(m, torch.nn.Linear))
    allowance = SERVER_ALLOWANCE_MB * MB
    return MemoryBudget(limit_mb * MB, rss_bytes() + allowance + twin, track_rss=True, allowance_bytes=allowance)
