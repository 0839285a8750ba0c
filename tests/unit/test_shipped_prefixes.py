"""The shipped prefixes in prefixes/: complete, small, PEFT-loadable, and as good as their cards say.

The slow test re-scores every shipped prefix on its task's test split with the embedded
model. It fails if a metric drops below the card's figure by more than one example's worth
(or 2 points), so a change to prompts, generation or the model loader can't lower a shipped
prefix's quality unseen.
"""

from __future__ import annotations

import json

from playground.cli import DEFAULT_LIBRARY
from playground.library import Library
from playground.peft_folder import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE
from playground.recipes import RECIPES, meets_bar
from playground.report import TABLE_END, TABLE_START, write_readme
from playground.tasks import get_task

CARD_KEYS = {"task", "base_model", "base_fingerprint", "metrics", "train_examples", "steps", "train_seconds",
             "wall_seconds", "validation", "training", "instruction"}


def library() -> Library:
    return Library(DEFAULT_LIBRARY)


def shipped_entries():
    return [e for e in library().entries() if e.card.get("source") == "shipped"]


def test_one_shipped_prefix_per_builtin_task_with_a_full_card():
    entries = {e.name: e for e in shipped_entries()}
    assert set(entries) == set(RECIPES), f"shipped: {sorted(entries)}, recipes: {sorted(RECIPES)}"
    for name, e in entries.items():
        files = {p.name for p in e.path.iterdir()}
        assert {CONFIG_FILE, WEIGHTS_FILE, CARD_FILE} <= files, name
        assert sum(p.stat().st_size for p in e.path.iterdir()) < 2 * 2**20, f"{name} is not under 2 MB"
        card = e.card
        assert CARD_KEYS <= set(card), f"{name} card lacks {CARD_KEYS - set(card)}"
        m = card["metrics"]
        assert m["split"] == "test" and m["n"] == len(get_task(card["task"]).split("test"))
        assert {"base", "instruction", "prefix"} <= set(m)
        assert card["validation"]["split"] == "validation"
        assert card["steps"] == RECIPES[name].train.steps
        assert card["task"] == RECIPES[name].task
        assert card["train_examples"] == len(get_task(card["task"]).split("train"))
        config = json.loads((e.path / CONFIG_FILE).read_text())
        assert config["peft_type"] == "PREFIX_TUNING" and config["num_virtual_tokens"] == card["num_virtual_tokens"]


def test_every_shipped_prefix_meets_the_bar_on_its_card():
    """Beat the instruction prompt by 10 points on the test split, or reach 95%."""
    held = [e for e in shipped_entries() if RECIPES[e.name].held_to_bar]
    assert {e.name for e in held} == {e.name for e in shipped_entries()}  # the demo prefix too
    for e in held:
        m = e.card["metrics"]
        assert meets_bar(e.card), f"{e.name}: prefix {m['prefix']:.3f} vs instruction {m['instruction']:.3f}"


def test_readme_is_what_ship_writes_from_the_cards(tmp_path):
    """Rewriting prefixes/README.md from the shipped cards changes no byte (a partial rerun keeps the total time)."""
    readme, again = DEFAULT_LIBRARY / "README.md", tmp_path / "README.md"
    again.write_bytes(readme.read_bytes())
    write_readme(again, library())
    assert again.read_bytes() == readme.read_bytes(), "prefixes/README.md is stale: run `python -m playground ship`"
    assert "Retraining all of them took" in readme.read_text(encoding="utf-8").split(TABLE_START)[1].split(TABLE_END)[0]






def test_capitals_and_shout_are_lessons_left_out_of_switchs_default_examples(tiny_llama):
    import gradio as gr

    import ui.app as app
    from playground.service import Playground

    pg = Playground(tiny_llama, library())
    assert set(pg.lessons()) == {"capitals", "shout"} == {n for n, r in RECIPES.items() if r.lesson}
    demo = app.build_demo(pg)
    examples = [b for b in demo.blocks.values() if isinstance(b, gr.Dataset)]
    lessons = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "sw-lessons")
    assert isinstance(lessons, gr.Accordion) and lessons.open is False  # the lessons: shown, but folded away
    inside = {id(b) for b in examples if _within(demo, b, lessons)}
    titles = {get_task(n).title for n in ("capitals", "shout")}
    assert {b.label for b in examples if id(b) in inside} >= titles  # their examples sit with the lesson
    assert not any(b.label in titles for b in examples if id(b) not in inside)  # not among the defaults


def _within(demo, block, container) -> bool:
    """Whether ``block`` is rendered inside ``container`` in the Blocks tree."""
    parent = getattr(block, "parent", None)
    while parent is not None:
        if parent is container:
            return True
        parent = getattr(parent, "parent", None)
    return False
