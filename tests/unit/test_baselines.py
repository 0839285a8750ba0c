"""The prompting baselines: the format prompt, label scoring, choosing on validation, draws, cost, the bar."""

from __future__ import annotations

import pytest
import torch

from playground import baselines as bl
from playground.errors import PlaygroundError
from playground.fewshot import demonstrations, head_ids
from playground.labelscore import label_logprobs
from playground.methods import InstructionMethod, LabelScoringMethod, MethodSettings, added_positions, create_method
from playground.prompts import PromptFormat
from playground.recipes import meets_bar
from playground.report import baseline_cells, baseline_table, versus_best_prompt
from playground.tasks import GENERIC_FORMATS, Example, Task, get_task, labels_of

TEXTS = ["a fine film", "dull and far too long for its thin story", "ok"]


def small_task(name: str = "sentiment", n: int = 6) -> Task:
    """A built-in task cut to a few examples per split, so the tiny model scores it in a blink."""
    t = get_task(name)
    return Task(t.name, t.title, t.instruction, t.metric, t.max_new_tokens, formats=t.formats,
                splits={s: t.split(s)[:n] if s != "train" else t.split(s) for s in ("train", "validation", "test")})


def test_labels_are_found_only_for_classification_tasks():
    assert labels_of(get_task("sentiment").split("train")) == ("negative", "positive")
    assert labels_of(get_task("topic").split("train")) == ("business", "science", "sports", "world")
    assert labels_of(get_task("fr_en").split("train")) == ()
    assert labels_of([Example("a", "x"), Example("b", "y")]) == ()  # each label must be seen twice


def test_the_format_prompt_is_the_instruction_plus_its_sentence_and_costs_its_tokens(tiny_llama):
    task = get_task("sentiment")
    m = create_method(tiny_llama, MethodSettings("instruction_format", format_text=task.formats[0]), task.instruction)
    assert isinstance(m, InstructionMethod) and m.instruction == f"{task.instruction} {task.formats[0]}"
    generic = create_method(tiny_llama, MethodSettings("instruction_format"), task.instruction)
    assert generic.instruction.endswith(GENERIC_FORMATS[0])
    plain = added_positions(tiny_llama, MethodSettings("instruction"), task.instruction, [])
    withf = added_positions(tiny_llama, MethodSettings("instruction_format", format_text=task.formats[0]),
                            task.instruction, [])
    assert plain[0] == withf[0] == 0 and withf[1] > plain[1] == len(head_ids(tiny_llama, task.instruction, []))


def test_label_scores_are_the_log_likelihood_of_each_label_after_the_cached_prompt(tiny_llama):
    task = get_task("sentiment")
    m = create_method(tiny_llama, MethodSettings("label_scoring", shots=2), task.instruction, 1, task.split("train"))
    assert isinstance(m, LabelScoringMethod) and m.labels == ("negative", "positive")
    fmt = PromptFormat.for_tokenizer(tiny_llama.tokenizer)
    prompts = [fmt.encode_prompt(t, "prefix") for t in TEXTS]
    got = label_logprobs(tiny_llama, prompts, m.label_ids, m.cache)  # [3, 2]
    for q, p in enumerate(prompts):
        for j, lab in enumerate(m.label_ids):
            x = torch.tensor([m.head + p + lab])  # the uncached prompt, then the label
            with torch.no_grad():
                logp = tiny_llama.model(input_ids=x).logits[0].log_softmax(-1)  # [T, vocab]
            T = x.shape[1]
            want = sum(logp[T - len(lab) - 1 + i, t].item() for i, t in enumerate(lab))
            assert got[q, j].item() == pytest.approx(want, abs=1e-3)
    out = m.generate(tiny_llama, prompts, 8)
    assert out == [m.label_ids[j] for j in got.argmax(-1).tolist()]


def test_label_scoring_needs_a_classification_task(tiny_llama):
    with pytest.raises(PlaygroundError, match="needs a classification task"):
        create_method(tiny_llama, MethodSettings("label_scoring"), "Translate.", 0, get_task("fr_en").split("train"))


