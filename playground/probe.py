"""Attention on the prefix while it learns: one fixed held-out prompt, measured every few steps of a run.

A run records, at step 0 (the prefix as it starts) and then every ``probe_every(steps)`` steps and at
its last step, how much attention each layer pays to the prefix and to each of its virtual tokens,
on the same prompt: the first held-out input of the task. The Train tab draws the layer × step
heatmap live, and replays the layer × virtual-token map of any recorded step.

A recording is one forward of one short prompt in inference mode (``attention.prefix_attention_many``,
no gradient, no random numbers), so it never changes what the run trains: the same losses with
and without it (tested). About ``PROBES_PER_RUN`` recordings a run, whatever its length, keep the
cost a small, fixed share of training (``bench/probe_overhead.py`` measures it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .attention import PrefixAttention
from .tasks import Task
from .training import held_out_split

PROBES_PER_RUN = 10  # recordings after step 0: 20 steps are recorded every 2 steps, 100 steps every 10


def probe_every(steps: int) -> int:
    """Steps between two recordings of a run of ``steps`` steps (at least 1)."""
    return max(1, math.ceil(steps / PROBES_PER_RUN))


def is_probe_step(step: int, steps: int) -> bool:
    """Whether step ``step`` (1-based; 0: before training) of a ``steps``-step run is recorded."""
    return step == 0 or step == steps or step % probe_every(steps) == 0


def probe_text(task: Task) -> str:
    """The fixed prompt: the first input of the held-out split the run's metric is measured on."""
    held = task.split(held_out_split(task))
    return held[0].input if held else task.split("train")[0].input


@dataclass
class ProbePoint:
    """The attention on the prefix at one step of a run, on the probe prompt."""

    step: int  # 0: the prefix as it started
    layer_share: list[float]  # [layer]: share of attention on the prefix, mean over heads and prompt tokens
    slot_share: list[list[float]]  # [layer][virtual_token]: the same share, per virtual token (rows sum to layer_share)
    seconds: float  # what the recording cost (the forward, waiting for the model excluded where it can be)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ProbePoint":
        return cls(int(d["step"]), [float(x) for x in d["layer_share"]],
                   [[float(x) for x in row] for row in d["slot_share"]], float(d.get("seconds", 0.0)))


def probe_point(step: int, att: PrefixAttention, seconds: float) -> ProbePoint:
    """One recording from the attention view of the probe prompt."""
    slots = att.weights.mean(dim=(1, 2))  # [layer, head, q_pos, virtual_token] -> [layer, virtual_token]
    return ProbePoint(step, [round(x, 6) for x in att.layer_share.tolist()],
                      [[round(x, 6) for x in row] for row in slots.tolist()], round(seconds, 4))
