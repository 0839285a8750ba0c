"""A run whose prefix starts from training examples (init "demos"), through the Playground facade."""

from __future__ import annotations

import pytest

from playground.budget import plan_run
from playground.errors import PlaygroundError
from playground.fewshot import demonstrations, head_ids
from playground.library import Library
from playground.models import autocast_dtype
from playground.service import Limits, Playground
from playground.tasks import get_task
from playground.training import held_out_split

from .support import LIMITS, ps, ts


@pytest.fixture
def wide(tiny_llama, tmp_path) -> Playground:
    """The facade with room for a prefix as long as an instruction and two reviews."""
    return Playground(tiny_llama, Library(tmp_path / "lib"), Limits(**{**LIMITS, "max_virtual_tokens": 512}))


def test_the_run_is_sized_and_built_with_the_demonstrations_length(wide):
    task = get_task("sentiment")
    t = ts(steps=2, seed=3, eval_every=0)
    P = len(head_ids(wide.base, task.instruction, demonstrations(task.split("train"), 2, seed=3), "turns"))
    assert P > 8  # far from the slider's value: the length comes from the examples
    settings = ps(8, "demos", init_shots=2)
    plan = wide.check_settings(settings, t, task)
    held = task.split(held_out_split(task))
    want = plan_run(wide.base, task, P, t.steps, t.batch_size, t.eval_every, t.eval_examples,
                    autocast_dtype(wide.base, t.precision), held)
    assert (plan.step_bytes, plan.eval_bytes) == (want.step_bytes, want.eval_bytes)
    run = wide.start_run("k", task, settings, t)
    assert run.prefix.num_virtual_tokens == run.prefix_settings.num_virtual_tokens == P
    assert run.prefix.info["settings"]["init_shots"] == 2 and run.prefix.info["seed"] == 3
    assert len(run.prefix.info["init_demonstrations"]) == 2
    assert [r.step for r in wide.run_steps(run)] == [1, 2]


def test_a_prefix_over_the_servers_limit_names_the_examples_and_the_fix(pg):
    with pytest.raises(PlaygroundError, match=r"instruction and 2 training examples take \d+ tokens.*limit of 8\. "
                                              "Use fewer examples"):
        pg.start_run("k", get_task("sentiment"), ps(4, "demos", init_shots=2), ts())
    assert pg.sessions.peek("k") is None or pg.sessions.peek("k").run is None
