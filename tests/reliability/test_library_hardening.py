"""The library against a hostile student: look-alike names, giant cards, a full disk, leftovers of a
kill -9, oversized imports, and other students' prefixes.

Each test names the hostile tester's finding it guards (4, 8, 9, 12, 13, 14). Tiny in-process models;
the kill -9 test runs the import in a subprocess, as ``test_reliability.py`` does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import playground.library as library_mod
import ui.app as app
from playground.archive import export_zip
from playground.errors import PlaygroundError
from playground.library import Library, owner_tag
from playground.names import check_name, fold
from playground.peft_folder import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE
from playground.prefix import PrefixSettings, create_prefix
from playground.report import LIBRARY_HEADERS, library_rows
from playground.service import Limits, Playground
from playground.tasks import get_task
from playground.training import TrainSettings

ROOT = Path(__file__).resolve().parents[2]
LIMITS = dict(max_steps=4, max_batch_size=4, max_virtual_tokens=8, max_eval_examples=4, max_new_tokens=3)
A, B = "session:student-a", "session:student-b"  # two browser sessions, as ui.common.owner names them


@pytest.fixture(autouse=True)
def _one_thread(_threads):
    torch.set_num_threads(1)


def random_prefix(base, n: int = 3, seed: int = 1):
    return create_prefix(base, PrefixSettings(num_virtual_tokens=n, init="random"), seed=seed)


def card_for(base, **extra) -> dict:
    return {"task": "sentiment", "base_model": base.name, "base_fingerprint": base.fingerprint, **extra}


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def shipped(tiny_llama, tmp_path) -> Path:
    """A shipped folder holding 'sentiment', as the repository's prefixes/ does."""
    root = tmp_path / "shipped"
    Library(root).save("sentiment", random_prefix(tiny_llama), card_for(tiny_llama))
    return root


@pytest.fixture
def pg(tiny_llama, tmp_path, shipped) -> Playground:
    p = Playground(tiny_llama, Library(tmp_path / "class", shipped=shipped), Limits(**LIMITS))
    p._downloads = tmp_path / "downloads"
    return p


def train(pg: Playground, key: str = "k"):
    run = pg.start_run(key, get_task("sentiment"), PrefixSettings(3, "random"),
                       TrainSettings(steps=1, batch_size=2, eval_every=0, eval_examples=4))
    list(pg.run_steps(run))
    return run


def zip_of(folder: Path, out: Path, name: str | None = None) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for f in folder.iterdir():
            zf.write(f, f"{name or folder.name}/{f.name}")
    return out


# =============================================================================================
# 4: look-alike names never reach the shipped prefix, on any OS
# =============================================================================================
def test_names_fold_case_width_and_final_dots_and_refuse_windows_devices():
    assert fold("SENTIMENT") == fold("Sentiment") == fold("sentiment.") == fold("ｓｅｎｔｉｍｅｎｔ") == "sentiment"
    for bad in ("CON", "nul", "Com1", "LPT9", "con.txt", "aux.tar.gz", "prn", "sentiment."):
        with pytest.raises(PlaygroundError, match="not a valid prefix name"):
            check_name(bad)
    for fine in ("console", "com10", "nul-prefix", "my.con", "sentiment"):
        assert check_name(fine) == fine


def test_case_and_dot_variants_never_reach_a_shipped_prefix(pg, tmp_path, shipped, monkeypatch):
    """On macOS/Windows 'SENTIMENT' and 'sentiment.' open the folder 'sentiment'. The refusal comes from the
    names alone: nothing on disk is renamed or created, so a case-insensitive filesystem is never asked."""
    before = snapshot(shipped)
    train(pg)
    z = zip_of(shipped / "sentiment", tmp_path / "s.zip")
    touched = []
    for fn in ("replace", "rename"):
        real = getattr(os, fn)
        monkeypatch.setattr(library_mod.os, fn, lambda *a, _real=real, **k: touched.append(a) or _real(*a, **k))
    for name in ("Sentiment", "SENTIMENT", "sentiment.", "sEnTiMeNt"):
        for action in (lambda: pg.save_trained("k", name, overwrite=True, owner=A),
                       lambda: pg.save_trained("k", name, owner=A),
                       lambda: pg.import_upload([str(z)], name, overwrite=True, owner=A),
                       lambda: pg.delete(name, owner=A), lambda: pg.rename(name, "stolen", owner=A),
                       lambda: pg.delete(name), lambda: pg.rename(name, "stolen")):
            with pytest.raises(PlaygroundError, match="read-only|not a valid prefix name|same name as 'sentiment'"):
                action()
    assert touched == [] and snapshot(shipped) == before
    assert pg.library.names() == ["sentiment"] and list((tmp_path / "class").iterdir()) == []


