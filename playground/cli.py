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
from .experiments import STUDIES
from .methods import METHODS
from .metrics import METRICS
from .prefix import DEMO_SHOTS, INITS
from .tasks import BUILTIN
from .training import PRECISIONS, TrainSettings

DEFAULT_LIBRARY = Path(__file__).resolve().parent.parent / "prefixes"
COMMANDS: dict[str, tuple] = {}  # name -> (help, arguments, handler), filled by @command in --help order


def arg(*flags, **kw):
    """One argument of a subcommand, added to its parser when the parser is built."""
    return lambda p: p.add_argument(*flags, **kw)


def command(name: str, help: str, *args):
    """Register the decorated handler as subcommand ``name``, taking ``args`` (each made by ``arg``)."""
    def register(run):
        COMMANDS[name] = (help, args, run)
        return run
    return register


MODEL_ARGS = (
    arg("--model", help="base model: the embedded default (no network), a Hub id such as gpt2, or a local folder"),
    arg("--device", default="auto", help="auto (CUDA if present, else CPU), cpu or cuda[:N]"),
    arg("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16 or float16"),
)
LIBRARY = arg("--library", default=str(DEFAULT_LIBRARY), help="prefix library folder")
TASK_HELP = f"built-in task: {', '.join(BUILTIN)}"


def task_args(data_help: str) -> tuple:
    """A built-in --task or your --data, and what to read and score it with."""
    return (arg("--task", help=TASK_HELP), arg("--data", help=data_help),
            arg("--input-col", default="input", help="input column of --data"),
            arg("--target-col", default="target", help="target column of --data"),
            arg("--instruction", help="instruction text (defaults to the task's)"),
            arg("--metric", choices=METRICS, help="how answers are scored (default: the task's metric)"))


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

    test_data = getattr(args, "test_data", None)
    if test_data and not args.data:
        raise PlaygroundError("--test-data holds the held-out examples of your --data: give --data too.")
    if args.data and args.command == "train":
        if args.task:
            raise PlaygroundError("Give either --task or --data, not both.")
        return user_task(args.data, args.input_col, args.target_col, args.instruction or
                         "Answer with the target for this input.", args.metric or "exact_match",
                         test_source=test_data)
    if not args.task and not args.data:
        raise PlaygroundError(f"Name a built-in --task ({', '.join(BUILTIN)}) or give --data.")
    from .tasks import Task

    task = get_task(args.task) if args.task else Task("custom", "Your data", "Answer with the target for this input.",
                                                      max_new_tokens=24)
    if args.instruction:
        task = replace(task, instruction=args.instruction)
    if args.metric:
        task = replace(task, metric=args.metric)  # a copy: the built-in task stays as it is
    return task


def _prefix(ref: str, base, library: str):
    from .library import Library
    from .peft_folder import load_prefix

    path = Path(ref)
    if path.is_dir():
        return load_prefix(path, base)
    return Library(library).load(ref, base)


def settings_from_args(args) -> tuple:
    """(PrefixSettings, TrainSettings) that ``train``'s flags ask for, validated."""
    from .methods import prefix_learning_rate
    from .prefix import PrefixSettings

    ps = PrefixSettings(args.num_virtual_tokens, args.init, args.init_text, args.prefix_projection,
                        args.encoder_hidden_size, args.init_shots)
    lr = args.lr if args.lr is not None else prefix_learning_rate(args.prefix_projection, args.init)
    ts = TrainSettings(lr, args.steps, args.batch_size, args.seed, args.eval_every, args.eval_examples, args.precision)
    ps.validate()
    ts.validate()
    return ps, ts


