"""What a prefix costs at inference: time to first token, latency per token, and KV-cache memory.

A prefix of P virtual tokens is P extra key/value positions in every layer, so each query
attends to P + T + t keys instead of T + t. The seed claim to check: "the overhead is
constant and proportional to the prefix length", i.e. per-token latency = a + b·P.
``measure_overhead`` times a grid of (P, T) with a forced greedy decode (no early stop, so
every point decodes the same number of tokens); ``fit_overhead`` fits that line per prompt
length. Pure torch: the benchmark script and the Learn tab both call it.

The decode is ``generate``'s own (``mixed_prefill`` then ``decode``) for one row, with the
clock read as each token reaches the host.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from peft import PrefixTuningConfig

from .generate import decode, mixed_prefill
from .models import BaseModel
from .prefix import Prefix

PREFIX_LENGTHS = (0, 8, 32, 128, 512)  # P; 0 = the model without a prefix
PROMPT_LENGTHS = (16, 256)  # T
SENTENCE = "The quick brown fox jumps over the lazy dog while the cat sleeps by the warm fire."

Progress = Callable[[float, str], None]  # (fraction done 0..1, what is happening)


@dataclass
class OverheadPoint:
    """One (P, T) cell of the grid: medians over the repeats."""

    P: int  # virtual tokens in the prefix (0 = none)
    T: int  # prompt tokens
    new_tokens: int  # tokens generated, the first included; no early stop
    ttft_s: float  # prefill of the prompt on the prefix cache + the first token
    per_token_s: float  # mean latency of one decode step after the first token
    kv_bytes_computed: int  # layer × 2 × kv_head × head_dim × (P + T + new_tokens - 1) × bytes
    kv_bytes_measured: int  # nbytes of the cache's key and value tensors after the last step
    ttft_range_s: tuple[float, float] = (0.0, 0.0)  # fastest and slowest of the repeats: the spread a reader sees
    per_token_range_s: tuple[float, float] = (0.0, 0.0)
    repeats: int = 1  # timed runs behind each median


@dataclass
class OverheadFit:
    """Least-squares lines vs P at one prompt length: latency = intercept + slope · P."""

    T: int
    per_token_ms: float  # intercept: the constant cost of a decode step (ms)
    per_token_ms_per_vt: float  # slope: ms added to every decode step per virtual token
    per_token_r2: float  # how well a straight line fits (1 = perfectly)
    ttft_ms: float  # the same for the time to first token
    ttft_ms_per_vt: float
    ttft_r2: float
    P_min: int  # the smallest P measured (0 when the grid has the model without a prefix)
    P_max: int  # the largest P measured
    per_token_added: float  # per-token latency at P_max / at P_min, minus 1 (0.25 = +25 %)
    ttft_added: float  # the same for the time to first token


def kv_cache_bytes(base: BaseModel, positions: int, batch: int = 1) -> int:
    """Bytes of a KV cache holding ``positions`` positions: layer × 2 (k, v) × kv_head × head_dim × positions."""
    itemsize = torch.empty((), dtype=base.dtype).element_size()
    return base.num_layers * 2 * batch * base.num_kv_heads * base.head_dim * positions * itemsize


def cache_nbytes(cache) -> int:
    """Bytes actually held by a transformers cache (or a legacy tuple of (key, value) per layer)."""
    layers = getattr(cache, "layers", None)
    pairs = [(layer.keys, layer.values) for layer in layers] if layers is not None else list(cache)
    return sum(k.nbytes + v.nbytes for k, v in pairs)  # each [batch, kv_head, k_pos, head_dim]


def prompt_ids(base: BaseModel, T: int, text: str = SENTENCE) -> list[int]:
    """Exactly T token ids: a sentence's ids repeated, so every prompt length reads like text."""
    ids = base.tokenizer(text, add_special_tokens=False)["input_ids"]
    return (ids * (T // len(ids) + 1))[:T]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)  # kernels are asynchronous: wait before reading the clock


@dataclass
class Decode:
    """One forced greedy decode with its clock readings."""

    tokens: list[int]  # new_tokens ids
    ttft_s: float
    step_s: list[float]  # one per decode step after the first token (new_tokens - 1)
    kv_bytes: int  # measured on the cache after the last step


def forced_decode(base: BaseModel, ids: list[int], prefix: Prefix | None = None, new_tokens: int = 16) -> Decode:
    """Greedy decode of exactly ``new_tokens`` tokens for one prompt (no stop ids), timing every step.

    TTFT includes building the prefix cache: a server pays that on every call.
    """
    _sync(base.device)
    t0 = time.perf_counter()
    clock: list[float] = []  # when each token reached the host (reading it waits for the device)
    out, mask, pos = mixed_prefill(base, [ids], [prefix])
    cache = out.past_key_values  # decode grows this same cache in place
    tokens = decode(base, out, mask, pos, [new_tokens], on_token=lambda: clock.append(time.perf_counter()))[0]
    steps = [b - a for a, b in zip(clock, clock[1:])]
    return Decode(tokens, clock[0] - t0, steps, cache_nbytes(cache))


def random_prefix(base: BaseModel, P: int, seed: int = 0) -> Prefix | None:
    """A frozen random prefix of P virtual tokens (None for P = 0). Its values don't change its cost.

    Built straight from a PEFT config and N(0, 1) embeddings (PEFT's random init), without
    ``create_prefix``: that wraps the shared model in a PeftModel for a moment, which a live
    measurement in the web app must not do while other sessions generate.
    """
    if P == 0:
        return None
    token_dim = base.num_kv_heads * base.head_dim  # GQA: keys/values are stored per kv head
    config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P, num_layers=base.num_layers,
                                token_dim=token_dim, num_attention_heads=base.num_kv_heads,
                                num_transformer_submodules=1)
    gen = torch.Generator().manual_seed(seed)
    emb = torch.randn(P, base.num_layers * 2 * token_dim, generator=gen)  # [P, layer*2*token_dim]
    return Prefix.from_embeddings(config, emb, {"settings": {"num_virtual_tokens": P, "init": "random"}}, base.device)


def measure_overhead(base: BaseModel, prefix_lengths=PREFIX_LENGTHS, prompt_lengths=PROMPT_LENGTHS,
                     new_tokens: int = 16, repeats: int = 3, progress: Progress | None = None) -> list[OverheadPoint]:
    """Time the forced decode for every (P, T): one warm-up run, then the median of ``repeats`` runs."""
    if new_tokens < 2:
        raise ValueError("new_tokens must be at least 2: one first token and at least one decode step")
    say = progress or (lambda frac, msg: None)
    cells = [(P, T) for T in prompt_lengths for P in prefix_lengths]
    prefixes = {P: random_prefix(base, P) for P in sorted(set(prefix_lengths))}
    points = []
    for i, (P, T) in enumerate(cells):
        say(i / len(cells), f"P = {P} virtual tokens, T = {T} prompt tokens")
        ids = prompt_ids(base, T)
        forced_decode(base, ids, prefixes[P], new_tokens)  # warm-up: allocator, caches, lazy init
        runs = [forced_decode(base, ids, prefixes[P], new_tokens) for _ in range(repeats)]
        ttft = [r.ttft_s for r in runs]
        step = [statistics.fmean(r.step_s) for r in runs]
        points.append(OverheadPoint(
            P=P, T=T, new_tokens=new_tokens,
            ttft_s=statistics.median(ttft),
            per_token_s=statistics.median(step),
            kv_bytes_computed=kv_cache_bytes(base, P + T + new_tokens - 1),  # the last token is never fed back
            kv_bytes_measured=runs[-1].kv_bytes,
            ttft_range_s=(min(ttft), max(ttft)), per_token_range_s=(min(step), max(step)), repeats=repeats,
        ))
    say(1.0, "done")
    return points


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b·x. Returns (a, b, r²); r² is 1 when y does not vary."""
    A = torch.tensor([[1.0, float(x)] for x in xs], dtype=torch.float64)  # [n, 2]
    y = torch.tensor([float(v) for v in ys], dtype=torch.float64)  # [n]
    a, b = torch.linalg.lstsq(A, y[:, None]).solution[:, 0].tolist()
    ss_res = float(((A @ torch.tensor([a, b], dtype=torch.float64) - y) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return a, b, (1 - ss_res / ss_tot) if ss_tot > 0 else 1.0


def fit_overhead(points: list[OverheadPoint]) -> list[OverheadFit]:
    """Per prompt length, fit per-token latency and TTFT (in ms) against P."""
    fits = []
    for T in sorted({p.T for p in points}):
        row = sorted((p for p in points if p.T == T), key=lambda p: p.P)
        if len({p.P for p in row}) < 2:
            continue  # a line needs two prefix lengths
        xs = [p.P for p in row]
        a, b, r2 = fit_line(xs, [1000 * p.per_token_s for p in row])
        ta, tb, tr2 = fit_line(xs, [1000 * p.ttft_s for p in row])
        first, last = row[0], row[-1]
        fits.append(OverheadFit(T=T, per_token_ms=a, per_token_ms_per_vt=b, per_token_r2=r2, ttft_ms=ta,
                                ttft_ms_per_vt=tb, ttft_r2=tr2, P_min=first.P, P_max=last.P,
                                per_token_added=last.per_token_s / first.per_token_s - 1,
                                ttft_added=last.ttft_s / first.ttft_s - 1))
    return fits
