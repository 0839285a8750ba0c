"""On the real embedded model: training precision."""

from __future__ import annotations

import pytest

from playground.evaluation import evaluate
from playground.methods import prefix_method
from playground.prefix import PrefixSettings, create_prefix
from playground.tasks import get_task
from playground.training import TrainSettings, train


@pytest.mark.real_model
def test_bf16_training_reaches_the_same_accuracy_as_fp32_on_the_real_model(real):
    """The accuracy check behind making bf16 autocast the CPU default (BENCHMARKS.md has the timings)."""
    task = get_task("sentiment")
    test = task.split("test")
    scores, losses = {}, {}
    for precision in ("fp32", "bf16"):
        prefix = create_prefix(real, PrefixSettings(), task.instruction, seed=0)
        recs = list(train(real, prefix_method(prefix), task, TrainSettings(steps=8, eval_every=0, eval_examples=4,
                                                            precision=precision)))
        losses[precision] = [r.loss for r in recs]
        scores[precision] = evaluate(real, task, test, prefix_method(prefix)).score
    assert scores["bf16"] >= 0.9 and abs(scores["bf16"] - scores["fp32"]) <= 0.05, scores
    assert losses["bf16"][0] == pytest.approx(losses["fp32"][0], rel=2e-2)