def _check_start(ref: str, library, ps) -> None:
    """Refuse a --start-from that names nothing, or that cannot go on training as asked, before the model loads."""
    if ps.prefix_projection:
        raise PlaygroundError("--start-from goes on from a saved prefix, which holds its key/values without the MLP "
                              "(PEFT drops it at export): leave out --prefix-projection.")
    if Path(ref).is_dir():
        return
    try:
        found = library.find(ref)
    except PlaygroundError:  # not a valid name: then it was meant as a folder
        found = None
    if found is None:
        raise PlaygroundError(f"--start-from '{ref}' is neither a prefix folder nor a prefix in {library.root}. Give "
                              "a folder holding adapter_config.json, or a name from `python -m playground list`.")


def build_prefix(base, ps, task, seed: int, start_from: str | None = None, library: str = str(DEFAULT_LIBRARY)):
    """The prefix a ``train`` run starts from: a new one made as ``ps`` says, or the one at ``start_from``
    (a folder or library name), made trainable again."""
    from .prefix import create_prefix

    if not start_from:
        return create_prefix(base, ps, task.instruction, seed, task.split("train"))
    prefix = _prefix(start_from, base, library)  # a fresh object, loaded frozen for inference
    prefix.encoder.requires_grad_(True)  # its embedding is the prefix itself (inference mode): train that on
    prefix.info = {"settings": asdict(replace(ps, num_virtual_tokens=prefix.num_virtual_tokens)), "seed": seed,
                   "started_from": str(start_from)}
    return prefix


@command("train", "train a prefix and save it into the library", *MODEL_ARGS,
         *task_args("your JSONL/CSV file instead of a built-in task (split 80/20 into train/test)"),
         arg("--name", help="library name to save under (default: the task name)"), LIBRARY,
         arg("--overwrite", action="store_true", help="replace a prefix of the same name"),
         arg("--num-virtual-tokens", type=int, default=20), arg("--init", default="task", choices=INITS),
         arg("--init-text", default="", help="text for --init text"),
         arg("--init-shots", type=int, default=DEMO_SHOTS, help="training examples for --init demos: the prefix "
             "starts as the instruction and these examples (drawn with --seed), as many virtual tokens as their "
             "tokens (--num-virtual-tokens is not used)"),
         arg("--prefix-projection", action="store_true", help="train through an MLP (dropped at export)"),
         arg("--encoder-hidden-size", type=int, default=256),
         arg("--lr", type=float, help="AdamW learning rate (default: the validated rate for --init, or the MLP's "
             "own with --prefix-projection; see methods.METHODS)"),
         arg("--steps", type=int, default=20), arg("--batch-size", type=int, default=8),
         arg("--seed", type=int, default=0), arg("--eval-every", type=int, default=5),
         arg("--eval-examples", type=int, default=TrainSettings.eval_examples,
             help="held-out examples the metric is measured on while training"),
         arg("--precision", default="auto", choices=PRECISIONS,
             help="training precision; auto: bf16 autocast where the CPU/GPU is fast at it, else fp32"),
         arg("--test-data", help="with --data: your held-out examples (JSONL/CSV), instead of an 80/20 split"),
         arg("--start-from", help="a prefix folder or library name: train on from its weights instead of a new "
             "prefix (its length is used; --init and --num-virtual-tokens are not)"))
def cmd_train(args) -> int:
    from tqdm import tqdm

    from .evaluation import evaluate_all
    from .library import Library
    from .methods import prefix_method
    from .names import check_name
    from .peft_folder import make_card
    from .training import train

    task = _task(args)
    name = check_name(args.name or task.name)
    library = Library(args.library)
    if name in library.names() and not args.overwrite:
        raise PlaygroundError(f"A prefix named '{name}' already exists in {library.root}; use --name or --overwrite.")
    ps, ts = settings_from_args(args)
    if args.start_from:
        _check_start(args.start_from, library, ps)
    base = load_base_verbose(args)
    prefix = build_prefix(base, ps, task, ts.seed, args.start_from, args.library)
    if args.start_from and prefix.num_virtual_tokens != ps.num_virtual_tokens:
        print(f"note: '{args.start_from}' has {prefix.num_virtual_tokens} virtual tokens; --num-virtual-tokens is "
              "not used", file=sys.stderr)
    elif ps.init == "demos" and not args.start_from:
        print(f"{prefix.num_virtual_tokens} virtual tokens from {ps.init_shots} training example"
              f"{'s' if ps.init_shots != 1 else ''} (and the instruction)", file=sys.stderr)
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


