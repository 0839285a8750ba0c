"""Prefix Playground, the web app: ``python app.py`` (see ``--help``).

UI only: it loads the base model once, builds the Blocks and wires each tab's components to
``playground.service.Playground``. Nothing happens at import, so tests can import
``build_demo`` and drive it.
"""


import argparse
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CSS = """
.pp-cards {display:flex; flex-wrap:wrap; gap:12px}
.pp-card {flex:1 1 200px; border:1px solid var(--border-color-primary); border-radius:8px; padding:10px}
.pp-card-name {font-weight:600; font-size:0.9em; opacity:0.8}
.pp-card-out {font-size:1.15em; margin:6px 0; white-space:pre-wrap}
.pp-card-lat {font-size:0.8em; opacity:0.7}
#learn-diagram svg {width:100%; height:auto}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from playground.models import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="python app.py", description="Prefix Playground: learn prefix tuning by doing it.")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"base model: '{DEFAULT_MODEL}' (embedded, offline), a Hugging Face id such as gpt2 "
                        "(online or cached), or a local folder")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (auto: CUDA in bf16 when present, else CPU)")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16 or float16")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 serves your whole network")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs internet)")
    p.add_argument("--library", default=str(ROOT / "prefixes"), help="folder of saved prefixes")
    p.add_argument("--read-only-library", action="store_true",
                   help="nobody can delete or overwrite the prefixes present at start")
    p.add_argument("--max-steps", type=int, default=200, help="training steps per run, at most")
    p.add_argument("--concurrent-trainings", type=int, default=2, help="training runs at once; others queue")
    p.add_argument("--queue-size", type=int, default=64, help="requests that may wait in the queue")
    p.add_argument("--max-upload-mb", type=int, default=64, help="largest file a browser may upload")
    return p.parse_args(argv)


def build_demo(pg):
    """The Blocks for one Playground (a loaded model and its library)."""
    import gradio as gr

    from playground.compare import CompareLab
    from ui import attention, compare, learn, library, switch, train
    from ui.common import key, log

    b = pg.base
    with gr.Blocks(title="Prefix Playground", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(f"# Prefix Playground\n**{b.name}** · {b.num_parameters / 1e6:.1f}M parameters, frozen · "
                    f"{b.num_layers} layers · {b.device.type} / {str(b.dtype).replace('torch.', '')}",
                    elem_id="header")
        with gr.Tabs():
            with gr.Tab("Learn", id="learn"):
                numbers = learn.build(pg)
            with gr.Tab("Train", id="train"):
                tt = train.build(pg)
            with gr.Tab("Attention", id="attention") as att_tab:
                att_refresh, att_in, att_out = attention.build(pg)
            with gr.Tab("Switch", id="switch") as sw_tab:
                sw_refresh, sw_in, sw_out = switch.build(pg)
            with gr.Tab("Library", id="library") as lib_tab:
                lib_refresh, lib_in, lib_out = library.build(pg)
            with gr.Tab("Compare", id="compare"):
                lab = CompareLab(pg.base, pg.limits.max_steps, pg.limits.max_eval_examples)
                compare.build(pg, lab)

        size = [tt.num_virtual_tokens, tt.prefix_projection, tt.encoder_hidden_size]
        for c in size:
            c.change(train.on_size(pg.model_rows), size, numbers, queue=False)
        # Prefix pickers follow the library and this session's just-trained prefix.
        att_tab.select(att_refresh, att_in, att_out, queue=False)
        sw_tab.select(sw_refresh, sw_in, sw_out, queue=False)
        lib_tab.select(lib_refresh, lib_in, lib_out, queue=False)
        demo.load(att_refresh, att_in, att_out, queue=False)
        demo.load(sw_refresh, sw_in, sw_out, queue=False)

        def forget(request: gr.Request):
            k = key(request)
            s = pg.sessions.peek(k)
            running = bool(s and s.run and s.run.state == "running")
            pg.sessions.drop(k)  # tab closed: stop its run, free its prefix
            lab.stop(k)  # and its comparison
            log.info("session %s closed%s; its data is freed", k[:8], " mid-training (run stopped)" if running else "")

        demo.unload(forget)
    demo.queue(max_size=pg.limits.queue_size, default_concurrency_limit=pg.limits.concurrent_requests)
    return demo


def make_playground(args: argparse.Namespace):
    from playground.cli import load_base_verbose
    from playground.library import Library
    from playground.service import Limits, Playground

    base = load_base_verbose(args)  # a terminal progress bar while the embedded model converts (first run)
    limits = Limits(max_steps=args.max_steps, concurrent_trainings=args.concurrent_trainings,
                    queue_size=args.queue_size, max_upload_mb=args.max_upload_mb)
    return Playground(base, Library(args.library, read_only=args.read_only_library), limits)


def main(argv: list[str] | None = None) -> int:
    from playground.errors import PlaygroundError

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
    demo = build_demo(pg)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, css=CSS, show_error=True,
                max_file_size=f"{pg.limits.max_upload_mb}mb", footer_links=["api", "settings"],
                prevent_thread_lock=True, quiet=True)
    print(f"Prefix Playground is ready at http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
