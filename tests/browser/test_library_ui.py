"""The Library tab and Train's save row in the browser: the tab opens with its pick's card and a working
download, Delete and every overwrite ask first, and a double click deletes one prefix at most.

The app runs on a copy of prefixes/ as its shipped set, beside a class library holding two prefixes of
its own (copies of shipped ones, saved without an owner, so this browser session may change them).
"""

from __future__ import annotations

import json
import shutil
import time
import zipfile

import pytest

from bench.driver import ROOT, launch_chromium, set_number, start_app, stop_app, tab, wait_until
from playground.cli import DEFAULT_LIBRARY
from playground.peft_folder import CARD_FILE

pytestmark = pytest.mark.real_model
SHOTS = ROOT / "artifacts" / "screenshots"
MINE = {"mine-a": "sentiment", "mine-b": "topic"}  # name in the class library: the shipped prefix it copies


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("library-ui")
    shipped, lib = root / "prefixes", root / "class"
    shutil.copytree(DEFAULT_LIBRARY, shipped)
    for name, source in MINE.items():
        shutil.copytree(DEFAULT_LIBRARY / source, lib / name)
        card = json.loads((lib / name / CARD_FILE).read_text())
        card.update(name=name, source="upload")
        (lib / name / CARD_FILE).write_text(json.dumps(card, indent=2))
    return root, shipped, lib


@pytest.fixture(scope="module")
def page(folders):
    from playwright.sync_api import sync_playwright

    root, shipped, lib = folders
    proc, url, _ = start_app(["--library", str(lib), "--shipped", str(shipped)], root / "server.log")
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.set_default_timeout(60_000)
            pg.goto(url)
            pg.wait_for_selector("#header")
            yield pg
            browser.close()
    finally:
        stop_app(proc)


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)



def error_text(page) -> str:
    page.wait_for_selector(".toast-body.error", timeout=60_000)
    return " ".join(page.locator(".toast-body.error").all_inner_texts())


def close_toasts(page) -> None:
    for close in page.locator(".toast-close").all():
        close.click()


def pick(page, name: str) -> None:
    box = page.locator("#lib-pick input")
    box.click()
    box.fill(name)
    box.press("Enter")
    wait_until(lambda: name in page.locator("#lib-details").inner_text(), what=f"{name}'s card")


def test_the_library_opens_with_its_picks_card_and_a_working_download(page, tmp_path):
    tab(page, "Library")
    box = page.locator("#lib-pick input")
    wait_until(lambda: box.input_value() == "capitals", what="the first prefix picked")
    # its card and scores are shown without picking anything
    wait_until(lambda: "capitals" in page.locator("#lib-details").inner_text(), what="the card of the pick")
    scores = page.locator("#lib-scores").inner_text()
    assert "test, n = 50, exact match" in scores and "95% interval" in scores, scores
    grid = page.locator("#lib-table").inner_text()
    assert "held out on" in grid and "test, n = 60" in grid and "98.3% (95% interval 91–100%)" in grid
    shot(page, "library-open")
    with page.expect_download() as dl:  # ready at once: no re-pick needed
        page.locator("#lib-download").click()
    z = tmp_path / "capitals.zip"
    dl.value.save_as(z)
    with zipfile.ZipFile(z) as zf:
        assert sorted(zf.namelist()) == ["capitals/adapter_config.json", "capitals/adapter_model.safetensors",
                                         "capitals/card.json"]


def test_a_double_click_on_delete_and_on_its_confirmation_deletes_one_prefix(page, folders):
    _, shipped, lib = folders
    tab(page, "Library")
    pick(page, "mine-a")
    page.locator("#lib-delete").dblclick()
    confirm = page.locator("#lib-delete-confirm")
    wait_until(lambda: confirm.is_visible() and "Delete mine-a for good?" in confirm.inner_text(),
               what="the confirmation")
    time.sleep(1)  # the second click's request too has been answered
    assert (lib / "mine-a").is_dir() and (lib / "mine-b").is_dir()  # nothing deleted by asking
    shot(page, "library-delete-confirm")
    page.locator("#lib-delete-yes").dblclick()
    wait_until(lambda: not (lib / "mine-a").exists(), what="the delete")
    wait_until(lambda: "Deleted mine-a" in page.locator("#lib-status").inner_text(), what="the delete message")
    wait_until(lambda: page.locator("#lib-pick input").input_value() == "", what="an empty picker")
    wait_until(lambda: not confirm.is_visible(), what="the confirmation to close")
    assert "mine-a" not in page.locator("#lib-details").inner_text()
    time.sleep(2)
    assert (lib / "mine-b").is_dir() and sorted(p.name for p in lib.iterdir() if not p.name.startswith(".")) == [
        "mine-b"]
    assert sorted(p.name for p in shipped.iterdir() if p.is_dir()) == sorted(
        p.name for p in DEFAULT_LIBRARY.iterdir() if p.is_dir())
    # nothing is picked, so a further click on Delete reaches no other prefix
    page.locator("#lib-delete").click()
    assert "Pick a prefix to delete" in error_text(page)
    close_toasts(page)
    assert (lib / "mine-b").is_dir()
    shot(page, "library-deleted")


