"""Prefixes by name, Switch and Attention through the facade."""

from __future__ import annotations

import os

import pytest
import torch

from playground.attention import PrefixAttention
from playground.errors import PlaygroundError
from playground.figures import layer_figure
from playground.generate import answer_text, ran_out
from playground.methods import answer, prefix_method
from playground.prompts import PromptFormat
from playground.service import JUST_TRAINED, NO_PREFIX
from playground.tasks import get_task

from .support import LIMITS, save_random, trained


def test_get_prefix_just_trained_and_library_cache(pg):
    with pytest.raises(PlaygroundError, match="not trained"):
        pg.get_prefix("k", JUST_TRAINED)
    run = trained(pg)
    assert pg.get_prefix("k", JUST_TRAINED) is run.prefix
    with pytest.raises(PlaygroundError, match="not trained"):
        pg.get_prefix("someone-else", JUST_TRAINED)
    first = save_random(pg, "p", seed=1)
    a = pg.get_prefix("k", "p")
    assert torch.equal(a.embeddings(), first) and pg.get_prefix("k", "p") is a  # cached
    folder = pg.library.path("p")
    old = {f.name: (f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir()}
    second = save_random(pg, "p", seed=2, overwrite=True)
    # Same names and sizes; give the new files the old mtimes too, as a coarse filesystem clock could.
    for f in folder.iterdir():
        assert f.stat().st_size == old[f.name][0]
        os.utime(f, ns=(old[f.name][1], old[f.name][1]))
    b = pg.get_prefix("k", "p")
    assert b is not a and torch.equal(b.embeddings(), second)  # the file changed: reloaded
    assert pg.get_prefix("k", "p") is b
    with pytest.raises(PlaygroundError, match="No prefix named 'ghost'"):
        pg.get_prefix("k", "ghost")
    with pytest.raises(PlaygroundError, match="valid prefix name"):
        pg.get_prefix("k", "../lib")


def test_switch_answers_once_per_name_with_the_right_prefix(pg, monkeypatch):
    run = trained(pg)
    save_random(pg, "p")
    text = "  A warm and funny film. "
    calls = []
    real = pg.scheduler.generate
    fmt = PromptFormat.for_tokenizer(pg.base.tokenizer)

    def spy(key, prompts, prefixes, budgets, stop_ids=(), interactive=False):
        c = dict(key=key, prompts=prompts, prefixes=prefixes, budgets=budgets, interactive=interactive, out={})
        calls.append(c)
        for i, ids in real(key, prompts, prefixes, budgets, stop_ids, interactive):
            said = answer_text(fmt, ids)
            c["out"][i] = said + "…" if ran_out(ids, budgets[i], fmt.stop_ids) else said
            yield i, ids

    monkeypatch.setattr(pg.scheduler, "generate", spy)
    res = pg.switch("k", [NO_PREFIX, JUST_TRAINED, "p", "p"], text)
    assert [o.name for o in res.outputs] == [NO_PREFIX, JUST_TRAINED, "p"]
    assert all(isinstance(o.text, str) and o.seconds >= 0 and not o.pending for o in res.outputs)
    assert 0 <= res.switch_seconds <= res.total_seconds and res.done and res.input == text.strip()
    # One request to the scheduler's decode loop, a row per name, each behind its own prefix with its task's
    # answer budget capped by the limit.
    assert len(calls) == 1 and res.batched
    c = calls[0]
    n = min(get_task("sentiment").max_new_tokens, LIMITS["max_new_tokens"])
    assert c["interactive"]  # a learner watches it: it goes ahead of scoring chunks
    assert c["key"] == "k" and c["prompts"] == [fmt.encode_prompt(text.strip(), m) for m in ("base", "prefix", "prefix")]
    assert c["budgets"] == [LIMITS["max_new_tokens"], n, n]
    assert [o.budget for o in res.outputs] == c["budgets"]
    assert c["prefixes"][0] is None and c["prefixes"][1] is run.prefix
    assert c["prefixes"][2] is pg.get_prefix("k", "p")  # the library cache's object
    assert [o.text for o in res.outputs] == [c["out"][i] for i in range(3)]
    # ... and each answer equals that prefix run alone ("…" marks one cut at its budget).
    alone = answer(pg.base, prefix_method(pg.get_prefix("k", "p")), [text.strip()], max_new_tokens=n)[0]
    assert res.outputs[2].text == alone + ("…" if res.outputs[2].cut else "")


def test_switch_refusals(pg):
    save_random(pg, "p")
    for bad in ("", "   \n"):
        with pytest.raises(PlaygroundError, match="prompt is empty"):
            pg.switch("k", ["p"], bad)
    with pytest.raises(PlaygroundError, match="limit is 200"):
        pg.switch("k", ["p"], "x" * 201)
    with pytest.raises(PlaygroundError, match="limit is 3"):
        pg.switch("k", [NO_PREFIX, "p", "q", "r"], "hello")
    with pytest.raises(PlaygroundError, match="Pick at least one"):
        pg.switch("k", [], "hello")
    with pytest.raises(PlaygroundError, match="not trained"):
        pg.switch("k", [JUST_TRAINED], "hello")
    assert len(pg.switch("k", [NO_PREFIX], "x" * 200).outputs) == 1  # exactly at the limit is fine


def test_attention_per_prefix_name(pg):
    run = trained(pg)
    save_random(pg, "p", n=3)
    out = pg.attention("k", "  a lovely film  ", [NO_PREFIX, "p", JUST_TRAINED, "p", ""])
    assert list(out) == ["p", JUST_TRAINED]
    L, H = pg.base.num_layers, pg.base.num_heads
    for name, P in (("p", 3), (JUST_TRAINED, run.prefix.num_virtual_tokens)):
        att = out[name]
        assert isinstance(att, PrefixAttention)
        T = len(att.tokens)
        assert att.weights.shape == (L, H, T, P) and att.head_share.shape == (L, H)
        assert att.layer_share.shape == (L,) and att.token_share.shape == (L, T)
    fig = layer_figure(out)  # the figure the UI draws from this result
    assert [t.name for t in fig.data] == list(out) and all(len(t.y) == L for t in fig.data)
    with pytest.raises(PlaygroundError, match="Pick a prefix"):
        pg.attention("k", "hello", [NO_PREFIX])
    with pytest.raises(PlaygroundError, match="prompt is empty"):
        pg.attention("k", "  ", ["p"])
    with pytest.raises(PlaygroundError, match="limit is 200"):
        pg.attention("k", "y" * 201, ["p"])
