"""The logit lens and the nearest tokens through the facade: where the target comes from, scores, limits."""

from __future__ import annotations

import pytest
import torch

from playground.errors import PlaygroundError
from playground.generate import answer_text, greedy_mixed
from playground.lens import logit_lens
from playground.prefix import PrefixSettings, create_prefix
from playground.prompts import PromptFormat
from playground.service import JUST_TRAINED
from playground.tasks import get_task

from .support import save_random, trained


def _save_text(pg, name: str, text: str, metrics: dict | None = None) -> None:
    prefix = create_prefix(pg.base, PrefixSettings(8, init="text", init_text=text))  # past the chat template's head
    card = {"task": "sentiment", "base_model": pg.base.name, "base_fingerprint": pg.base.fingerprint}
    pg.library.save(name, prefix, {**card, **(metrics or {})})


def test_lens_target_defaults_to_the_gold_answer_of_a_held_out_input(pg):
    save_random(pg, "p")
    ex = get_task("sentiment").split("validation")[0]
    res = pg.lens("k", "p", ex.input)
    assert res.target == ex.target and "gold answer of this validation input of sentiment" in res.target_source
    assert res.with_prefix.prob.shape == (pg.base.num_layers,)
    typed = pg.lens("k", "p", ex.input, "negative" if ex.target == "positive" else "positive")
    assert typed.target != ex.target and typed.target_source == "the target you typed"
    # the service's figures are the engine's, on the same prompt and prefix
    ref = logit_lens(pg.base, pg.get_prefix("k", "p"), ex.input, ex.target, get_task("sentiment").instruction)
    assert torch.equal(ref.with_prefix.prob, res.with_prefix.prob) and torch.equal(ref.without.rank, res.without.rank)


def test_lens_target_defaults_to_the_prefixs_own_greedy_answer(pg):
    save_random(pg, "p")
    text = "An input no split holds, typed by a learner."
    fmt = PromptFormat.for_tokenizer(pg.base.tokenizer)
    prefix = pg.get_prefix("k", "p")
    ids = greedy_mixed(pg.base, [fmt.encode_prompt(text, "prefix")], [prefix],
                       min(get_task("sentiment").max_new_tokens, pg.limits.max_new_tokens), fmt.stop_ids)[0]
    want = answer_text(fmt, ids)
    if not want:  # a random tiny model may answer nothing: then the service asks for a target
        with pytest.raises(PlaygroundError, match="answered nothing"):
            pg.lens("k", "p", text)
        return
    res = pg.lens("k", "p", text)
    assert res.target == want and res.target_source == "the prefix's own greedy answer"


def test_lens_refuses_empty_or_overlong_prompts_and_no_prefix(pg):
    save_random(pg, "p")
    with pytest.raises(PlaygroundError, match="prompt is empty"):
        pg.lens("k", "p", "   ")
    with pytest.raises(PlaygroundError, match="characters; the limit is"):
        pg.lens("k", "p", "x" * (pg.limits.max_prompt_chars + 1))
    with pytest.raises(PlaygroundError, match="Pick a prefix"):
        pg.lens("k", "", "a fine film")
    with pytest.raises(PlaygroundError, match="target has"):
        pg.lens("k", "p", "a fine film", "y" * (pg.limits.max_prompt_chars + 1))


def test_lens_on_the_just_trained_prefix(pg):
    trained(pg)
    res = pg.lens("k", JUST_TRAINED, "A dull, lifeless film.", "negative")
    assert res.target == "negative" and ((res.with_prefix.prob >= 0) & (res.with_prefix.prob <= 1)).all()


def test_nearest_compares_two_prefixes_with_their_held_out_scores(pg):
    _save_text(pg, "a", "The movie was great.", {"metrics": {"split": "test", "n": 60, "metric": "exact_match",
                                                             "prefix": 0.9}, "validation": {"split": "validation",
                                                                                            "n": 50, "prefix": 0.8}})
    _save_text(pg, "b", "Whisk the eggs well.")
    cmp = pg.nearest("k", ["a", "b", "a"], k=2)
    assert cmp.names == ["a", "b"]
    assert [n.ids.shape for n in cmp.nearest] == [(8, 2), (8, 2)]  # [P, k] each
    assert cmp.scores[0] == [{"split": "test", "n": 60, "metric": "exact_match", "score": 0.9},
                             {"split": "validation", "n": 50, "metric": "exact_match", "score": 0.8}]
    assert cmp.scores[1] == []  # its card has no held-out score
    assert 0 < cmp.overlap < 1 and set(cmp.shared) == cmp.nearest[0].words() & cmp.nearest[1].words()
    assert pg.base.derived["nearest_vocab_keys"] is not None
    with pytest.raises(PlaygroundError, match="Pick a prefix"):
        pg.nearest("k", [])
    with pytest.raises(PlaygroundError, match="from 1 to 20"):
        pg.nearest("k", ["a"], k=0)
    with pytest.raises(PlaygroundError, match="the limit is"):
        pg.nearest("k", ["a", "b", "c", "d"])


def test_nearest_scores_of_the_just_trained_prefix(pg):
    run = trained(pg)
    cmp = pg.nearest("k", [JUST_TRAINED])
    last = run.records[-1]
    assert cmp.scores == [[{"split": "validation", "n": run.held_out_n, "metric": "exact_match",
                            "score": last.metric}]]
    assert cmp.overlap == 1.0
