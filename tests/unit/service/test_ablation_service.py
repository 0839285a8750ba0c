"""The layer ablation through the Playground facade: the prefix's own task, its held-out split, the caps."""

from __future__ import annotations

import pytest

from playground.ablation import ablate
from playground.errors import PlaygroundError
from playground.service import JUST_TRAINED
from playground.tasks import get_task
from playground.training import held_out_split

from .support import LIMITS, save_random, trained


def test_ablate_scores_the_prefix_on_its_own_task(pg):
    save_random(pg, "p", task="sentiment")
    calls = []
    ab = pg.ablate("k", "p", n=2, progress=lambda f, m: calls.append(m))
    task = get_task("sentiment")
    split = held_out_split(task)
    assert ab.task == "sentiment" and ab.split == split and ab.n == 2
    assert len(ab.rows) == 3 * pg.base.num_layers + 1 and len(calls) == len(ab.rows) + 1
    alone = ablate(pg.base, pg.get_prefix("k", "p"), task, task.split(split)[:2], split=split)
    assert [(r.key, r.metric, r.predictions) for r in ab.rows] == [(r.key, r.metric, r.predictions) for r in alone.rows]
    assert [r.logprob_mean for r in ab.rows] == pytest.approx([r.logprob_mean for r in alone.rows], rel=1e-5)
    assert pg.budget.used == 0  # every variant's reservation was given back


def test_ablate_just_trained_uses_the_run_task(pg):
    run = trained(pg)
    ab = pg.ablate("k", JUST_TRAINED, n=1)
    assert ab.task == run.task.name and ab.row("full").n == 1


def test_ablate_refuses_what_it_cannot_do(pg):
    save_random(pg, "mystery", task="no-such-task")
    with pytest.raises(PlaygroundError, match="does not name a built-in task.*Pick a prefix trained on a built-in"):
        pg.ablate("k", "mystery", n=1)
    save_random(pg, "p")
    cap = LIMITS["max_eval_examples"]
    for bad in (0, cap + 1, 2.5, True):
        with pytest.raises(PlaygroundError, match=f"from 1 to {cap} held-out examples"):
            pg.ablate("k", "p", n=bad)
    with pytest.raises(PlaygroundError, match="No prefix named"):
        pg.ablate("k", "ghost", n=1)
