"""The prefix library: one folder per prefix in PEFT's format, plus our card.

    prefixes/sentiment/
        adapter_config.json         PEFT's PrefixTuningConfig (inference_mode true)
        adapter_model.safetensors   {"prompt_embeddings": [P, layer*2*token_dim]}
        card.json                   task, base model + fingerprint, settings, metrics, date

What we save loads in ``PeftModel.from_pretrained``; what PEFT saves loads here (no card
needed). Saves, deletes and renames are atomic: files go to a hidden temporary folder that
is renamed into place, so a crash (even kill -9) never leaves a half-written prefix, and
``Library.recover`` finishes or undoes what a killed process left, at the next start.
Nothing is unpickled: weights are read only from safetensors, config and card only as JSON.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, fields
from functools import cache
from datetime import datetime, timezone
from pathlib import Path

import torch
from peft import PrefixTuningConfig
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import PlaygroundError
from .models import BaseModel
from .prefix import MAX_VIRTUAL_TOKENS, Prefix, check_compatible

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
CARD_FILE = "card.json"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CONFIG_FIELDS = {f.name for f in fields(PrefixTuningConfig)}
_CARD_TYPES = {"task": str, "name": str, "base_model": str, "base_fingerprint": str, "metrics": dict, "training": dict}


def check_name(name: str) -> str:
    # fullmatch, not match: '$' also matches before a final newline, so "name\n" got through
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        raise PlaygroundError(f"'{name}' is not a valid prefix name. Use 1-64 letters, digits, '-', '_' or '.', "
                              "starting with a letter or digit.")
    return name


def _short(v) -> str:
    """A value from an uploaded file, cut to fit in a message."""
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _read_json(path: Path, folder: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PlaygroundError(f"{path.name} in '{folder.name}' is not valid JSON ({exc}). Re-export the prefix "
                              "from PEFT or this app.") from None
    except RecursionError:  # json.loads recurses once per bracket: '[[[[...' would escape as a RecursionError
        raise PlaygroundError(f"{path.name} in '{folder.name}' is nested too deeply to be a PEFT file. Re-export "
                              "the prefix from PEFT or this app.") from None


def read_config(folder: Path) -> PrefixTuningConfig:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise PlaygroundError(f"'{folder.name}' has no {CONFIG_FILE}: a PEFT prefix folder needs {CONFIG_FILE} "
                              f"and {WEIGHTS_FILE}.")
    raw = _read_json(path, folder)
    if not isinstance(raw, dict) or raw.get("peft_type") != "PREFIX_TUNING":
        kind = raw.get("peft_type") if isinstance(raw, dict) else type(raw).__name__
        raise PlaygroundError(f"'{folder.name}' is not a prefix-tuning adapter (peft_type is {_short(kind)}, "
                              "expected 'PREFIX_TUNING').")
    if raw.get("task_type") not in (None, "CAUSAL_LM"):
        raise PlaygroundError(f"'{folder.name}' is a {_short(raw.get('task_type'))} prefix; only CAUSAL_LM prefixes "
                              "load here.")
    try:
        config = PrefixTuningConfig(**{k: v for k, v in raw.items() if k in _CONFIG_FIELDS})
        for k in ("num_virtual_tokens", "num_layers", "token_dim", "num_attention_heads"):
            v = getattr(config, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:  # JSON true would pass as 1
                raise ValueError(f"{k} must be a positive whole number, got {_short(v)}")
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise PlaygroundError(f"{CONFIG_FILE} in '{folder.name}' has bad values: {str(exc)[:200]}. Re-export the "
                              "prefix from PEFT or this app.") from None
    if config.num_virtual_tokens > MAX_VIRTUAL_TOKENS:
        raise PlaygroundError(f"'{folder.name}' has {config.num_virtual_tokens} virtual tokens; the limit is "
                              f"{MAX_VIRTUAL_TOKENS}.")
    return config


def read_card(folder: Path) -> dict:
    path = folder / CARD_FILE
    if not path.is_file():
        return {}
    card = _read_json(path, folder)
    if not isinstance(card, dict):
        raise PlaygroundError(f"{CARD_FILE} in '{folder.name}' must hold a JSON object.")
    for k, t in _CARD_TYPES.items():  # what the app reads from a card; the rest is shown as is
        if card.get(k) is not None and not isinstance(card[k], t):
            raise PlaygroundError(f"{CARD_FILE} in '{folder.name}' has {k!r} = {_short(card[k])}, but it must be "
                                  f"{'a string' if t is str else 'an object'}. Fix it, or leave {CARD_FILE} out.")
    return card


def load_prefix(folder: str | Path, base: BaseModel, check_fingerprint: bool = True) -> Prefix:
    """Load a PEFT prefix folder for ``base``, checking files, shapes, values and (if carded) the fingerprint."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PlaygroundError(f"Prefix folder '{folder}' does not exist.")
    config = read_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        pickled = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        hint = (f" It has {', '.join(pickled)}, a pickle file, which is never loaded here: re-save it with "
                "safe_serialization=True.") if pickled else ""
        raise PlaygroundError(f"'{folder.name}' has no {WEIGHTS_FILE}.{hint}")
    check_compatible(config, base, f"The prefix '{folder.name}'")
    card = read_card(folder)
    if check_fingerprint and card.get("base_fingerprint") and card["base_fingerprint"] != base.fingerprint:
        raise PlaygroundError(
            f"The prefix '{folder.name}' was trained on a different model ({card.get('base_model', '?')}, fingerprint "
            f"{card['base_fingerprint']}); the loaded model is {base.name} (fingerprint {base.fingerprint}). Its "
            "shapes fit, but its key/values would mean something else here. Load the model it was trained on."
        )
    try:
        with safe_open(str(weights), framework="pt") as f:
            keys = list(f.keys())
            key = next((k for k in keys if k.endswith("prompt_embeddings")), None)
            if key is None:
                raise PlaygroundError(f"{WEIGHTS_FILE} in '{folder.name}' has no 'prompt_embeddings' tensor "
                                      f"(it has {_short(keys[:5]) if keys else 'nothing'}). Re-export the prefix.")
            emb = f.get_tensor(key)
    except (SafetensorError, ValueError, TypeError, RuntimeError) as exc:  # torch refuses some dtypes itself
        raise PlaygroundError(f"{WEIGHTS_FILE} in '{folder.name}' is not a valid safetensors file "
                              f"({str(exc)[:200]}). Re-export the prefix from PEFT or this app.") from None
    want = (config.num_virtual_tokens, config.num_layers * 2 * config.token_dim)
    if tuple(emb.shape) != want:
        raise PlaygroundError(f"{WEIGHTS_FILE} in '{folder.name}' holds a {tuple(emb.shape)} tensor, but its config "
                              f"says {want}. The files don't belong together; re-export the prefix.")
    if not emb.is_floating_point():
        raise PlaygroundError(f"{WEIGHTS_FILE} in '{folder.name}' holds {str(emb.dtype).replace('torch.', '')} "
                              "values; a prefix is floats. Re-export the prefix from PEFT or this app.")
    emb = emb.float()  # before isfinite, which torch lacks for float8
    if not torch.isfinite(emb).all():
        raise PlaygroundError(f"{WEIGHTS_FILE} in '{folder.name}' holds NaN or infinite values: its training "
                              "diverged. Train it again (a lower learning rate helps).")
    return Prefix.from_embeddings(config, emb, card, device=base.device)


