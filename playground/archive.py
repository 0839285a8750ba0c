"""Prefix folders in and out of the app: zip export, and checked import of uploads.

An upload is either one zip of a PEFT prefix folder or the loose files themselves
(``adapter_config.json`` + ``adapter_model.safetensors``, optionally ``card.json``). Zips
are read member by member, never extracted wholesale: names with ``..``, absolute paths,
symlinks, nested folders, unexpected files and oversized or bomb-like members are refused
before a byte is written. Pickle files (``.bin``, ``.pt``...) are refused by name and
never opened. What passes is copied into a fresh staging folder that the caller validates
with ``peft_folder.load_prefix`` and then saves atomically.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from .errors import PlaygroundError
from .library import files_stamp
from .peft_folder import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE

ALLOWED = {CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, "README.md"}  # PEFT's save_pretrained also writes README.md
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
MAX_FILE_BYTES = 64 * 1024 * 1024  # a 512-token prefix of a 30-layer model is ~24 MB in fp32
MAX_MEMBERS = 16
MAX_RATIO = 200  # uncompressed / compressed; safetensors and JSON compress far less than this


def _refuse_pickle(name: str) -> None:
    if PurePosixPath(name).suffix.lower() in PICKLE_SUFFIXES:
        raise PlaygroundError(f"'{name}' is a pickle file. Pickles can run code when loaded, so they are never "
                              f"opened here. Save the adapter with safe_serialization=True to get {WEIGHTS_FILE}.")


def _check_basename(name: str) -> None:
    _refuse_pickle(name)
    if name not in ALLOWED:
        raise PlaygroundError(f"Unexpected file '{name}'. A prefix upload holds only {CONFIG_FILE} and "
                              f"{WEIGHTS_FILE} (and optionally {CARD_FILE}, README.md).")


def _zip_members(zf: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, str]]:
    """The zip's files with their base names, after every safety check."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise PlaygroundError(f"The zip holds {len(infos)} entries; a prefix folder has at most 4 files.")
    out, folders = [], set()
    for info in infos:
        raw = info.filename
        path = PurePosixPath(raw.replace("\\", "/"))
        if raw.startswith(("/", "\\")) or ".." in path.parts or (path.parts and ":" in path.parts[0]):
            raise PlaygroundError(f"The zip has an unsafe path '{raw}' (absolute or with '..'). Zip the prefix "
                                  "folder itself, with plain relative names.")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise PlaygroundError(f"The zip entry '{raw}' is a symbolic link; links are not accepted.")
        if info.is_dir():
            continue
        if path.name.startswith(".") or path.name == "" or "__MACOSX" in path.parts:
            continue  # Finder's and editors' droppings
        if len(path.parts) > 2:
            raise PlaygroundError(f"The zip entry '{raw}' is nested too deep. Zip one prefix folder: "
                                  f"name/{CONFIG_FILE}, name/{WEIGHTS_FILE}.")
        _check_basename(path.name)
        if info.flag_bits & 0x1:
            raise PlaygroundError(f"The zip entry '{raw}' is encrypted. Zip the prefix folder without a password.")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise PlaygroundError(f"The zip entry '{raw}' uses compression method {info.compress_type}; re-zip the "
                                  "prefix folder with plain zip (deflate).")
        if info.file_size > MAX_FILE_BYTES:
            raise PlaygroundError(f"'{raw}' would unpack to {info.file_size / 2**20:.0f} MB; the limit is "
                                  f"{MAX_FILE_BYTES // 2**20} MB per file.")
        if info.compress_size and info.file_size / info.compress_size > MAX_RATIO:
            raise PlaygroundError(f"'{raw}' is compressed {info.file_size // max(info.compress_size, 1)}:1, which "
                                  "looks like a zip bomb. Re-zip the real prefix files.")
        folders.add(path.parts[0] if len(path.parts) == 2 else "")
        out.append((info, path.name))
    if len(folders) > 1:
        raise PlaygroundError(f"The zip holds several folders ({', '.join(sorted(f or '.' for f in folders))}); "
                              "upload one prefix at a time.")
    names = [n for _, n in out]
    if len(names) != len(set(names)):
        raise PlaygroundError("The zip holds the same file twice.")
    return out


