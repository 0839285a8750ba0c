"""Browser tests: the real app on loopback, driven by Playwright in Debian's headless Chromium.

The app runs as a subprocess (``python app.py``) on the real embedded model with an empty
temporary class library (beside the shipped prefixes). Tests run in file order and build on each other: the first trains and
saves a prefix that later ones inspect and switch to. Screenshots of every step go to
``artifacts/screenshots/``.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest

from bench.driver import ROOT, launch_chromium, plot_data, set_number, start_app, stop_app, tab, wait_until

SHOTS = ROOT / "artifacts" / "screenshots"

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("library")


@pytest.fixture(scope="module")
def server(library):
    """The app on 127.0.0.1 at a free port (uploads capped at 1 MB to test the cap); stopped after the module."""
    proc, url, _ = start_app(["--library", str(library), "--max-upload-mb", "1", "--reload-grace-seconds", "5"],
                             library.parent / "server.log")
    yield url
    stop_app(proc)


@pytest.fixture(scope="module")
def server_log(library) -> Path:
    return library.parent / "server.log"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(server)
    pg.wait_for_selector("#header")
    yield pg
    ctx.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)



def n_points(page, elem_id: str) -> int:
    data = plot_data(page, elem_id)
    return len(data[0]["x"]) if data else 0


def progress(page) -> dict:
    return page.evaluate("""() => { const d = document.querySelector('#pp-progress');
                                    return d ? {state: d.dataset.state, step: +d.dataset.step,
                                                total: +(d.dataset.total || 0)} : {}; }""")


def table_rows(page, elem_id: str) -> int:
    """Data rows in a gr.Dataframe (its grid's aria-rowcount counts the header too)."""
    n = page.locator(f"#{elem_id} [role=grid]").first.get_attribute("aria-rowcount")
    return int(n) - 1 if n else 0


def error_text(page) -> str:
    """The text of the error toasts showing now."""
    page.wait_for_selector(".toast-body.error", timeout=60_000)
    return " ".join(page.locator(".toast-body.error").all_inner_texts())


def train(page, task: str, steps: int, every: int = 2, n_eval: int = 8) -> None:
    tab(page, "Train")
    if task != "sentiment":
        page.locator("#task input").click()
        page.get_by_role("option", name=task).click()
    set_number(page, "steps", steps)
    if not page.locator("#eval-n").is_visible():
        page.get_by_text("Held-out evaluation").click()
    set_number(page, "eval-every", every)
    set_number(page, "eval-n", n_eval)
    page.locator("#train-btn").click()


def save_as(page, name: str) -> None:
    page.locator("#save-name textarea, #save-name input").first.fill(name)
    page.locator("#save-btn").click()
    page.wait_for_selector("#save-status :text('Saved')")


def test_train_live_curves_table_and_save(page, library):
    train(page, "sentiment", steps=6, every=2, n_eval=8)
    # The loss curve gains points while training runs.
    first = wait_until(lambda: n_points(page, "loss-plot") >= 1, what="the first loss point")
    assert first
    wait_until(lambda: n_points(page, "loss-plot") >= 3, what="more loss points")
    shot(page, "train-running")
    wait_until(lambda: progress(page).get("state") == "finished", timeout=180, what="training to finish")
    loss = plot_data(page, "loss-plot")[0]
    assert loss["x"] == [1, 2, 3, 4, 5, 6] and all(isinstance(v, (int, float)) for v in loss["y"])
    metric = plot_data(page, "metric-plot")[0]
    # step 0 is the initialized prefix's score, before any training
    assert metric["x"] == [0, 2, 4, 6] and all(0 <= v <= 100 for v in metric["y"])
    # The attention on the prefix, recorded while it trained: step 0 and every step of 6 (layer x step), and
    # the layer x virtual-token map of the last recording, replayed at step 2 with the slider.
    page.get_by_text("Where the model looks while the prefix learns").click()
    wait_until(lambda: plot_data(page, "probe-plot") and plot_data(page, "probe-slots"), what="the attention maps")
    heat = plot_data(page, "probe-plot")[0]
    assert heat["type"] == "heatmap" and heat["x"] == [0, 1, 2, 3, 4, 5, 6] and len(heat["z"]) == 30
    assert all(len(row) == 7 and all(0 <= v <= 1 for v in row) for row in heat["z"])
    assert [row[0] for row in heat["z"]] != [row[-1] for row in heat["z"]]  # where the model looks moved
    last = plot_data(page, "probe-slots")[0]["z"]  # [virtual token][layer]
    assert len(last) == 20 and all(len(row) == 30 for row in last)
    # each layer's share is split over the 20 virtual tokens (rounded to 6 places)
    assert all(abs(sum(r[i] for r in last) - heat["z"][i][-1]) < 1e-4 for i in range(30))
    assert "recorded on the held-out input" in page.locator("#probe-note").inner_text().lower()
    step = page.locator("#probe-step input[type=number]")
    step.fill("2")
    step.press("Tab")  # the slider's release: the map of step 2
    wait_until(lambda: "at step 2" in page.locator("#probe-slots").inner_text(), what="the map at step 2")
    at2 = plot_data(page, "probe-slots")[0]["z"]
    assert all(abs(sum(r[i] for r in at2) - heat["z"][i][2]) < 1e-4 for i in range(30)) and at2 != last
    wait_until(lambda: table_rows(page, "compare-table") == 9, what="the before/after table")  # + its score row
    assert "score on all 8 held-out examples" in page.locator("#compare-table").inner_text()
    done = page.locator("#pp-progress").inner_text()
    assert "held-out exact match" in done and "(n = 8, 95% interval" in done and "vs the strongest prompt" in done
    assert "instruction + 4 examples" in page.locator("#summary-table").inner_text()
    assert "the strongest prompt" in page.locator("#summary-table").inner_text()
    save_as(page, "alpha")
    assert (library / "alpha" / "adapter_model.safetensors").is_file()
    card = json.loads((library / "alpha" / "card.json").read_text())
    assert card["task"] == "sentiment" and card["metrics"]["metric"] == "exact_match"
    assert 0 <= card["metrics"]["few_shot_4"] <= 1  # the strongest simple prompts, beside the prefix, with cost
    assert {r["key"] for r in card["baselines"]["validation"]} >= {"instruction", "instruction_format", "few_shot_4"}
    shot(page, "train-done")


def test_stop_ends_only_this_run(page, browser, server):
    other = browser.new_context().new_page()
    other.goto(server)
    other.wait_for_selector("#header")
    train(page, "sentiment", steps=60, every=0)
    wait_until(lambda: progress(page).get("step", 0) >= 2, what="two steps")
    page.locator("#stop-btn").click()
    wait_until(lambda: progress(page).get("state") == "finished" and "Stopped" in page.locator("#pp-progress")
               .inner_text() or progress(page).get("state") == "stopped", timeout=120, what="the run to stop")
    p = progress(page)
    assert p["total"] == 60 and 2 <= p["step"] < 60
    wait_until(lambda: "stopped early" in page.locator("#pp-progress").inner_text(), what="the stopped note")
    # The other session never trained: no just-trained prefix, and no progress of ours.
    tab(other, "Attention")
    other.locator("#att-prefix input").click()
    options = [o.split("\n")[-1].strip() for o in other.get_by_role("option").all_inner_texts()]  # drop the ✓
    assert not any(o.startswith("just trained") for o in options) and "alpha" in options
    tab(other, "Train")
    assert progress(other) == {"state": "idle", "step": 0, "total": 0}
    shot(page, "train-stopped")
    other.context.close()


def test_attention_figures_have_every_layer(page):
    tab(page, "Attention")
    page.locator("#att-prefix input").click()
    page.get_by_role("option", name="alpha").click()
    page.locator("#att-run").click()
    wait_until(lambda: plot_data(page, "att-query"), what="the attention figures")
    layers = plot_data(page, "att-layers")
    assert len(layers) == 1 and len(layers[0]["x"]) == 30  # SmolLM2-135M has 30 layers
    assert all(0 <= v <= 1 for v in layers[0]["y"])
    heads = plot_data(page, "att-heads")[0]["z"]
    assert len(heads) == 9 and all(len(r) == 30 for r in heads)  # [head][layer]
    vt = plot_data(page, "att-vt")[0]["z"]
    assert len(vt) == 20 and len(vt[0]) == 30  # [virtual token][layer]
    q = plot_data(page, "att-query")[0]["z"]
    assert len(q) > 10 and len(q[0]) == 30  # [prompt token][layer]
    assert "30 layers × 9 heads" in page.locator("#att-status").inner_text()
    shot(page, "attention")
    # An empty prompt is refused with a message, and the page keeps working.
    page.locator("#att-prompt textarea").fill("   ")
    page.locator("#att-run").click()
    assert "prompt is empty" in error_text(page)


def test_switch_between_saved_prefixes(page, library):
    train(page, "Capitals: country or state → capital city", steps=4, every=0, n_eval=4)
    wait_until(lambda: progress(page).get("state") == "finished", timeout=180, what="the second training")
    save_as(page, "beta")
    tab(page, "Switch")
    picker = page.locator("#sw-choice")
    # Selecting the tab refreshes the picker; beta, saved since the page loaded, appears once it has.
    # Checking before that could land on a box the refresh then moves.
    wait_until(lambda: picker.get_by_label("beta", exact=True).count() == 1, what="the refreshed picker")
    # Exactly (no prefix), alpha and beta: (no prefix) is not ticked on its own, the shipped defaults are.
    want = ("(no prefix)", "alpha", "beta")
    assert not picker.get_by_label("(no prefix)", exact=True).is_checked()
    for box in picker.get_by_role("checkbox").all():
        box.set_checked(box.evaluate("e => e.closest('label').innerText.trim()") in want)
    def mine() -> list[bool]:  # this run's box, named by its task and the time it started: ticked or not
        boxes = [(b.evaluate("e => e.closest('label').innerText.trim()"), b) for b in picker.get_by_role("checkbox").all()]
        return [b.is_checked() for t, b in boxes if re.fullmatch(r"just trained: capitals, \d\d:\d\d", t)]

    wait_until(lambda: all(picker.get_by_label(n, exact=True).is_checked() for n in want) and mine() == [False],
               what="alpha and beta chosen")
    page.locator("#sw-input textarea").fill("Iceland")
    cards = page.locator("#pp-switch .pp-card")
    finished = page.locator('#pp-switch .pp-card:not([data-state="pending"])')
    page.wait_for_timeout(1000)
    assert cards.count() == 0  # typing and ticking run nothing: Switch runs on Enter or Run
    page.locator("#sw-run").click()
    wait_until(lambda: cards.count() == 3 and finished.count() == 3, what="three finished output cards")
    outs = dict(zip(page.locator(".pp-card-name").all_inner_texts(), page.locator(".pp-card-out").all_inner_texts()))
    assert set(outs) == set(want)
    assert len(set(outs.values())) >= 2, outs  # the prefix changes what the same frozen model says
    assert page.locator(".pp-card-in").all_inner_texts() == ["answering: «Iceland»"] * 3
    assert "ms" in page.locator(".pp-switch-time").inner_text()
    shot(page, "switch")
    # Changing the selection does not re-run; Run does.
    page.locator("#sw-choice").get_by_label("beta", exact=True).uncheck()
    page.wait_for_timeout(1500)
    assert cards.count() == 3
    page.locator("#sw-run").click()
    wait_until(lambda: cards.count() == 2 and finished.count() == 2, what="two cards after unchecking and Run")


def test_bad_uploads_show_errors(page, tmp_path):
    tab(page, "Train")
    page.get_by_text("Upload your own data (JSONL or CSV)").click()
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"input": "fine", "target": "ok"}\n{"input": "oops", \n', encoding="utf-8")
    page.locator("#data-file input[type=file]").set_input_files(str(bad))
    assert "not valid JSON lines" in error_text(page)
    shot(page, "error-upload")
    # A zip that tries to escape the library folder.
    tab(page, "Library")
    page.get_by_text("Upload a PEFT prefix").click()
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../adapter_config.json", "{}")
    page.locator("#lib-upload input[type=file]").set_input_files(str(evil))
    page.locator("#lib-import").click()
    wait_until(lambda: "unsafe path" in error_text(page), what="the unsafe-path error")
    assert not (tmp_path.parent / "adapter_config.json").exists()
    # The app still serves: the library lists the saved prefixes.
    wait_until(lambda: table_rows(page, "lib-table") >= 1, what="the library table")
    assert "alpha" in page.locator("#lib-table").inner_text()
    shot(page, "error-zip")


def test_upload_a_csv_with_its_own_columns(page, tmp_path):
    tab(page, "Train")
    page.get_by_text("Upload your own data (JSONL or CSV)").click()
    data = tmp_path / "animals.csv"
    rows = [("cat", "meow"), ("dog", "woof"), ("cow", "moo"), ("duck", "quack"), ("sheep", "baa"),
            ("owl", "hoot"), ("lion", "roar"), ("snake", "hiss"), ("bee", "buzz"), ("horse", "neigh")]
    data.write_text("id,animal,sound\n" + "".join(f'{i},"{a}","{b}"\n' for i, (a, b) in enumerate(rows)))
    page.locator("#data-file input[type=file]").set_input_files(str(data))
    wait_until(lambda: "Columns: id, animal, sound" in page.locator("#upload-status").inner_text(),
               what="the column list")
    for elem, col in (("input-col", "animal"), ("target-col", "sound")):
        page.locator(f"#{elem} input").click()
        page.locator(f"#{elem} input").fill(col)
        page.locator(f"#{elem} input").press("Enter")
        wait_until(lambda: page.locator(f"#{elem} input").input_value() == col, timeout=10, what=f"{elem} = {col}")
    page.get_by_role("button", name="Use this file").click()
    wait_until(lambda: "Loaded 8 training and 2 held-out" in page.locator("#upload-status").inner_text(),
               what="the uploaded task")
    table = page.locator("#train-preview").inner_text()
    assert sum(a in table for a, _ in rows) == 8  # the 8 training examples are previewed
    shot(page, "upload-csv")


def _foreign_prefix_zip(path: Path) -> Path:
    """A well-formed PEFT prefix for a GPT-2-sized model (12 layers x 768): wrong for SmolLM2."""
    import torch
    from peft import PrefixTuningConfig
    from safetensors.torch import save_file

    folder = path / "gpt2-prefix"
    cfg = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4, num_layers=12, token_dim=768,
                             num_attention_heads=12, inference_mode=True)
    cfg.save_pretrained(str(folder))
    save_file({"prompt_embeddings": torch.zeros(4, 12 * 2 * 768)}, str(folder / "adapter_model.safetensors"))
    out = path / "gpt2-prefix.zip"
    with zipfile.ZipFile(out, "w") as zf:
        for f in folder.iterdir():
            zf.write(f, f"gpt2-prefix/{f.name}")
    return out


