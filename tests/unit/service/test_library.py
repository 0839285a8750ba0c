"""The library through the facade: export, import, rename, delete, rows."""

from __future__ import annotations

import re

import pytest
import torch

from playground.errors import PlaygroundError
from playground.library import Library
from playground.peft_folder import CONFIG_FILE, WEIGHTS_FILE
from playground.report import LIBRARY_HEADERS, library_rows, wilson
from playground.service import Limits, Playground

from .support import LIMITS, save_random, trained


def test_export_then_import_adds_an_identical_prefix(pg, tmp_path):
    original = save_random(pg, "p")
    z = pg.export("p")
    assert z.name == "p.zip" and tmp_path / "downloads" in z.parents
    assert pg.import_upload([str(z)], " copy ") == "copy"
    assert sorted(pg.library.names()) == ["copy", "p"]
    assert torch.equal(pg.get_prefix("k", "copy").embeddings(), original)
    card = pg.library_card("copy")
    assert card["source"] == "upload" and card["task"] == "sentiment" and card["name"] == "copy"
    with pytest.raises(PlaygroundError, match="already exists"):
        pg.import_upload([str(z)])  # the zip's folder name 'p' is suggested, and taken
    pg.delete("p")
    assert pg.import_upload([str(z)]) == "p"  # suggested name from the zip's folder
    folder = pg.library.path("copy")
    assert pg.import_upload([str(folder / CONFIG_FILE), str(folder / WEIGHTS_FILE)]) == "uploaded"
    with pytest.raises(PlaygroundError, match="No prefix named 'ghost'"):
        pg.export("ghost")
    with pytest.raises(PlaygroundError, match="valid prefix name"):
        pg.import_upload([str(z)], "bad name!")


def test_import_of_a_prefix_for_the_other_tiny_model_is_refused(pg, tiny_gpt2, tmp_path):
    gpt = Playground(tiny_gpt2, Library(tmp_path / "gpt-lib"), Limits(**LIMITS))
    gpt._downloads = tmp_path / "gpt-downloads"
    save_random(gpt, "g")
    z = gpt.export("g")
    save_random(pg, "p")
    with pytest.raises(PlaygroundError, match="made for another model"):
        pg.import_upload([str(z)], "g")
    assert pg.library.names() == ["p"]
    with pytest.raises(PlaygroundError, match="made for another model"):
        gpt.import_upload([str(pg.export("p"))], "p")
    assert gpt.library.names() == ["g"]


def test_rename_delete_and_read_only_protection(pg, tiny_llama, tmp_path):
    save_random(pg, "shipped")
    pg.rename("shipped", " renamed ")
    assert pg.library.names() == ["renamed"] and pg.library_card("renamed")["name"] == "renamed"
    pg.rename("renamed", "shipped")
    # pg's folder as the shipped set of another server: read-only there, beside that server's class folder
    ro = Playground(tiny_llama, Library(tmp_path / "class", shipped=pg.library.root), Limits(**LIMITS))
    ro._downloads = tmp_path / "ro-downloads"
    z = ro.export("shipped")
    run = trained(ro)
    for action in (lambda: ro.delete("shipped"), lambda: ro.rename("shipped", "other"),
                   lambda: ro.import_upload([str(z)], "shipped", overwrite=True),
                   lambda: ro.save_trained("k", "shipped", overwrite=True)):
        with pytest.raises(PlaygroundError, match="read-only"):
            action()
    assert ro.library.names() == ["shipped"]
    assert ro.library.load("shipped", tiny_llama) is not None
    ro.save_trained("k", "mine")  # new names are fine, go to the class folder, and stay editable
    assert (tmp_path / "class" / "mine").is_dir()
    ro.rename("mine", "mine2")
    ro.delete("mine2")
    assert ro.library.names() == ["shipped"]
    with pytest.raises(PlaygroundError, match="No prefix named"):
        ro.delete("ghost")
    rows = library_rows(ro.library)
    assert rows[0][0] == "shipped" and rows[0][LIBRARY_HEADERS.index("owner")] == "shipped"
    assert run.state == "finished"
    # --read-only-library: the class folder is read-only too
    frozen = Playground(tiny_llama, Library(pg.library.root, read_only=True), Limits(**LIMITS))
    trained(frozen)
    for action in (lambda: frozen.save_trained("k", "new"), lambda: frozen.import_upload([str(z)], "new"),
                   lambda: frozen.rename("shipped", "other"), lambda: frozen.delete("shipped")):
        with pytest.raises(PlaygroundError, match="read-only"):
            action()
    assert frozen.library.names() == ["shipped"]


def test_library_rows_and_inspect(pg):
    run = trained(pg)
    pg.compare_rows(run)
    pg.save_trained("k", "mine")
    save_random(pg, "plain", n=3)
    rows = {r[0]: r for r in library_rows(pg.library)}
    assert set(rows) == {"mine", "plain"}
    m = pg.library_card("mine")["metrics"]
    assert m["split"] == "validation" and m["n"] == 4  # what Train's save records: the run's held-out set
    mine = dict(zip(LIBRARY_HEADERS, rows["mine"]))
    assert LIBRARY_HEADERS[:6] == ["name", "with the prefix", "instruction only", "no prompt", "held out on",
                                   "measure"]  # the scores first, beside where they were measured
    for k, col in (("prefix", "with the prefix"), ("instruction", "instruction only"), ("base", "no prompt")):
        lo, hi = wilson(m[k], 4)
        assert mine[col] == f"{100 * m[k]:.1f}% (95% interval {100 * lo:.0f}–{100 * hi:.0f}%)"
    assert mine["held out on"] == "validation, n = 4" and mine["measure"] == "exact match"
    assert [mine[c] for c in ("task", "virtual tokens", "base model", "owner")] == ["sentiment", 4, pg.base.name, ""]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", mine["saved (UTC)"])  # date and minute, a space between
    plain = dict(zip(LIBRARY_HEADERS, rows["plain"]))
    assert plain["virtual tokens"] == 3  # no metrics on its card: nothing made up
    assert [plain[c] for c in LIBRARY_HEADERS[1:6]] == ["–"] * 5
    info = pg.inspect("mine")
    assert set(info) == {"card", "adapter_config", "files (bytes)"}
    assert info["adapter_config"]["peft_type"] == "PREFIX_TUNING"
    assert info["adapter_config"]["num_virtual_tokens"] == 4
    folder = pg.library.path("mine")
    assert info["files (bytes)"] == {f.name: f.stat().st_size for f in folder.iterdir()}
    assert info["card"]["metrics"] == m
    with pytest.raises(PlaygroundError, match="No prefix named 'ghost'"):
        pg.inspect("ghost")