def test_a_look_alike_of_a_saved_prefix_is_refused_with_the_existing_name(pg):
    """On Linux these made twins ('Mine' beside 'mine'); on macOS an overwrite reached the other student's prefix."""
    train(pg)
    pg.save_trained("k", "mine", owner=A)
    for over in (False, True):
        with pytest.raises(PlaygroundError, match=r"'Mine' is the same name as 'mine' here"):
            pg.save_trained("k", "Mine", over, owner=A)
    pg.save_trained("k", "other", owner=A)
    with pytest.raises(PlaygroundError, match=r"'MINE' is the same name as 'mine'"):
        pg.rename("other", "MINE", owner=A)
    with pytest.raises(PlaygroundError, match=r"same name as 'sentiment'.*shipped prefixes are read-only"):
        pg.rename("other", "Sentiment", owner=A)
    pg.rename("mine", "Mine", owner=A)  # a new spelling of one's own prefix is fine
    assert pg.library.names() == ["Mine", "other", "sentiment"]


# =============================================================================================
# 8: bounded cards
# =============================================================================================
def test_a_giant_card_or_field_in_an_upload_is_refused(pg, tiny_llama, tmp_path):
    src = Library(tmp_path / "src").save("p", random_prefix(tiny_llama), card_for(tiny_llama))
    for card, msg in ((json.dumps({"task": "sentiment", "pad": "x" * (60 * 2**20)}), r"is 61,440 KB; the limit is 64 KB"),
                      (json.dumps({"task": "t" * (50 * 2**10)}), r"is 51 KB|'task' of 51,200 characters"),
                      (json.dumps({"task": "t" * 300}), r"'task' of 300 characters; the limit is 200")):
        (src / CARD_FILE).write_text(card)
        with pytest.raises(PlaygroundError, match=msg):
            pg.import_upload([str(src / f) for f in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)], "big", owner=A)
    assert pg.library.names() == ["sentiment"] and list((tmp_path / "class").iterdir()) == []


def test_a_giant_card_on_disk_is_not_read_nor_sent_and_can_be_deleted_after_a_restart(pg, tiny_llama, tmp_path):
    path = pg.library.save("huge", random_prefix(tiny_llama), card_for(tiny_llama))
    (path / CARD_FILE).write_text(json.dumps({"task": "x" * (5 * 2**20)}))  # put there by hand, 5 MB
    again = Playground(tiny_llama, Library(tmp_path / "class", shipped=pg.library.shipped), Limits(**LIMITS))
    again._downloads = tmp_path / "downloads"
    rows = {r[0]: r for r in library_rows(again.library, B)}
    task, who = LIBRARY_HEADERS.index("task"), LIBRARY_HEADERS.index("owner")
    assert rows["huge"][task] == "?" and rows["huge"][who] == ""  # listed, without card data; not "shipped"
    assert len(json.dumps(library_rows(again.library, B))) < 4000  # what a Library refresh sends each browser
    info = again.inspect("huge")
    assert "limit is 64 KB" in info["card"]["unreadable"] and len(json.dumps(info)) < 4000
    assert again.library_card("huge") == {}
    with pytest.raises(PlaygroundError, match=r"card.json in 'huge' is 5,120 KB; the limit is 64 KB"):
        again.get_prefix("k", "huge")
    again.delete("huge", owner=B)  # it has no readable owner: anyone may remove it
    assert again.library.names() == ["sentiment"]


def test_the_server_card_limit_applies_to_saves_too(tiny_llama, tmp_path):
    lib = Playground(tiny_llama, Library(tmp_path / "class"), Limits(**LIMITS, max_card_kb=1)).library
    with pytest.raises(PlaygroundError, match=r"card of 'long' would take \d KB; the limit is 1 KB\. Shorten"):
        lib.save("long", random_prefix(tiny_llama), card_for(tiny_llama, instruction="Answer. " * 400), owner=A)
    assert lib.names() == [] and list(lib.root.iterdir()) == []


# =============================================================================================
# 9: export zips are reused; the downloads folder and the class's library are bounded
# =============================================================================================
def test_picking_a_prefix_again_reuses_its_zip_until_it_changes(pg, tiny_llama, tmp_path):
    pg.library.save("p", random_prefix(tiny_llama), card_for(tiny_llama))
    zips = {pg.export("p") for _ in range(20)}  # twenty picks in the Library tab
    assert len(zips) == 1
    first = zips.pop()
    assert [p.name for p in (tmp_path / "downloads").rglob("*.zip")] == ["p.zip"]
    pg.library.save("p", random_prefix(tiny_llama, seed=2), card_for(tiny_llama), overwrite=True)
    second = pg.export("p")
    assert second != first and not first.exists() and second.is_file()
    with zipfile.ZipFile(second) as zf:
        assert zf.read(f"p/{WEIGHTS_FILE}") == (pg.library.path("p") / WEIGHTS_FILE).read_bytes()
    assert len(list((tmp_path / "downloads").rglob("*.zip"))) == 1
    pg.export("sentiment")
    assert len(list((tmp_path / "downloads").rglob("*.zip"))) == 2


