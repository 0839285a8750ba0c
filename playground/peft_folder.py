"""A prefix folder in PEFT's format, plus our card: what it holds, and every check made on reading it.

    sentiment/
        adapter_config.json         PEFT's PrefixTuningConfig (inference_mode true)
        adapter_model.safetensors   {"prompt_embeddings": [P, layer*2*token_dim]}
        card.json                   task, base model + fingerprint, settings, metrics, date, owner

What we write loads in ``PeftModel.from_pretrained``; what PEFT saves loads here (no card
needed). Reading checks each file before anything is built from it: the config's size, type
and values (CAUSAL_LM prefix tuning, positive whole numbers, at most ``MAX_VIRTUAL_TOKENS``);
the card's size (``MAX_CARD_KB``), field types and lengths (``MAX_CARD_CHARS``); the weights'
shape against the config, their dtype and finiteness; the base model's shapes, and its
fingerprint when the card records one. Nothing is unpickled: weights are read only from
safetensors, config and card only as JSON, each with a bounded read. Where folders live, and
how they are saved safely, is ``library.py``'s business.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields
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
MAX_CARD_KB = 64  # a card.json past this is not read (the server's --max-card-kb sets it per library)
MAX_CONFIG_BYTES = 64 * 1024  # PEFT's adapter_config.json is about 1 KB
MAX_CARD_CHARS = 200  # the card's name, task, base model and fingerprint are shown in every listing
_CONFIG_FIELDS = {f.name for f in fields(PrefixTuningConfig)}
_CARD_TYPES = {"task": str, "name": str, "base_model": str, "base_fingerprint": str, "metrics": dict, "training": dict}


def _short(v) -> str:
    """A value from an uploaded file, cut to fit in a message."""
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _read_json(path: Path, folder: Path, max_bytes: int, fix: str):
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)  # never more: the file may be huge, or grow while read
    except OSError as exc:
        raise PlaygroundError(f"{path.name} in '{folder.name}' cannot be read ({exc.strerror}).") from None
    if len(raw) > max_bytes:
        size = path.stat().st_size
        raise PlaygroundError(f"{path.name} in '{folder.name}' is {size / 1024:,.0f} KB; the limit is "
                              f"{max_bytes // 1024:,} KB. {fix}")
    try:
        return json.loads(raw.decode("utf-8"))
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
    raw = _read_json(path, folder, MAX_CONFIG_BYTES, "Re-export the prefix from PEFT or this app.")
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


def read_card(folder: Path, max_kb: int = MAX_CARD_KB) -> dict:
    """The card beside a prefix ({} when there is none), refused when larger than ``max_kb`` KB."""
    path = folder / CARD_FILE
    if not path.is_file():
        return {}
    card = _read_json(path, folder, max_kb * 1024, f"Shorten it, or leave {CARD_FILE} out.")
    if not isinstance(card, dict):
        raise PlaygroundError(f"{CARD_FILE} in '{folder.name}' must hold a JSON object.")
    for k, t in _CARD_TYPES.items():  # what the app reads from a card; the rest is shown as is
        if card.get(k) is not None and not isinstance(card[k], t):
            raise PlaygroundError(f"{CARD_FILE} in '{folder.name}' has {k!r} = {_short(card[k])}, but it must be "
                                  f"{'a string' if t is str else 'an object'}. Fix it, or leave {CARD_FILE} out.")
        if t is str and isinstance(card.get(k), str) and len(card[k]) > MAX_CARD_CHARS:
            raise PlaygroundError(f"{CARD_FILE} in '{folder.name}' has a {k!r} of {len(card[k]):,} characters; the "
                                  f"limit is {MAX_CARD_CHARS}. Shorten it, or leave {CARD_FILE} out.")
    return card


def load_prefix(folder: str | Path, base: BaseModel, check_fingerprint: bool = True,
                max_card_kb: int = MAX_CARD_KB) -> Prefix:
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
    card = read_card(folder, max_card_kb)
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
    """Write the three files into ``folder`` (which must not exist yet); the caller flushes them to disk."""
    config, emb = prefix.exported()
    folder.mkdir(parents=True)
    config.save_pretrained(str(folder))  # PEFT writes adapter_config.json itself
    save_file({"prompt_embeddings": emb}, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2, default=str) + "\n", encoding="utf-8")


def update_card(folder: str | Path, fields: dict) -> None:
    """Set ``fields`` in the card of the prefix in ``folder``, written whole or not at all (a rename)."""
    folder = Path(folder)
    card = {**read_card(folder), **fields}
    tmp = folder / f".{CARD_FILE}.tmp"
    tmp.write_text(json.dumps(card, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, folder / CARD_FILE)


def make_card(base: BaseModel, task_name: str, settings: dict, metrics: dict, **extra) -> dict:
    """The card fields the library expects beside the PEFT files."""
    return {"task": task_name, "base_model": base.name, "base_fingerprint": base.fingerprint,
            "training": settings, "metrics": metrics, **extra}
