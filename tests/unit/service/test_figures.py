"""Figures for training and attention."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest
import torch

from playground.attention import PrefixAttention
from playground.figures import (
    head_figure,
    layer_figure,
    loss_figure,
    metric_figure,
    query_token_figure,
    virtual_token_figure,
)
from playground.tasks import get_task

from .support import rec


def fake_attention(L=3, H=4, T=5, P=2, seed=0) -> PrefixAttention:
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(L, H, T, P, generator=g) / P
    share = w.sum(-1)
    return PrefixAttention([f"t{i}" for i in range(T - 1)] + ["t0"], w, share.mean(-1), share.mean((-1, -2)),
                           share.mean(1))


def test_training_figures():
    records = [rec(1), rec(2, 0.25), rec(3), rec(4, 0.5)]
    fig = loss_figure(records, total_steps=10)
    assert isinstance(fig, go.Figure) and len(fig.data) == 1
    assert list(fig.data[0].x) == [1, 2, 3, 4] and list(fig.data[0].y) == [r.loss for r in records]
    assert tuple(fig.layout.xaxis.range) == (-0.5, 10.5)  # room for the metric's step 0 beside it
    assert len(loss_figure([]).data[0].x or ()) == 0
    fig = metric_figure(records, "exact match", 10, {"base": 0.1, "instruction": 0.3})
    assert list(fig.data[0].x) == [2, 4] and list(fig.data[0].y) == [25.0, 50.0]
    # the initialized prefix's score is step 0; the held-out set is named in the title
    fig = metric_figure(records, "exact match", 10, start=0.125, held_out="n = 8, validation")
    assert list(fig.data[0].x) == [0, 2, 4] and list(fig.data[0].y) == [12.5, 25.0, 50.0]
    assert "(n = 8, validation)" in fig.layout.title.text
    fig = metric_figure(records, "exact match", 10, {"base": 0.1, "instruction": 0.3})
    assert sorted(s.y0 for s in fig.layout.shapes) == pytest.approx([10.0, 30.0])
    assert "exact match" in fig.layout.title.text
    assert len(metric_figure(records, "exact match").layout.shapes) == 0


def test_attention_figures_have_the_right_shapes():
    L, H, T, P = 3, 4, 5, 2
    a, b = fake_attention(L, H, T, P, seed=0), fake_attention(L, H, T, P, seed=1)
    fig = layer_figure({"first": a, "second": b})
    assert [t.name for t in fig.data] == ["first", "second"]
    assert all(len(t.y) == L and list(t.x) == list(range(L)) for t in fig.data)
    assert list(fig.data[1].y) == pytest.approx(b.layer_share.tolist())
    z = head_figure(a, "first").data[0].z  # [head][layer]
    assert len(z) == H and all(len(row) == L for row in z)
    assert z[1][2] == pytest.approx(a.head_share[2, 1].item())
    z = virtual_token_figure(a).data[0].z  # [virtual token][layer]
    assert len(z) == P and all(len(row) == L for row in z)
    assert z[1][0] == pytest.approx(a.weights[0, :, :, 1].mean().item())
    fig = query_token_figure(a, "first")
    hm = fig.data[0]
    assert len(hm.z) == T and all(len(row) == L for row in hm.z) and len(hm.y) == T
    assert len(set(hm.y)) == T  # repeated tokens get distinct labels
    assert hm.z[4][1] == pytest.approx(a.token_share[1, 4].item())


def test_a_closed_or_idle_session_stops_its_comparison_too(pg):
    """The Compare lab belongs to the Playground: session teardown stops that session's lab runs."""
    task = get_task("sentiment")
    assert pg.lab.max_steps == pg.limits.max_steps and pg.lab.budget is pg.budget
    gen = pg.lab.stream("tab", task, ["prompt", "lora"], steps=2, eval_every=0, eval_examples=2)
    assert next(gen)[0] == "prompt"
    pg.sessions.get("tab")
    assert pg.close_session("tab") is False  # no Train-tab run was going
    assert all(n == "prompt" for n, _ in gen)  # the step finishes, LoRA never starts
    heard = []
    pg.on_drop = heard.append
    idle = pg.lab.stream("idle", task, ["prompt", "lora"], steps=2, eval_every=0, eval_examples=2)
    next(idle)
    pg.sessions.on_drop(["idle"])  # what a sweep reports
    assert heard == [["idle"]] and all(n == "prompt" for n, _ in idle)