def test_the_downloads_folder_keeps_under_its_bound(tiny_llama, tmp_path):
    lib = Library(tmp_path / "lib")
    folders = [lib.save(f"p{i}", random_prefix(tiny_llama, n=8, seed=i), card_for(tiny_llama)) for i in range(6)]
    size = export_zip(folders[0], tmp_path / "probe").stat().st_size
    out = tmp_path / "downloads"
    for f in folders:
        last = export_zip(f, out, max_bytes=int(2.5 * size))
        time.sleep(0.01)  # distinct mtimes: the least recently used goes first
    kept = sorted(p.name for p in out.rglob("*.zip"))
    assert last.is_file() and kept == ["p4.zip", "p5.zip"]


def test_the_class_library_has_a_quota_and_shipped_prefixes_do_not_count(tiny_llama, tmp_path, shipped):
    pg = Playground(tiny_llama, Library(tmp_path / "class", shipped=shipped),
                    Limits(**LIMITS, library_max_prefixes=2, library_max_mb=1))
    train(pg)
    pg.save_trained("k", "one", owner=A)
    pg.save_trained("k", "two", owner=A)
    with pytest.raises(PlaygroundError, match=r"library is full: it holds 2 prefixes, and this server's limit is 2\. "
                                              r"Delete prefixes you no longer need"):
        pg.save_trained("k", "three", owner=A)
    pg.save_trained("k", "two", overwrite=True, owner=A)  # replacing one is not adding one
    pg.delete("two", owner=A)
    (pg.library.path("one") / "README.md").write_bytes(bytes(2**20))  # 'one' now takes over 1 MB
    with pytest.raises(PlaygroundError, match=r"it takes 1\.0 MB, and this server's limit is 1 MB\. Delete prefixes"):
        pg.save_trained("k", "three", owner=A)
    assert sorted(pg.library.names()) == ["one", "sentiment"] and pg.library.usage()[0] == 1
    assert not [p for p in (tmp_path / "class").iterdir() if p.name.startswith(".")]


# =============================================================================================
# 12: a kill -9 during an import leaves nothing that survives the next start
# =============================================================================================
CHILD = r'''
import os, sys, time
from types import SimpleNamespace
import torch
import playground.service as service
from playground.library import Library
from playground.models import BaseModel
from playground.service import Playground

m = torch.nn.Module()
m.config = SimpleNamespace(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=8)
base = BaseModel("geometry", m, None, torch.device("cpu"), torch.float32, "none")
pg = Playground(base, Library(sys.argv[1]))
real = service.load_prefix

def slow(folder, *a, **k):  # the upload is staged and being checked: the moment to kill
    print("staged", flush=True)
    time.sleep(60)
    return real(folder, *a, **k)

service.load_prefix = slow
pg.import_upload([sys.argv[2]], "copy")
'''


def test_a_kill_9_during_an_import_leaves_nothing_after_a_restart(tmp_path):
    from peft import PrefixTuningConfig

    from playground.prefix import Prefix

    cfg = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, num_layers=2, token_dim=8,
                             num_attention_heads=1)
    src = Library(tmp_path / "src").save("p", Prefix.from_embeddings(cfg, torch.zeros(4, 2 * 2 * 8)))
    z = zip_of(src, tmp_path / "p.zip")
    systmp, lib = tmp_path / "systmp", tmp_path / "lib"
    systmp.mkdir()
    for _ in range(2):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(lib), str(z)], cwd=ROOT, text=True,
                                 stdout=subprocess.PIPE, env={**os.environ, "TMPDIR": str(systmp)})
        try:
            assert child.stdout.readline().strip() == "staged"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        assert os.listdir(systmp) == []  # nothing in the system's temp folder, where no start would look
        Library(lib)  # the next start
        assert os.listdir(lib) == []  # the staged upload of the killed process is gone


# =============================================================================================
# 13: imports obey --max-virtual-tokens
# =============================================================================================
def test_an_import_longer_than_the_servers_prefix_limit_is_refused(tiny_llama, tmp_path, shipped):
    pg = Playground(tiny_llama, Library(tmp_path / "class", shipped=shipped), Limits(max_virtual_tokens=128))
    src = Library(tmp_path / "src")
    for n in (512, 129, 128):
        src.save(f"p{n}", random_prefix(tiny_llama, n=n), card_for(tiny_llama))
    for n in (512, 129):
        with pytest.raises(PlaygroundError, match=rf"has {n} virtual tokens; this server's limit is 128 "
                                                  r"\(--max-virtual-tokens\)\. Train it with at most 128 tokens"):
            pg.import_upload([str(zip_of(src.path(f"p{n}"), tmp_path / f"p{n}.zip"))], owner=A)
    assert pg.import_upload([str(zip_of(src.path("p128"), tmp_path / "p128.zip"))], owner=A) == "p128"
    assert pg.library.names() == ["p128", "sentiment"]


