"""The attention on the prefix, recorded while it trains: at step 0 and every few steps, on one held-out prompt,
without changing the training."""

from __future__ import annotations

import pytest
import torch

from playground.attention import prefix_attention
from playground.figures import probe_figure, probe_slots_figure
from playground.library import Library
from playground.prefix import create_prefix
from playground.probe import PROBES_PER_RUN, ProbePoint, is_probe_step, probe_every, probe_point, probe_text
from playground.service import Limits, Playground
from playground.tasks import get_task

from .support import LIMITS, ps, ts


def make_pg(base, root, probes: bool = True, scheduled: bool = True) -> Playground:
    return Playground(base, Library(root / "lib", shipped=root / "shipped"), Limits(**LIMITS), scheduled=scheduled,
                      class_folder=root / "class", probes=probes)


def train(pg: Playground, key: str, steps: int):
    run = pg.start_run(key, get_task("sentiment"), ps(4), ts(steps))
    pg.launch(run)
    assert run.done.wait(120), "the run did not end"
    assert not run.error, run.error
    return run


def test_the_cadence_records_about_ten_points_whatever_the_length():
    assert probe_every(3) == 1 and probe_every(20) == 2 and probe_every(100) == 10 and probe_every(101) == 11
    for steps in (1, 3, 20, 57, 100, 1000):
        recorded = [s for s in range(steps + 1) if is_probe_step(s, steps)]
        assert recorded[0] == 0 and recorded[-1] == steps  # the start and the end, always
        assert len(recorded) <= PROBES_PER_RUN + 2


def test_a_point_holds_the_layer_share_split_over_the_virtual_tokens(tiny_llama):
    prefix = create_prefix(tiny_llama, ps(4, "random"), seed=0)
    att = prefix_attention(tiny_llama, prefix, "a fine film")
    p = probe_point(3, att, 0.01)
    L = tiny_llama.num_layers
    assert p.step == 3 and len(p.layer_share) == L and all(len(row) == 4 for row in p.slot_share)
    for share, row in zip(p.layer_share, p.slot_share):  # the slots split each layer's share
        assert sum(row) == pytest.approx(share, abs=1e-5) and 0 < share < 1
    assert ProbePoint.from_dict(p.as_dict()) == p
    heat = probe_figure([p, p], 10, "a fine film")
    assert list(heat.data[0].x) == [3, 3] and len(heat.data[0].z) == L and "a fine film" in heat.layout.title.text
    slots = probe_slots_figure(p, "a fine film")
    assert len(slots.data[0].z) == 4 and len(slots.data[0].z[0]) == L and "step 3" in slots.layout.title.text
    assert "recorded once the run starts" in probe_slots_figure(None).layout.title.text


@pytest.mark.parametrize("scheduled", [True, False])
def test_recording_does_not_change_training(tiny_llama, tmp_path, scheduled):
    """The same seed with and without the recordings: the same losses, metrics and trained prefix."""
    on = train(make_pg(tiny_llama, tmp_path / "on", True, scheduled), "browser:a", 5)
    off = train(make_pg(tiny_llama, tmp_path / "off", False, scheduled), "browser:a", 5)
    assert [r.loss for r in on.records] == [r.loss for r in off.records]
    assert [r.metric for r in on.records] == [r.metric for r in off.records]
    assert torch.equal(on.prefix.embeddings(), off.prefix.embeddings())
    assert off.probes == [] and [p.step for p in on.probes] == [0, 1, 2, 3, 4, 5]
    assert on.probe_text == probe_text(get_task("sentiment")) == get_task("sentiment").split("validation")[0].input
    assert on.probes[0].layer_share != on.probes[-1].layer_share  # the prefix trained: where the model looks moved


def test_the_recordings_are_kept_in_the_run_record(tiny_llama, tmp_path):
    pg = make_pg(tiny_llama, tmp_path)
    run = train(pg, "browser:a", 4)
    rows = pg.runs.probes(run.run_id)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert [ProbePoint.from_dict(r) for r in rows] == run.probes
    assert pg.runs.get(run.run_id).probe_text == run.probe_text
    assert len(pg.runs.steps(run.run_id)) == 4  # the step log is unchanged: recordings have a file of their own


def test_a_model_without_attention_weights_trains_and_says_why_nothing_is_recorded(tiny_llama, tmp_path):
    pg = make_pg(tiny_llama, tmp_path)
    tiny_llama.model.config._attn_implementation = "sdpa"
    try:
        run = train(pg, "browser:a", 2)
    finally:
        tiny_llama.model.config._attn_implementation = "eager"
    assert run.state == "finished" and len(run.records) == 2 and run.probes == []
    assert run.probe_note.startswith("The attention while it trains is not recorded:") and "eager" in run.probe_note
