"""The Library tab and Train's save row, tiny model, no browser: confirmations before a delete or an
overwrite, an empty picker after a delete, the card shown on open, --writable-shipped, and the table's
scores beside their split, n and 95% interval."""

from __future__ import annotations

import gradio as gr
import pytest

import ui.app as app
import ui.library as library_tab
import ui.train as train_tab
from playground.errors import PlaygroundError
from playground.library import Library, NameTaken
from playground.prefix import PrefixSettings, create_prefix
from playground.report import LIBRARY_HEADERS, card_scores, library_rows, wilson
from playground.service import Limits, Playground
from playground.tasks import get_task
from playground.training import TrainSettings
from ui.common import owner

ME = owner(None)  # what the handlers record for a call without a request: this session


def random_prefix(base, seed: int = 1):
    return create_prefix(base, PrefixSettings(3, "random"), seed=seed)


def card(base, **extra) -> dict:
    return {"task": "sentiment", "base_model": base.name, "base_fingerprint": base.fingerprint, **extra}


@pytest.fixture
def shipped(tiny_llama, tmp_path):
    lib = Library(tmp_path / "shipped")
    lib.save("ship", random_prefix(tiny_llama), card(tiny_llama, source="shipped"))
    return lib.root


@pytest.fixture
def pg(tiny_llama, tmp_path, shipped):
    p = Playground(tiny_llama, Library(tmp_path / "class", shipped=shipped), Limits(max_virtual_tokens=64))
    p._downloads = tmp_path / "downloads"
    for name, seed in (("one", 1), ("two", 2)):
        p.library.save(name, random_prefix(tiny_llama, seed), card(tiny_llama), owner=ME)
    return p


def handlers(build, pg) -> dict:
    """A tab built alone: its event functions by name, and what ``build`` returned."""
    with gr.Blocks() as demo:
        built = build(pg)
    return {getattr(f.fn, "__name__", ""): f.fn for f in demo.fns.values()}, built


def test_delete_asks_first_and_leaves_nothing_picked(pg):
    fns, (refresh, _, _) = handlers(library_tab.build, pg)
    for _ in range(2):  # a double click on Delete only asks, twice
        held, row, ask, yes, _ = fns["ask_delete"]("one", request=None)
        assert held == "one" and row["visible"] is True and "Delete **one** for good?" in ask
        assert yes["value"] == "Yes, delete one"
    assert pg.library.names() == ["one", "ship", "two"]
    held, row, status = fns["on_delete"]("one", request=None)
    assert held is None and row["visible"] is False and status == "Deleted **one**."
    table, pick, scores, details, download = fns["deleted"](request=None)
    assert pick["value"] is None and pick["choices"] == ["ship", "two"]  # no move to the next prefix
    assert scores == "" and details is None and download["value"] is None
    assert [r[0] for r in table] == ["ship", "two"]
    # the confirmation's second click holds no name any more: it deletes nothing
    assert fns["on_delete"](held, request=None)[:2] == (None, gr.update(visible=False))
    assert fns["on_delete"]("one", request=None)[2] == "**one** is no longer in the library."
    assert pg.library.names() == ["ship", "two"]
    with pytest.raises(gr.Error, match="Pick a prefix to delete"):  # the picker is empty now
        fns["ask_delete"](None, request=None)
    with pytest.raises(gr.Error, match="Type the new name, such as my-sentiment"):
        fns["on_rename"]("two", "  ", request=None)
    # a shipped prefix is refused before any confirmation is shown
    with pytest.raises(gr.Error, match="shipped prefixes are read-only"):
        fns["ask_delete"]("ship", request=None)


def test_the_library_opens_with_the_card_and_download_of_its_pick(pg):
    fns, (refresh, inputs, outputs) = handlers(library_tab.build, pg)
    assert len(outputs) == 5
    table, pick, scores, details, download = refresh("ship", request=None)
    assert pick["value"] == "ship" and details["card"]["name"] == "ship"
    assert download["value"].endswith("ship.zip") and "No held-out scores" in scores
    assert {r[0]: r[LIBRARY_HEADERS.index("owner")] for r in table} == {"one": "yours", "ship": "shipped",
                                                                          "two": "yours"}
    assert refresh("gone", request=None)[1]["value"] is None  # a pick that left the library: nothing picked


