"""Time to accuracy: seconds of training until sentiment reaches 90% held-out accuracy.

- **ours**: the app's defaults (``PrefixSettings()``, ``TrainSettings()``): a prefix
  initialized from the task's instruction text, our training loop;
- **demos**: the same, but the prefix starts from the instruction and ``DEMO_SHOTS`` training
  examples drawn with the same seed (``PrefixSettings(init="demos")``: the cached few-shot prompt,
  as many virtual tokens as their tokens), at the app's default rate for that init;
- **anchor**: the tutorial recipe, plain PEFT ``PrefixTuningConfig(num_virtual_tokens=20)``
  with its random init, the transformers ``Trainer`` at lr 3e-2, same data and batch size.

All three are scored after every step on the 60-review test split with the same greedy
evaluator; evaluation time is not counted, set-up (prefix creation, Trainer construction)
is. If the anchor never reaches the target within ``--cap`` steps, its time at the cap is
printed as a lower bound.

    .venv/bin/python bench/time_to_accuracy.py [--cap 60] [--json out.json]
"""

from __future__ import annotations

import argparse

from common import Clock, machine, peft_as_prefix, peft_trainer, setup, write_json

TARGET = 0.90


def ours(base, task, test, evaluate, cap: int, init: str = "task"):
    from playground.methods import prefix_learning_rate, prefix_method
    from playground.prefix import PrefixSettings, create_prefix
    from playground.training import TrainSettings, train

    settings = TrainSettings()
    settings.steps, settings.eval_every = cap, 0  # we score every step ourselves, off the clock
    settings.learning_rate = prefix_learning_rate(False, init)  # the app's default for this init
    clock = Clock()
    prefix = create_prefix(base, PrefixSettings(init=init), task.instruction, seed=settings.seed,
                           train=task.split("train"))
    method = prefix_method(prefix)
    print(f"  {init:5}  {prefix.num_virtual_tokens} virtual tokens, built in {clock.elapsed():.2f} s", flush=True)
    with clock.pause():
        curve = [(0, 0.0, evaluate(base, task, test, method).score)]
    if curve[-1][2] >= TARGET:
        return curve, 0
    for rec in train(base, method, task, settings):
        t = clock.elapsed()
        with clock.pause():
            acc = evaluate(base, task, test, method).score
            curve.append((rec.step, t, acc))
            print(f"  {init:5}  step {rec.step:3d} loss {rec.loss:7.3f} {curve[-1][1]:6.2f} s  acc {acc:.3f}", flush=True)
        if acc >= TARGET:
            return curve, rec.step
    return curve, None


def anchor(base, task, test, evaluate, cap: int):
    from transformers import TrainerCallback

    from playground.methods import prefix_method

    clock = Clock()
    curve = []

    class Score(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            t = clock.elapsed()
            with clock.pause():
                base.model.eval()
                acc = evaluate(base, task, test, prefix_method(peft_as_prefix(trainer_model))).score
                base.model.train()  # as the Trainer left it
                curve.append((state.global_step, t, acc))
                print(f"  anchor step {state.global_step:3d} {curve[-1][1]:6.2f} s  acc {acc:.3f}", flush=True)
                if acc >= TARGET:
                    control.should_training_stop = True

    trainer, trainer_model = peft_trainer(base, task, steps=cap, callbacks=[Score()])
    with clock.pause():
        curve.append((0, 0.0, evaluate(base, task, test, prefix_method(peft_as_prefix(trainer_model))).score))
    trainer.train()
    base.model.eval()
    reached = next((s for s, _, a in curve if a >= TARGET), None)
    return curve, reached


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cap", type=int, default=60, help="most steps for either side")
    ap.add_argument("--json", help="write the curves here")
    args = ap.parse_args()
    setup()
    from playground.evaluation import evaluate
    from playground.models import autocast_dtype, load_model
    from playground.prefix import DEMO_SHOTS
    from playground.tasks import get_task
    from playground.training import TrainSettings

    base = load_model(device="cpu")
    task = get_task("sentiment")
    test = task.split("test")
    print(f"machine: {machine()}; training precision (ours, 'auto'): {autocast_dtype(base, TrainSettings().precision)}")
    rows = {"ours": ours(base, task, test, evaluate, args.cap),
            "demos": ours(base, task, test, evaluate, args.cap, init="demos"),
            "anchor": anchor(base, task, test, evaluate, args.cap)}

    def seconds(name):
        curve, step = rows[name]
        return next(t for s, t, _ in curve if s == step) if step is not None else curve[-1][1]

    print()
    print("| way | steps to 90% | seconds of training | accuracy at the end |")
    print("|---|---|---|---|")
    labels = {"ours": "ours: app defaults (instruction-text init, our loop)",
              "demos": f"ours, init from {DEMO_SHOTS} training examples (the cached few-shot prompt)",
              "anchor": "anchor: PEFT random init, Trainer, lr 3e-2"}
    for name, (curve, step) in rows.items():
        s = seconds(name)
        reached = f"{step}" if step is not None else f"not reached in {args.cap}"
        print(f"| {labels[name]} | {reached} | {'' if step is not None else '> '}{s:.2f} | {curve[-1][2]:.1%} |")
    ours_s, anchor_s = seconds("ours"), seconds("anchor")
    bound = ">= " if rows["anchor"][1] is None else ""
    write_json(args.json, {"target": TARGET, "cap": args.cap, "machine": machine(),
                           "curves": {k: v[0] for k, v in rows.items()}, "steps": {k: v[1] for k, v in rows.items()},
                           "seconds": {k: seconds(k) for k in rows}, "anchor_reached": rows["anchor"][1] is not None})
    if rows["ours"][1] is None:
        print(f"ratio: ours never reached {TARGET:.0%} in {args.cap} steps")
    else:
        print(f"ratio (anchor seconds / ours, to 90% accuracy): {bound}{anchor_s / max(ours_s, 1e-9):.1f}x "
              f"(ours {ours_s:.2f} s, anchor {bound}{anchor_s:.2f} s; goal >= 10x and <= 3 s)")
    if rows["demos"][1] is not None:
        print(f"init from training examples: {seconds('demos'):.2f} s to {TARGET:.0%} ({rows['demos'][1]} steps) vs "
              f"{ours_s:.2f} s from the task text")


if __name__ == "__main__":
    main()