@command("eval", "held-out metric of a prefix (and baselines); JSON on the last line", *MODEL_ARGS,
         *task_args("any JSONL of {input, target} to score (default: the task's test split)"),
         arg("--prefix", help="prefix folder or library name (omit for baselines only)"), LIBRARY,
         arg("--baselines", action="store_true", help="also score the base model and the instruction prompt"),
         arg("--limit", type=int, help="score only the first N examples"))
def cmd_eval(args) -> int:
    from .evaluation import evaluate
    from .methods import BareMethod, InstructionMethod, prefix_method
    from .tasks import read_examples

    task = _task(args)
    examples = read_examples(args.data, args.input_col, args.target_col) if args.data else task.split("test")
    examples = examples[: args.limit] if args.limit else examples
    base = load_base_verbose(args)
    out = {"metric": task.metric, "n": len(examples)}
    if args.baselines or not args.prefix:
        for m in (BareMethod(), InstructionMethod(task.instruction)):
            out[m.mode] = round(evaluate(base, task, examples, m).score, 4)
    if args.prefix:
        prefix = _prefix(args.prefix, base, args.library)
        out["prefix"] = round(evaluate(base, task, examples, prefix_method(prefix)).score, 4)
        out["score"] = out["prefix"]
    print(json.dumps(out))
    return 0


@command("attention", "share of attention on the prefix, per layer", *MODEL_ARGS,
         arg("--prefix", required=True, help="prefix folder or library name"), LIBRARY, arg("--prompt", required=True),
         arg("--json", action="store_true", help="print the per-layer and per-head shares as JSON"))
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


@command("ablate", "remove a prefix from chosen layers (every layer, one layer, below or from a depth) and score each "
         "variant on held-out examples; JSON on the last line", *MODEL_ARGS,
         arg("--prefix", required=True, help="prefix folder or library name"), LIBRARY,
         arg("--task", choices=BUILTIN, help="built-in task to score on (default: the task on the prefix's card)"),
         arg("--examples", type=int, default=16, help="held-out examples (validation, else test): the first N"),
         arg("--out", help="also write ablation_<prefix>.json and the two figures (PNG, and HTML beside them) here"))
def cmd_ablate(args) -> int:
    from tqdm import tqdm

    from .ablation import MAX_EXAMPLES, ablate
    from .tasks import get_task
    from .training import held_out_split

    if not 1 <= args.examples <= MAX_EXAMPLES:
        raise PlaygroundError(f"--examples must be from 1 to {MAX_EXAMPLES} (every variant scores each one); "
                              f"got {args.examples}.")
    base = load_base_verbose(args)
    prefix = _prefix(args.prefix, base, args.library)
    name = args.task or prefix.info.get("task")
    if name not in BUILTIN:
        raise PlaygroundError(f"The prefix's card names no built-in task ({name!r}): give --task "
                              f"({', '.join(BUILTIN)}).")
    task = get_task(name)
    split = held_out_split(task)
    examples = task.split(split)[: args.examples]
    bar = tqdm(total=100, desc="Ablating", file=sys.stderr, bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def progress(frac: float, msg: str) -> None:
        bar.n = int(100 * frac)
        bar.set_postfix_str(msg)
        bar.refresh()

    ab = ablate(base, prefix, task, examples, progress, split=split)
    bar.close()
    print(f"{args.prefix} on {task.name}: {ab.num_virtual_tokens} virtual tokens, {ab.num_layers} layers; "
          f"n = {ab.n} ({ab.split}), {ab.seconds:.1f} s")
    print(f"{'variant':<38} {'layers':>6} {ab.metric:>12} {'log p(target) mean ± std':>26}")
    for r in ab.rows:
        print(f"{r.label:<38} {r.layers_with_prefix:>6} {100 * r.metric:>11.1f}% "
              f"{r.logprob_mean:>16.3f} ± {r.logprob_std:<7.3f}")
    out = {"prefix": args.prefix, **{k: round(v, 4) if isinstance(v, float) else v
                                     for k, v in ab.as_dict().items() if k != "rows"},
           "rows": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.as_dict().items()} for r in ab.rows]}
    if args.out:
        from .figures import ablation_depth_figure, ablation_layer_figure, write_figures

        folder, stem = Path(args.out), f"ablation_{Path(args.prefix).name}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
        figs = {f"{stem}_layers": ablation_layer_figure(ab), f"{stem}_depth": ablation_depth_figure(ab)}
        for path in [folder / f"{stem}.json", *write_figures(figs, folder, height=600)]:
            print(f"wrote {path}", file=sys.stderr)
    print(json.dumps(out))
    return 0


