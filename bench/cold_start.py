"""Cold start: from the launch command to a ready page, with the model already in the cache.

- **ours**: ``python app.py`` until the server answers HTTP 200, and until headless Chromium
  shows the page with its header (the model's name) and the Learn tab's live numbers;
- **anchor**: the smallest Gradio demo of the same cached model (transformers + PEFT
  imported, the model loaded, one ``gr.Interface``), timed the same way;
- **floor**: ``python -c "import torch, transformers, peft, gradio, plotly"`` alone.

Medians of ``--repeats`` fresh processes.

    .venv/bin/python bench/cold_start.py [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, median, setup, write_json

ANCHOR_APP = '''
import sys, gradio as gr, peft, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder = sys.argv[1]
tok = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
def answer(text):
    ids = tok(text, return_tensors="pt")
    return tok.decode(model.generate(**ids, max_new_tokens=8)[0])
gr.Interface(answer, "text", "text", title="SmolLM2 demo").launch(server_name="127.0.0.1",
                                                                   server_port=int(sys.argv[2]), quiet=True)
'''


def time_page(cmd: list[str], port: int, ready_selector: str, browser, log: Path) -> tuple[float, float]:
    """Seconds from ``cmd`` launched to HTTP 200 and to ``ready_selector`` visible in Chromium."""
    from bench.driver import start_server, stop_app

    t0 = time.perf_counter()
    proc, url, http = start_server(cmd, port, log, timeout=120, poll=0.05)
    try:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector(ready_selector, state="visible", timeout=60_000)
        shown = time.perf_counter() - t0
        page.close()
        return http, shown
    finally:
        stop_app(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    setup()
    from playwright.sync_api import sync_playwright

    from bench.driver import free_port, launch_chromium
    from playground.models import DEFAULT_MODEL, cache_root, load_model

    load_model(device="cpu")  # make sure the cache exists: this measures a cached start
    folder = cache_root() / "models" / DEFAULT_MODEL
    tmp = Path(tempfile.mkdtemp(prefix="pg-cold-"))
    (tmp / "anchor_app.py").write_text(ANCHOR_APP)
    floor = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, transformers, peft, gradio, plotly"], check=True)
        floor.append(time.perf_counter() - t0)
    res = {"ours": [], "anchor": []}
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        for _ in range(args.repeats):
            port = free_port()
            res["ours"].append(time_page([sys.executable, "app.py", "--port", str(port)], port,
                                         "#learn-numbers table", browser, tmp / "ours.log"))
            port = free_port()
            res["anchor"].append(time_page([sys.executable, str(tmp / "anchor_app.py"), str(folder), str(port)], port,
                                           "textarea", browser, tmp / "anchor.log"))
        browser.close()
    med = {k: (median([a for a, _ in v]), median([b for _, b in v])) for k, v in res.items()}
    print(f"machine: {machine()}")
    print("| way | launch to HTTP 200 | launch to page shown |")
    print("|---|---|---|")
    print(f"| ours: `python app.py` (model cached) | {med['ours'][0]:.2f} s | {med['ours'][1]:.2f} s |")
    print(f"| anchor: minimal Gradio demo of the same model | {med['anchor'][0]:.2f} s | {med['anchor'][1]:.2f} s |")
    print(f"| floor: importing torch, transformers, peft, gradio, plotly | {median(floor):.2f} s | – |")
    write_json(args.json, {"machine": machine(), "runs": res, "median": med, "imports_floor": floor})
    print(f"ratio (ours / minimal demo, launch to page shown): {med['ours'][1] / med['anchor'][1]:.2f}x "
          f"(ours {med['ours'][1]:.2f} s; goal <= 10 s)")


if __name__ == "__main__":
    main()
