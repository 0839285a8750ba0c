"""Few-shot prompting as a method: its cached form answers as the plain prompt, draws are seeded."""

from __future__ import annotations

import pytest
import torch

from playground.compare import run_method
from playground.errors import PlaygroundError
from playground.fewshot import TextCache, demonstrations, head_ids, head_text
from playground.generate import mixed_prefill
from playground.methods import FewShotMethod, MethodSettings, answer, create_method
from playground.prompts import PromptFormat
from playground.tasks import get_task
from playground.training import TrainSettings

TEXTS = ["a fine film", "dull and far too long for its thin story", "ok"]


@pytest.mark.parametrize("style", ["turns", "block"])
def test_the_cached_demonstrations_give_the_first_token_logits_of_the_plain_prompt(tiny, style):
    task = get_task("sentiment")
    head = head_ids(tiny, task.instruction, demonstrations(task.split("train"), 4, seed=0), style)
    fmt = PromptFormat.for_tokenizer(tiny.tokenizer)
    prompts = [fmt.encode_prompt(t, "prefix") for t in TEXTS]
    cache = TextCache(tiny, head)
    assert cache.num_virtual_tokens == len(head) and cache.nbytes > 0
    with torch.inference_mode():
        cached, _, _ = mixed_prefill(tiny, prompts, [cache] * len(prompts))  # logits [batch, 1, vocab]
        for i, p in enumerate(prompts):
            x = torch.tensor([head + p])  # [1, H + T]
            plain = tiny.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, -1]  # [vocab]
            assert torch.allclose(cached.logits[i, -1], plain, atol=1e-4), i


def test_cached_and_plain_few_shot_answer_the_same_and_cost_differently(tiny):
    task = get_task("sentiment")
    plain, cached = (create_method(tiny, MethodSettings(m, shots=3), task.instruction, seed=2, train=task.split("train"))
                     for m in ("few_shot", "few_shot_cached"))
    assert isinstance(plain, FewShotMethod) and plain.demos == cached.demos and plain.mode == "prefix"
    assert answer(tiny, plain, TEXTS, task.instruction, 6) == answer(tiny, cached, TEXTS, task.instruction, 6)
    H = len(plain.head)
    assert (plain.prompt_tokens_added, plain.extra_positions) == (H, 0)
    assert (cached.prompt_tokens_added, cached.extra_positions) == (0, H)
    assert plain.trainable_parameters == 0 and list(plain.parameters()) == []
    with pytest.raises(PlaygroundError, match="nothing to train"):
        plain.loss(tiny, None, None, None)


def test_draws_are_seeded_and_the_baseline_is_deterministic(tiny):
    task = get_task("sentiment")
    train = task.split("train")
    assert demonstrations(train, 4, seed=1) == demonstrations(train, 4, seed=1) != demonstrations(train, 4, seed=2)
    runs = [answer(tiny, create_method(tiny, MethodSettings("few_shot", shots=2), task.instruction, seed=1,
                                       train=train), TEXTS, task.instruction, 5) for _ in range(2)]
    assert runs[0] == runs[1]


def test_the_demonstrations_are_chat_turns_or_one_system_block(tiny):
    fmt = PromptFormat.for_tokenizer(tiny.tokenizer)
    demos = demonstrations(get_task("sentiment").split("train"), 2, seed=0)
    turns, block = (head_text(fmt, "Say it.", demos, s) for s in ("turns", "block"))
    if fmt.chat:
        assert turns.count("<|im_start|>assistant") == 2 and demos[0].target in turns
        assert block.count("<|im_start|>") == 1 and f"Output: {demos[1].target}" in block
    else:
        assert turns == block and turns.startswith("Say it.\nInput: ")


def test_few_shot_settings_and_training_data_are_checked(tiny):
    with pytest.raises(PlaygroundError, match="1 to 32 examples"):
        MethodSettings("few_shot", shots=0).validate()
    with pytest.raises(PlaygroundError, match="style must be one of turns, block"):
        MethodSettings("few_shot", style="list").validate()
    with pytest.raises(PlaygroundError, match="needs the task's training examples"):
        create_method(tiny, MethodSettings("few_shot"), "Say it.")