@command("generate", "answer a prompt with one or more prefixes, side by side", *MODEL_ARGS,
         arg("--prefix", action="append", default=[], help="prefix folder or library name (repeatable)"), LIBRARY,
         arg("--prompt", required=True), arg("--no-base", action="store_true", help="leave out the base model's own answer"),
         arg("--max-new-tokens", type=int, default=24))
def cmd_generate(args) -> int:
    from .generate import generate_texts_mixed

    base = load_base_verbose(args)
    prefixes = {} if args.no_base else {"(no prefix)": None}
    for ref in args.prefix:
        prefixes[Path(ref).name] = _prefix(ref, base, args.library)
    if not prefixes:
        raise PlaygroundError("Nothing to run: give --prefix, or drop --no-base.")
    if not args.prompt.strip():
        raise PlaygroundError("The prompt is empty.")
    t0 = time.perf_counter()  # one row per prefix in one mixed batch
    texts = generate_texts_mixed(base, [args.prompt] * len(prefixes), list(prefixes.values()), args.max_new_tokens)
    secs = time.perf_counter() - t0
    for name, text in zip(prefixes, texts):
        print(f"{name:>20}: {text}")
    print(f"{len(texts)} answer(s) in one mixed batch (a row per prefix): {secs:.2f} s")
    return 0


@command("lens", "logit lens: per layer, the rank and probability of the answer's first token, with and without "
         "the prefix; JSON on the last line", *MODEL_ARGS,
         arg("--prefix", required=True, help="prefix folder or library name"), LIBRARY, arg("--prompt", required=True),
         arg("--target", help="the answer to follow (default: the gold answer when the prompt is a held-out input of "
             "the prefix's task, else the prefix's own greedy answer)"),
         arg("--nearest", type=int, default=0, metavar="K", help="also list the K vocabulary tokens nearest each "
             "virtual token's first-layer key"))
