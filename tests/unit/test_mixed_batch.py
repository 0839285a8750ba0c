"""Mixed-prefix batches: rows behind different prefixes (and none) in one batch equal each row alone and plain PEFT.

PEFT cannot batch rows with different prefixes (its mixed-adapter batches are LoRA only), so the
reference is one ``set_adapter`` + ``generate`` call per prefix, as a PEFT user would write it.
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PeftModel

from playground.generate import generate_texts_mixed, greedy_mixed, mixed_prefill
from playground.library import Library
from playground.methods import BareMethod, answer, prefix_method
from playground.prefix import PrefixSettings, create_prefix, prefix_forward
from playground.prompts import PromptFormat
from playground.service import NO_PREFIX, Limits, Playground

INPUTS = ["hi", "the cat is black", "a much longer sentence about the weather in the hills today", "le chat"]
LENGTHS = [3, None, 7, 12]  # virtual tokens per row; None: no prefix


def _randomize(prefix, seed=1, scale=8.0):
    """Move a prefix away from its init so equality checks mean something.

    The tiny random models repeat one token whatever the input; key/values this large make rows differ.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in prefix.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5).mul_(scale)


def _rows(base, lengths=LENGTHS, inputs=INPUTS):
    """(prompts, prefixes): a random prefix of each length (None stays None), prompts of different lengths."""
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    prefixes = []
    for seed, n in enumerate(lengths):
        p = None if n is None else create_prefix(base, PrefixSettings(num_virtual_tokens=n, init="random"), seed=seed)
        if p is not None:
            _randomize(p, seed + 1)
        prefixes.append(p)
    prompts = [fmt.encode_prompt(x, "base" if p is None else "prefix") for x, p in zip(inputs, prefixes)]
    assert len({len(p) for p in prompts}) == len(prompts)  # left padding differs per row
    return prompts, prefixes


def _peft_generate(model, prompt, n, pad_id, stop_ids=None):
    """Plain HF/PEFT greedy generate of one row, without stopping early unless stop ids are given."""
    ids = torch.tensor([prompt])
    kw = dict(eos_token_id=None, min_new_tokens=n) if stop_ids is None else dict(eos_token_id=list(stop_ids))
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             pad_token_id=pad_id, **kw)
    return out[0, len(prompt):].tolist()


def _peft_references(base, tmp_path, prompts, prefixes, budgets) -> list[list[int]]:
    """Plain PEFT's greedy ids per row: every prefix saved and loaded as an adapter of one PeftModel, one
    set_adapter + generate per row (no prefix: the bare model)."""
    lib, named = Library(tmp_path), [i for i, p in enumerate(prefixes) if p is not None]
    for i in named:
        lib.save(f"p{i}", prefixes[i], {"task": "t"})
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base.model), str(tmp_path / f"p{named[0]}"),
                                           adapter_name=f"p{named[0]}")
    for i in named[1:]:
        peft_model.load_adapter(str(tmp_path / f"p{i}"), adapter_name=f"p{i}")
    pad = base.tokenizer.pad_token_id
    refs = []
    for i, (q, p) in enumerate(zip(prompts, prefixes)):
        if p is not None:
            peft_model.set_adapter(f"p{i}")
        refs.append(_peft_generate(base.model if p is None else peft_model, q, budgets[i], pad))
    return refs


def test_mixed_batch_equals_each_row_alone_and_plain_peft(tiny, tmp_path):
    prompts, prefixes = _rows(tiny)
    mixed = greedy_mixed(tiny, prompts, prefixes, max_new_tokens=8)
    alone = [greedy_mixed(tiny, [q], [p], max_new_tokens=8)[0] for q, p in zip(prompts, prefixes)]
    assert mixed == alone and all(len(r) == 8 for r in mixed)
    assert len({tuple(r) for r in mixed}) == len(mixed)  # the prefixes steer the rows apart
    for i, ref in enumerate(_peft_references(tiny, tmp_path, prompts, prefixes, [8] * len(prompts))):
        assert mixed[i] == ref, f"row {i} (P={LENGTHS[i]})"


