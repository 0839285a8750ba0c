"""Helpers shared by the Playground facade tests (tiny models, no gradio)."""

from __future__ import annotations

from pathlib import Path

import torch

from playground.prefix import PrefixSettings, create_prefix
from playground.service import Playground
from playground.sessions import TrainingRun
from playground.tasks import Task, get_task
from playground.training import StepRecord, TrainSettings

LIMITS = dict(max_steps=10, max_batch_size=8, max_virtual_tokens=8, max_eval_examples=8, max_new_tokens=6,
              max_prompt_chars=200, max_switch_prefixes=3)


def ps(n: int = 4, init: str = "task", **kw) -> PrefixSettings:
    return PrefixSettings(num_virtual_tokens=n, init=init, **kw)


def ts(steps: int = 4, seed: int = 0, **kw) -> TrainSettings:
    return TrainSettings(**{"steps": steps, "batch_size": 4, "seed": seed, "eval_every": 2, "eval_examples": 4, **kw})


def emb(prefix) -> torch.Tensor:
    return prefix.embeddings().detach().clone()


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def save_random(pg: Playground, name: str, seed: int = 1, n: int = 3, task: str = "sentiment",
                overwrite: bool = False) -> torch.Tensor:
    """Put a random prefix in pg's library; returns its embeddings."""
    prefix = create_prefix(pg.base, ps(n, "random"), seed=seed)
    pg.library.save(name, prefix, {"task": task, "base_model": pg.base.name, "base_fingerprint": pg.base.fingerprint},
                    overwrite=overwrite)
    return emb(prefix)


def trained(pg: Playground, key: str = "k", seed: int = 0, **kw):
    """A finished sentiment run in session ``key`` (light by default: 2 steps, scored once at the end)."""
    run = pg.start_run(key, get_task("sentiment"), ps(), ts(seed=seed, **{"steps": 2, "eval_every": 0, **kw}))
    list(pg.run_steps(run))
    return run


def make_run(steps: int = 10) -> TrainingRun:
    task = Task("t", "T", "Do it.", splits={"train": [], "test": []})
    return TrainingRun(task, prefix=None, prefix_settings=PrefixSettings(), train_settings=TrainSettings(steps=steps))


def rec(step: int, metric=None) -> StepRecord:
    return StepRecord(step, loss=1.0 / step, elapsed=0.1 * step, examples_per_s=10.0, metric=metric)