def test_library_refuses_foreign_prefix_and_huge_upload(page, library, tmp_path):
    tab(page, "Library")
    page.get_by_text("Upload a PEFT prefix").click()
    page.locator("#lib-upload input[type=file]").set_input_files(str(_foreign_prefix_zip(tmp_path)))
    page.locator("#lib-import").click()
    assert "made for another model" in error_text(page)
    assert not (library / "gpt2-prefix").exists()
    shot(page, "error-foreign-prefix")
    # The server was started with --max-upload-mb 1: a 2 MB data file is refused before it is stored.
    tab(page, "Train")
    page.get_by_text("Upload your own data (JSONL or CSV)").click()
    big = tmp_path / "big.jsonl"
    big.write_text('{"input": "x", "target": "y"}\n' * 70_000, encoding="utf-8")
    page.locator("#data-file input[type=file]").set_input_files(str(big))
    msg = error_text(page)
    assert "1" in msg and ("size" in msg.lower() or "large" in msg.lower()), msg


def test_closing_the_last_tab_mid_training_stops_its_run_after_the_grace(browser, server, server_log):
    """The run goes on for --reload-grace-seconds (a reload comes back within them), then stops."""
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(server)
    page.wait_for_selector("#header")
    train(page, "sentiment", steps=100, every=0)
    wait_until(lambda: progress(page).get("step", 0) >= 1, what="the first step")
    ctx.close()
    wait_until(lambda: "mid-training (run stopped)" in server_log.read_text(), timeout=90,
               what="the server to notice the closed tab")


