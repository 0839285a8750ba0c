"""The scheduler on the real model: students trained together in shared ticks, and scored and answered in the
shared decode loop, get exactly what each gets alone."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from playground.library import Library
from playground.prefix import PrefixSettings
from playground.service import NO_PREFIX, Playground
from playground.tasks import get_task
from playground.training import TrainSettings

pytestmark = [pytest.mark.integration, pytest.mark.real_model]

ROOT = Path(__file__).resolve().parents[2]
RUNS = [("sentiment", PrefixSettings(8, "task"), TrainSettings(1e-2, 2, 4, 0, 0, 6, "fp32")),
        ("capitals", PrefixSettings(12, "random"), TrainSettings(2e-2, 2, 3, 1, 0, 6, "fp32"))]


def test_a_class_in_shared_ticks_gets_what_each_student_gets_alone(real, tmp_path):
    shutil.copytree(ROOT / "prefixes", tmp_path / "shipped")
    results = {}
    for scheduled in (True, False):
        pg = Playground(real, Library(tmp_path / f"lib{scheduled}", shipped=tmp_path / "shipped"), scheduled=scheduled)
        try:
            runs = [pg.start_run(f"s{i}", get_task(t), p, s) for i, (t, p, s) in enumerate(RUNS)]
            switch = {}
            taken, release = threading.Event(), threading.Event()

            def holder():  # keeps the model while both runs queue their first step, so they share a tick
                with pg.scheduler.turn("holder"):
                    taken.set()
                    release.wait(60)

            threading.Thread(target=holder, daemon=True).start()
            assert taken.wait(60)
            threads = [threading.Thread(target=lambda r=r: list(pg.run_steps(r))) for r in runs]
            threads.append(threading.Thread(target=lambda: switch.update(
                out=pg.switch("w", [*pg.switch_defaults(2), NO_PREFIX], "The film was slow but the end was lovely."))))
            for t in threads:
                t.start()
            deadline = time.monotonic() + 60
            while scheduled and pg.scheduler.load()["train"] < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            release.set()
            for t in threads:
                t.join(timeout=600)
            assert all(r.state == "finished" for r in runs)
            results[scheduled] = (runs, switch["out"])
            if scheduled:
                assert max(pg.scheduler.tick_runs) == 2  # the two runs did share ticks
        finally:
            pg.close()
    (shared, sw_shared), (alone, sw_alone) = results[True], results[False]
    for a, b in zip(shared, alone):
        assert [r.loss for r in a.records] == pytest.approx([r.loss for r in b.records], rel=1e-4, abs=1e-5)
        assert a.records[-1].predictions == b.records[-1].predictions
        for x, y in zip(a.prefix.parameters(), b.prefix.parameters()):
            assert torch.allclose(x, y, atol=1e-5, rtol=1e-4)
    assert [o.text for o in sw_shared.outputs] == [o.text for o in sw_alone.outputs]


def test_attention_views_in_one_forward_equal_each_view_alone_on_the_real_model(real):
    """Shipped prefixes of different lengths and prompts of different lengths in one forward (fp32)."""
    from playground.attention import AttentionRequest, prefix_attention, prefix_attention_many

    lib = Library(ROOT / "prefixes")
    names = [e.name for e in lib.entries()][:3]
    prefixes = [lib.load(n, real) for n in names]
    texts = ["A warm, funny film with a great cast.", "Iceland", "je cherche la gare ce soir"]
    requests = [AttentionRequest(p, t) for p, t in zip(prefixes, texts)]
    assert len({p.num_virtual_tokens for p in prefixes}) > 1 or len({len(t) for t in texts}) > 1
    for got, r in zip(prefix_attention_many(real, requests), requests):
        want = prefix_attention(real, r.prefix, r.text)
        assert got.tokens == want.tokens
        for field in ("weights", "head_share", "layer_share", "token_share"):
            torch.testing.assert_close(getattr(got, field), getattr(want, field), rtol=1e-4, atol=1e-5, msg=field)