def cmd_lens(args) -> int:
    from .generate import answer_text, greedy_mixed
    from .lens import gold_answer, logit_lens
    from .nearest import nearest_tokens
    from .prompts import PromptFormat
    from .tasks import get_task

    base = load_base_verbose(args)
    prefix = _prefix(args.prefix, base, args.library)
    instruction = prefix.info.get("instruction", "")
    target, source = args.target, "--target"
    gold = gold_answer(get_task(prefix.info["task"]) if prefix.info.get("task") in BUILTIN else None, args.prompt)
    if not target and gold:
        target, source = gold[0], f"the gold answer ({gold[1]} split)"
    if not target:  # the prefix's own answer, as Switch would give it
        fmt = PromptFormat.for_tokenizer(base.tokenizer)
        ids = greedy_mixed(base, [fmt.encode_prompt(args.prompt, "prefix", instruction)], [prefix], 24, fmt.stop_ids)
        target, source = answer_text(fmt, ids[0]), "the prefix's greedy answer"
    res = logit_lens(base, prefix, args.prompt, target, instruction)
    print(f"Target {res.target!r} ({source}); its first token {res.target_token!r} is followed at the last of "
          f"{res.prompt_tokens} prompt tokens")
    print(f"{'layer':>5} | {'without: rank':>13} {'p':>7}  top | {'with prefix: rank':>17} {'p':>7}  top")
    rows = []
    for i in range(base.num_layers):
        w, p = res.without, res.with_prefix
        top = f"'{w.top_tokens[i]}'"
        print(f"{i:>5} | {int(w.rank[i]):>13,} {float(w.prob[i]):>7.4f}  {top:<12} | "
              f"{int(p.rank[i]):>17,} {float(p.prob[i]):>7.4f}  '{p.top_tokens[i]}'")
        rows.append({"layer": i, "without": {"rank": int(w.rank[i]), "prob": round(float(w.prob[i]), 6),
                                                 "top": w.top_tokens[i]},
                     "with_prefix": {"rank": int(p.rank[i]), "prob": round(float(p.prob[i]), 6),
                                     "top": p.top_tokens[i]}})
    out = {"prefix": args.prefix, "target": res.target, "target_source": source, "target_token": res.target_token,
           "prompt_tokens": res.prompt_tokens, "layers": rows}
    if args.nearest:
        near = nearest_tokens(base, prefix, args.nearest)
        print(f"Nearest vocabulary tokens of each virtual token's first-layer key (cosine, {args.nearest} per slot):")
        for j, (toks, cos) in enumerate(zip(near.tokens, near.cosine.tolist())):
            print(f"  slot {j:>3}: " + ", ".join(f"'{t}' {c:.2f}" for t, c in zip(toks, cos)))
        out["nearest"] = [[{"token": t, "cosine": round(c, 4)} for t, c in zip(toks, cos)]
                          for toks, cos in zip(near.tokens, near.cosine.tolist())]
    print(json.dumps(out))
    return 0


@command("ship", "retrain the shipped task prefixes from scratch (fixed seeds) and rewrite their cards and "
         "prefixes/README.md", *MODEL_ARGS,
         arg("--task", action="append", default=[], help="only this shipped prefix, by name (repeatable; default: "
             "every shipped one)"),
         LIBRARY, arg("--readme", help="README to rewrite the table in (default: LIBRARY/README.md)"))
def cmd_ship(args) -> int:
    import time

    from .library import Library
    from .recipes import RECIPES, recipe, ship
    from .report import write_readme

    tasks = [recipe(t).key for t in args.task] or list(RECIPES)
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


@command("list", "the prefixes in the library with their cards", LIBRARY)
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


@command("demo", "train a sentiment prefix for a few steps; held-out accuracy before and after", *MODEL_ARGS,
         arg("--steps", type=int, default=10))
def cmd_demo(args) -> int:
    from .evaluation import evaluate
    from .methods import InstructionMethod, prefix_method
    from .prefix import PrefixSettings, create_prefix
    from .tasks import get_task
    from .training import TrainSettings, train

    base = load_base_verbose(args)
    task = get_task("sentiment")
    test = task.split("test")
    print(f"Task: {task.title}. Held-out test set: {len(test)} reviews.")
    instr = evaluate(base, task, test, InstructionMethod(task.instruction)).score
    prefix = create_prefix(base, PrefixSettings(), task.instruction)
    before = evaluate(base, task, test, prefix_method(prefix)).score
    print(f"Before training: instruction prompt {100 * instr:.1f}%, prefix initialized from it {100 * before:.1f}%")
    for rec in train(base, prefix_method(prefix), task, TrainSettings(steps=args.steps, eval_every=0)):
        print(f"step {rec.step:3d}  loss {rec.loss:.3f}  {rec.elapsed:5.1f} s  {rec.examples_per_s:.1f} ex/s")
    after = evaluate(base, task, test, prefix_method(prefix)).score
    print(f"After {args.steps} steps: held-out accuracy {100 * before:.1f}% -> {100 * after:.1f}% "
          f"({prefix.trainable_parameters:,} trainable parameters, "
          f"{100 * prefix.trainable_parameters / base.num_parameters:.3f}% of the model)")
    return 0