# =============================================================================================
# 14: a student's prefix is theirs; restarts keep it so
# =============================================================================================
def test_only_the_owner_renames_deletes_or_overwrites_a_saved_prefix(pg, tiny_llama, tmp_path):
    train(pg, "a")
    train(pg, "b")
    path = pg.save_trained("a", "mine", owner=A)
    card = json.loads((path / CARD_FILE).read_text())
    assert card["owner"] == owner_tag(A) and "student-a" not in (path / CARD_FILE).read_text()  # a hash, never the id
    z = zip_of(path, tmp_path / "mine.zip")
    for action in (lambda: pg.rename("mine", "stolen", owner=B), lambda: pg.delete("mine", owner=B),
                   lambda: pg.save_trained("b", "mine", overwrite=True, owner=B),
                   lambda: pg.import_upload([str(z)], "mine", overwrite=True, owner=B)):
        with pytest.raises(PlaygroundError, match=r"'mine' belongs to the student who saved it: only they can rename, "
                                                  r"delete or overwrite it\. Save yours under another name\."):
            action()
    who = LIBRARY_HEADERS.index("owner")
    assert {r[0]: r[who] for r in library_rows(pg.library, A)} == {"mine": "yours", "sentiment": "shipped"}
    assert {r[0]: r[who] for r in library_rows(pg.library, B)} == {"mine": "", "sentiment": "shipped"}
    # B imports A's exported zip (its card carries A's tag): the copy is B's, whatever the card said
    assert pg.import_upload([str(z)], "copy", owner=B) == "copy"
    assert pg.library_card("copy")["owner"] == owner_tag(B)
    with pytest.raises(PlaygroundError, match="belongs to"):
        pg.delete("copy", owner=A)
    pg.delete("copy", owner=B)
    # a card that claims an owner is never trusted either
    (tmp_path / "forged").mkdir()
    for f in (CONFIG_FILE, WEIGHTS_FILE):
        (tmp_path / "forged" / f).write_bytes((path / f).read_bytes())
    (tmp_path / "forged" / CARD_FILE).write_text(json.dumps({"owner": owner_tag(B)}))
    pg.import_upload([str(tmp_path / "forged" / f) for f in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)], "forged", owner=A)
    assert pg.library_card("forged")["owner"] == owner_tag(A)
    # the owner keeps full control; a prefix without an owner (saved before owners) is anyone's
    pg.rename("mine", "mine2", owner=A)
    pg.save_trained("a", "mine2", overwrite=True, owner=A)
    pg.delete("mine2", owner=A)
    pg.library.save("legacy", random_prefix(tiny_llama), card_for(tiny_llama))
    pg.rename("legacy", "legacy2", owner=B)
    pg.delete("legacy2", owner=A)


def test_after_a_restart_a_students_save_is_theirs_not_a_shipped_prefix(tiny_llama, tmp_path, shipped):
    args = app.parse_args(["--library", str(tmp_path / "class"), "--shipped", str(shipped)])
    pg = Playground(tiny_llama, app.make_library(args), Limits(**LIMITS))
    train(pg)
    pg.save_trained("k", "mine", owner="user:alice")
    restarted = Playground(tiny_llama, app.make_library(args), Limits(**LIMITS))  # same flags, next start
    assert restarted.library.protected == {"sentiment"}
    with pytest.raises(PlaygroundError, match="belongs to the student") as err:
        restarted.delete("mine", owner="user:bob")
    assert "shipped" not in str(err.value)
    who = LIBRARY_HEADERS.index("owner")
    assert {r[0]: r[who] for r in library_rows(restarted.library, "user:alice")}["mine"] == "yours"
    restarted.rename("mine", "mine2", owner="user:alice")  # the login owns it across restarts
    restarted.delete("mine2", owner="user:alice")
    with pytest.raises(SystemExit):  # one folder for both would make the class's saves read-only
        app.parse_args(["--library", str(shipped), "--shipped", str(shipped)])
    assert Path(app.parse_args([]).library).resolve() != (ROOT / "prefixes").resolve()


def test_the_ui_owner_is_the_login_else_the_browser_else_the_session():
    from ui.common import owner

    bid = "0123456789abcdef0123456789abcdef"
    assert owner(SimpleNamespace(username="alice", session_hash="abc", cookies={"pp-browser": bid})) == "user:alice"
    assert owner(SimpleNamespace(username=None, session_hash="abc", cookies={"pp-browser": bid})) == f"browser:{bid}"
    assert owner(SimpleNamespace(username=None, session_hash="abc")) == "abc"
