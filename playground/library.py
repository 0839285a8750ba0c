"""The prefix library: the shipped prefixes and the class's own, one folder each, kept crash-safe.

A ``Library`` is two folders listed as one: the shipped prefixes (read-only, unless opened
with ``writable_shipped`` to maintain them) and the class's own folder, where students save,
with quotas and owners (see ``Library``). Each prefix is a
folder in PEFT's format with our card (``peft_folder.py`` holds the format and its checks);
cards past ``max_card_kb`` are never read from disk. Saves, deletes and renames are atomic:
files go to a hidden temporary folder that is renamed into place, so a crash (even kill -9)
never leaves a half-written prefix, and ``Library.recover`` finishes or undoes what a killed
process left, at the next start.
"""

from __future__ import annotations

import contextlib
import hashlib
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

from .errors import PlaygroundError
from .models import BaseModel
from .names import NAME_RE, check_name, fold, same_name_message
from .peft_folder import CARD_FILE, CONFIG_FILE, MAX_CARD_KB, WEIGHTS_FILE, load_prefix, read_card, write_prefix
from .prefix import Prefix

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


def owner_tag(identity: str) -> str:
    """What a card records of who saved it: a hash, so a card shown to everyone names no session or login."""
    return hashlib.sha256(f"prefix-playground owner\x00{identity}".encode()).hexdigest()[:32]


def files_stamp(folder: Path) -> tuple:
    """What tells one version of a prefix folder from the next: each file's name, inode, mtime and size.

    The inode too: an atomic re-save makes new files, possibly the same size within one mtime tick.
    """
    return tuple((f.name, st.st_ino, st.st_mtime_ns, st.st_size)
                 for f in sorted(folder.iterdir()) if f.is_file() for st in (f.stat(),))


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


class NameTaken(PlaygroundError):
    """A save refused because ``name`` exists and overwrite was not allowed (the UI asks, then saves again)."""

    def __init__(self, name: str):
        super().__init__(f"A prefix named '{name}' already exists. Choose another name or allow overwrite.")
        self.name = name


@dataclass
class LibraryEntry:
    name: str
    path: Path
    card: dict = field(default_factory=dict)
    shipped: bool = False  # from the shipped folder: read-only in the app unless ``writable_shipped``


