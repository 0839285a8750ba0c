"""Several runs in one training forward: each run's loss and gradient equal that run trained alone."""

from __future__ import annotations

import pytest
import torch

from playground.losses import target_loss
from playground.prefix import PrefixSettings, create_prefix
from playground.prompts import PromptFormat, pad_right
from playground.sharedstep import RunBatch, shared_losses
from playground.tasks import get_task

pytestmark = pytest.mark.unit


def batch(base, task: str, start: int, n: int):
    """Rows start..start+n of a task's train split, right-padded: ids, mask, labels [n, T]."""
    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    enc = [fmt.encode_example(e.input, e.target, "prefix") for e in get_task(task).split("train")[start:start + n]]
    return pad_right([e[0] for e in enc], base.tokenizer.pad_token_id, [e[1] for e in enc])


def runs(base):
    """Three students: different prefix lengths (one through the MLP), tasks, batch sizes and lengths."""
    settings = [PrefixSettings(3, "random"), PrefixSettings(7, "random", prefix_projection=True,
                                                               encoder_hidden_size=16), PrefixSettings(5, "random")]
    data = [("sentiment", 0, 2), ("headline", 3, 3), ("capitals", 1, 1)]
    return [RunBatch(create_prefix(base, s, seed=i), *batch(base, *d)) for i, (s, d) in enumerate(zip(settings, data))]


def grads(prefix) -> list[torch.Tensor]:
    return [p.grad.clone() for p in prefix.parameters()]


def test_each_run_in_a_shared_batch_gets_its_loss_and_gradient_alone(tiny_llama):
    together = runs(tiny_llama)
    losses = shared_losses(tiny_llama, together)
    torch.stack(losses).sum().backward()  # one backward for the class; each prefix gets only its own run's share
    shared = [grads(r.prefix) for r in together]
    for r, loss, g in zip(together, losses, shared):
        for p in r.prefix.parameters():
            p.grad = None
        alone = target_loss(tiny_llama, r.prefix, r.ids, r.mask, r.labels)
        alone.backward()
        assert torch.allclose(loss, alone, atol=1e-5, rtol=1e-5), (loss.item(), alone.item())
        for a, b in zip(g, grads(r.prefix)):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
        assert all(x.abs().sum() > 0 for x in g)  # the run did learn something from its own rows


def test_a_run_shares_nothing_with_its_neighbours(tiny_llama):
    """Changing another run's prefix changes neither this run's loss nor its gradient."""
    first = runs(tiny_llama)
    base_loss = shared_losses(tiny_llama, first)[0]
    second = runs(tiny_llama)
    with torch.no_grad():
        for p in second[1].prefix.parameters():
            p.add_(torch.randn_like(p))
    assert torch.allclose(shared_losses(tiny_llama, second)[0], base_loss, atol=1e-6)
    assert shared_losses(tiny_llama, []) == []


def test_runs_trained_together_end_as_each_trained_alone(tiny_llama):
    """Three steps of two runs in shared steps == training.train on each alone (fp32): losses and prefixes."""
    from playground.methods import prefix_method
    from playground.sharedstep import SharedRun, shared_step
    from playground.training import TrainSettings, train

    specs = [(PrefixSettings(5, "random"), "sentiment", TrainSettings(1e-2, 3, 4, 0, 0, 4, "fp32")),
             (PrefixSettings(7, "random", prefix_projection=True, encoder_hidden_size=16), "topic",
              TrainSettings(3e-2, 3, 2, 1, 0, 4, "fp32"))]
    together = [SharedRun.start(tiny_llama, create_prefix(tiny_llama, ps, seed=i), get_task(t), ts)
                for i, (ps, t, ts) in enumerate(specs)]
    for _ in range(3):
        shared_step(tiny_llama, together)
    for i, ((ps, t, ts), run) in enumerate(zip(specs, together)):
        alone = create_prefix(tiny_llama, ps, seed=i)
        losses = [r.loss for r in train(tiny_llama, prefix_method(alone), get_task(t), ts)]
        assert run.losses == pytest.approx(losses, rel=1e-5, abs=1e-6)
        for a, b in zip(run.prefix.parameters(), alone.parameters()):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
        assert any(not torch.equal(a, b) for a, b in zip(run.prefix.parameters(),
                                                         create_prefix(tiny_llama, ps, seed=i).parameters()))