def write_prefix(folder: Path, prefix: Prefix, card: dict) -> None:
    """Write the three files into ``folder`` (which must not exist yet), flushed to disk."""
    config, emb = prefix.exported()
    folder.mkdir(parents=True)
    config.save_pretrained(str(folder))  # PEFT writes adapter_config.json itself
    save_file({"prompt_embeddings": emb}, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2, default=str) + "\n", encoding="utf-8")
    for f in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, "."):  # a power cut after the rename finds full files
        _fsync(folder / f)


# ---- Crash safety ----------------------------------------------------------------------------
# Every change is one rename inside the library folder (so on one filesystem) from a hidden
# temporary folder, ".{kind}-{name}~{host}~{pid}~{token}~XXXXXXXX": kind "tmp" is a save being
# written, "old" the previous version during an overwrite, "del" a prefix being deleted. The
# owner in the name lets ``Library.recover`` tell a killed process's leftovers (clean them now)
# from a live save of another process or replica (leave it alone).
log = logging.getLogger(__name__)
STALE_S = 3600  # no save takes an hour: older temporary folders are leftovers, whoever made them
_OWNER = r"(?P<owner>[^~]*~\d+~[0-9a-f]+)"
_LEFTOVER = re.compile(rf"^\.(?P<kind>tmp|old|del)-(?P<name>[^~]+)~{_OWNER}~")
_LEGACY = re.compile(r"^\.(?P<kind>tmp|old|del)-(?P<name>.+)-[a-z0-9_]{8}$")  # before owners were recorded
_CARD_TMP = re.compile(rf"^\.{re.escape(CARD_FILE)}~{_OWNER}~tmp$")  # a rename's new card, not yet in place