def test_an_import_over_an_existing_name_asks_then_overwrites(pg, tiny_llama):
    fns, _ = handlers(library_tab.build, pg)
    before = pg.get_prefix("k", "one").embeddings().clone()
    z = str(pg.export("two"))
    got, status, held, row, ask, yes = fns["on_import"]([z], "one", True, "one", request=None)
    assert held == {"name": "one", "paths": [z]} and row["visible"] is True and got == "one"
    assert "Replace **one**" in ask and yes["value"] == "Yes, overwrite one"
    assert pg.get_prefix("k", "one").embeddings().equal(before)  # nothing changed yet
    with pytest.raises(gr.Error, match="already exists"):  # Overwrite not ticked: refused, nothing to confirm
        fns["on_import"]([z], "one", False, "one", request=None)
    got, status, held, row = fns["on_overwrite"]({"name": "one", "paths": [z]}, request=None)
    assert got == "one" and held is None and row["visible"] is False and "replaced" in status
    assert pg.get_prefix("k", "one").embeddings().equal(pg.get_prefix("k", "two").embeddings())
    # a new name with Overwrite ticked imports at once
    assert fns["on_import"]([z], "three", True, "one", request=None)[0] == "three"


def test_train_save_asks_before_an_overwrite_and_names_an_empty_name(pg):
    fns, _ = handlers(lambda p: train_tab.build(p), pg)
    run = pg.start_run("local", get_task("sentiment"), PrefixSettings(3, "random"),
                       TrainSettings(steps=1, batch_size=2, eval_every=0, eval_examples=2))
    list(pg.run_steps(run))
    for empty in ("", "   ", None):
        with pytest.raises(gr.Error, match="Type a name to save under, such as my-sentiment"):
            fns["on_save"](empty, False, request=None)
    status, held, row, ask, yes = fns["on_save"]("one", True, request=None)
    assert status == "" and held == "one" and row["visible"] is True and yes["value"] == "Yes, overwrite one"
    assert pg.library_card("one").get("metrics") is None  # still the old one
    status, held, row = fns["on_overwrite"]("one", request=None)
    assert status.startswith("Saved **one**") and held is None and pg.library_card("one")["metrics"]["n"] == 2
    assert fns["on_overwrite"](None, request=None)[1:] == (None, gr.update(visible=False))  # a second click: no-op
    with pytest.raises(gr.Error, match="already exists"):  # Overwrite not ticked
        fns["on_save"]("two", False, request=None)
    assert fns["on_save"]("three", True, request=None)[0].startswith("Saved **three**")


def test_writable_shipped_is_a_development_flag_off_by_default(tmp_path, capsys):
    base = ["--library", str(tmp_path / "class"), "--shipped", str(tmp_path / "shipped")]
    assert app.parse_args(base).writable_shipped is False
    assert app.make_library(app.parse_args(base)).writable_shipped is False
    assert app.make_library(app.parse_args([*base, "--writable-shipped"])).writable_shipped is True
    with pytest.raises(SystemExit):
        app.parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--writable-shipped" in help_text and "for development only" in help_text
    with pytest.raises(SystemExit):
        app.parse_args([*base, "--writable-shipped", "--read-only-library"])
    assert "contradict" in capsys.readouterr().err


