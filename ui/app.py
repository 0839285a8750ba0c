"""Prefix Playground, the web app, started by ``python app.py`` (see ``--help``).

UI only: it loads the base model once, builds the Blocks and wires each tab's components to
``playground.service.Playground``. Nothing happens at import, so tests can import
``build_demo`` and drive it. Running it for a class (limits, passwords, Docker, Spaces,
several replicas): ``docs/deploy.md``.
"""

import argparse
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The Train and Compare tabs' sliders start at these values, and a slider's start must fit
# under its maximum: a limit below them would leave the tab unusable as it opens.
UI_MIN = {"max_steps": 20, "max_virtual_tokens": 20, "max_batch_size": 8, "max_eval_examples": 32}
AUTH_ENV = "PLAYGROUND_AUTH"  # "user:password" lines, for hosts that pass secrets as variables (Spaces)


def _whole(lo: int, hi: int | None):
    """An argparse type: a whole number from lo to hi, or a clear error."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < lo or (hi is not None and v > hi):
            span = f"from {lo} to {hi}" if hi is not None else f"of at least {lo}"
            raise argparse.ArgumentTypeError(f"must be a whole number {span}, got {text!r}")
        return v
    return parse


def _auth_pairs(lines: list[str], where: str, parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """'user:password' lines (blank lines and '#' comments skipped) -> pairs; errors never echo a password."""
    out = []
    for i, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        user, password = user.strip(), password.strip()
        if not sep or not user or not password:
            parser.error(f"{where}, entry {i}: expected USER:PASSWORD with both parts non-empty")
        out.append((user, password))
    return out


def default_library() -> Path:
    """The class's folder when --library is not given: the user's data folder, which outlives the app's."""
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "prefix-playground" / "library"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from playground.models import DEFAULT_MODEL
    from playground.service import Limits

    p = argparse.ArgumentParser(prog="python app.py", description="Prefix Playground: learn prefix tuning by doing it. "
                                "Running it for a class: docs/deploy.md.")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"base model: '{DEFAULT_MODEL}' (embedded, offline), a Hugging Face id such as gpt2 "
                        "(online or cached), or a local folder")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (auto: CUDA in bf16 when present, else CPU)")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16 or float16")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only); 0.0.0.0 serves your "
                        "whole network: add --auth then")
    p.add_argument("--port", type=_whole(1, 65535), default=7860, help="default: %(default)s")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs internet)")
    p.add_argument("--library", default=str(default_library()),
                   help="the class's folder, where students save and import prefixes (default: %(default)s)")
    p.add_argument("--shipped", default=str(ROOT / "prefixes"),
                   help="folder of shipped prefixes, listed beside the class's and read-only "
                        "(default: %(default)s)")
    p.add_argument("--read-only-library", action="store_true",
                   help="the class's folder is read-only too: nobody can save, import, rename or delete")
    p.add_argument("--writable-shipped", action="store_true",
                   help="for development only (maintaining the shipped folder, such as prefixes/): the app may "
                        "rename, delete and overwrite the shipped prefixes in place. Never use it for a class")

    g = p.add_argument_group("password protection (Gradio's login page)")
    g.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD",
                   help="a login; repeat for several. Other users of this machine can see command lines: "
                        f"prefer --auth-file, or the {AUTH_ENV} variable")
    g.add_argument("--auth-file", metavar="PATH", help="logins, one USER:PASSWORD per line ('#' starts a comment)")
    g = p.add_argument_group("the class (docs/deploy.md: running a class)")
    g.add_argument("--teacher-auth", action="append", default=[], metavar="USER:PASSWORD",
                   help="the teacher's login, which opens the Class tab. With student logins it is one more login "
                        "on the login page; without them the teacher signs in inside the app. Prefer "
                        "--teacher-auth-file")
    g.add_argument("--teacher-auth-file", metavar="PATH", help="the teacher's logins, one USER:PASSWORD per line")
    g.add_argument("--class-folder", metavar="PATH",
                   help="where the class's run records, names and shared state live (default: beside the library, "
                        "<library>-class)")

    d = Limits()
    g = p.add_argument_group("server limits", "Caps that keep one click from taking the machine from a class. "
                             "The defaults suit 30 students on a 2-core laptop; the startup log lists them.")
    for f in fields(Limits):
        g.add_argument("--" + f.name.replace("_", "-"), type=_whole(UI_MIN.get(f.name, 1), f.metadata["max"]),
                       default=getattr(d, f.name), metavar="N", help=f"{f.metadata['help']} (default: %(default)s)")
    args = p.parse_args(argv)

    logins, sources = _auth_pairs(args.auth, "--auth", p), []
    if args.auth_file:
        try:
            sources.append((f"--auth-file {args.auth_file}", Path(args.auth_file).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            p.error(f"--auth-file: cannot read {args.auth_file} ({exc.__class__.__name__})")
    if os.environ.get(AUTH_ENV, "").strip():
        sources.append((AUTH_ENV, os.environ[AUTH_ENV]))
    for where, text in sources:
        found = _auth_pairs(text.splitlines(), where, p)
        if not found:  # protection was asked for: never start unprotected by mistake
            p.error(f"{where} holds no USER:PASSWORD line")
        logins += found
    teachers = _auth_pairs(args.teacher_auth, "--teacher-auth", p)
    if args.teacher_auth_file:
        try:
            text = Path(args.teacher_auth_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            p.error(f"--teacher-auth-file: cannot read {args.teacher_auth_file} ({exc.__class__.__name__})")
        found = _auth_pairs(text.splitlines(), f"--teacher-auth-file {args.teacher_auth_file}", p)
        if not found:
            p.error(f"--teacher-auth-file {args.teacher_auth_file} holds no USER:PASSWORD line")
        teachers += found
    args.teachers = dict(teachers)
    if logins:  # the students log in: the teacher logs in on the same page
        logins += teachers
    users = [u for u, _ in logins] + ([] if logins else [u for u, _ in teachers])
    if len(set(users)) < len(users):
        p.error(f"a user is given twice: {', '.join(sorted({u for u in users if users.count(u) > 1}))}")
    args.logins = logins
    if args.writable_shipped and args.read_only_library:
        p.error("--writable-shipped and --read-only-library contradict each other: give one of them")
    if Path(args.library).resolve() == Path(args.shipped).resolve():
        p.error("--library and --shipped name the same folder: give the class its own folder, so that the "
                "shipped prefixes stay read-only")
    args.limits = Limits(**{f.name: getattr(args, f.name) for f in fields(Limits)})
    return args


def build_demo(pg):
    """The Blocks for one Playground (a loaded model and its library)."""
    import gradio as gr

    from playground.memory import trim
    from playground.report import model_rows
    from ui import ablation, attention, classroom, compare, learn, lens, library, runs, switch, train, who
    from ui.common import key, log, slots, tab
    from ui.fairness import cap_waiting

    b = pg.base
    with gr.Blocks(title="Prefix Playground", delete_cache=(1800, 3600)) as demo:
        with gr.Row(elem_id="pp-head"):
            gr.Markdown(f"# Prefix Playground\n**{b.name}** · {b.num_parameters / 1e6:.1f}M parameters, frozen · "
                        f"{b.num_layers} layers · {b.device.type} / {str(b.dtype).replace('torch.', '')}",
                        elem_id="header")
            present = gr.Checkbox(label="Presentation mode", value=False, elem_id="present-toggle",
                                  info="large text and plots for a projector")
        me = who.build(pg)
        with gr.Tabs():
            with gr.Tab("Learn", id="learn"):
                numbers = learn.build(pg)
            with gr.Tab("Train", id="train"):
                tt = train.build(pg)
            with gr.Tab("Attention", id="attention") as att_tab:
                att_refresh, att_in, att_out = attention.build(pg)
                ablation.build(pg, att_tab)  # below the attention figures: the prefix removed layer by layer
                lens.build(pg, att_tab)  # then what the prefix "says": the logit lens and the nearest words
            with gr.Tab("Switch", id="switch") as sw_tab:
                sw_refresh, sw_in, sw_out = switch.build(pg)
            with gr.Tab("Library", id="library") as lib_tab:
                lib_refresh, lib_in, lib_out = library.build(pg)
            with gr.Tab("Compare", id="compare"):
                compare.build(pg)
            with gr.Tab("Runs", id="runs") as runs_tab:
                runs_refresh, runs_in, runs_out = runs.build(pg)
            with gr.Tab("Class", id="class", visible=False) as class_tab:
                class_refresh, class_in, class_out, class_timer = classroom.build(pg)

        size = [tt.num_virtual_tokens, tt.prefix_projection, tt.encoder_hidden_size]
        for c in size:
            c.change(train.on_size(lambda s: model_rows(b, s)), size, numbers, queue=False)
        # Prefix pickers follow the library and this session's just-trained prefix.
        att_tab.select(att_refresh, att_in, att_out, queue=False)
        sw_tab.select(sw_refresh, sw_in, sw_out, queue=False)
        lib_tab.select(lib_refresh, lib_in, lib_out, queue=False)
        demo.load(att_refresh, att_in, att_out, queue=False)
        demo.load(sw_refresh, sw_in, sw_out, queue=False)
        demo.load(lib_refresh, lib_in, lib_out, queue=False)
        runs_tab.select(runs_refresh, runs_in, runs_out, queue=False)

        # Who this page is: a login, or this browser's name. Then the learner's latest run (a reload, a second
        # tab: the same run, followed live), the exercise and the shared prefixes, and (the teacher) the Class tab.
        def teacher_view(request: gr.Request):
            on = pg.is_teacher(key(request))
            return gr.update(visible=on), gr.Timer(active=on)

        demo.load(me.show, None, me.outputs, queue=False).then(teacher_view, None, [class_tab, class_timer],
                                                               queue=False)
        me.teacher_changed.then(teacher_view, None, [class_tab, class_timer], queue=False).then(
            class_refresh, class_in, class_out)
        class_tab.select(class_refresh, class_in, class_out)
        demo.load(tt.open_run, None, tt.run_outputs, concurrency_id="follow", concurrency_limit=slots(pg, "infer"),
                  show_progress="hidden")
        demo.load(tt.class_view, tt.class_inputs, tt.class_outputs, queue=False)

        def forget(request: gr.Request):
            k = key(request)
            running = pg.close_tab(k, tab(request))  # the learner's run goes on: a reload finds it
            log.info("tab %s of %s closed%s", tab(request)[:8], k[:16], f"; their run goes on for "
                     f"{pg.limits.reload_grace_seconds} s unless a tab of theirs comes back" if running else "")

        # Presentation mode lives in the page (assets/app.js) and its address (?present=1), so a link keeps it.
        present.change(None, present, None, js="(on) => { window.ppPresent && window.ppPresent(on); return []; }")
        demo.load(None, None, present, js="() => new URLSearchParams(window.location.search).get('present') === '1'")

        demo.unload(forget)

        def freed(keys: list[str]):  # idle sessions the store let go (no request, no heartbeat); their runs stopped
            trim()
            log.info("%d idle session(s) freed: %s", len(keys), ", ".join(k[:8] for k in keys))

        pg.on_drop = freed
        pg.sessions.on_stop = lambda k: log.info("%s: no tab came back within %d s, so their run stopped "
                                                 "mid-training (run stopped)", k[:16], pg.limits.reload_grace_seconds)
        pg.sessions.start_sweeper(every_s=min(60.0, pg.sessions.ttl_s / 4, max(1.0, pg.sessions.grace_s / 4)))
    # Every event that does work goes through the queue: api_open=False refuses /run/ for them.
    # What stays outside (queue=False) only reads lists, does arithmetic or sets a Stop flag.
    demo.queue(max_size=pg.limits.queue_size, default_concurrency_limit=slots(pg, "infer"),
               api_open=False)
    cap_waiting(demo._queue, pg.limits.max_waiting_per_session, on_join=pg.touch)
    return demo


def page_js() -> str:
    """The page's script (assets/app.js), handed the glossary's hover hints (assets/glossary.md)."""
    import json

    from ui.common import glossary

    return f"() => {{ window.ppGlossary = {json.dumps(glossary())}; ({(ROOT / 'assets' / 'app.js').read_text()})(); }}"


def launch_options(pg, logins: list[tuple[str, str]]) -> dict:
    """``demo.launch`` settings besides the address: the login, upload caps and the guard (ui/guard.py)."""
    from starlette.middleware import Middleware

    from ui.guard import Guard

    guard = Middleware(Guard, limits=pg.limits, on_activity=pg.touch)
    return dict(auth=logins or None, auth_message="Prefix Playground: log in with the name and password your "
                "teacher gave you.", max_file_size=f"{pg.limits.max_upload_mb}mb",
                # FastAPI's own /openapi.json would describe the API to anyone; Gradio serves its own behind
                # the login. SSR and static workers would serve requests outside the guard.
                app_kwargs={"middleware": [guard], "openapi_url": None}, ssr_mode=False, num_workers=0,
                # a thread per event in the queue: with the scheduler they wait on it, they do not compute
                max_threads=max(40, pg.limits.queue_size + 8))


def make_library(args: argparse.Namespace):
    """The library the flags ask for; opening it recovers what a killed server left half way."""
    from playground.library import Library

    return Library(args.library, shipped=args.shipped, read_only=args.read_only_library,
                   writable_shipped=args.writable_shipped)


def make_playground(args: argparse.Namespace):
    from playground.cli import load_base_verbose
    from playground.service import Playground

    base = load_base_verbose(args)  # a terminal progress bar while the embedded model converts (first run)
    return Playground(base, make_library(args), args.limits, class_folder=getattr(args, "class_folder", None),
                      teachers=getattr(args, "teachers", None))


def main(argv: list[str] | None = None) -> int:
    from playground.errors import PlaygroundError
    from playground.memory import limit_arenas

    limit_arenas(2)  # before any worker thread allocates: RSS stays bounded under a class (playground/memory.py)
    args = parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # classrooms are often offline; no phoning home
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        pg = make_playground(args)
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log = logging.getLogger("prefix-playground")
    log.info("server limits: %s", pg.limits.describe())
    lib = pg.library
    n, size = lib.usage() if lib.root.is_dir() else (0, 0)
    log.info("library: %s, %d prefixes (%.1f MB)%s; shipped: %s, %d prefixes, %s", lib.root, n, size / 2**20,
             ", read-only" if lib.read_only else "", lib.shipped, len(lib.names()) - n,
             "WRITABLE (--writable-shipped, for development)" if lib.writable_shipped else "read-only")
    runs, _ = pg.runs.usage()
    log.info("class folder: %s, %d run records; teacher: %s", pg.runs.root.parent, runs,
             ", ".join(args.teachers) + (" (logs in on the login page)" if args.logins else " (signs in inside the app)")
             if args.teachers else "none (no Class tab; add --teacher-auth-file)")
    if args.logins:  # user names only: a password never reaches the log
        log.info("password protection: on, %d login(s): %s", len(args.logins), ", ".join(u for u, _ in args.logins))
    elif args.share or args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("password protection: off, and %s can use this server. Add --auth-file (docs/deploy.md).",
                    "anyone with the public link" if args.share else f"anyone who reaches {args.host}:{args.port}")
    demo = build_demo(pg)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, css=(ROOT / "assets" / "app.css").read_text(),
                js=page_js(), show_error=True,
                footer_links=["api", "settings"], prevent_thread_lock=True, quiet=True,
                **launch_options(pg, args.logins))
    print(f"Prefix Playground is ready at http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    demo.block_thread()
    return 0