@command("prepare", "load the model once (converting the embedded GGUF into the cache); for images", *MODEL_ARGS)
def cmd_prepare(args) -> int:
    base = load_base_verbose(args)
    print(f"Ready: {base.describe()}")
    return 0


@command("compare", "prefix vs prompt tuning vs LoRA vs the instruction prompt on one task", *MODEL_ARGS,
         arg("--task", default="sentiment", help=TASK_HELP),
         arg("--methods", default="", help=f"comma-separated, from: {', '.join(METHODS)} (default: every one that "
             "applies to the task; label scoring needs a classification task)"),
         arg("--steps", type=int, default=20), arg("--batch-size", type=int, default=8),
         arg("--eval-every", type=int, default=5), arg("--eval-examples", type=int, default=48),
         arg("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2 for a spread"),
         arg("--num-virtual-tokens", type=int, default=20), arg("--r", type=int, default=4, help="LoRA rank"),
         arg("--json", help="write every run's records here"),
         arg("--out", help="folder for results.json and the figures with error bars (HTML, and PNG when Chromium "
             "is installed)"),
         arg("--split", help="held-out split for the metric (default: validation where the task has one, else test)"))
def cmd_compare(args) -> int:
    from .compare import applicable_methods, check_methods, compare, to_json
    from .report import summary
    from .tasks import get_task
    from .training import TrainSettings

    task = get_task(args.task)
    names = check_methods(args.methods.split(",") if args.methods.strip() else applicable_methods(task), task)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise PlaygroundError(f"--seeds takes whole numbers separated by commas, e.g. 0,1,2; got '{args.seeds}'.") from None
    ts = TrainSettings(steps=args.steps, batch_size=args.batch_size, eval_every=args.eval_every,
                       eval_examples=args.eval_examples)
    ts.validate()
    base = load_base_verbose(args)
    results = compare(base, task, names, ts, seeds or [0], args.num_virtual_tokens, args.r, eval_split=args.split)
    print(summary(results, base))
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


@command("baselines", "the strongest prompts without training (instruction, + format, few-shot, label scoring) "
         "with their cost; --choose picks formats and few-shot layouts on validation first", *MODEL_ARGS,
         arg("--task", action="append", default=[], help="a built-in task (repeatable; default: all)"),
         arg("--splits", default="test", help="comma-separated splits to measure on, e.g. test,fresh"),
         arg("--shots", default="4,8", help="few-shot sizes"), arg("--draws", type=int, default=3,
                                                                  help="draws of the demonstrations per few-shot row"),
         arg("--limit", type=int, help="at most this many examples per split"),
         arg("--choose", action="store_true", help="first choose each task's format sentence and few-shot layout on "
             "its validation split, and save them in playground/data/prompting.json"),
         arg("--cards", action="store_true", help="write the results on test and fresh into the shipped prefixes' "
             "cards and rewrite the README table"), LIBRARY,
         arg("--json", help="write the results here"))