def stage_upload(paths: list[str | Path], workdir: str | Path) -> tuple[Path, str | None]:
    """Copy an upload into ``workdir/prefix`` after checking it. Returns (folder, suggested name)."""
    paths = [Path(p) for p in paths if p]
    if not paths:
        raise PlaygroundError(f"Nothing uploaded. Give a zip of a PEFT prefix folder, or {CONFIG_FILE} and "
                              f"{WEIGHTS_FILE}.")
    dest = Path(workdir) / "prefix"
    dest.mkdir(parents=True)
    for p in paths:
        _refuse_pickle(p.name)
        if p.stat().st_size > MAX_FILE_BYTES:
            raise PlaygroundError(f"'{p.name}' is {p.stat().st_size / 2**20:.0f} MB; the upload limit is "
                                  f"{MAX_FILE_BYTES // 2**20} MB.")
    zips = [p for p in paths if p.suffix.lower() == ".zip"]
    if zips:
        if len(paths) != 1:
            raise PlaygroundError("Upload either one zip or the loose files, not both.")
        try:
            with zipfile.ZipFile(zips[0]) as zf:
                members = _zip_members(zf)
                suggested = next((PurePosixPath(i.filename).parts[0] for i, _ in members
                                  if len(PurePosixPath(i.filename).parts) == 2), None)
                for info, name in members:
                    with zf.open(info) as src, open(dest / name, "wb") as dst:
                        # copy with a hard cap: the header's size can lie
                        left = MAX_FILE_BYTES + 1
                        while chunk := src.read(min(1 << 20, left)):
                            dst.write(chunk)
                            left -= len(chunk)
                            if left <= 0:
                                raise PlaygroundError(f"'{info.filename}' unpacks past the {MAX_FILE_BYTES // 2**20} "
                                                      "MB limit.")
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as exc:
            # a damaged member (bad CRC, truncated deflate stream) fails only while it is read
            raise PlaygroundError(f"'{zips[0].name}' is not a valid zip file ({str(exc)[:120]}). Zip the prefix "
                                  "folder again.") from None
        suggested = suggested or zips[0].stem
    else:
        for p in paths:
            _check_basename(p.name)
        if len({p.name for p in paths}) != len(paths):
            raise PlaygroundError(f"The same file was uploaded twice. Upload one prefix: {CONFIG_FILE} and "
                                  f"{WEIGHTS_FILE} (and optionally {CARD_FILE}), once each.")
        for p in paths:
            shutil.copyfile(p, dest / p.name)
        suggested = None
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (dest / f).is_file()]
    if missing:
        raise PlaygroundError(f"The upload has no {' or '.join(missing)}. A PEFT prefix needs both {CONFIG_FILE} "
                              f"and {WEIGHTS_FILE}.")
    return dest, suggested


def export_zip(folder: Path, out_dir: Path, max_age_s: float = 3600, max_bytes: int | None = None) -> Path:
    """Zip a library prefix as ``name/<files>`` into ``out_dir``, once per version of the prefix.

    The zip is ``out_dir/<name>~<version>/<name>.zip``, where the version comes from the
    folder's files (see ``library.files_stamp``): exporting an unchanged prefix again returns
    the same file, and a changed prefix replaces its older zip. Zips unused for ``max_age_s``
    are swept, and the oldest go first while the folder holds more than ``max_bytes``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    version = hashlib.sha1(repr((str(folder.resolve()), files_stamp(folder))).encode()).hexdigest()[:16]
    sub = out_dir / f"{folder.name}~{version}"
    path = sub / f"{folder.name}.zip"
    now = time.time()
    for old in out_dir.iterdir():  # downloads are one-shot; don't let them pile up
        try:
            stale = now - old.stat().st_mtime > max_age_s or (old.name.startswith(f"{folder.name}~")
                                                              and old != sub)
        except OSError:
            continue  # removed by another request meanwhile
        if stale:
            _remove(old)
    if path.is_file():
        os.utime(sub)  # used again: the sweeps keep it
        return path
    sub.mkdir(exist_ok=True)
    tmp = sub / f".{secrets.token_hex(4)}.zip"  # written aside, then renamed: a concurrent export sees a whole zip
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.name in ALLOWED:
                zf.write(f, f"{folder.name}/{f.name}")
    os.replace(tmp, path)
    if max_bytes is not None:
        _bound(out_dir, max_bytes, keep=sub)
    return path


def _remove(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _bound(out_dir: Path, max_bytes: int, keep: Path) -> None:
    """Remove the least recently used downloads until ``out_dir`` holds at most ``max_bytes`` (``keep`` stays)."""
    sized = []
    for d in out_dir.iterdir():
        try:
            files = [f for f in d.rglob("*") if f.is_file()] if d.is_dir() else [d]
            sized.append((d.stat().st_mtime, sum(f.stat().st_size for f in files), d))
        except OSError:
            continue
    total = sum(s for _, s, _ in sized)
    for _, size, d in sorted(sized, key=lambda t: t[0]):
        if total <= max_bytes:
            break
        if d != keep:
            _remove(d)
            total -= size
