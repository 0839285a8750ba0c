"""On the real embedded model: rows behind shipped prefixes and none join the decode loop at staggered steps."""

from __future__ import annotations

import pytest

from playground.decodeloop import DecodeLoop
from playground.generate import greedy_mixed
from playground.peft_folder import load_prefix
from playground.prompts import PromptFormat
from tests.conftest import ROOT


@pytest.mark.real_model
def test_shipped_prefixes_joining_at_staggered_steps_equal_each_row_alone(real):
    """Four shipped prefixes and the bare model, joining at steps 0, 0, 1, 5 and 8: each row == greedy_mixed alone."""
    names = ["sentiment", "topic", "shout", "fr_en", None]
    prefixes = [None if n is None else load_prefix(ROOT / "prefixes" / n, real) for n in names]
    fmt = PromptFormat.for_tokenizer(real.tokenizer)
    texts = ["The acting was wooden and the plot made no sense at all.", "Stocks fell sharply after the report.",
             "please keep the noise down", "Le chat dort sur le canapé.", "What is the capital of France?"]
    prompts = [fmt.encode_prompt(x, "base" if p is None else "prefix") for x, p in zip(texts, prefixes)]
    budgets = [4, 8, 12, 14, 10]
    at = [0, 0, 1, 5, 8]  # the step before which row i joins; rows 0 and 1 in one join call (they end at step 1)
    loop, got = DecodeLoop(real), {}
    for s in range(max(at) + max(budgets) + 1):
        if s == 0:
            loop.join("r0", prompts[:2], prefixes[:2], budgets[:2], fmt.stop_ids)
        for i in range(2, len(at)):
            if at[i] == s:
                loop.join(f"r{i}", [prompts[i]], [prefixes[i]], [budgets[i]], fmt.stop_ids)
        for tag, k, ids in loop.step():
            got[int(tag[1:]) + k] = ids
    assert loop.rows == 0 and loop.positions == 0
    for i, (q, p, n) in enumerate(zip(prompts, prefixes, budgets)):
        alone = greedy_mixed(real, [q], [p], n, fmt.stop_ids)[0]
        assert got[i] == alone, f"{names[i] or 'no prefix'}: {got[i]} vs {alone}"
    assert len({tuple(r) for r in got.values()}) == len(got)