@cache
def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:40]


@cache
def _token() -> str:
    return secrets.token_hex(4)  # tells this process from an earlier one with the same pid (a restarted container)


def _owner() -> str:
    return f"{_host()}~{os.getpid()}~{_token()}"


def _in_flight(path: Path, owner: str) -> bool:
    """Whether the process named by ``owner`` (host~pid~token) may still be writing ``path``."""
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return False
    host, pid, token = owner.split("~")
    if age > STALE_S:
        return False
    if host != _host():  # another machine on shared storage: only the age tells
        return True
    if int(pid) == os.getpid():
        return token == _token()
    if os.name != "posix":
        return True
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # e.g. folders on Windows: the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems can't fsync a folder
    finally:
        os.close(fd)


@dataclass
class LibraryEntry:
    name: str
    path: Path
    card: dict


class Library:
    """A folder of prefixes. ``read_only`` protects what was there at start from delete and overwrite.

    Opening a library recovers what a killed process left half way (see ``recover``), so the
    listing holds complete prefixes only, after any crash.
    """

    def __init__(self, root: str | Path, read_only: bool = False):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # one change at a time in this process; renames guard the others
        self.recovered = self.recover()
        self.protected = {e.name for e in self.entries()} if read_only else set()

    def recover(self) -> list[str]:
        """Finish or undo the changes that killed processes left half way; returns what it did, for the log.

        A ``.tmp-*`` folder (a save never renamed into place) and a ``.del-*`` folder (a delete,
        already gone from the listing) are removed. An ``.old-*`` folder holds the previous
        version during an overwrite: if the process died between its two renames the name is
        missing, and the previous version goes back; otherwise it is removed. A rename's staged
        card is put in place if the folder got its new name, else dropped. Leftovers of live
        processes (this host's, or another host's younger than ``STALE_S``) are left alone.
        """
        done, removed = [], 0
        with self._lock:
            for d in sorted(self.root.iterdir()):
                m = _LEFTOVER.match(d.name) or _LEGACY.match(d.name)
                if not m or not d.is_dir() or (m.re is _LEFTOVER and _in_flight(d, m["owner"])):
                    continue
                name, kept = m["name"], d / "p"
                try:
                    if (m["kind"] == "old" and NAME_RE.fullmatch(name) and not (self.root / name).exists()
                            and (kept / CONFIG_FILE).is_file() and (kept / WEIGHTS_FILE).is_file()):
                        os.replace(kept, self.root / name)
                        done.append(f"restored '{name}' (a process overwriting it was killed)")
                    shutil.rmtree(d)
                    removed += 1
                except OSError as exc:
                    log.warning("could not clean up %s: %s", d, exc)
            for e in self.entries():
                for f in e.path.iterdir():
                    m = _CARD_TMP.match(f.name)
                    if not m or _in_flight(f, m["owner"]):
                        continue
                    try:
                        card = json.loads(f.read_text(encoding="utf-8"))
                        if isinstance(card, dict) and card.get("name") == e.name:  # the folder rename happened
                            os.replace(f, e.path / CARD_FILE)
                            done.append(f"finished renaming '{e.name}'")
                        else:
                            f.unlink()
                    except (OSError, ValueError) as exc:
                        log.warning("could not clean up %s: %s", f, exc)
        if removed:
            done.append(f"removed {removed} unfinished temporary folder{'s' * (removed > 1)}")
        if done:
            log.info("library %s: %s", self.root, "; ".join(done))
        return done

    def _temp(self, kind: str, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f".{kind}-{name}~{_owner()}~", dir=self.root))

    def _discard(self, folder: Path) -> None:
        """Remove a hidden folder; renamed to '.del-' first, so that recovery never restores a half-removed one."""
        dead = folder.with_name(".del-" + folder.name.split("-", 1)[1])
        try:
            os.replace(folder, dead)
        except OSError:
            dead = folder  # the change itself is done; recovery removes what is left
        shutil.rmtree(dead, ignore_errors=True)

    def path(self, name: str) -> Path:
        return self.root / check_name(name)

    def entries(self) -> list[LibraryEntry]:
        """Complete prefixes only: hidden temporary folders and folders without both PEFT files are skipped."""
        out = []
        for d in sorted(self.root.iterdir()):
            if d.name.startswith(".") or not d.is_dir():
                continue
            if (d / CONFIG_FILE).is_file() and (d / WEIGHTS_FILE).is_file():
                try:
                    card = read_card(d)
                except PlaygroundError:
                    card = {}
                out.append(LibraryEntry(d.name, d, card))
        return out

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def load(self, name: str, base: BaseModel) -> Prefix:
        path = self.path(name)
        if not path.is_dir():
            raise PlaygroundError(f"No prefix named '{name}' in {self.root}. Available: {', '.join(self.names()) or 'none'}.")
        return load_prefix(path, base)

    def _check_writable(self, name: str) -> None:
        if name in self.protected:
            raise PlaygroundError(f"'{name}' is a shipped prefix and the library is read-only: save under another name.")

    def save(self, name: str, prefix: Prefix, card: dict | None = None, overwrite: bool = False) -> Path:
        """Atomically save ``prefix`` as ``name``; the card gets the date and the prefix's own info."""
        dest = self.path(name)
        self._check_writable(name)
        taken = f"A prefix named '{name}' already exists. Choose another name or allow overwrite."
        if dest.exists() and not overwrite:
            raise PlaygroundError(taken)
        full = {**prefix.info, **(card or {}), "name": name, "num_virtual_tokens": prefix.num_virtual_tokens,
                "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        tmp = self._temp("tmp", name)
        try:
            write_prefix(tmp / "p", prefix, full)  # the slow part, outside the lock
            with self._lock:
                if dest.exists() and not overwrite:  # saved by another session meanwhile
                    raise PlaygroundError(taken)
                if dest.exists():  # swap: the old one aside, the new one in, then drop the old
                    old = self._temp("old", name)
                    os.replace(dest, old / "p")  # (a kill here: recover puts the old one back)
                    try:
                        os.replace(tmp / "p", dest)
                    except OSError:
                        os.replace(old / "p", dest)
                        raise
                    self._discard(old)
                else:
                    try:
                        os.replace(tmp / "p", dest)
                    except OSError:
                        if dest.exists():  # another process saved this name at the same moment
                            raise PlaygroundError(taken) from None
                        raise
                _fsync(self.root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def delete(self, name: str) -> None:
        self._check_writable(name)
        path = self.path(name)
        with self._lock:
            if not path.is_dir():
                raise PlaygroundError(f"No prefix named '{name}'.")
            trash = self._temp("del", name)
            try:
                os.replace(path, trash / "p")  # gone from the listing at once
            except FileNotFoundError:  # deleted by another process meanwhile
                trash.rmdir()
                raise PlaygroundError(f"No prefix named '{name}'.") from None
            _fsync(self.root)
        shutil.rmtree(trash, ignore_errors=True)

    def rename(self, old: str, new: str) -> None:
        """Rename in one step: the new card is staged, hidden, in the folder, then the folder is renamed."""
        self._check_writable(old)
        src, dst = self.path(old), self.path(new)
        taken = f"A prefix named '{new}' already exists."
        with self._lock:
            if not src.is_dir():
                raise PlaygroundError(f"No prefix named '{old}'.")
            if dst.exists():
                raise PlaygroundError(taken)
            card, staged = read_card(src), None
            if card:
                staged = src / f".{CARD_FILE}~{_owner()}~tmp"
                staged.write_text(json.dumps({**card, "name": new}, indent=2, default=str) + "\n", encoding="utf-8")
            try:
                os.replace(src, dst)  # (a kill after this: recover puts the staged card in place)
            except OSError:
                if staged:
                    staged.unlink(missing_ok=True)
                if dst.exists():
                    raise PlaygroundError(taken) from None
                raise
            if staged:
                os.replace(dst / staged.name, dst / CARD_FILE)
            _fsync(self.root)


def make_card(base: BaseModel, task_name: str, settings: dict, metrics: dict, **extra) -> dict:
    """The card fields the library expects beside the PEFT files."""
    return {"task": task_name, "base_model": base.name, "base_fingerprint": base.fingerprint,
            "training": settings, "metrics": metrics, **extra}
