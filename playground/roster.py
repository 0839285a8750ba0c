"""Who is who in a class: the students' display names and the teacher's role.

A learner is known by an identity key that the web app derives from the request: ``user:NAME``
for a login, else ``browser:ID`` for a browser (a cookie, so a reload or a second tab is the same
learner). A browser without a login picks a display name here; a name belongs to the first
browser that takes it, so two students can't both be "alex". Names are kept in the class folder
(``names.json``), so they outlive a restart of the server.

The teacher is whoever logs in with a ``--teacher-auth`` login, or signs in inside the app with
it (for a class without student logins). Sign-ins are limited per identity and minute.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import threading
import time
from collections import deque
from pathlib import Path

from .errors import PlaygroundError

BROWSER_COOKIE = "pp-browser"  # the web app's id of a browser without a login (a random hex cookie)
BROWSER_ID = re.compile(r"[0-9a-f]{32}")
NAMES_FILE = "names.json"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._'-]{0,31}")  # what a class list holds: "Alex B.", "jo-anne"
SIGN_INS_PER_MINUTE = 5


def check_display_name(name: str) -> str:
    """``name`` stripped, if it can be shown to the class, else the refusal."""
    name = " ".join(str(name or "").split())
    if not NAME_RE.fullmatch(name):
        raise PlaygroundError("A name is 1 to 32 letters, digits, spaces, '.', '-', '_' or an apostrophe, starting "
                              "with a letter or digit, such as 'Alex B.'. Type another.")
    return name


class Roster:
    """Display names per identity, and which identities are the teacher.

    ``teachers`` maps a teacher's login name to its password (from ``--teacher-auth``).
    """

    def __init__(self, folder: str | Path | None, teachers: dict[str, str] | None = None, max_names: int = 2000):
        self.folder = Path(folder) if folder is not None else None
        self.max_names = max_names  # browsers that may take a name (a script can make new browsers)
        self.teachers = dict(teachers or {})
        self._names: dict[str, str] = {}  # identity -> display name
        self._signed_in: set[str] = set()  # identities signed in as the teacher inside the app
        self._attempts: dict[str, deque] = {}
        self._lock = threading.Lock()
        self._loaded = False

    # ---- names ---------------------------------------------------------------------------------
    def name(self, identity: str) -> str:
        """How the class sees this identity: its chosen name, its login, or "anonymous"."""
        self._load()
        with self._lock:
            if identity in self._names:
                return self._names[identity]
        if identity.startswith("user:"):
            return identity[5:]
        return "anonymous"

    def has_name(self, identity: str) -> bool:
        self._load()
        return identity.startswith("user:") or identity in self._names

    def set_name(self, identity: str, name: str) -> str:
        """Take ``name`` for this identity (a login keeps its login name); refused when another holds it."""
        if identity.startswith("user:"):
            raise PlaygroundError(f"You are logged in as {identity[5:]}: the class sees that name.")
        name = check_display_name(name)
        self._load()
        with self._lock:
            fold = name.casefold()
            for other, taken in self._names.items():
                if other != identity and taken.casefold() == fold:
                    raise PlaygroundError(f"Someone in this class already goes by '{taken}'. Add an initial or a "
                                          "number, such as 'Alex B.'.")
            if identity not in self._names and len(self._names) >= self.max_names:
                raise PlaygroundError(f"This class has {self.max_names} names already. Ask the teacher to reset "
                                      "the class.")
            if any(t.casefold() == fold for t in self.teachers):
                raise PlaygroundError(f"'{name}' is the teacher's login. Pick another name.")
            self._names[identity] = name
            self._save_locked()
        return name

    def clear_names(self) -> None:
        """A new class: every browser picks its name again (logins keep theirs)."""
        self._load()
        with self._lock:
            self._names.clear()
            self._save_locked()

    # ---- the teacher ---------------------------------------------------------------------------
    @property
    def has_teacher(self) -> bool:
        return bool(self.teachers)

    def is_teacher(self, identity: str) -> bool:
        if identity.startswith("user:") and identity[5:] in self.teachers:
            return True
        with self._lock:
            return identity in self._signed_in

    def sign_in(self, identity: str, user: str, password: str, clock=time.monotonic) -> None:
        """The teacher's login typed inside the app: this identity is the teacher until the server restarts."""
        if not self.teachers:
            raise PlaygroundError("This server has no teacher login. Start it with --teacher-auth USER:PASSWORD.")
        now = clock()
        with self._lock:
            tries = self._attempts.setdefault(identity, deque())
            while tries and now - tries[0] > 60:
                tries.popleft()
            if len(tries) >= SIGN_INS_PER_MINUTE:
                raise PlaygroundError("Too many wrong sign-ins: wait a minute and try again.")
            want = self.teachers.get(str(user or "").strip())
            # compare_digest on both branches: a wrong user name takes as long as a wrong password
            ok = hmac.compare_digest(str(password or "").encode(), (want or "\x00" * 16).encode()) and want is not None
            if not ok:
                tries.append(now)
                raise PlaygroundError("That is not the teacher's login: check the name and the password.")
            self._signed_in.add(identity)

    def sign_out(self, identity: str) -> None:
        with self._lock:
            self._signed_in.discard(identity)

    # ---- the file ------------------------------------------------------------------------------
    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            path = self.folder / NAMES_FILE if self.folder else None
            if path is None or not path.is_file():
                return
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return  # unreadable: the class picks its names again
            if isinstance(data, dict):
                self._names = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}

    def _save_locked(self) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{NAMES_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(self._names, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.folder / NAMES_FILE)