class Library:
    """The class's prefixes (``root``, writable) beside the shipped ones (``shipped``, read-only).

    Both folders list as one library with one namespace: names are compared folded
    (``names.fold``), so 'SENTIMENT' is 'sentiment' on every OS, and a class folder that
    folds to a shipped name is hidden. Saves, renames and deletes act on ``root`` only;
    ``read_only`` makes ``root`` read-only too. ``writable_shipped`` (for maintaining the
    shipped set) lets the shipped prefixes be renamed, deleted and overwritten in place; new
    names still go to ``root``. A prefix saved with an ``owner`` (a login or
    browser session) can be renamed, deleted or overwritten only by that owner; prefixes
    without one are anyone's. ``owner=None`` is the server's own tools (CLI, tests). The
    quotas (``max_prefixes``, ``max_mb``) count ``root`` only.

    Opening a library recovers what a killed process left half way (see ``recover``), so the
    listing holds complete prefixes only, after any crash.
    """

    def __init__(self, root: str | Path, shipped: str | Path | None = None, read_only: bool = False,
                 writable_shipped: bool = False):
        self.root = Path(root)
        self.shipped = Path(shipped) if shipped is not None else None
        if self.shipped is not None and self.shipped.resolve() == self.root.resolve():
            raise PlaygroundError(f"The class's library and the shipped prefixes are the same folder ({self.root}): "
                                  "give the class its own folder, so that shipped prefixes stay read-only.")
        self.read_only = read_only
        self.writable_shipped = writable_shipped and not read_only
        self.max_prefixes: int | None = None  # quotas of root; the service sets them from its Limits
        self.max_mb: int | None = None
        self.max_card_kb = MAX_CARD_KB
        if not read_only:
            self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # one change at a time in this process; renames guard the others
        self.recovered = self.recover() if self.root.is_dir() else []

    @property
    def protected(self) -> set[str]:
        """Names nobody can change here: the shipped prefixes (unless ``writable_shipped``), and with
        ``read_only`` the whole library."""
        return {e.name for e in self._folders() if (e.shipped and not self.writable_shipped) or self.read_only}

    def _homes(self) -> list[Path]:
        """The folders this library changes: ``root``, and the shipped folder with ``writable_shipped``."""
        homes = [self.root]
        if self.writable_shipped and self.shipped is not None and self.shipped.is_dir():
            homes.append(self.shipped)
        return [h for h in homes if h.is_dir()]

    def recover(self) -> list[str]:
        """Finish or undo the changes that killed processes left half way; returns what it did, for the log.

        A ``.tmp-*`` folder (a save never renamed into place, or an upload being checked) and a
        ``.del-*`` folder (a delete, already gone from the listing) are removed. An ``.old-*``
        folder holds the previous version during an overwrite: if the process died between its
        two renames the name is missing, and the previous version goes back; otherwise it is
        removed. A rename's staged card is put in place if the folder got its new name, else
        dropped. Leftovers of live processes (this host's, or another host's younger than
        ``STALE_S``) are left alone.
        """
        done, removed = [], 0
        with self._lock:
            for d in sorted(d for home in self._homes() for d in home.iterdir()):
                m = _LEFTOVER.match(d.name) or _LEGACY.match(d.name)
                if not m or not d.is_dir() or (m.re is _LEFTOVER and _in_flight(d, m["owner"])):
                    continue
                name, kept, home = m["name"], d / "p", d.parent
                try:
                    if (m["kind"] == "old" and NAME_RE.fullmatch(name) and not (home / name).exists()
                            and (kept / CONFIG_FILE).is_file() and (kept / WEIGHTS_FILE).is_file()):
                        os.replace(kept, home / name)
                        done.append(f"restored '{name}' (a process overwriting it was killed)")
                    shutil.rmtree(d)
                    removed += 1
                except OSError as exc:
                    log.warning("could not clean up %s: %s", d, exc)
            for e in self._folders():
                if e.path.parent not in self._homes():
                    continue
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
            log.info("library %s: %s", " + ".join(map(str, self._homes())), "; ".join(done))
        return done

    def _temp(self, kind: str, name: str, home: Path | None = None) -> Path:
        """A hidden folder in ``home`` (default ``root``): the folder it will be renamed into, so one filesystem."""
        return Path(tempfile.mkdtemp(prefix=f".{kind}-{name}~{_owner()}~", dir=home or self.root))

    def _discard(self, folder: Path) -> None:
        """Remove a hidden folder; renamed to '.del-' first, so that recovery never restores a half-removed one."""
        dead = folder.with_name(".del-" + folder.name.split("-", 1)[1])
        try:
            os.replace(folder, dead)
        except OSError:
            dead = folder  # the change itself is done; recovery removes what is left
        shutil.rmtree(dead, ignore_errors=True)

    @contextlib.contextmanager
    def staging(self):
        """A fresh hidden folder in ``root`` for an upload being checked: removed afterwards, or by ``recover``
        at the next start if the process is killed meanwhile."""
        self._check_open()
        tmp = self._temp("tmp", "upload")
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # ---- Lookup: one namespace of folded names over both folders -------------------------------
    def _folders(self, shipped: bool | None = None) -> list[LibraryEntry]:
        """Complete prefixes (both PEFT files) without their cards, sorted by name; hidden folders skipped."""
        out, taken = [], set()
        for where, is_shipped in ((self.shipped, True), (self.root, False)):
            if where is None or (shipped is not None and is_shipped != shipped):
                continue
            try:
                found = sorted(where.iterdir())
            except (FileNotFoundError, NotADirectoryError):
                continue
            for d in found:
                if d.name.startswith(".") or not d.is_dir():
                    continue
                if not ((d / CONFIG_FILE).is_file() and (d / WEIGHTS_FILE).is_file()):
                    continue
                if not is_shipped and fold(d.name) in taken:
                    continue  # a look-alike of a shipped prefix (made before names were folded): the shipped one wins
                if is_shipped:
                    taken.add(fold(d.name))
                out.append(LibraryEntry(d.name, d, shipped=is_shipped))
        return sorted(out, key=lambda e: e.name)

    def find(self, name: str) -> LibraryEntry | None:
        """The prefix that ``name`` means here (its own spelling first, else the same folded name), or None."""
        check_name(name)
        found = self._folders()
        return (next((e for e in found if e.name == name), None)
                or next((e for e in found if fold(e.name) == fold(name)), None))

    def path(self, name: str) -> Path:
        """Where ``name`` is, or would be saved (in ``root``)."""
        e = self.find(name)
        return e.path if e else self.root / name

    def card(self, e: LibraryEntry) -> dict:
        """``e``'s card, or {} when it is missing, broken or over ``max_card_kb`` (then nothing of it is read)."""
        try:
            return read_card(e.path, self.max_card_kb)
        except PlaygroundError:
            return {}

    def entries(self) -> list[LibraryEntry]:
        """Complete prefixes only, with their cards: hidden temporary folders and incomplete folders are skipped."""
        out = self._folders()
        for e in out:
            e.card = self.card(e)
        return out

    def names(self) -> list[str]:
        return [e.name for e in self._folders()]

    def owned_by(self, e: LibraryEntry, owner: str | None) -> bool:
        tag = self.card(e).get("owner")
        return owner is not None and isinstance(tag, str) and tag == owner_tag(owner)

    def load(self, name: str, base: BaseModel) -> Prefix:
        e = self.find(name)
        if e is None:
            raise PlaygroundError(f"No prefix named '{name}' in {self.root}. Available: {', '.join(self.names()) or 'none'}.")
        return load_prefix(e.path, base, max_card_kb=self.max_card_kb)

    # ---- Rules for changes ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.read_only:
            raise PlaygroundError("The library is read-only on this server: nothing can be saved, renamed, deleted "
                                  "or imported. Download a prefix to keep a copy of it.")

    def _check_editable(self, e: LibraryEntry, owner: str | None) -> None:
        if e.shipped and not self.writable_shipped:
            raise PlaygroundError(f"'{e.name}' is a shipped prefix, and shipped prefixes are read-only: save under "
                                  "another name.")
        tag = self.card(e).get("owner")
        if owner is not None and isinstance(tag, str) and tag != owner_tag(owner):
            raise PlaygroundError(f"'{e.name}' belongs to the student who saved it: only they can rename, delete or "
                                  "overwrite it. Save yours under another name.")

    def _destination(self, name: str, overwrite: bool, owner: str | None) -> LibraryEntry | None:
        """The entry a save of ``name`` replaces (None for a new one), after every rule allows it."""
        e = self.find(name)
        if e is None:
            return None
        if e.name != name:  # 'Sentiment' beside 'sentiment': one name, two spellings
            raise PlaygroundError(same_name_message(name, e.name, e.shipped))
        self._check_editable(e, owner)
        if not overwrite:
            raise NameTaken(name)
        return e

    def check_change(self, name: str, owner: str | None = None) -> LibraryEntry:
        """The prefix ``name`` if ``owner`` may rename, delete or overwrite it here, else the refusal: the UI
        asks this before it asks for a confirmation, so a confirmed change is not then refused."""
        check_name(name)
        self._check_open()
        with self._lock:
            e = self.find(name)
            if e is None:
                raise PlaygroundError(f"No prefix named '{name}'.")
            self._check_editable(e, owner)
            return e

    def usage(self) -> tuple[int, int]:
        """(prefixes, bytes) in ``root``: what the quotas count."""
        mine = self._folders(shipped=False)
        return len(mine), sum(_size(e.path) for e in mine)

    def _check_quota(self, adding: int | None, replacing: LibraryEntry | None) -> None:
        """Refuse a save that would pass a quota; ``adding`` is its size once written (None: not known yet)."""
        if (self.max_prefixes is None and self.max_mb is None) or (replacing is not None and replacing.shipped):
            return  # (a shipped prefix overwritten in place, with writable_shipped: root does not grow)
        n, size = self.usage()
        if replacing is not None:
            n, size = n - 1, size - _size(replacing.path)
        fix = "Delete prefixes you no longer need (Library tab), then try again."
        if self.max_prefixes is not None and n + 1 > self.max_prefixes:
            raise PlaygroundError(f"The class's library is full: it holds {n} prefixes, and this server's limit is "
                                  f"{self.max_prefixes}. {fix}")
        if self.max_mb is not None and size + (adding or 0) > self.max_mb * 2**20:
            needs = f", this prefix needs {adding / 2**20:,.1f} MB more" if adding else ""
            raise PlaygroundError(f"The class's library is full: it takes {size / 2**20:,.1f} MB{needs}, and this "
                                  f"server's limit is {self.max_mb:,} MB. {fix}")

    # ---- Changes: each one rename from a hidden temporary folder ---------------------------------
    def save(self, name: str, prefix: Prefix, card: dict | None = None, overwrite: bool = False,
             owner: str | None = None) -> Path:
        """Atomically save ``prefix`` as ``name`` in ``root``; the card gets the date, the prefix's info and
        the owner's tag (never one from ``card``: an uploaded card could claim anyone)."""
        check_name(name)
        self._check_open()
        replacing = self._destination(name, overwrite, owner)
        self._check_quota(None, replacing)  # fail early, before the slow write
        full = {**prefix.info, **(card or {}), "name": name, "num_virtual_tokens": prefix.num_virtual_tokens,
                "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        full.pop("owner", None)
        if owner is not None:
            full["owner"] = owner_tag(owner)
        kb = len(json.dumps(full, indent=2, default=str).encode()) / 1024
        if kb > self.max_card_kb:
            raise PlaygroundError(f"The card of '{name}' would take {kb:,.0f} KB; the limit is {self.max_card_kb:,} "
                                  "KB. Shorten its longest fields (such as the instruction), then save again.")
        dest = replacing.path if replacing is not None else self.root / name  # a shipped one is replaced in place
        tmp = self._temp("tmp", name, dest.parent)
        try:
            write_prefix(tmp / "p", prefix, full)  # the slow part, outside the lock
            for f in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, "."):  # a power cut after the rename finds full files
                _fsync(tmp / "p" / f)
            with self._lock:
                old_e = self._destination(name, overwrite, owner)  # again: another session may have saved meanwhile
                if old_e is not None and old_e.path != dest:  # (only when a folder was renamed meanwhile)
                    raise PlaygroundError(f"'{name}' changed while it was being saved: save again.")
                self._check_quota(_size(tmp / "p"), old_e)
                if old_e is not None:  # swap: the old one aside, the new one in, then drop the old
                    old = self._temp("old", name, dest.parent)
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
                            raise NameTaken(name) from None
                        raise
                _fsync(dest.parent)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def delete(self, name: str, owner: str | None = None) -> None:
        with self._lock:
            e = self.check_change(name, owner)
            trash = self._temp("del", e.name, e.path.parent)
            try:
                os.replace(e.path, trash / "p")  # gone from the listing at once
            except FileNotFoundError:  # deleted by another process meanwhile
                trash.rmdir()
                raise PlaygroundError(f"No prefix named '{name}'.") from None
            _fsync(e.path.parent)
        shutil.rmtree(trash, ignore_errors=True)

    def rename(self, old: str, new: str, owner: str | None = None) -> None:
        """Rename in one step: the new card is staged, hidden, in the folder, then the folder is renamed."""
        check_name(old)
        check_name(new)
        self._check_open()
        taken = f"A prefix named '{new}' already exists."
        with self._lock:
            e = self.check_change(old, owner)
            other = self.find(new)
            if other is not None and other.path != e.path:
                raise PlaygroundError(same_name_message(new, other.name, other.shipped) if other.name != new
                                      else taken)
            src, dst = e.path, e.path.parent / new  # a shipped one (writable_shipped) stays among the shipped
            if dst.name == src.name:
                return
            if dst.exists() and fold(new) != fold(src.name):  # a folder that is not a prefix holds the name
                raise PlaygroundError(taken)
            card, staged = self.card(e), None
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
            _fsync(dst.parent)
