"""Uploads and exports of prefix folders and zips (archive.py)."""

from __future__ import annotations

import os
import stat
import time
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

import playground.archive as archive_mod
from playground.archive import export_zip, stage_upload
from playground.errors import PlaygroundError
from playground.library import Library
from playground.peft_folder import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, load_prefix
from playground.prefix import create_prefix

from .support import files_under, ps


@pytest.fixture
def prefix_dir(tiny_llama, tmp_path) -> Path:
    lib = Library(tmp_path / "src-lib")
    prefix = create_prefix(tiny_llama, ps(3, "random"), seed=2)
    return lib.save("good", prefix, {"task": "sentiment", "base_model": tiny_llama.name,
                                     "base_fingerprint": tiny_llama.fingerprint})


def make_zip(path: Path, members: list, compression=zipfile.ZIP_DEFLATED) -> Path:
    """members: (name, bytes) or (ZipInfo, bytes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate names on purpose
        with zipfile.ZipFile(path, "w", compression=compression) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return path


def test_exported_zip_round_trips_through_stage_upload(prefix_dir, tiny_llama, tmp_path):
    out = tmp_path / "exports"
    z = export_zip(prefix_dir, out)
    assert z.name == "good.zip" and z.parent.parent == out
    with zipfile.ZipFile(z) as zf:
        assert sorted(zf.namelist()) == sorted(f"good/{f}" for f in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE))
    folder, suggested = stage_upload([z], tmp_path / "work")
    assert suggested == "good" and folder == tmp_path / "work" / "prefix"
    for f in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE):
        assert (folder / f).read_bytes() == (prefix_dir / f).read_bytes()
    original = load_prefix(prefix_dir, tiny_llama)
    assert torch.equal(load_prefix(folder, tiny_llama).embeddings(), original.embeddings())


def test_a_flat_zip_and_loose_files_are_accepted(prefix_dir, tmp_path):
    flat = make_zip(tmp_path / "flat-name.zip",
                    [(f, (prefix_dir / f).read_bytes()) for f in (CONFIG_FILE, WEIGHTS_FILE)])
    folder, suggested = stage_upload([flat], tmp_path / "w1")
    assert suggested == "flat-name" and sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])
    folder, suggested = stage_upload([prefix_dir / CONFIG_FILE, prefix_dir / WEIGHTS_FILE, None, ""], tmp_path / "w2")
    assert suggested is None
    assert (folder / WEIGHTS_FILE).read_bytes() == (prefix_dir / WEIGHTS_FILE).read_bytes()
    assert not (folder / CARD_FILE).exists()


def test_zip_droppings_and_folder_entries_are_ignored(prefix_dir, tmp_path):
    z = make_zip(tmp_path / "mac.zip", [("good/", b""), ("good/.DS_Store", b"junk"), ("__MACOSX/good/._x", b"junk")]
                 + [(f"good/{f}", (prefix_dir / f).read_bytes()) for f in (CONFIG_FILE, WEIGHTS_FILE)])
    folder, suggested = stage_upload([z], tmp_path / "work")
    assert suggested == "good"
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE])


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


GOOD = [("p/adapter_config.json", b"{}"), ("p/adapter_model.safetensors", b"\x00" * 64)]

BAD_ZIPS = {
    "dotdot": ([("p/../../adapter_config.json", b"{}")] + GOOD[1:], "unsafe path"),
    "dotdot_backslash": ([("..\\adapter_config.json", b"{}")] + GOOD[1:], "unsafe path"),
    "absolute": ([("/tmp/adapter_config.json", b"{}")] + GOOD[1:], "unsafe path"),
    "drive": ([("C:/x/adapter_config.json", b"{}")] + GOOD[1:], "unsafe path"),
    "symlink": ([(_symlink_info("p/adapter_config.json"), b"/etc/passwd")] + GOOD[1:], "symbolic link"),
    "too_deep": ([("a/b/adapter_config.json", b"{}"), ("a/b/adapter_model.safetensors", b"x")], "nested too deep"),
    "unexpected": (GOOD + [("p/run_me.py", b"import os")], "Unexpected file 'run_me.py'"),
    "pickle": ([("p/adapter_config.json", b"{}"), ("p/adapter_model.bin", b"\x80\x04never opened")], "pickle"),
    "two_folders": ([("a/adapter_config.json", b"{}"), ("b/adapter_model.safetensors", b"x")], "several folders"),
    "duplicate": (GOOD + [("p/adapter_config.json", b"{}")], "same file twice"),
    "too_many": ([(f"p/.junk{i}", b"") for i in range(archive_mod.MAX_MEMBERS)] + GOOD, "entries"),
    "bomb": ([("p/adapter_config.json", b"{}"), ("p/adapter_model.safetensors", bytes(2 * 2**20))], "zip bomb"),
    "no_weights": ([("p/adapter_config.json", b"{}"), ("p/card.json", b"{}")], "has no adapter_model.safetensors"),
}


@pytest.mark.parametrize("case", list(BAD_ZIPS))
def test_bad_zips_are_refused_with_a_clear_message_and_nothing_written_outside(case, tmp_path, monkeypatch):
    members, match = BAD_ZIPS[case]
    src = tmp_path / "in" / "upload.zip"
    src.parent.mkdir()
    make_zip(src, members)
    before = files_under(tmp_path)
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info, *a, **k: (opened.append(
        getattr(info, "filename", info)), real_open(self, info, *a, **k))[1])
    work = tmp_path / "work"
    with pytest.raises(PlaygroundError, match=match):
        stage_upload([src], work)
    written = files_under(tmp_path) - before
    assert all(w == "work" or w.startswith(f"work{os.sep}prefix") for w in written), written
    assert not (tmp_path.parent / CONFIG_FILE).exists()
    if case == "no_weights":  # all checks passed; only the files that exist were copied, into staging
        assert sorted(p.name for p in (work / "prefix").iterdir()) == [CONFIG_FILE, CARD_FILE]
    else:  # refused before a single member was opened or written
        assert opened == [] and list((work / "prefix").iterdir()) == []
    assert not any(str(n).endswith(".bin") for n in opened)


def test_upload_level_refusals(prefix_dir, tmp_path, monkeypatch):
    copies = []
    monkeypatch.setattr(archive_mod.shutil, "copyfile", lambda a, b: copies.append(a))
    with pytest.raises(PlaygroundError, match="Nothing uploaded"):
        stage_upload([], tmp_path / "w0")
    with pytest.raises(PlaygroundError, match="Nothing uploaded"):
        stage_upload([None, ""], tmp_path / "w0b")
    fake = tmp_path / "prefix.zip"
    fake.write_bytes(b"these bytes are not a zip archive")
    with pytest.raises(PlaygroundError, match="'prefix.zip' is not a valid zip"):
        stage_upload([fake], tmp_path / "w1")
    good = export_zip(prefix_dir, tmp_path / "exports")
    with pytest.raises(PlaygroundError, match="either one zip or the loose files"):
        stage_upload([good, prefix_dir / CONFIG_FILE], tmp_path / "w2")
    pickle = tmp_path / "adapter_model.bin"
    pickle.write_bytes(b"\x80\x04never opened")
    with pytest.raises(PlaygroundError, match="pickle file"):
        stage_upload([prefix_dir / CONFIG_FILE, pickle], tmp_path / "w3")
    odd = tmp_path / "notes.txt"
    odd.write_text("hi")
    with pytest.raises(PlaygroundError, match="Unexpected file 'notes.txt'"):
        stage_upload([prefix_dir / CONFIG_FILE, odd], tmp_path / "w4")
    other = tmp_path / "other"
    other.mkdir()
    (other / CONFIG_FILE).write_text("{}")
    with pytest.raises(PlaygroundError, match="uploaded twice"):
        stage_upload([prefix_dir / CONFIG_FILE, other / CONFIG_FILE], tmp_path / "w5")
    assert copies == []  # every refusal came before any copy
    monkeypatch.undo()
    with pytest.raises(PlaygroundError, match="has no adapter_model.safetensors"):
        stage_upload([prefix_dir / CONFIG_FILE], tmp_path / "w6")


def test_oversized_uploads_are_refused(prefix_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(archive_mod, "MAX_FILE_BYTES", 500)
    with pytest.raises(PlaygroundError, match="upload limit"):
        stage_upload([prefix_dir / WEIGHTS_FILE, prefix_dir / CONFIG_FILE], tmp_path / "w1")
    # a small zip whose member would unpack past the per-file limit
    z = make_zip(tmp_path / "big.zip", [("p/adapter_config.json", b"{}"), ("p/adapter_model.safetensors", bytes(1000))])
    assert z.stat().st_size < 500
    with pytest.raises(PlaygroundError, match="per file"):
        stage_upload([z], tmp_path / "w2")
    assert list((tmp_path / "w2" / "prefix").iterdir()) == []


def test_export_zip_sweeps_old_downloads_and_skips_foreign_files(prefix_dir, tmp_path):
    out = tmp_path / "exports"
    out.mkdir()
    old, fresh = out / "old.zip", out / "fresh.zip"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    (prefix_dir / "notes.txt").write_text("not part of a prefix")
    z = export_zip(prefix_dir, out, max_age_s=3600)
    assert not old.exists() and fresh.exists()
    with zipfile.ZipFile(z) as zf:
        assert "good/notes.txt" not in zf.namelist() and f"good/{WEIGHTS_FILE}" in zf.namelist()