def test_the_baselines_are_deterministic_and_carry_their_cost(tiny_llama):
    task = small_task()
    settings = bl.BaselineSettings(shots=(2,), draws=2)
    runs = [bl.measure(tiny_llama, task, "test", task.split("test"), settings) for _ in range(2)]
    assert [r.key for r in runs[0]] == ["instruction", "instruction_format", "few_shot_2", "label_2"]
    for a, b in zip(*runs):
        assert (a.scores, a.predictions, a.per_example) == (b.scores, b.predictions, b.per_example)
    few = runs[0][2]
    assert len(few.scores) == 2 and few.n == 6 and few.examples_needed == 2 and few.prompt_tokens == 0
    H = [len(head_ids(tiny_llama, task.instruction, demonstrations(task.split("train"), 2, s))) for s in (0, 1)]
    assert few.kv_positions == round(sum(H) / 2)
    assert runs[0][0].kv_positions == 0 and runs[0][0].prompt_tokens > 0 and runs[0][0].examples_needed == 0
    assert bl.evaluations(task, settings) == 1 + 1 + 1 + 2 + 2
    table = baseline_table(runs[0])
    assert table.count("\n") == 5 and "over 2 draws" in table


def test_choices_are_made_on_validation_and_read_back(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setattr(bl, "CHOICES_FILE", tmp_path / "prompting.json")
    task = small_task()
    settings = bl.BaselineSettings(shots=(2,), draws=1)
    assert bl.choices_for(task) == {"format": task.formats[0], "style": {}}  # never chosen: the first candidate
    chosen = bl.choose(tiny_llama, task, settings, limit=4)
    assert chosen["format"] in task.formats and chosen["style"]["2"] in ("turns", "block")
    assert chosen["validation"]["n"] == 4 and len(chosen["validation"]["scores"]) == len(task.formats) + 2
    bl.save_choices({task.name: chosen})
    assert bl.choices_for(task)["format"] == chosen["format"]
    spec = {k: ms for k, _, ms, _ in bl.specs(task, settings)}
    assert spec["instruction_format"].format_text == chosen["format"]
    assert spec["few_shot_2"].style == chosen["style"]["2"]
    other = Task(task.name, task.title, "Another instruction.", splits=task.splits)
    assert bl.choices_for(other)["format"] == GENERIC_FORMATS[0]  # chosen for another instruction: not used


def test_the_paired_difference_counts_only_the_examples_one_side_got_right():
    assert bl.paired([1, 1, 0, 1], [1, 0, 0, 0]) == (2, 0, 0.5)
    assert bl.paired([1, 0], [1, 0]) == (0, 0, 1.0)
    a, b, p = bl.paired([1] * 10 + [0] * 10, [0] * 10 + [0] * 10)
    assert (a, b) == (10, 0) and p == pytest.approx(2 / 2 ** 10)
    best = {"label": "instruction + 4 examples", "mean": 0.8, "scores": [0.7, 0.8, 0.9]}
    line = versus_best_prompt(0.9, 30, best, (5, 2, 0.45))
    assert "n = 30" in line and "70–90% over 3 draws" in line and "better on 5, the prompt on 2" in line
    one = {"label": "instruction", "mean": 0.9, "scores": [0.9], "n": 60, "prompt_tokens": 15, "kv_positions": 0,
           "ms_per_query": 12.0, "examples_needed": 0}
    assert baseline_cells(one, "exact_match")[1] == "90.0 (95% interval 80–95)"  # Wilson, as on the Train tab
    assert baseline_cells(one, "rouge_l")[1] == "90.0"  # not a proportion: no interval
    assert baseline_cells({**one, "scores": [0.8, 1.0]}, "exact_match")[1] == "90.0 (80–100 over 2 draws)"


def _card(test: float, fresh: float, best_test: float, best_fresh: float) -> dict:
    row = lambda m: {"label": "x", "mean": m, "scores": [m]}  # noqa: E731
    return {"metrics": {"prefix": test}, "fresh": {"prefix": fresh},
            "baselines": {"test": [row(0.0), row(best_test)], "fresh": [row(best_fresh)]}}


def test_the_bar_is_five_points_over_the_strongest_prompt_or_95_percent_on_test_and_fresh():
    assert meets_bar(_card(0.80, 0.80, 0.75, 0.70))
    assert meets_bar(_card(0.96, 0.95, 0.99, 0.99))  # reaching 95% is enough
    assert not meets_bar(_card(0.80, 0.80, 0.76, 0.70))  # 4 points on test
    assert not meets_bar(_card(0.80, 0.60, 0.70, 0.58))  # fails on fresh
    assert not meets_bar({"metrics": {"prefix": 1.0}})  # no baselines measured: not shown to meet it