def test_library_download_rename_delete(page, library, tmp_path):
    tab(page, "Library")
    pick = page.locator("#lib-pick input")
    pick.click()
    pick.fill("alpha")
    pick.press("Enter")
    wait_until(lambda: "sentiment" in page.locator("#lib-details").inner_text(), what="alpha's card")
    shot(page, "library")
    with page.expect_download() as dl:
        page.locator("#lib-download").click()
    zpath = tmp_path / "alpha.zip"
    dl.value.save_as(zpath)
    with zipfile.ZipFile(zpath) as zf:
        assert sorted(zf.namelist()) == ["alpha/adapter_config.json", "alpha/adapter_model.safetensors",
                                         "alpha/card.json"]
    # This page is another browser session than the one that saved alpha: alpha is not its to rename.
    page.get_by_label("New name").fill("alpha-renamed")
    page.get_by_role("button", name="Rename").click()
    assert "belongs to the student who saved it" in error_text(page)
    assert (library / "alpha").is_dir()
    # Its own copy (imported from the download) is: rename it, then delete it.
    page.get_by_text("Upload a PEFT prefix").click()
    page.locator("#lib-upload input[type=file]").set_input_files(str(zpath))
    page.get_by_label("Name in the library (default: the folder's name)").fill("alpha-copy")
    page.locator("#lib-import").click()
    wait_until(lambda: (library / "alpha-copy").is_dir(), what="the import")
    wait_until(lambda: "yours" in page.locator("#lib-table").inner_text(), what="the copy listed as yours")
    pick.click()
    pick.fill("alpha-copy")
    pick.press("Enter")
    wait_until(lambda: "alpha-copy" in page.locator("#lib-details").inner_text(), what="the copy's card")
    page.get_by_role("button", name="Rename").click()
    wait_until(lambda: (library / "alpha-renamed").is_dir() and not (library / "alpha-copy").exists(),
               what="the rename")
    wait_until(lambda: pick.input_value() == "alpha-renamed", what="the picker to follow the rename")
    page.locator("#lib-delete").click()  # Delete asks first, naming the prefix
    confirm = page.locator("#lib-delete-confirm")
    wait_until(lambda: confirm.is_visible() and "Delete alpha-renamed for good?" in confirm.inner_text(),
               what="the confirmation")
    assert (library / "alpha-renamed").is_dir()
    page.locator("#lib-delete-yes").click()
    wait_until(lambda: not (library / "alpha-renamed").exists(), what="the delete")
    wait_until(lambda: "Deleted" in page.locator("#lib-status").inner_text(), what="the delete message")
    wait_until(lambda: pick.input_value() == "", what="nothing picked after the delete")
    assert (library / "alpha").is_dir()


