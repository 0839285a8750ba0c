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
    task = get_task(name)
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
