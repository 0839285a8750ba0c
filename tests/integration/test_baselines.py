"""On the real embedded model: label scoring agrees with generation wherever generation answers a label."""

from __future__ import annotations

import pytest

from playground.methods import MethodSettings, answer, create_method
from playground.tasks import get_task


@pytest.mark.real_model
@pytest.mark.parametrize("name", ["sentiment", "topic"])
def test_label_scoring_picks_the_label_that_greedy_generation_answers(real, name):
    task = get_task(name)
    train, inputs = task.split("train"), [e.input for e in task.split("test")[:24]]
    settings = dict(shots=4, style="turns")
    generated = answer(real, create_method(real, MethodSettings("few_shot_cached", **settings), task.instruction, 1,
                                           train), inputs, task.instruction, task.max_new_tokens)
    scored = answer(real, create_method(real, MethodSettings("label_scoring", **settings), task.instruction, 1, train),
                    inputs, task.instruction, task.max_new_tokens)
    labels = set(e.target for e in train)
    both = [(g, s) for g, s in zip(generated, scored) if g in labels]
    assert len(both) >= 12, f"generation answered a label on only {len(both)} of 24"  # the check means something
    assert all(g == s for g, s in both), both
    assert set(scored) <= labels  # and label scoring always answers a label