def cmd_baselines(args) -> int:
    from .baselines import BaselineSettings, choose, measure, save_choices
    from .report import baseline_table
    from .tasks import get_task

    names = args.task or list(BUILTIN)
    tasks = [get_task(n) for n in names]
    settings = BaselineSettings(_numbers(args.shots, int, "--shots"), args.draws)
    splits = ["test", "fresh"] if args.cards else [x.strip() for x in args.splits.split(",") if x.strip()]
    base = load_base_verbose(args)
    say = lambda frac, msg: print(f"  {100 * frac:3.0f}% {msg}", file=sys.stderr, flush=True)  # noqa: E731
    if args.choose:
        chosen = {}
        for t in tasks:
            chosen[t.name] = choose(base, t, settings, args.limit, say)
            print(f"{t.name}: chose {chosen[t.name]['format']!r}, layouts {chosen[t.name]['style']} "
                  f"(validation, n = {chosen[t.name]['validation']['n']})")
        save_choices(chosen)
    records = {}
    for t in tasks:
        records[t.name] = {}
        for split in splits:
            examples = t.split(split)[:args.limit]
            results = measure(base, t, split, examples, settings, say)
            records[t.name][split] = [r.as_dict() for r in results]
            print(f"\n{t.name}, {split} split (n = {len(examples)}):\n" + baseline_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1), encoding="utf-8")
    if args.cards:
        from .library import Library
        from .peft_folder import update_card
        from .recipes import RECIPES, measured_by
        from .report import write_readme

        library = Library(args.library)
        measured = measured_by(base, "python -m playground baselines --cards")
        for task_name, by_split in records.items():  # every shipped prefix of the task (sentiment has two)
            for name in [k for k, r in RECIPES.items() if r.task == task_name] or [task_name]:
                if library.find(name) is not None:
                    lesson = {"lesson": RECIPES[name].lesson} if name in RECIPES else {}
                    update_card(library.path(name), {"baselines": by_split, "baselines_measured": measured, **lesson})
        write_readme(library.root / "README.md", library)
        print(f"wrote the baselines into the cards and {library.root / 'README.md'}")
    return 0


def _numbers(text: str, kind, flag: str) -> tuple:
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise PlaygroundError(f"{flag} takes numbers separated by commas; got '{text}'.") from None


@command("experiments", "Li & Liang's ablations (prefix length, init in low data, MLP vs direct, prefix vs "
         "prompt) and the method comparison, over several seeds; writes tables and figures", *MODEL_ARGS,
         arg("--task", default="topic", help=TASK_HELP),
         arg("--studies", default=",".join(STUDIES), help=f"comma-separated, from: {', '.join(STUDIES)} (length "
             "also runs prompt tuning at equal lengths)"),
         arg("--seeds", default="0,1,2"), arg("--steps", type=int, default=30),
         arg("--eval-examples", type=int, default=60),
         arg("--split", default="test", help="held-out split for the metric"),
         arg("--lengths", default="1,2,5,10,20,50,100", help="prefix lengths to sweep"),
         arg("--prompt-lengths", default="1,5,20,100", help="prompt-tuning lengths (prefix vs prompt)"),
         arg("--train-sizes", default="16,64", help="training-set sizes for the init study"),
         arg("--init-shots", type=int, default=DEMO_SHOTS, help="training examples the init study's 'training "
             "examples' prefix starts from (drawn from each run's own training set)"),
         arg("--out", default="experiments-out", help="folder for results.json, results.md and the figures; a "
             "rerun with the same settings resumes"))
def cmd_experiments(args) -> int:
    from .experiments import ExperimentSettings, run_all
    from .figures import write_figures
    from .report import experiment_figures, markdown_tables
    from .tasks import get_task

    s = ExperimentSettings(task=args.task, studies=tuple(x.strip() for x in args.studies.split(",") if x.strip()),
                           seeds=_numbers(args.seeds, int, "--seeds"), steps=args.steps,
                           eval_examples=args.eval_examples, eval_split=args.split,
                           lengths=_numbers(args.lengths, int, "--lengths"),
                           prompt_lengths=_numbers(args.prompt_lengths, int, "--prompt-lengths"),
                           train_sizes=_numbers(args.train_sizes, int, "--train-sizes"), init_shots=args.init_shots)
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
    for path in write_figures(experiment_figures(data), out):
        print(f"wrote {path}")
    print(f"wrote {out / 'results.json'} and {out / 'results.md'} ({data['wall_seconds'] / 60:.1f} min)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m playground", description="Prefix Playground engine, from the terminal.")
    sub = ap.add_subparsers(dest="command", required=True)
    for name, (help, args, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help)
        p.set_defaults(run=run)
        for add in args:
            add(p)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was saved", file=sys.stderr)
        return 130
