"""On the real embedded model: several students' runs in one training forward, each as if alone."""

from __future__ import annotations

import pytest
import torch

from playground.losses import target_loss
from playground.prefix import PrefixSettings, create_prefix
from playground.sharedstep import RunBatch, shared_losses
from playground.tasks import get_task
from tests.unit.test_shared_step import batch, grads


@pytest.mark.real_model
def test_three_runs_share_one_forward_and_each_gets_its_own_loss_and_gradient(real):
    """A text-init prefix (20 tokens), a random one (8) and one from training examples, on three tasks."""
    task = get_task("sentiment")
    specs = [(PrefixSettings(20, "task"), "sentiment", 0, 4), (PrefixSettings(8, "random"), "topic", 2, 3),
             (PrefixSettings(init="demos", init_shots=1), "capitals", 5, 2)]
    together = [RunBatch(create_prefix(real, s, task.instruction, seed=i, train=get_task(t).split("train")),
                         *batch(real, t, start, n)) for i, (s, t, start, n) in enumerate(specs)]
    assert len({r.prefix.num_virtual_tokens for r in together}) == 3  # three lengths in one padded cache
    losses = shared_losses(real, together)
    torch.stack(losses).sum().backward()
    shared = [grads(r.prefix) for r in together]
    for r, loss, g in zip(together, losses, shared):
        for p in r.prefix.parameters():
            p.grad = None
        alone = target_loss(real, r.prefix, r.ids, r.mask, r.labels)
        alone.backward()
        assert torch.allclose(loss, alone, atol=1e-4, rtol=1e-4), (loss.item(), alone.item())
        for a, b in zip(g, grads(r.prefix)):
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-3), (a - b).abs().max().item()
