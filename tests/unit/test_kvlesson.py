"""The Learn tab's cache lesson: a prompt, its cached form, the cached instruction and a prefix, measured side by side."""

from __future__ import annotations

import pytest

from playground.errors import PlaygroundError
from playground.fewshot import demonstrations, head_ids
from playground.figures import kv_cache_figure
from playground.kvlesson import CacheRow, head_lengths, measure_caches, peak_bytes, shipped_prefixes
from playground.library import Library
from playground.methods import InstructionMethod, answer
from playground.overhead import kv_cache_bytes
from playground.peft_folder import make_card
from playground.prefix import PrefixSettings, create_prefix
from playground.service import Limits, Playground
from playground.tasks import get_task

KEYS = ["few_shot", "few_shot_cached", "instruction_cached", "prefix"]


@pytest.fixture(scope="module")
def sentiment():
    return get_task("sentiment")


def test_each_cache_has_its_head_length_and_the_cached_forms_answer_as_the_prompts(tiny, sentiment):
    task = sentiment
    prefix = create_prefix(tiny, PrefixSettings(num_virtual_tokens=4), task.instruction, 0)
    examples = task.split("validation")[:3]
    said = []
    rows = measure_caches(tiny, task, prefix, examples, "validation", progress=lambda f, m: said.append(f))
    assert [r.key for r in rows] == KEYS
    by = {r.key: r for r in rows}
    H = len(head_ids(tiny, task.instruction, demonstrations(task.split("train"), 4, seed=0)))
    Hi = len(head_ids(tiny, task.instruction, []))
    assert H > Hi > 0
    assert [(r.cached_positions, r.prompt_tokens) for r in rows] == [(0, H), (H, 0), (Hi, 0), (4, 0)]
    assert head_lengths(tiny, task, 4) == {r.key: (r.cached_positions, r.prompt_tokens) for r in rows}
    for r in rows:
        assert r.kv_bytes == kv_cache_bytes(tiny, r.cached_positions + r.prompt_tokens) > 0
        assert (r.n, r.split, r.metric) == (3, "validation", task.metric) and len(r.predictions) == 3
        assert len(r.ms) == 3 and min(r.ms) > 0 and r.ms_quartiles[0] <= r.ms_median <= r.ms_quartiles[1]
        assert 0.0 <= r.score <= 1.0
    # caching changes when the key/values are computed, not what the model answers
    assert by["few_shot_cached"].predictions == by["few_shot"].predictions
    assert by["few_shot_cached"].score == by["few_shot"].score
    plain = answer(tiny, InstructionMethod(task.instruction), [e.input for e in examples], task.instruction,
                   task.max_new_tokens)
    assert by["instruction_cached"].predictions == plain
    assert said[0] == 0.0 and said[-1] == 1.0 and said == sorted(said)
    assert peak_bytes(tiny, task, examples, 4) > 0


def _shipped(tmp_path, base, task_name: str, fingerprint: str | None = None) -> Library:
    """A library whose shipped folder holds one small prefix carded for ``task_name``."""
    ship = Library(tmp_path / "ship")
    card = make_card(base, task_name, {}, {})
    if fingerprint is not None:
        card["base_fingerprint"] = fingerprint
    prefix = create_prefix(base, PrefixSettings(num_virtual_tokens=4), get_task(task_name).instruction, 0)
    ship.save("mine", prefix, card)
    return Library(tmp_path / "class", shipped=tmp_path / "ship")


def test_only_built_in_tasks_with_a_prefix_for_this_model_are_offered(tiny_llama, tmp_path):
    assert shipped_prefixes(_shipped(tmp_path / "a", tiny_llama, "sentiment"), tiny_llama) == {"sentiment": "mine"}
    other = _shipped(tmp_path / "b", tiny_llama, "sentiment", fingerprint="0000")
    assert shipped_prefixes(other, tiny_llama) == {}


def test_the_service_measures_within_its_limits_one_at_a_time(tiny_llama, tmp_path):
    pg = Playground(tiny_llama, _shipped(tmp_path, tiny_llama, "topic"), Limits(max_eval_examples=2))
    assert pg.kv_cache_tasks() == {"topic": "mine"}
    with pytest.raises(PlaygroundError, match="No shipped prefix for the task 'sentiment'.*topic"):
        pg.kv_caches("sentiment")
    rows = pg.kv_caches("topic")
    assert [r.key for r in rows] == KEYS and {r.n for r in rows} == {2} and rows[-1].cached_positions == 4
    assert pg.budget.used == 0  # the reservation ended with the measurement
    with pg._overhead_lock, pytest.raises(PlaygroundError, match="Another measurement"):
        pg.kv_caches("topic")


def test_the_figure_shows_every_cache_with_its_length_score_and_latency():
    rows = [CacheRow(k, label, P, T, kv, ms, score, 20, "validation", "exact_match")
            for k, label, P, T, kv, ms, score in (
                ("few_shot", "4-shot prompt", 0, 130, 6_000_000, [600.0, 640.0, 700.0], 0.95),
                ("few_shot_cached", "4-shot, cached", 130, 0, 6_000_000, [250.0, 260.0, 300.0], 0.95),
                ("instruction_cached", "instruction, cached", 15, 0, 700_000, [300.0, 310.0, 330.0], 0.0),
                ("prefix", "trained prefix", 20, 0, 900_000, [280.0, 314.0, 320.0], 0.983))]
    fig = kv_cache_figure(rows, "accuracy")
    cached, prompt = fig.data
    assert list(cached.y) == list(prompt.y) == ["trained prefix", "instruction, cached", "4-shot, cached",
                                                "4-shot prompt"]  # the first row is drawn on top
    assert list(cached.x) == [20, 15, 130, 0] and list(prompt.x) == [0, 0, 0, 130]
    notes = sorted(a.text for a in fig.layout.annotations)
    assert notes == sorted([
        "<b>95.0%</b> (n=20, validation) · <b>640 ms</b>/query (620–670)",
        "<b>95.0%</b> (n=20, validation) · <b>260 ms</b>/query (255–280)",
        "<b>0.0%</b> (n=20, validation) · <b>310 ms</b>/query (305–320)",
        "<b>98.3%</b> (n=20, validation) · <b>314 ms</b>/query (297–317)"])
    assert "accuracy" in fig.layout.title.text and fig.layout.barmode == "stack"
