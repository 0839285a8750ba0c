"""``python -m playground``: train, eval, attention, generate, list, and the set-up demo.

Every subcommand has ``--help``. Problems a user can fix print one line, ``error: ...``, and
exit with status 2; nothing is written half way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from .errors import PlaygroundError

DEFAULT_LIBRARY = Path(__file__).resolve().parent.parent / "prefixes"


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="base model: the embedded default (no network), a Hub id such as "
                   "gpt2, or a local folder")
    p.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu or cuda[:N]")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16 or float16")


def _task_args(p: argparse.ArgumentParser, data_help: str) -> None:
    p.add_argument("--task", default=None, help="built-in task: sentiment, topic, fr_en, headline, shout, capitals")
    p.add_argument("--data", default=None, help=data_help)
    p.add_argument("--input-col", default="input", help="input column of --data")
    p.add_argument("--target-col", default="target", help="target column of --data")
    p.add_argument("--instruction", default=None, help="instruction text (defaults to the task's)")
    p.add_argument("--metric", default=None, help="exact_match, exact_match_cased, token_f1 or rouge_l")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m playground", description="Prefix Playground engine, from the terminal.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a prefix and save it into the library")
    _model_args(p)
    _task_args(p, "your JSONL/CSV file instead of a built-in task (split 80/20 into train/test)")
    p.add_argument("--name", default=None, help="library name to save under (default: the task name)")
    p.add_argument("--library", default=str(DEFAULT_LIBRARY), help="prefix library folder")
    p.add_argument("--overwrite", action="store_true", help="replace a prefix of the same name")
    p.add_argument("--num-virtual-tokens", type=int, default=20)
    p.add_argument("--init", default="task", choices=["task", "text", "random"])
    p.add_argument("--init-text", default="", help="text for --init text")
    p.add_argument("--prefix-projection", action="store_true", help="train through an MLP (dropped at export)")
    p.add_argument("--encoder-hidden-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=None,
                   help="AdamW learning rate (default: the validated rate for --init, or the MLP's own with "
                        "--prefix-projection; see methods.METHODS)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="training precision; auto: bf16 autocast where the CPU/GPU is fast at it, else fp32")

    p = sub.add_parser("eval", help="held-out metric of a prefix (and baselines); JSON on the last line")
    _model_args(p)
    _task_args(p, "any JSONL of {input, target} to score (default: the task's test split)")
    p.add_argument("--prefix", default=None, help="prefix folder or library name (omit for baselines only)")
    p.add_argument("--library", default=str(DEFAULT_LIBRARY))
    p.add_argument("--baselines", action="store_true", help="also score the base model and the instruction prompt")
    p.add_argument("--limit", type=int, default=None, help="score only the first N examples")

    p = sub.add_parser("attention", help="share of attention on the prefix, per layer")
    _model_args(p)
    p.add_argument("--prefix", required=True, help="prefix folder or library name")
    p.add_argument("--library", default=str(DEFAULT_LIBRARY))
    p.add_argument("--prompt", required=True)
    p.add_argument("--json", action="store_true", help="print the per-layer and per-head shares as JSON")

    p = sub.add_parser("generate", help="answer a prompt with one or more prefixes, side by side")
    _model_args(p)
    p.add_argument("--prefix", action="append", default=[], help="prefix folder or library name (repeatable)")
    p.add_argument("--library", default=str(DEFAULT_LIBRARY))
    p.add_argument("--prompt", required=True)
    p.add_argument("--no-base", action="store_true", help="leave out the base model's own answer")
    p.add_argument("--max-new-tokens", type=int, default=24)

    p = sub.add_parser("ship", help="retrain the shipped task prefixes from scratch (fixed seeds) and rewrite their "
                       "cards and prefixes/README.md")
    _model_args(p)
    p.add_argument("--task", action="append", default=[], help="only this task (repeatable; default: all six)")
    p.add_argument("--library", default=str(DEFAULT_LIBRARY))
    p.add_argument("--readme", default=None, help="README to rewrite the table in (default: LIBRARY/README.md)")

    p = sub.add_parser("compare", help="prefix vs prompt tuning vs LoRA vs the instruction prompt on one task")
    _model_args(p)
    p.add_argument("--task", default="sentiment", help="built-in task")
    p.add_argument("--methods", default="prefix,prefix_mlp,prompt,lora,instruction", help="comma-separated")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--eval-examples", type=int, default=48)
    p.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2 for a spread")
    p.add_argument("--num-virtual-tokens", type=int, default=20)
    p.add_argument("--r", type=int, default=4, help="LoRA rank")
    p.add_argument("--json", default=None, help="write every run's records here")
    p.add_argument("--out", default=None, help="folder for results.json and the figures with error bars "
                   "(HTML, and PNG when Chromium is installed)")
    p.add_argument("--split", default=None, help="held-out split for the metric (default: validation where the "
                   "task has one, else test)")

    p = sub.add_parser("experiments", help="Li & Liang's ablations (prefix length, init in low data, MLP vs direct, "
                       "prefix vs prompt) and the method comparison, over several seeds; writes tables and figures")
    _model_args(p)
    p.add_argument("--task", default="topic", help="built-in task")
    p.add_argument("--studies", default="compare,length,init,mlp", help="comma-separated, from: compare, length "
                   "(with prompt tuning at equal lengths), init, mlp")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--eval-examples", type=int, default=60)
    p.add_argument("--split", default="test", help="held-out split for the metric")
    p.add_argument("--lengths", default="1,2,5,10,20,50,100", help="prefix lengths to sweep")
    p.add_argument("--prompt-lengths", default="1,5,20,100", help="prompt-tuning lengths (prefix vs prompt)")
    p.add_argument("--train-sizes", default="16,64", help="training-set sizes for the init study")
    p.add_argument("--out", default="experiments-out", help="folder for results.json, results.md and the figures; "
                   "a rerun with the same settings resumes")

    p = sub.add_parser("list", help="the prefixes in the library with their cards")
    p.add_argument("--library", default=str(DEFAULT_LIBRARY))

    p = sub.add_parser("prepare", help="load the model once (converting the embedded GGUF into the cache); for images")
    _model_args(p)

    p = sub.add_parser("demo", help="train a sentiment prefix for a few steps; held-out accuracy before and after")
    _model_args(p)
    p.add_argument("--steps", type=int, default=10)
    return ap


def load_base_verbose(args):
    from tqdm import tqdm

    from .models import load_model

    bar = None

    def progress(frac: float, msg: str) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=100, desc="Preparing the model", file=sys.stderr, bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
        bar.n = int(frac * 100)
        bar.set_postfix_str(msg)
        bar.refresh()

    base = load_model(args.model, args.device, args.dtype, progress)
    if bar is not None:
        bar.close()
    print(f"Model: {base.describe()} (loaded in {base.load_seconds:.1f} s)", file=sys.stderr)
    return base


def _task(args):
    from .tasks import get_task, user_task

    if args.data and args.command == "train":
        if args.task:
            raise PlaygroundError("Give either --task or --data, not both.")
        return user_task(args.data, args.input_col, args.target_col, args.instruction or
                         "Answer with the target for this input.", args.metric or "exact_match")
    if not args.task and not args.data:
        raise PlaygroundError("Name a built-in --task (sentiment, topic, fr_en, headline, shout, capitals) or give --data.")
    from .tasks import Task

    task = get_task(args.task) if args.task else Task("custom", "Your data", "Answer with the target for this input.",
                                                      max_new_tokens=24)
    if args.instruction:
        task = replace(task, instruction=args.instruction)
    if args.metric:
        from .metrics import METRICS
        if args.metric not in METRICS:
            raise PlaygroundError(f"Unknown metric '{args.metric}'. Choose one of: {', '.join(METRICS)}.")
        task = replace(task, metric=args.metric)  # a copy: the built-in task stays as it is
    return task


def _prefix(ref: str, base, library: str):
    from .library import Library
    from .peft_folder import load_prefix

    path = Path(ref)
    if path.is_dir():
        return load_prefix(path, base)
    return Library(library).load(ref, base)


def cmd_train(args) -> int:
    from tqdm import tqdm

    from .evaluation import evaluate_all
    from .library import Library
    from .methods import prefix_learning_rate
    from .names import check_name
    from .peft_folder import make_card
    from .prefix import PrefixSettings, create_prefix
    from .methods import prefix_method
    from .training import TrainSettings, train

    task = _task(args)
    name = check_name(args.name or task.name)
    library = Library(args.library)
    if name in library.names() and not args.overwrite:
        raise PlaygroundError(f"A prefix named '{name}' already exists in {library.root}; use --name or --overwrite.")
    ps = PrefixSettings(args.num_virtual_tokens, args.init, args.init_text, args.prefix_projection, args.encoder_hidden_size)
    lr = args.lr if args.lr is not None else prefix_learning_rate(args.prefix_projection, args.init)
    ts = TrainSettings(lr, args.steps, args.batch_size, args.seed, args.eval_every, precision=args.precision)
    ps.validate()
    ts.validate()
    base = load_base_verbose(args)
    prefix = create_prefix(base, ps, task.instruction, args.seed)
    print(f"Trainable parameters: {prefix.trainable_parameters:,} ({100 * prefix.trainable_parameters / base.num_parameters:.3f}% "
          f"of the model); stored at export: {prefix.exported_parameters:,}", file=sys.stderr)
    last = None
    with tqdm(total=ts.steps, desc=f"Training '{name}'", file=sys.stderr) as bar:
        for rec in train(base, prefix_method(prefix), task, ts):
            last = rec
            post = {"loss": f"{rec.loss:.3f}", "ex/s": f"{rec.examples_per_s:.1f}"}
            if rec.metric is not None:
                post["held-out"] = f"{100 * rec.metric:.1f}%"
            bar.set_postfix(post)
            bar.update(1)
    print("Scoring the test split: base model, instruction prompt, prefix ...", file=sys.stderr)
    results = evaluate_all(base, task, "test", prefix)
    metrics = {m: round(r.score, 4) for m, r in results.items()}
    card = make_card(base, task.name, asdict(ts), {"split": "test", "metric": task.metric, "n": results["prefix"].n,
                     **metrics}, train_examples=len(task.split("train")), train_seconds=round(last.elapsed, 2),
                     )
    path = library.save(name, prefix, card, overwrite=args.overwrite)
    print(f"Saved {path}")
    print(json.dumps({"name": name, "metric": task.metric, **metrics, "train_seconds": round(last.elapsed, 2)}))
    return 0


def cmd_eval(args) -> int:
    from .evaluation import evaluate
    from .tasks import read_examples

    task = _task(args)
    examples = read_examples(args.data, args.input_col, args.target_col) if args.data else task.split("test")
    examples = examples[: args.limit] if args.limit else examples
    base = load_base_verbose(args)
    out = {"metric": task.metric, "n": len(examples)}
    if args.baselines or not args.prefix:
        for mode in ("base", "instruction"):
            out[mode] = round(evaluate(base, task, examples, mode).score, 4)
    if args.prefix:
        prefix = _prefix(args.prefix, base, args.library)
        out["prefix"] = round(evaluate(base, task, examples, "prefix", prefix).score, 4)
        out["score"] = out["prefix"]
    print(json.dumps(out))
    return 0


def cmd_attention(args) -> int:
    from .attention import prefix_attention

    base = load_base_verbose(args)
    prefix = _prefix(args.prefix, base, args.library)
    att = prefix_attention(base, prefix, args.prompt)
    if args.json:
        print(json.dumps({"layer_share": [round(x, 5) for x in att.layer_share.tolist()],
                          "head_share": [[round(x, 5) for x in row] for row in att.head_share.tolist()],
                          "tokens": att.tokens, "shape": list(att.weights.shape)}))
        return 0
    print(f"Attention on the {prefix.num_virtual_tokens} virtual tokens, weights {list(att.weights.shape)} "
          "[layer, head, q_pos, virtual_token]")
    for i, s in enumerate(att.layer_share.tolist()):
        print(f"layer {i:2d} {100 * s:5.1f}% {'#' * round(40 * s)}")
    return 0


def cmd_generate(args) -> int:
    from .generate import side_by_side

    base = load_base_verbose(args)
    prefixes = {} if args.no_base else {"(no prefix)": None}
    for ref in args.prefix:
        prefixes[Path(ref).name] = _prefix(ref, base, args.library)
    if not prefixes:
        raise PlaygroundError("Nothing to run: give --prefix, or drop --no-base.")
    if not args.prompt.strip():
        raise PlaygroundError("The prompt is empty.")
    res = side_by_side(base, args.prompt, prefixes, args.max_new_tokens)
    for name, text in res.outputs.items():
        print(f"{name:>20}: {text}")
    secs = next(iter(res.seconds.values()))
    print(f"{len(res.outputs)} answer(s) in one mixed batch (a row per prefix): {secs:.2f} s")
    return 0


def cmd_ship(args) -> int:
    import time

    from .library import Library
    from .recipes import RECIPES, recipe, ship, write_readme

    tasks = [recipe(t).task for t in args.task] or list(RECIPES)
    t0 = time.perf_counter()
    base = load_base_verbose(args)
    if args.model is not None:
        print("note: the shipped prefixes and their cards are for the embedded default model", file=sys.stderr)
    library = Library(args.library)
    for i, name in enumerate(tasks, 1):
        print(f"[{i}/{len(tasks)}] {name}", file=sys.stderr, flush=True)
        ship(base, recipe(name), library, log=lambda m: print(m, file=sys.stderr, flush=True))
    total = time.perf_counter() - t0
    readme = Path(args.readme) if args.readme else library.root / "README.md"
    write_readme(readme, library, total if len(tasks) == len(RECIPES) else None)
    print(f"Retrained {len(tasks)} prefix(es) in {total / 60:.1f} min; table in {readme}")
    return 0


def cmd_list(args) -> int:
    from .library import Library

    entries = Library(args.library).entries()
    if not entries:
        print(f"No prefixes in {args.library}.")
    for e in entries:
        c = e.card
        m = c.get("metrics", {})
        score = f"{100 * m['prefix']:.1f}% {m.get('metric', '')}" if isinstance(m.get("prefix"), (int, float)) else "-"
        print(f"{e.name:20} task={c.get('task', '?'):10} tokens={c.get('num_virtual_tokens', '?'):>4} "
              f"prefix={score} base={c.get('base_model', '?')}")
    return 0


def cmd_demo(args) -> int:
    from .evaluation import evaluate
    from .prefix import PrefixSettings, create_prefix
    from .tasks import get_task
    from .methods import prefix_method
    from .training import TrainSettings, train

    base = load_base_verbose(args)
    task = get_task("sentiment")
    test = task.split("test")
    print(f"Task: {task.title}. Held-out test set: {len(test)} reviews.")
    instr = evaluate(base, task, test, "instruction").score
    prefix = create_prefix(base, PrefixSettings(), task.instruction)
    before = evaluate(base, task, test, "prefix", prefix).score
    print(f"Before training: instruction prompt {100 * instr:.1f}%, prefix initialized from it {100 * before:.1f}%")
    for rec in train(base, prefix_method(prefix), task, TrainSettings(steps=args.steps, eval_every=0)):
        print(f"step {rec.step:3d}  loss {rec.loss:.3f}  {rec.elapsed:5.1f} s  {rec.examples_per_s:.1f} ex/s")
    after = evaluate(base, task, test, "prefix", prefix).score
    print(f"After {args.steps} steps: held-out accuracy {100 * before:.1f}% -> {100 * after:.1f}% "
          f"({prefix.trainable_parameters:,} trainable parameters, "
          f"{100 * prefix.trainable_parameters / base.num_parameters:.3f}% of the model)")
    return 0


def cmd_prepare(args) -> int:
    base = load_base_verbose(args)
    print(f"Ready: {base.describe()}")
    return 0


def cmd_compare(args) -> int:
    from .compare import check_methods, compare, summary, to_json
    from .tasks import get_task
    from .training import TrainSettings

    names = check_methods(args.methods.split(","))
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise PlaygroundError(f"--seeds takes whole numbers separated by commas, e.g. 0,1,2; got '{args.seeds}'.") from None
    task = get_task(args.task)
    ts = TrainSettings(steps=args.steps, batch_size=args.batch_size, eval_every=args.eval_every,
                       eval_examples=args.eval_examples)
    ts.validate()
    base = load_base_verbose(args)
    results = compare(base, task, names, ts, seeds or [0], args.num_virtual_tokens, args.r, eval_split=args.split)
    headers, rows = summary(results, base)
    print("| " + " | ".join(headers) + " |\n|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    records = to_json(results)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1), encoding="utf-8")
    if args.out:
        from .figures import seeds_curve_figure, write_figures

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(records, indent=1), encoding="utf-8")
        figs = {f"compare_{x}": seeds_curve_figure(records, task.metric, x) for x in ("step", "time")}
        for path in write_figures(figs, out):
            print(f"wrote {path}")
    return 0


def _numbers(text: str, kind, flag: str) -> tuple:
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise PlaygroundError(f"{flag} takes numbers separated by commas; got '{text}'.") from None


def cmd_experiments(args) -> int:
    from .experiments import ExperimentSettings, figures, markdown_tables, run_all
    from .figures import write_figures
    from .tasks import get_task

    s = ExperimentSettings(task=args.task, studies=tuple(x.strip() for x in args.studies.split(",") if x.strip()),
                           seeds=_numbers(args.seeds, int, "--seeds"), steps=args.steps,
                           eval_examples=args.eval_examples, eval_split=args.split,
                           lengths=_numbers(args.lengths, int, "--lengths"),
                           prompt_lengths=_numbers(args.prompt_lengths, int, "--prompt-lengths"),
                           train_sizes=_numbers(args.train_sizes, int, "--train-sizes"))
    s.validate()
    task = get_task(args.task)
    task.split(s.eval_split)  # a clear message now, not after the model loads
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = load_base_verbose(args)
    t0 = time.perf_counter()
    data = run_all(base, task, s, out, say=lambda m: print(m, flush=True))
    data["wall_seconds"] = round(time.perf_counter() - t0, 1)
    (out / "results.md").write_text(markdown_tables(data) + "\n", encoding="utf-8")
    print(markdown_tables(data))
    for path in write_figures(figures(data), out):
        print(f"wrote {path}")
    print(f"wrote {out / 'results.json'} and {out / 'results.md'} ({data['wall_seconds'] / 60:.1f} min)")
    return 0


COMMANDS = {"compare": cmd_compare, "experiments": cmd_experiments, "prepare": cmd_prepare, "train": cmd_train, "eval": cmd_eval, "attention": cmd_attention, "generate": cmd_generate,
            "list": cmd_list, "demo": cmd_demo, "ship": cmd_ship}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was saved", file=sys.stderr)
        return 130