def test_first_step_logits_equal_single_row_logits(tiny):
    prompts, prefixes = _rows(tiny)
    out, mask, pos = mixed_prefill(tiny, prompts, prefixes)
    Pmax = max(n or 0 for n in LENGTHS)
    assert mask.shape == (len(prompts), Pmax + max(map(len, prompts))) and pos.shape[1] == max(map(len, prompts))
    for i, (q, p) in enumerate(zip(prompts, prefixes)):
        P = LENGTHS[i] or 0
        assert mask[i, :Pmax].tolist() == [0] * (Pmax - P) + [1] * P  # right-aligned prefix
        assert pos[i, -len(q):].tolist() == list(range(P, P + len(q)))  # as PEFT places them
        ids = torch.tensor([q])
        with torch.inference_mode():
            ref = prefix_forward(tiny, ids, torch.ones_like(ids), p).logits[0, -1]  # [vocab]
        assert torch.allclose(out.logits[i, -1], ref, atol=1e-5), f"row {i}"


def test_per_row_budgets_and_stop_ids(tiny_llama):
    prompts, prefixes = _rows(tiny_llama)
    free = greedy_mixed(tiny_llama, prompts, prefixes, max_new_tokens=10)
    budgets = [3, 0, 10, 6]
    assert [len(r) for r in greedy_mixed(tiny_llama, prompts, prefixes, budgets)] == budgets
    # Stop at the first new token of row 0 that differs from its first: rows end there, at a budget, or not at all.
    stops = (next(t for t in free[0] if t != free[0][0]),)

    def cut(row, n):
        row = row[:n]
        hit = next((k for k, t in enumerate(row) if t in stops), None)
        return row if hit is None else row[:hit + 1]

    want = [cut(r, n) for r, n in zip(free, budgets)]
    assert any(0 < len(w) < n for w, n in zip(want, budgets))  # some row really stops early
    assert any(len(w) == n and n < 10 for w, n in zip(want, budgets))  # and some row runs out of budget first
    got = greedy_mixed(tiny_llama, prompts, prefixes, budgets, stop_ids=stops)
    assert got == want
    assert got == [greedy_mixed(tiny_llama, [q], [p], n, stops)[0] for q, p, n in zip(prompts, prefixes, budgets)]
    assert greedy_mixed(tiny_llama, prompts, prefixes, 0) == [[], [], [], []]
    with pytest.raises(ValueError, match="one max_new_tokens per prompt"):
        greedy_mixed(tiny_llama, prompts, prefixes, [1, 2])


def test_mixed_texts_and_switch_equal_each_method_answering_alone(tiny_llama, tmp_path):
    _, prefixes = _rows(tiny_llama)
    tasks = {0: "sentiment", 2: "fr_en", 3: "shout"}  # budgets 4, 16 and 40 (capped at the limit below)
    pg = Playground(tiny_llama, Library(tmp_path), Limits(max_new_tokens=24))
    for i, task in tasks.items():
        pg.library.save(f"p{i}", prefixes[i], {"task": task, "base_fingerprint": tiny_llama.fingerprint})
    names = [NO_PREFIX, "p0", "p2", "p3"]
    text = "a warm and funny film"
    res = pg.switch("k", names, text)
    assert [o.name for o in res.outputs] == names and res.batched
    budgets = [min(pg._answer_budget("k", n), 24) for n in names]
    assert budgets == [24, 4, 16, 24]
    chosen = [None if n == NO_PREFIX else pg.get_prefix("k", n) for n in names]
    methods = [BareMethod() if p is None else prefix_method(p) for p in chosen]
    seq = [answer(tiny_llama, m, [text], max_new_tokens=b)[0] for m, b in zip(methods, budgets)]
    assert [o.text.removesuffix("…") if o.cut else o.text for o in res.outputs] == seq  # "…": cut at its budget
    mixed = generate_texts_mixed(tiny_llama, [text] * len(chosen), chosen, max_new_tokens=6)  # default modes
    assert mixed == [answer(tiny_llama, m, [text], max_new_tokens=6)[0] for m in methods]


