"""Retraining a shipped prefix: the card holds the prompts it is held against, measured once and then kept."""

from __future__ import annotations

import pytest

from playground import recipes
from playground.library import Library
from playground.prefix import PrefixSettings
from playground.recipes import Recipe, ship
from playground.training import TrainSettings


def test_ship_measures_the_prompts_once_and_a_retrain_keeps_them(tiny_llama, tmp_path, monkeypatch):
    rec = Recipe("topic", PrefixSettings(4), TrainSettings(1e-2, 2, 4, 0, 0, precision="fp32"), 0.85,
                 lesson="A lesson.")
    library = Library(tmp_path / "lib")
    first = ship(tiny_llama, rec, library, log=lambda m: None).card
    assert set(first["baselines"]) == {"test", "fresh"} and first["lesson"] == "A lesson."
    keys = [r["key"] for r in first["baselines"]["test"]]
    assert keys == ["instruction", "instruction_format", "few_shot_4", "few_shot_8", "label_4"]  # topic has labels
    assert first["baselines_measured"]["command"] == "python -m playground ship"

    def measured_again(*a, **k):
        raise AssertionError("the prompts do not depend on the prefix: a retrain keeps them")

    monkeypatch.setattr(recipes, "card_baselines", measured_again)
    again = ship(tiny_llama, rec, library, log=lambda m: None).card
    assert again["baselines"] == first["baselines"] and again["baselines_measured"] == first["baselines_measured"]
    monkeypatch.setattr(recipes, "get_task", lambda name: _renamed(name))
    with pytest.raises(AssertionError, match="keeps them"):  # another instruction: measured again
        ship(tiny_llama, rec, library, log=lambda m: None)


def _renamed(name):
    from dataclasses import replace

    from playground.tasks import get_task

    return replace(get_task(name), instruction="Name the topic.")
