"""Prefix names: which names are valid, and when two names are the same name.

A name is a folder name, and filesystems disagree on when two names are one folder: macOS
and Windows ignore case, Windows drops a final dot or space and keeps device names such as
``CON`` for itself. So every name is compared by its *folded* form, on every OS, before
the filesystem is asked anything::

    fold("Sentiment") == fold("SENTIMENT") == fold("sentiment.") == "sentiment"

Two names with the same folded form are one name in the library, and names that Windows
reserves are refused, so a library copied to any OS means the same thing there.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import PlaygroundError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Windows keeps these for devices, with or without an extension ("con.txt" is the console too).
RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def fold(name: str) -> str:
    """The form names are compared in: NFKC, case-folded, without final dots or spaces."""
    return unicodedata.normalize("NFKC", name).casefold().rstrip(". ")


def check_name(name: str) -> str:
    """``name`` if it can name a prefix folder on every OS, else a ``PlaygroundError`` saying why."""
    # fullmatch, not match: '$' also matches before a final newline, so "name\n" got through
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        raise PlaygroundError(f"'{name}' is not a valid prefix name. Use 1-64 letters, digits, '-', '_' or '.', "
                              "starting with a letter or digit.")
    if name.endswith("."):  # Windows drops it: 'sentiment.' would be the folder 'sentiment'
        raise PlaygroundError(f"'{name}' is not a valid prefix name: it ends with a dot. Use 1-64 letters, digits, "
                              "'-', '_' or '.', ending with a letter, digit, '-' or '_'.")
    if fold(name.split(".")[0]) in RESERVED:
        raise PlaygroundError(f"'{name}' is not a valid prefix name: Windows reserves "
                              f"'{name.split('.')[0]}' for a device. Use another name, such as 'my-{name}'.")
    return name


def same_name_message(name: str, existing: str, shipped: bool = False) -> str:
    """The refusal for a name that folds to an existing prefix's name."""
    fix = ("choose a different name: shipped prefixes are read-only" if shipped
           else f"use '{existing}' itself, or choose a different name")
    return (f"'{name}' is the same name as '{existing}' here (names that differ only in capitals or a final dot "
            f"are one name): {fix}.")
