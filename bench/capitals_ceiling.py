"""How many capitals does the embedded model know at all? An upper bound for the capitals prefix.

Asks the base model the plain question "What is the capital of X?" (its own chat format, up
to 16 new tokens) and counts an answer as known when the right city appears anywhere in it,
a far looser test than the task's exact match. A prefix can format an answer, but it cannot
add facts for places it never saw in training, so this share bounds what it can reach.

    .venv/bin/python bench/capitals_ceiling.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import torch

    from playground.methods import BareMethod, answer
    from playground.metrics import normalize
    from playground.models import load_model
    from playground.tasks import get_task

    torch.set_num_threads(2)
    base = load_model(device="cpu")
    task = get_task("capitals")
    for split in ("validation", "test"):
        ex = task.split(split)
        answers = answer(base, BareMethod(), [f"What is the capital of {e.input}?" for e in ex], max_new_tokens=16)
        known = [normalize(e.target) in normalize(a) for e, a in zip(ex, answers)]
        print(f"{split}: the model names the right capital in {sum(known)}/{len(ex)} answers "
              f"({100 * sum(known) / len(ex):.1f}%)")


if __name__ == "__main__":
    main()