def test_the_compare_runner_scores_few_shot_without_training(tiny_llama):
    task = get_task("sentiment")
    ts = TrainSettings(steps=2, batch_size=4, eval_every=0, eval_examples=4)
    res = [r for r in run_method(tiny_llama, task, MethodSettings("few_shot_cached", shots=2), ts)][-1]
    assert res.records == [] and res.trainable == 0 and res.stored_bytes == 0
    assert res.extra_positions > 0 and res.kv_bytes_added > 0 and 0 <= res.metric <= 1 and res.per_token_s > 0


def test_the_compare_lab_reserves_memory_for_the_demonstrations(tiny_llama):
    from playground.budget import MemoryBudget, plan_run
    from playground.lab import CompareLab
    from playground.training import held_out_split

    task = get_task("sentiment")
    lab = CompareLab(tiny_llama, budget=MemoryBudget(2**40, 0))
    H = len(head_ids(tiny_llama, task.instruction, demonstrations(task.split("train"), 4)))
    assert lab._positions(task, MethodSettings("few_shot_cached")) == (H, 0)
    assert lab._positions(task, MethodSettings("few_shot")) == (0, H)
    assert lab._positions(task, MethodSettings("prefix", 20)) == (20, 0)
    held = task.split(held_out_split(task))[:8]
    sized = [plan_run(tiny_llama, task, 0, 2, 4, 0, 8, None, held, extra).eval_bytes for extra in (0, H)]
    assert sized[1] > sized[0]


def test_the_compare_table_shows_what_each_baseline_costs_per_query(tiny_llama):
    from playground.report import table_rows

    task = get_task("sentiment")
    ts = TrainSettings(steps=1, batch_size=4, eval_every=0, eval_examples=2)
    plain, cached = ([r for r in run_method(tiny_llama, task, MethodSettings(m, shots=2), ts)][-1]
                     for m in ("few_shot", "few_shot_cached"))
    H = plain.prompt_tokens_added
    assert H > 0 and cached.prompt_tokens_added == 0 and cached.extra_positions == H and plain.extra_positions == 0
    rows = table_rows([plain, cached], tiny_llama)
    assert f"+0 KV positions (0.00 MB), +{H} prompt tokens" in rows[0][4]
    assert f"+{H} KV positions" in rows[1][4] and rows[1][4].endswith("+0 prompt tokens")


def test_the_prefix_is_set_against_the_strongest_prompt_with_n_and_an_interval():
    from playground.report import versus_best_prompt, wilson

    lo, hi = wilson(0.9, 60)
    assert 0.79 < lo < 0.8 and 0.95 < hi < 0.96  # the Wilson interval of 54/60
    assert wilson(1.0, 10)[1] == 1.0 and wilson(0.0, 10)[0] == 0.0
    best = {"label": "instruction + 4 examples", "mean": 0.567, "scores": [0.567]}
    line = versus_best_prompt(0.983, 60, best)
    assert line == "prefix 98.3% (n = 60, 95% interval 91–100%) vs the strongest prompt, instruction + 4 examples: 56.7%"
    paired = versus_best_prompt(0.5, 8, {"label": "instruction", "mean": 0.7, "scores": [0.7]}, (1, 3, 0.625))
    assert "instruction: 70.0%. Paired on the same 8 examples: the prefix did better on 1, the prompt on 3" in paired


def test_a_long_head_is_cached_in_chunks_with_a_pause_point_between_them(tiny, monkeypatch):
    """Chunked prefill: the same key/values as one forward (up to float rounding), and a pause point between
    chunks where a waiting learner's answer may go first."""
    import playground.fewshot as fewshot
    from playground.pauses import pausable

    task = get_task("sentiment")
    head = head_ids(tiny, task.instruction, demonstrations(task.split("train"), 4, seed=0), "turns")
    whole = TextCache(tiny, head)
    monkeypatch.setattr(fewshot, "PREFILL_CHUNK", 7)
    calls = []
    with pausable(lambda: calls.append(1)):
        chunked = TextCache(tiny, head)
    assert len(calls) == -(-len(head) // 7) - 1 > 0
    for (k1, v1), (k2, v2) in zip(whole.key_values(1, torch.float32), chunked.key_values(1, torch.float32)):
        assert k1.shape == k2.shape and torch.allclose(k1, k2, atol=1e-5) and torch.allclose(v1, v2, atol=1e-5)
