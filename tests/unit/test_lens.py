"""The logit lens on tiny models: its last layer is the model's own output, with and without a prefix."""

from __future__ import annotations

import threading

import torch

from playground import lens
from playground.prefix import PrefixSettings, create_prefix, prefix_forward
from playground.prompts import PromptFormat

TEXT = "A warm, funny film with a great cast."


def _prefix(base, seed=1):
    prefix = create_prefix(base, PrefixSettings(6, init="random"), "", seed)
    prefix.config.inference_mode = True  # as loaded from the library: embeddings used as they are
    return prefix


def _ids(base):
    return PromptFormat.for_tokenizer(base.tokenizer).encode_prompt(TEXT, "prefix", "Classify it.")


def test_last_layer_of_the_lens_is_the_models_own_logits(tiny):
    ids = _ids(tiny)
    hidden, logits = lens.read_layers(tiny, ids)
    assert hidden.shape == (tiny.num_layers, tiny.config.hidden_size)  # [layer, hidden]
    with torch.inference_mode():
        x = torch.tensor([ids])
        own = tiny.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, -1]  # [vocab]
    read = lens.lens_logits(tiny, hidden)  # [layer, vocab]
    assert torch.allclose(read[-1], own, atol=1e-5)
    assert torch.allclose(logits, own, atol=1e-5)
    assert not torch.allclose(read[0], own, atol=1e-3)  # earlier layers read something else


def test_with_a_prefix_the_last_layer_equals_prefix_forward(tiny):
    prefix = _prefix(tiny)
    ids = _ids(tiny)
    hidden, _ = lens.read_layers(tiny, ids, prefix)
    with torch.inference_mode():
        x = torch.tensor([ids])
        own = prefix_forward(tiny, x, torch.ones_like(x), prefix).logits[0, -1]  # [vocab]
        plain = tiny.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, -1]
    assert torch.allclose(lens.lens_logits(tiny, hidden)[-1], own, atol=1e-5)
    assert not torch.allclose(own, plain, atol=1e-3)  # the prefix did change the answer


def test_logit_lens_reports_rank_probability_and_top_token_per_layer(tiny):
    prefix = _prefix(tiny)
    res = lens.logit_lens(tiny, prefix, TEXT, "positive", "Classify it.")
    fmt = PromptFormat.for_tokenizer(tiny.tokenizer)
    assert res.target_id == tiny.tokenizer(fmt.target("positive"), add_special_tokens=False)["input_ids"][0]
    for run in (res.without, res.with_prefix):
        L = tiny.num_layers
        assert run.prob.shape == run.rank.shape == run.top_prob.shape == (L,) and len(run.top_tokens) == L
        assert ((run.prob >= 0) & (run.prob <= 1)).all()
        assert (run.rank >= 1).all() and (run.top_prob >= run.prob - 1e-7).all()
        # rank and probability agree with a plain sort of the layer's distribution
        probs = run.logits.softmax(-1)  # [layer, vocab]
        order = probs.argsort(-1, descending=True)  # [layer, vocab]
        for layer in range(L):
            assert order[layer].tolist().index(res.target_id) + 1 == int(run.rank[layer])
            assert torch.isclose(probs[layer, res.target_id], run.prob[layer])
        top1 = run.rank == 1
        assert (run.top_ids[top1] == res.target_id).all()
    assert not torch.allclose(res.without.prob, res.with_prefix.prob)


def test_hooks_are_inert_in_other_threads(tiny):
    ids = _ids(tiny)
    lens.read_layers(tiny, ids)  # installs the hooks
    assert tiny.derived["lens_hooks"]
    sink: dict = {}
    lens._LOCAL.sink = sink  # this thread is "reading" ...
    try:
        def other():  # ... while another thread runs a forward of the shared model
            with torch.inference_mode():
                x = torch.tensor([ids])
                tiny.model(input_ids=x, attention_mask=torch.ones_like(x))
        t = threading.Thread(target=other)
        t.start()
        t.join()
    finally:
        lens._LOCAL.sink = None
    assert sink == {}  # the other thread's layers went straight through
    lens.read_layers(tiny, ids)
    assert len(tiny.derived["lens_hooks"]) == tiny.num_layers  # installed once, not once per call


def test_empty_prompt_or_target_is_a_clear_error(tiny_llama):
    import pytest

    from playground.errors import PlaygroundError

    prefix = _prefix(tiny_llama)
    with pytest.raises(PlaygroundError, match="prompt is empty"):
        lens.logit_lens(tiny_llama, prefix, "  ", "positive")
    with pytest.raises(PlaygroundError, match="target answer is empty"):
        lens.logit_lens(tiny_llama, prefix, TEXT, " ")


def test_lens_figure_plots_one_point_per_layer_with_the_top_token_on_hover(tiny_llama):
    from playground.figures import lens_figure

    res = lens.logit_lens(tiny_llama, _prefix(tiny_llama), TEXT, "positive")
    fig = lens_figure(res, "p")
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"without prefix: probability", "without prefix: rank", "with p: probability",
                            "with p: rank"}
    L = tiny_llama.num_layers
    assert all(list(t.x) == list(range(L)) for t in fig.data)
    assert list(by_name["with p: probability"].y) == res.with_prefix.prob.tolist()
    assert list(by_name["without prefix: rank"].y) == res.without.rank.tolist()
    tops = [row[0] for row in by_name["with p: rank"].customdata]
    assert tops == [t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") for t in res.with_prefix.top_tokens]
    assert fig.layout.yaxis2.type == "log"
