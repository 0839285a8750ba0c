"""On the real embedded model: shipped prefixes."""

from __future__ import annotations

import pytest

from playground.cli import DEFAULT_LIBRARY
from playground.recipes import RECIPES
from playground.tasks import get_task
from tests.unit.test_shipped_prefixes import library, shipped_entries


@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_shipped_prefix_still_scores_what_its_card_claims(real, name):
    from playground.evaluation import evaluate
    from playground.methods import prefix_method

    entry = next(e for e in shipped_entries() if e.name == name)
    claimed = entry.card["metrics"]
    assert entry.card["base_fingerprint"] == real.fingerprint
    task = get_task(entry.card["task"])  # sentiment_wayward: a second prefix for the sentiment task
    test = task.split("test")
    got = evaluate(real, task, test, prefix_method(library().load(name, real))).score
    tolerance = max(0.02, 1.0 / len(test))  # one example may flip on another CPU's float rounding
    assert got >= claimed["prefix"] - tolerance, f"{name}: {got:.4f} now, card claims {claimed['prefix']:.4f}"


@pytest.mark.real_model
def test_a_shipped_prefix_loads_in_plain_peft_and_answers_the_same(real):
    """prefixes/sentiment is a real PEFT adapter: PeftModel's greedy tokens equal ours."""
    import copy

    import torch
    from peft import PeftModel

    from playground.generate import greedy_mixed
    from playground.prompts import PromptFormat

    fmt = PromptFormat.for_tokenizer(real.tokenizer)
    ids = fmt.encode_prompt("A clumsy, joyless sequel that wastes its cast.", "prefix")
    ours = greedy_mixed(real, [ids], [library().load("sentiment", real)], max_new_tokens=4, stop_ids=fmt.stop_ids)[0]
    peft_model = PeftModel.from_pretrained(copy.deepcopy(real.model), str(DEFAULT_LIBRARY / "sentiment")).eval()
    with torch.inference_mode():
        out = peft_model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                  max_new_tokens=4, do_sample=False, eos_token_id=list(fmt.stop_ids),
                                  pad_token_id=real.tokenizer.pad_token_id)
    theirs = out[0, len(ids):].tolist()
    assert theirs[:len(ours)] == ours
    assert real.tokenizer.decode([t for t in ours if t not in fmt.stop_ids]).strip() == "negative"


@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.parametrize("name", ["sentiment", "topic"])
def test_the_cards_strongest_prompt_still_scores_what_they_claim(real, name):
    """The prompts on the cards were measured on a GPU in fp32: their first draw scores the same here, on the CPU."""
    from playground.baselines import specs
    from playground.evaluation import evaluate
    from playground.methods import create_method

    card = next(e for e in shipped_entries() if e.name == name).card
    rows = {r["key"]: r for r in card["baselines"]["test"]}
    best = max(rows.values(), key=lambda r: r["mean"])
    task = get_task(name)
    key, _, ms, _ = next(s for s in specs(task) if s[0] == best["key"])
    test = task.split("test")
    got = evaluate(real, task, test, create_method(real, ms, task.instruction, 0, task.split("train"))).score
    assert abs(got - best["scores"][0]) <= 1.0 / len(test) + 1e-9, f"{name} {key}: {got:.4f} now, card {best['scores'][0]}"