def test_writable_shipped_changes_shipped_prefixes_in_place(tiny_llama, tmp_path, shipped):
    ro = Library(tmp_path / "class", shipped=shipped)
    assert ro.protected == {"ship"}
    for action in (lambda: ro.delete("ship"), lambda: ro.rename("ship", "x"), lambda: ro.check_change("ship"),
                   lambda: ro.save("ship", random_prefix(tiny_llama, 3), overwrite=True)):
        with pytest.raises(PlaygroundError, match="read-only"):
            action()
    dev = Library(tmp_path / "class", shipped=shipped, writable_shipped=True)
    assert dev.protected == set() and library_rows(dev)[0][LIBRARY_HEADERS.index("owner")] == "shipped, writable"
    dev.rename("ship", "ship2")
    assert (shipped / "ship2").is_dir() and not (tmp_path / "class" / "ship2").exists()
    with pytest.raises(NameTaken) as taken:
        dev.save("ship2", random_prefix(tiny_llama, 3))
    assert taken.value.name == "ship2"
    dev.save("ship2", random_prefix(tiny_llama, 3), card(tiny_llama, source="shipped"), overwrite=True)
    assert dev.find("ship2").shipped and dev.load("ship2", tiny_llama).embeddings().equal(
        random_prefix(tiny_llama, 3).embeddings())
    assert sorted(p.name for p in shipped.iterdir()) == ["ship2"]  # in place, no leftovers
    dev.save("new", random_prefix(tiny_llama, 4))  # a new name still goes to the class's folder
    assert (tmp_path / "class" / "new").is_dir()
    dev.delete("ship2")
    assert sorted(p.name for p in shipped.iterdir()) == [] and dev.names() == ["new"]
    # a killed process's leftover in the shipped folder is cleaned at the next start, with the flag only
    (shipped / ".tmp-x-abcdefgh").mkdir()
    Library(tmp_path / "class", shipped=shipped)
    assert (shipped / ".tmp-x-abcdefgh").is_dir()
    Library(tmp_path / "class", shipped=shipped, writable_shipped=True)
    assert not (shipped / ".tmp-x-abcdefgh").exists()
    # --read-only-library wins
    assert Library(tmp_path / "class", shipped=shipped, read_only=True, writable_shipped=True).writable_shipped is False


def test_rows_show_split_n_and_interval_and_never_invent_an_n(tiny_llama, tmp_path):
    lib = Library(tmp_path / "lib")
    lib.save("em", random_prefix(tiny_llama), card(tiny_llama, metrics={
        "split": "test", "metric": "exact_match", "n": 60, "prefix": 0.9833, "instruction": 0.0, "base": 0.0}))
    lib.save("no-n", random_prefix(tiny_llama), card(tiny_llama, metrics={
        "split": "validation", "metric": "exact_match", "prefix": 1.0}))
    lib.save("rouge", random_prefix(tiny_llama), card(tiny_llama, metrics={
        "split": "test", "metric": "rouge_l", "n": 55, "prefix": 0.451}, validation={"split": "validation", "n": 40,
                                                                                      "prefix": 0.5}))
    rows = {r[0]: dict(zip(LIBRARY_HEADERS, r)) for r in library_rows(lib)}
    lo, hi = wilson(0.9833, 60)
    assert rows["em"]["with the prefix"] == f"98.3% (95% interval {100 * lo:.0f}–{100 * hi:.0f}%)"
    assert rows["em"]["with the prefix"] == "98.3% (95% interval 91–100%)"
    assert rows["em"]["held out on"] == "test, n = 60" and rows["em"]["measure"] == "exact match"
    assert rows["no-n"]["with the prefix"] == "100.0%" and rows["no-n"]["held out on"] == "validation, n unknown"
    assert rows["rouge"]["with the prefix"] == "45.1%" and rows["rouge"]["measure"] == "ROUGE-L F1 (a mean: no interval)"
    assert rows["rouge"]["instruction only"] == "–"
    text = card_scores(lib.find("rouge") and lib.card(lib.find("rouge")))
    assert text.splitlines() == ["- test, n = 55, ROUGE-L F1 (a mean: no interval): with the prefix **45.1%**",
                                 "- validation, n = 40, ROUGE-L F1 (a mean: no interval): with the prefix **50.0%**"]
    assert "validation, n unknown" in card_scores(lib.card(lib.find("no-n")))
