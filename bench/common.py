"""What the benchmarks share: CPU setup, result files, and the anchor recipe (plain PEFT + Trainer).

The anchor is the recipe tutorials teach: ``PrefixTuningConfig(num_virtual_tokens=20)``
with PEFT's random init, ``Trainer`` at lr 3e-2, on the same examples, encoded the same way
(prompt positions labelled -100) and at the same batch size as our loop.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def setup(threads: int = 2):
    """Quiet logs, a fixed thread count (this project's machines have 2 cores). Returns torch."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    return torch


def rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, {dev}"


def write_json(path: str | None, data: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); NaN for no values."""
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)] if s else math.nan


def median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


# ---- the anchor: plain PEFT prefix tuning with the transformers Trainer ---------------------
def peft_trainer(base, task, steps: int, lr: float = 3e-2, batch_size: int = 8, num_virtual_tokens: int = 20,
                 seed: int = 0, callbacks=(), bf16: bool = False):
    """(trainer, peft_model) for the tutorial recipe on ``task``'s train split. ``base.model`` is wrapped, not copied.

    Data is encoded with our PromptFormat (so both sides learn the very same token sequences)
    and padded by ``DataCollatorForSeq2Seq`` (labels padded with -100), as tutorials do.
    """
    import tempfile

    import torch
    from datasets import Dataset
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from playground.prompts import PromptFormat

    fmt = PromptFormat.for_tokenizer(base.tokenizer)
    rows = [fmt.encode_example(e.input, e.target, "prefix") for e in task.split("train")]
    ds = Dataset.from_dict({"input_ids": [r[0] for r in rows], "labels": [r[1] for r in rows],
                            "attention_mask": [[1] * len(r[0]) for r in rows]})
    torch.manual_seed(seed)
    model = get_peft_model(base.model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens))
    base.tokenizer.padding_side = "right"
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="pg-bench-trainer-"), per_device_train_batch_size=batch_size,
        learning_rate=lr, max_steps=steps, logging_strategy="no", save_strategy="no", report_to=[],
        use_cpu=base.device.type == "cpu", seed=seed, bf16=bf16, dataloader_num_workers=0,
        disable_tqdm=True, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=list(callbacks),
                      data_collator=DataCollatorForSeq2Seq(base.tokenizer, padding=True, label_pad_token_id=-100))
    return trainer, model


def peft_as_prefix(peft_model):
    """Our ``Prefix`` view of a PeftModel's prompt encoder (shares its weights), for our evaluation code."""
    from playground.prefix import Prefix

    return Prefix(peft_model.peft_config["default"], peft_model.prompt_encoder["default"])


class Clock:
    """Seconds of training only: time spent in ``pause()`` blocks (evaluation) is not counted."""

    def __init__(self):
        self.start, self.paused = time.perf_counter(), 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start - self.paused

    class _Pause:
        def __init__(self, clock):
            self.clock = clock

        def __enter__(self):
            self.t0 = time.perf_counter()

        def __exit__(self, *exc):
            self.clock.paused += time.perf_counter() - self.t0

    def pause(self):
        return Clock._Pause(self)