def test_learn_tab_live_numbers(page):
    tab(page, "Learn")
    assert page.locator("#learn-diagram svg").count() == 1
    text = page.locator("#learn-numbers").inner_text()
    assert "30" in text and "230,400" in text  # 20 tokens x 30 layers x 2 x (3 kv heads x 64)
    shot(page, "learn")


def test_learn_tab_measures_what_a_prefix_costs(page):
    """The Learn tab's live overhead chart: latency per token, first token and KV cache vs prefix length."""
    tab(page, "Learn")
    page.locator("#overhead-run").click()
    wait_until(lambda: plot_data(page, "overhead-plot"), timeout=120, what="the overhead chart")
    traces = plot_data(page, "overhead-plot")
    xs = {tuple(t["x"]) for t in traces}
    assert (0, 32, 128, 512) in xs, traces  # one point per prefix length P
    assert all(all(v > 0 for v in t["y"]) for t in traces)
    assert "per virtual token" in page.locator("#overhead-status").inner_text()
    shot(page, "learn-overhead")


def test_learn_tab_measures_prompts_and_prefixes_as_caches(page):
    """The Learn tab's cache lesson on sentiment: one bar per cache, the shipped prefix's 20 positions, the table."""
    tab(page, "Learn")
    page.locator("#kv-run").click()
    # 4 caches x 16 single queries and 4 warm-ups: minutes on a busy 2-core machine
    wait_until(lambda: plot_data(page, "kv-plot"), timeout=600, what="the cache chart")
    cached, prompt = plot_data(page, "kv-plot")
    assert cached["y"][-1] == "4-shot prompt" and cached["y"][0] == "trained prefix", cached
    assert cached["x"][0] == 20 and prompt["x"][0] == 0  # the shipped prefix: 20 cached positions
    assert cached["x"][-1] == 0 and prompt["x"][-1] == cached["x"][-2] > 20  # the 4-shot prompt, cached or not
    assert table_rows(page, "kv-table") == 4
    assert "validation" in page.locator("#kv-table").inner_text()
    assert "16 validation examples" in page.locator("#kv-status").inner_text()
    shot(page, "learn-kv-caches")


