"""Unit tests on tiny models: the inference-overhead measurement and its figure."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest
import torch

from playground.figures import overhead_figure
from playground.generate import greedy_mixed
from playground.overhead import (
    OverheadPoint,
    cache_nbytes,
    fit_line,
    fit_overhead,
    forced_decode,
    kv_cache_bytes,
    measure_overhead,
    prompt_ids,
    random_prefix,
)
from playground.prefix import PrefixSettings, create_prefix


def test_grid_is_complete_and_the_measured_cache_matches_the_formula(tiny):
    Ps, Ts, N = (0, 2, 6), (3, 9), 4
    calls = []
    points = measure_overhead(tiny, Ps, Ts, new_tokens=N, repeats=1, progress=lambda f, m: calls.append(f))
    assert sorted((p.P, p.T) for p in points) == sorted((P, T) for P in Ps for T in Ts)
    for p in points:
        assert p.new_tokens == N
        assert p.ttft_s > 0 and p.per_token_s > 0
        assert p.kv_bytes_measured == p.kv_bytes_computed == kv_cache_bytes(tiny, p.P + p.T + N - 1)
    assert calls[0] == 0 and calls[-1] == 1.0
    # layer x 2 x kv_head x head_dim x positions x 4 bytes (fp32); tiny llama: GQA with 2 kv heads of 16
    assert kv_cache_bytes(tiny, 10) == tiny.num_layers * 2 * tiny.num_kv_heads * tiny.head_dim * 10 * 4


@pytest.mark.parametrize("P", [0, 3])
def test_forced_decode_gives_greedys_tokens(tiny, P):
    """The timed decode is generate's own: the same tokens as greedy_mixed when no stop id ends it."""
    prefix = random_prefix(tiny, P, seed=1)
    ids = prompt_ids(tiny, 7)
    assert len(ids) == 7
    run = forced_decode(tiny, ids, prefix, new_tokens=6)
    assert run.tokens == greedy_mixed(tiny, [ids], [prefix], max_new_tokens=6)[0]
    assert len(run.step_s) == 5 and run.ttft_s > 0


def test_random_prefix_has_the_shapes_create_prefix_gives(tiny):
    """Built without wrapping the shared model in PEFT, but shaped as PEFT would shape it."""
    ours = random_prefix(tiny, 4)
    ref = create_prefix(tiny, PrefixSettings(num_virtual_tokens=4, init="random"))
    for field in ("num_virtual_tokens", "num_layers", "token_dim", "num_attention_heads", "num_transformer_submodules"):
        assert getattr(ours.config, field) == getattr(ref.config, field), field
    kv_ours, kv_ref = ours.key_values(2, torch.float32), ref.key_values(2, torch.float32)
    assert [k.shape for k, _ in kv_ours] == [k.shape for k, _ in kv_ref]  # each [batch, kv_head, P, head_dim]
    assert cache_nbytes(ours.cache(1, torch.float32)) == kv_cache_bytes(tiny, 4)
    assert random_prefix(tiny, 0) is None


def _point(P, T, per_token_ms, ttft_ms):
    return OverheadPoint(P, T, 8, ttft_ms / 1000, per_token_ms / 1000, 0, 0)


def test_fit_recovers_a_known_line():
    a, b, r2 = fit_line([0, 8, 32, 128, 512], [20 + 0.01 * x for x in (0, 8, 32, 128, 512)])
    assert (a, b, r2) == (pytest.approx(20), pytest.approx(0.01), pytest.approx(1))
    points = [_point(P, T, 10 + 0.02 * P + (0.001 * T), 50 + 0.1 * P + T) for T in (16, 256) for P in (0, 32, 512)]
    fits = fit_overhead(points)
    assert [f.T for f in fits] == [16, 256]
    f = fits[0]
    assert f.per_token_ms == pytest.approx(10.016) and f.per_token_ms_per_vt == pytest.approx(0.02)
    assert f.ttft_ms == pytest.approx(66) and f.ttft_ms_per_vt == pytest.approx(0.1)
    assert (f.P_min, f.P_max) == (0, 512)
    assert f.per_token_added == pytest.approx((10.016 + 0.02 * 512) / 10.016 - 1)
    assert f.ttft_added == pytest.approx((66 + 51.2) / 66 - 1)
    # noise lowers r2 below 1
    noisy = fit_line([0, 1, 2, 3], [0, 1.5, 1.5, 3])
    assert noisy[2] < 1


def test_overhead_figure_has_three_lines_per_prompt_length():
    points = [_point(P, T, 10 + 0.02 * P, 50 + 0.1 * P) for T in (16, 256) for P in (0, 32, 512)]
    for p in points:
        p.kv_bytes_measured = p.kv_bytes_computed = (p.P + p.T) * 46_080
    fig = overhead_figure(points)
    assert isinstance(fig, go.Figure)
    names = [t.name for t in fig.data]
    assert names == ["per token (T=16)", "first token (T=16)", "KV cache (T=16)",
                     "per token (T=256)", "first token (T=256)", "KV cache (T=256)"]
    assert list(fig.data[0].x) == [0, 32, 512]
    assert fig.data[0].y[-1] == pytest.approx(10 + 0.02 * 512)
    assert fig.data[2].y[-1] == pytest.approx((512 + 16) * 46_080 / 1e6)  # MB
    assert fig.data[2].yaxis == "y2" and fig.data[0].yaxis == "y"  # the cache on its own axis


def test_the_learn_tab_grid_fits_the_models_positions(tiny, tmp_path):
    """The tiny models have 512 positions: P = 512 plus a prompt would not fit, so it is left out."""
    from playground.library import Library
    from playground.service import Playground

    points = Playground(tiny, Library(tmp_path / "lib")).overhead()
    Ps = [p.P for p in points]
    assert Ps == [0, 32, 128] and {p.T for p in points} == {16}
    assert fit_overhead(points)[0].P_max == 128
