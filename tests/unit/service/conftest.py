"""Fixtures of the Playground facade tests: one torch thread, a Playground on the tiny model."""

from __future__ import annotations

import pytest
import torch

from playground.library import Library
from playground.service import Limits, Playground
from tests.conftest import make_tiny

from .support import LIMITS


@pytest.fixture(autouse=True)
def _one_thread(_threads):
    # Runs after conftest's 2-thread setting: for 64-wide tiny models one thread is several times
    # faster (no thread hand-off per tiny matmul), and far steadier on a busy 2-core machine.
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_gpt2():
    return make_tiny("gpt2")


@pytest.fixture
def pg(tiny_llama, tmp_path) -> Playground:
    p = Playground(tiny_llama, Library(tmp_path / "lib"), Limits(**LIMITS))
    p._downloads = tmp_path / "downloads"  # keep exports out of the shared temp folder
    return p
