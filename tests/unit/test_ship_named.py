"""A second shipped prefix for one task (a recipe with its own name, as sentiment_wayward): saved under its name,
holding the task's prompts measured for the task's first prefix."""

from __future__ import annotations

from playground import recipes
from playground.library import Library
from playground.prefix import PrefixSettings
from playground.recipes import RECIPES, Recipe, ship
from playground.training import TrainSettings


def test_a_named_recipe_ships_under_its_name_and_keeps_the_tasks_prompts(tiny_llama, tmp_path, monkeypatch):
    train = TrainSettings(1e-2, 2, 4, 0, 0, precision="fp32")
    library = Library(tmp_path / "lib")
    first = ship(tiny_llama, Recipe("topic", PrefixSettings(4), train, 0.85), library, log=lambda m: None).card

    def measured_again(*a, **k):
        raise AssertionError("the task's prompts were measured for its first prefix: kept")

    monkeypatch.setattr(recipes, "card_baselines", measured_again)
    other = Recipe("topic", PrefixSettings(4, "text", "Whisk the eggs."), train, 0.85, name="topic_other")
    assert other.key == "topic_other" and Recipe("topic", PrefixSettings(4), train, 0.85).key == "topic"
    shipped = ship(tiny_llama, other, library, log=lambda m: None)
    assert shipped.name == "topic_other" and shipped.path == library.path("topic_other")
    card = library.card(library.find("topic_other"))
    assert card["task"] == "topic" and card["recipe"] == "python -m playground ship --task topic_other"
    assert card["baselines"] == first["baselines"]
    assert card["settings"]["init_text"] == "Whisk the eggs."
    assert library.card(library.find("topic"))["settings"]["init"] == "task"  # the first prefix is untouched


def test_the_wayward_sentiment_recipe_starts_from_baking_and_is_held_to_the_same_bar():
    a, b = RECIPES["sentiment"], RECIPES["sentiment_wayward"]
    assert b.task == "sentiment" and b.target == a.target
    assert b.prefix.num_virtual_tokens == a.prefix.num_virtual_tokens and b.prefix.init == "text"
    assert a.prefix.init == "task" and "movie" not in b.prefix.init_text.lower()
    # the same data, batch, seed and precision; its lr and steps were chosen on validation (its start is farther)
    assert (b.train.batch_size, b.train.seed, b.train.precision) == (a.train.batch_size, a.train.seed, a.train.precision)
    assert a.held_to_bar and b.held_to_bar  # as good as sentiment on its card: the waywardness demo needs that