def test_cancel_and_a_shipped_prefix_delete_nothing(page, folders):
    _, shipped, lib = folders
    tab(page, "Library")
    pick(page, "mine-b")
    page.locator("#lib-delete").click()
    wait_until(lambda: page.locator("#lib-delete-confirm").is_visible(), what="the confirmation")
    page.locator("#lib-delete-cancel").click()
    wait_until(lambda: "Nothing was deleted" in page.locator("#lib-status").inner_text(), what="the cancel")
    assert not page.locator("#lib-delete-confirm").is_visible() and (lib / "mine-b").is_dir()
    pick(page, "sentiment")
    page.locator("#lib-delete").click()
    assert "shipped prefixes are read-only" in error_text(page)  # refused before any confirmation
    close_toasts(page)
    assert not page.locator("#lib-delete-confirm").is_visible() and (shipped / "sentiment").is_dir()


def test_an_import_over_an_existing_name_asks_first(page, folders, tmp_path):
    _, _, lib = folders
    tab(page, "Library")
    z = tmp_path / "capitals.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in (DEFAULT_LIBRARY / "capitals").iterdir():
            zf.write(f, f"capitals/{f.name}")
    if not page.locator("#lib-upload").is_visible():
        page.get_by_text("Upload a PEFT prefix").click()
    page.locator("#lib-upload input[type=file]").set_input_files(str(z))
    page.get_by_label("Name in the library (default: the folder's name)").fill("mine-b")
    page.locator("#lib-overwrite input").check()
    page.locator("#lib-import").click()
    confirm = page.locator("#lib-import-confirm")
    wait_until(lambda: confirm.is_visible() and "Replace mine-b with the upload?" in confirm.inner_text(),
               what="the overwrite confirmation")
    assert json.loads((lib / "mine-b" / CARD_FILE).read_text())["task"] == "topic"  # not yet replaced
    shot(page, "library-overwrite-confirm")
    page.locator("#lib-import-yes").click()
    wait_until(lambda: "It replaced the previous one" in page.locator("#lib-status").inner_text(),
               what="the overwrite")
    assert json.loads((lib / "mine-b" / CARD_FILE).read_text())["task"] == "capitals"
    assert not confirm.is_visible()


def test_train_save_names_an_empty_name_and_asks_before_an_overwrite(page, folders):
    _, _, lib = folders
    tab(page, "Train")
    set_number(page, "steps", 2)
    if not page.locator("#eval-n").is_visible():
        page.get_by_text("Held-out evaluation").click()
    set_number(page, "eval-every", 0)
    set_number(page, "eval-n", 4)
    page.locator("#train-btn").click()
    wait_until(lambda: page.evaluate("() => document.querySelector('#pp-progress')?.dataset.state") == "finished",
               timeout=300, what="training to finish")
    name = page.locator("#save-name textarea, #save-name input").first
    name.fill("   ")
    page.locator("#save-btn").click()
    assert "Type a name to save under, such as my-sentiment." in error_text(page)
    close_toasts(page)
    name.fill("mine-b")
    page.locator("#save-btn").click()
    assert "already exists" in error_text(page)  # Overwrite not ticked
    close_toasts(page)
    before = (lib / "mine-b" / CARD_FILE).read_text()
    page.locator("#save-overwrite input").check()
    page.locator("#save-btn").click()
    confirm = page.locator("#save-confirm")
    wait_until(lambda: confirm.is_visible() and "Overwrite mine-b" in confirm.inner_text(), what="the confirmation")
    assert (lib / "mine-b" / CARD_FILE).read_text() == before
    shot(page, "train-overwrite-confirm")
    page.locator("#save-confirm-yes").dblclick()
    wait_until(lambda: "Saved mine-b" in page.locator("#save-status").inner_text(), what="the overwrite")
    card = json.loads((lib / "mine-b" / CARD_FILE).read_text())
    assert card["task"] == "sentiment" and card["metrics"]["n"] == 4 and not confirm.is_visible()
