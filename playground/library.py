"""The prefix library: one folder per prefix in PEFT's format, plus our card.

    prefixes/sentiment/
        adapter_config.json         PEFT's PrefixTuningConfig (inference_mode true)
        adapter_model.safetensors   {"prompt_embeddings": [P, layer*2*token_dim]}
        card.json                   task, base model + fingerprint, settings, metrics, date

What we save loads in ``PeftModel.from_pretrained``; what PEFT saves loads here (no card
needed). Saves are atomic: files go to a hidden temporary folder that is renamed into
place, so a crash never leaves a half-written prefix. Nothing is unpickled: weights are
read only from safetensors, config and card only as JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, fields
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


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise PlaygroundError(f"'{name}' is not a valid prefix name. Use 1-64 letters, digits, '-', '_' or '.', "
                              "starting with a letter or digit.")
    return name


def read_config(folder: Path) -> PrefixTuningConfig:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise PlaygroundError(f"'{folder.name}' has no {CONFIG_FILE}: a PEFT prefix folder needs {CONFIG_FILE} "
                              f"and {WEIGHTS_FILE}.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PlaygroundError(f"{CONFIG_FILE} in '{folder.name}' is not valid JSON ({exc}).") from None
    if not isinstance(raw, dict) or raw.get("peft_type") != "PREFIX_TUNING":
        kind = raw.get("peft_type") if isinstance(raw, dict) else type(raw).__name__
        raise PlaygroundError(f"'{folder.name}' is not a prefix-tuning adapter (peft_type is {kind!r}, "
                              "expected 'PREFIX_TUNING').")
    if raw.get("task_type") not in (None, "CAUSAL_LM"):
        raise PlaygroundError(f"'{folder.name}' is a {raw.get('task_type')} prefix; only CAUSAL_LM prefixes load here.")
    try:
        config = PrefixTuningConfig(**{k: v for k, v in raw.items() if k in _CONFIG_FIELDS})
        for k in ("num_virtual_tokens", "num_layers", "token_dim", "num_attention_heads"):
            v = getattr(config, k)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{k} must be a positive whole number, got {v!r}")
    except (TypeError, ValueError) as exc:
        raise PlaygroundError(f"{CONFIG_FILE} in '{folder.name}' has bad values: {exc}.") from None
    if config.num_virtual_tokens > MAX_VIRTUAL_TOKENS:
        raise PlaygroundError(f"'{folder.name}' has {config.num_virtual_tokens} virtual tokens; the limit is "
                              f"{MAX_VIRTUAL_TOKENS}.")
    return config


def read_card(folder: Path) -> dict:
    path = folder / CARD_FILE
    if not path.is_file():
        return {}
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PlaygroundError(f"{CARD_FILE} in '{folder.name}' is not valid JSON ({exc}).") from None
    if not isinstance(card, dict):
        raise PlaygroundError(f"{CARD_FILE} in '{folder.name}' must hold a JSON object.")
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
                                      f"(it has {', '.join(keys) or 'nothing'}).")
            emb = f.get_tensor(key)
    except SafetensorError as exc:
        raise PlaygroundError(f"{WEIGHTS_FILE} in '{folder.name}' is not a valid safetensors file ({exc}).") from None
    want = (config.num_virtual_tokens, config.num_layers * 2 * config.token_dim)
    if tuple(emb.shape) != want:
        raise PlaygroundError(f"{WEIGHTS_FILE} in '{folder.name}' holds a {tuple(emb.shape)} tensor, but its config "
                              f"says {want}. The files don't belong together; re-export the prefix.")
    if not emb.is_floating_point() or not torch.isfinite(emb).all():
        raise PlaygroundError(f"{WEIGHTS_FILE} in '{folder.name}' holds NaN, infinite or non-float values.")
    return Prefix.from_embeddings(config, emb.float(), card, device=base.device)


def write_prefix(folder: Path, prefix: Prefix, card: dict) -> None:
    """Write the three files into ``folder`` (which must not exist yet)."""
    config, emb = prefix.exported()
    folder.mkdir(parents=True)
    config.save_pretrained(str(folder))  # PEFT writes adapter_config.json itself
    save_file({"prompt_embeddings": emb}, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2, default=str) + "\n", encoding="utf-8")


@dataclass
class LibraryEntry:
    name: str
    path: Path
    card: dict


class Library:
    """A folder of prefixes. ``read_only`` protects what was there at start from delete and overwrite."""

    def __init__(self, root: str | Path, read_only: bool = False):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.protected = {e.name for e in self.entries()} if read_only else set()

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
        if dest.exists() and not overwrite:
            raise PlaygroundError(f"A prefix named '{name}' already exists. Choose another name or allow overwrite.")
        full = {**prefix.info, **(card or {}), "name": name, "num_virtual_tokens": prefix.num_virtual_tokens,
                "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=self.root))
        try:
            write_prefix(tmp / "p", prefix, full)
            if dest.exists():  # swap: move the old one aside, put the new one in, then drop the old
                old = Path(tempfile.mkdtemp(prefix=f".old-{name}-", dir=self.root))
                os.replace(dest, old / "p")
                os.replace(tmp / "p", dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp / "p", dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def delete(self, name: str) -> None:
        self._check_writable(name)
        path = self.path(name)
        if not path.is_dir():
            raise PlaygroundError(f"No prefix named '{name}'.")
        trash = Path(tempfile.mkdtemp(prefix=f".del-{name}-", dir=self.root))
        os.replace(path, trash / "p")  # disappears from the listing at once
        shutil.rmtree(trash, ignore_errors=True)

    def rename(self, old: str, new: str) -> None:
        self._check_writable(old)
        src, dst = self.path(old), self.path(new)
        if not src.is_dir():
            raise PlaygroundError(f"No prefix named '{old}'.")
        if dst.exists():
            raise PlaygroundError(f"A prefix named '{new}' already exists.")
        card = read_card(src)
        os.replace(src, dst)
        if card:
            card["name"] = new
            tmp = dst / f".{CARD_FILE}.tmp"
            tmp.write_text(json.dumps(card, indent=2, default=str) + "\n", encoding="utf-8")
            os.replace(tmp, dst / CARD_FILE)


def make_card(base: BaseModel, task_name: str, settings: dict, metrics: dict, **extra) -> dict:
    """The card fields the library expects beside the PEFT files."""
    return {"task": task_name, "base_model": base.name, "base_fingerprint": base.fingerprint,
            "training": settings, "metrics": metrics, **extra}