def test_compare_tab_trains_methods_in_turn_and_fills_the_table(page):
    tab(page, "Compare")
    boxes = page.locator("#cmp-methods")
    for label in ("Prefix tuning", "Prefix tuning + MLP", "LoRA", "Instruction + output format (no training)"):
        boxes.get_by_label(label, exact=True).uncheck()
    page.locator("#cmp-steps input[type=number]").fill("2")
    page.locator("#cmp-steps input[type=number]").press("Enter")
    page.locator("#cmp-run").click()
    # from the first seconds, the status names what runs now
    wait_until(lambda: "scoring Prompt tuning at init (step 0) on 24 validation examples"
               in page.locator("#cmp-progress").inner_text(), timeout=30, what="the first status")
    wait_until(lambda: page.locator("#cmp-progress").get_attribute("data-state") == "finished"
               and page.locator("#cmp-progress").get_attribute("data-done") == "3", timeout=480, what="the comparison")
    text = page.locator("#cmp-table").inner_text()
    assert "Prompt tuning (PromptTuningConfig)" in text and "11,520" in text and "Instruction prompt" in text
    assert "Few-shot, cached (no training)" in text and "k examples' keys/values" in text
    assert "(n = 24, validation; 95% interval" in text and "% at init" in text
    assert "ms/token (median of 5; 25th–75th percentile" in text
    headers = page.locator("#cmp-table thead th, #cmp-table [role=columnheader]").all_inner_texts()
    assert [h.strip() for h in headers][:2] == ["method (PEFT's name)", "held-out metric"]
    traces = plot_data(page, "cmp-by-step")
    assert traces and traces[0]["name"] == "Prompt tuning" and traces[0]["x"] == [0, 2]  # step 0, then the last step
    loss = plot_data(page, "cmp-loss")
    assert [t["name"] for t in loss] == ["Prompt tuning"] and loss[0]["x"] == [1, 2]
    shot(page, "compare")


