"""On the real embedded model: the logit lens from the CLI, and the nearest tokens of a text-initialized prefix."""

from __future__ import annotations

import json

import pytest

from playground.cli import main
from playground.tasks import get_task

pytestmark = pytest.mark.real_model


def test_cli_lens_follows_the_gold_answer_through_every_layer(capsys):
    ex = get_task("sentiment").split("test")[0]
    assert main(["lens", "--prefix", "sentiment", "--prompt", ex.input, "--nearest", "3", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    out = json.loads(lines[-1])  # JSON last, after the readable table
    assert out["target"] == ex.target and out["target_source"] == "the gold answer (test split)"
    assert [r["layer"] for r in out["layers"]] == list(range(30))
    assert all(0 <= r[run]["prob"] <= 1 and r[run]["rank"] >= 1 for r in out["layers"]
               for run in ("without", "with_prefix"))
    last = out["layers"][-1]
    assert last["with_prefix"]["rank"] == 1 and last["with_prefix"]["top"] == out["target_token"]
    assert last["with_prefix"]["prob"] > last["without"]["prob"]
    assert len(out["nearest"]) == 20 and all(len(slot) == 3 for slot in out["nearest"])
    assert any(line.startswith("   29 |") for line in lines)  # the table's last layer row


def test_a_text_prefix_on_smollm2_finds_its_own_tokens(real):
    """The first-layer key is RoPE(k_proj(input_layernorm(embed(token)))) on SmolLM2 too: each slot of a prefix
    initialized from a text is nearest the very token it was copied from."""
    from playground.nearest import nearest_tokens
    from playground.prefix import PrefixSettings, create_prefix

    text = "Whisk two eggs with a pinch of salt, fold in the flour, and bake the cake for twenty minutes."
    P = 20
    prefix = create_prefix(real, PrefixSettings(P, init="text", init_text=text))
    ids = real.tokenizer.apply_chat_template([{"role": "system", "content": text}], tokenize=True,
                                             add_generation_prompt=False, return_dict=False)[:P]
    got = nearest_tokens(real, prefix, k=2)
    assert got.ids[:, 0].tolist() == ids
    assert (got.cosine[:, 0] > 0.999).all()
    assert real.derived["nearest_vocab_keys"].shape == (49_152, 192)  # [vocab, kv_head * head_dim]
