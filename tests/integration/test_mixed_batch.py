"""On the real embedded model: mixed batch."""

from __future__ import annotations

import contextlib
import copy

import pytest
from peft import PeftModel

from playground.generate import greedy_mixed
from playground.peft_folder import load_prefix
from playground.prompts import PromptFormat
from tests.conftest import ROOT
from tests.unit.test_mixed_batch import _peft_generate


@pytest.mark.real_model
def test_shipped_prefixes_in_one_batch_equal_plain_peft_one_by_one(real):
    """Four shipped prefixes and the bare model on one input: one mixed batch == sequential PeftModel.generate."""
    names = ["sentiment", "topic", "shout", "fr_en"]
    prefixes = [load_prefix(ROOT / "prefixes" / n, real) for n in names] + [None]
    fmt = PromptFormat.for_tokenizer(real.tokenizer)
    text = "The acting was wooden and the plot made no sense at all."
    prompts = [fmt.encode_prompt(text, "base" if p is None else "prefix") for p in prefixes]
    mixed = greedy_mixed(real, prompts, prefixes, max_new_tokens=12, stop_ids=fmt.stop_ids)
    peft_model = PeftModel.from_pretrained(copy.deepcopy(real.model), str(ROOT / "prefixes" / names[0]),
                                           adapter_name=names[0]).eval()
    for n in names[1:]:
        peft_model.load_adapter(str(ROOT / "prefixes" / n), adapter_name=n)
    pad = real.tokenizer.pad_token_id
    for i, (q, p) in enumerate(zip(prompts, prefixes)):
        if p is not None:
            peft_model.set_adapter(names[i])
        with peft_model.disable_adapter() if p is None else contextlib.nullcontext():  # no prefix: the bare model
            ref = _peft_generate(peft_model, q, 12, pad, fmt.stop_ids)
        assert mixed[i] == ref, f"{names[i] if p is not None else 'no prefix'}: {mixed[i]} vs {ref}"
    assert len({tuple(r) for r in mixed}) == len(mixed)