def test_an_ablation_runs_from_the_compare_tab_with_error_bars_and_loss_curves(page):
    tab(page, "Compare")
    page.locator("#abl-study").get_by_label("MLP vs direct optimization").check()
    page.locator("#abl-steps input[type=number]").fill("2")
    page.locator("#abl-steps input[type=number]").press("Enter")
    status = page.locator("#abl-progress")
    page.locator("#abl-run").click()
    wait_until(lambda: "starting… 4 runs of 2 steps" in status.inner_text(), timeout=30, what="the first status")
    wait_until(lambda: status.get_attribute("data-state") == "finished", timeout=480, what="the ablation")
    assert status.get_attribute("data-done") == "4" and "run 4/4 finished" in status.inner_text()
    text = page.locator("#abl-table").inner_text()
    assert "direct" in text and "MLP" in text and "0.03" in text and "(n = 24, validation; 95% interval" in text
    traces = plot_data(page, "abl-plot")
    assert {t["name"] for t in traces} == {"direct", "MLP"} and all(t["x"] == [0.001, 0.03] for t in traces)
    title = page.evaluate("() => document.querySelector('#abl-plot .js-plotly-plot').layout.title.text")
    assert "one seed, so no error bars" in title and "bars from" not in title  # one seed: no spread to draw
    ticks = page.evaluate("() => [...document.querySelectorAll('#abl-plot .xtick text')].map(e => e.textContent)")
    assert ticks == ["0.001", "0.03"]  # the swept values, nothing else on the log axis
    curves = plot_data(page, "abl-curves")
    assert len(curves) == 4 and all(len(t["x"]) == 2 for t in curves)  # 2 series x 2 lrs, 2 steps each
    shot(page, "ablation")
    # Stop keeps the runs finished and says so
    page.locator("#abl-run").click()
    wait_until(lambda: status.get_attribute("data-state") == "running" and status.get_attribute("data-done") == "1",
               timeout=300, what="the second ablation's first run")
    page.locator("#abl-stop").click()
    wait_until(lambda: status.get_attribute("data-state") == "stopped", timeout=300, what="the stopped status")
    assert "stopped after run 1/4" in status.inner_text()
