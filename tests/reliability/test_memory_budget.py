"""The memory budget and the run-cost bound: every model call sized in tokens before it runs.

Unit tests on the tiny models (parity of the layer-by-layer attention, truncation counts, the
refusal and waiting rules, the run-cost check, the seed check), then one test on a real server
process (the embedded model, a tight --memory-budget-mb) fed the inputs that used to run it out
of memory: its peak RSS (VmHWM) stays under the budget and it keeps answering.
"""

from __future__ import annotations

import csv
import random
import re
import threading
import time
from pathlib import Path

import pytest
import torch

from playground.attention import _stack, layer_shares, prefix_attention
from playground.budget import MB, MemoryBudget, attention_bytes
from playground.errors import PlaygroundError
from playground.library import Library
from playground.methods import prefix_method
from playground.prefix import PrefixSettings, create_prefix, prefix_forward
from playground.prompts import PromptFormat
from playground.service import Limits, Playground
from playground.tasks import Example, fit_examples, get_task
from playground.training import TrainSettings


@pytest.fixture
def pg(tiny_llama, tmp_path) -> Playground:
    return Playground(tiny_llama, Library(tmp_path / "lib"), Limits())


def digits(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("0123456789") for _ in range(n))


# ---- attention, layer by layer --------------------------------------------------------------
def prefix_shares(attentions: tuple[torch.Tensor, ...], P: int) -> dict[str, torch.Tensor]:
    """The earlier way: every layer's full [1, head, q_pos, k_pos] matrix from ``output_attentions``, reduced after."""
    return _stack([layer_shares(a, P) for a in attentions])


def test_layer_by_layer_attention_equals_the_output_attentions_computation(tiny):
    """The hooks reduce each layer's weights as it returns them; the shares are bit-identical to
    reducing every layer's full matrix from ``output_attentions`` afterwards (the earlier way)."""
    prefix = create_prefix(tiny, PrefixSettings(5, "random"), seed=3)
    for text in ("A warm, funny film.", digits(60)):
        att = prefix_attention(tiny, prefix, text)
        ids = torch.tensor([PromptFormat.for_tokenizer(tiny.tokenizer).encode_prompt(text, "prefix")])
        with torch.inference_mode():
            out = prefix_forward(tiny, ids, torch.ones_like(ids), prefix, output_attentions=True, use_cache=False)
        old = prefix_shares(out.attentions, 5)
        assert len(att.tokens) == ids.shape[1]
        for k, v in old.items():
            assert torch.equal(getattr(att, k), v), k
        assert att.weights.shape == (tiny.num_layers, tiny.num_heads, ids.shape[1], 5)


def test_attention_beside_other_threads_forwards_sees_only_its_own(tiny_llama):
    """The model is shared: while one session's Attention runs, others generate and train in other
    threads. Their layers must neither land in its result nor be slowed by a reduction of their own."""
    from playground.generate import generate_texts_mixed
    from playground.training import train

    prefix = create_prefix(tiny_llama, PrefixSettings(4, "random"), seed=2)
    text = "A warm, funny film with a clumsy ending."
    want = prefix_attention(tiny_llama, prefix, text)
    stop, errors = threading.Event(), []

    def busy(fn):
        try:
            while not stop.is_set():
                fn()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    other = create_prefix(tiny_llama, PrefixSettings(6, "random"), seed=5)
    task = get_task("sentiment")
    others = [lambda: generate_texts_mixed(tiny_llama, ["hello there", "a b c d e f g"], [other] * 2, 6),
              lambda: list(train(tiny_llama, prefix_method(create_prefix(tiny_llama, PrefixSettings(3, "random"), seed=1)), task,
                                 TrainSettings(steps=1, batch_size=2, eval_every=0, eval_examples=1)))]
    threads = [threading.Thread(target=busy, args=(fn,)) for fn in others]
    for t in threads:
        t.start()
    try:
        for _ in range(15):
            got = prefix_attention(tiny_llama, prefix, text)
            for k in ("weights", "head_share", "layer_share", "token_share"):
                assert torch.equal(getattr(got, k), getattr(want, k)), k
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert errors == []


def test_attention_keeps_only_the_prefix_columns(tiny_llama):
    """What the result holds is a copy of the prefix's columns, not a view that would pin each
    layer's whole [head, q_pos, k_pos] matrix."""
    prefix = create_prefix(tiny_llama, PrefixSettings(4, "random"), seed=1)
    att = prefix_attention(tiny_llama, prefix, digits(100))
    T = len(att.tokens)
    assert att.weights.untyped_storage().nbytes() == att.weights.numel() * 4 == tiny_llama.num_layers * \
        tiny_llama.num_heads * T * 4 * 4


# ---- truncation of uploaded examples ----------------------------------------------------------
def test_fit_examples_cuts_the_input_first_then_the_target(tiny_llama):
    tok = tiny_llama.tokenizer
    n = lambda s: len(tok(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    short = Example("good film", "positive")
    long_input = Example(digits(400, 1), "positive")
    long_both = Example(digits(400, 2), digits(400, 3))
    out, cut = fit_examples([short, long_input, long_both], tok, 32)
    assert cut == 2
    assert out[0] == short
    assert out[1].target == "positive" and n(out[1].input) + n(out[1].target) <= 33  # re-encoding may merge a token
    assert long_input.input.startswith(out[1].input) and len(out[1].input) < len(long_input.input)
    assert n(out[2].input) >= 1 and long_both.target.startswith(out[2].target) and n(out[2].target) <= 31


def test_an_upload_with_long_fields_is_cut_and_counted(pg, tmp_path):
    path = tmp_path / "wide.csv"
    rows = [{"input": digits(1990, i), "target": digits(1990, 100 + i)} for i in range(6)]
    rows += [{"input": f"short {i}", "target": "ok"} for i in range(4)]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, ["input", "target"])
        w.writeheader()
        w.writerows(rows)
    pg.limits.max_example_tokens = 48
    task = pg.load_upload("k", path, "input", "target", "Copy the digits.", "exact_match")
    assert task.truncated == 6
    fmt = PromptFormat.for_tokenizer(pg.base.tokenizer)
    for e in task.split("train") + task.split("test"):
        ids, labels = fmt.encode_example(e.input, e.target)
        assert len(ids) <= 48 + 16  # the example's 48 tokens plus the chat template's few
    plan = pg.check_settings(PrefixSettings(4), TrainSettings(steps=2, batch_size=8), task)
    assert plan.train_tokens <= 48 + 16 and plan.prompt_tokens <= 48 + 24


# ---- the budget: refused at once, or waits for room ------------------------------------------
def test_work_too_big_for_the_budget_alone_is_refused_with_the_limit_and_the_fix(pg, tiny_llama):
    prefix_name = "p"
    pg.library.save(prefix_name, create_prefix(tiny_llama, PrefixSettings(4, "random")), {"task": "sentiment"})
    fmt = PromptFormat.for_tokenizer(tiny_llama.tokenizer)
    short, long = "A fine film.", digits(200)  # under the 256-token prompt cap: the budget is what refuses it
    need = lambda text: attention_bytes(tiny_llama, len(fmt.encode_prompt(text, "prefix")), 4)  # noqa: E731
    assert need(long) > need(short)
    pg.budget = pg.scheduler.budget = MemoryBudget(1000 * MB + need(short), 1000 * MB, wait_s=0.2)  # room for the short prompt only
    assert set(pg.attention("k", short, [prefix_name])) == {prefix_name}
    with pytest.raises(PlaygroundError, match=r"would need about [\d,]+ MB .*--memory-budget-mb 1,0\d\d.*"
                                              r"Shorten the prompt"):
        pg.attention("k", long, [prefix_name])
    assert pg.budget.used == 0
    with pytest.raises(PlaygroundError, match="Pick fewer prefixes, or shorten the prompt"):
        pg.switch("k", [prefix_name, "(no prefix)"], long)
    pg.budget = pg.scheduler.budget = MemoryBudget(1001 * MB, 1000 * MB)  # 1 MB of room
    with pytest.raises(PlaygroundError, match=r"A training step \(batch 8 x \d+ tokens.*Lower the batch size"):
        pg.start_run("k", get_task("sentiment"), PrefixSettings(4), TrainSettings(steps=2))
    assert pg.sessions.peek("k") is None or pg.sessions.peek("k").run is None


def test_a_call_that_fits_waits_for_room_in_arrival_order_then_is_refused_politely():
    b = MemoryBudget(100 * MB, 0, wait_s=5)
    order, started = [], threading.Event()

    def hold():
        with b.reserve(70 * MB, "A", ""):
            started.set()
            time.sleep(0.5)
            order.append("A done")

    def later(name, n):
        with b.reserve(n, name, ""):
            order.append(name)

    t = threading.Thread(target=hold)
    t.start()
    started.wait()
    waiters = [threading.Thread(target=later, args=("B", 60 * MB))]
    waiters[0].start()
    deadline = time.monotonic() + 30
    while len(b._queue) < 1 and time.monotonic() < deadline:  # B waits in the queue before C arrives
        time.sleep(0.01)
    assert len(b._queue) == 1
    waiters.append(threading.Thread(target=later, args=("C", 10 * MB)))  # fits now, but B came first
    waiters[1].start()
    for w in [t, *waiters]:
        w.join(10)
    assert order == ["A done", "B", "C"] and b.used == 0
    quick = MemoryBudget(100 * MB, 0, wait_s=0.2)
    with quick.reserve(80 * MB, "A", ""):
        with pytest.raises(PlaygroundError, match="The server is busy.*Try again in a minute, or lower it"):
            with quick.reserve(30 * MB, "B", "Lower it."):
                pass
    assert quick.used == 0 and not quick._queue


def test_the_budget_follows_what_the_process_really_holds(monkeypatch):
    """Memory the allocator kept after earlier calls (or that per-session state took) counts against the
    budget: a call that fitted the model alone is held back, or refused, while the process holds more;
    each finished call hands what it freed back to the system; the budget never counts a running call twice."""
    import playground.budget as budget_mod

    rss, trims = [500 * MB], []
    monkeypatch.setattr(budget_mod, "rss_bytes", lambda: rss[0])
    monkeypatch.setattr(budget_mod, "trim", lambda: trims.append(1) or True)
    b = MemoryBudget(1000 * MB, 600 * MB, wait_s=0.3, track_rss=True, allowance_bytes=100 * MB,
                     trim_every_s=0)
    with b.reserve(300 * MB, "A", ""):  # held is the floor: 500 MB resident + 100 MB allowance = 600 MB
        rss[0] = 700 * MB  # A really uses 200 MB of its 300 MB
        assert b.room == 400 * MB
        with b.reserve(100 * MB, "B", ""):  # 700 - 300 running + 100 allowance: held stays 600 MB
            assert b.held == 600 * MB
    assert trims == [1, 1] and b.used == 0
    rss[0] = 800 * MB  # what the calls freed stayed with the process
    with pytest.raises(PlaygroundError, match=r"would need about 300 MB.*hold 900 MB\) leaves 100 MB for work\. "
                                              r"Shorten it"):
        with b.reserve(300 * MB, "C", "Shorten it."):
            pass
    rss[0] = 550 * MB  # handed back
    with b.reserve(300 * MB, "C", ""):
        assert b.held == 650 * MB and b.used == 300 * MB


def test_training_reserves_each_step_and_each_evaluation(tiny_llama, tmp_path, monkeypatch):
    """Without the scheduler (one worker per session) each step and each scoring reserves its share; with it,
    only the thread that holds the model reserves (tests/unit/test_scheduler.py)."""
    pg = Playground(tiny_llama, Library(tmp_path / "lib"), Limits(max_steps=10, max_batch_size=8,
                                                                   max_virtual_tokens=8, max_eval_examples=8),
                    scheduled=False)
    seen = []
    real = pg.budget.reserve

    def spy(n, what, fix):
        seen.append((what, n, pg.budget.used))
        return real(n, what, fix)

    monkeypatch.setattr(pg.budget, "reserve", spy)
    run = pg.start_run("k", get_task("sentiment"), PrefixSettings(4), TrainSettings(steps=3, batch_size=4,
                                                                                     eval_every=2, eval_examples=4))
    list(pg.run_steps(run))
    pg.compare_rows(run)
    whats = [w for w, _, _ in seen]
    assert whats.count("Your next training step") == 3
    assert whats.count("Scoring the held-out examples") == 2  # steps 2 and 3
    assert any(w.startswith("Scoring the base model") for w in whats)
    assert all(n > 0 for _, n, _ in seen) and pg.budget.used == 0


# ---- the run's cost, and the seed -------------------------------------------------------------
def test_a_run_over_the_token_limit_is_refused_before_it_starts(pg):
    # the initialized prefix (step 0), 100 scorings while training, then the model as is and the live prompts:
    # instruction, + format, and two draws each of 4 and 8 examples (headline has no labels to score): 1 + 100 + 7
    task = get_task("headline")
    heavy = TrainSettings(steps=100, batch_size=32, eval_every=1, eval_examples=100)
    with pytest.raises(PlaygroundError, match=r"about [\d,]+ token positions: training 100 steps x batch 32 .*"
                                              r"held-out scoring 108 times \(before training, .*limit is 120,000 per run "
                                              r"\(--max-run-tokens\)\. Lower the steps"):
        pg.start_run("k", task, PrefixSettings(128), heavy)
    assert pg.sessions.peek("k") is None or pg.sessions.peek("k").run is None
    ui_default = TrainSettings(steps=20, batch_size=8, eval_every=5, eval_examples=32)
    for name in ("sentiment", "topic", "fr_en", "headline", "shout", "capitals"):
        plan = pg.check_settings(PrefixSettings(20), ui_default, get_task(name))
        assert plan.cost < Limits().max_run_tokens, (name, plan.cost)  # the tiny tokenizer's tokens are short


@pytest.mark.real_model
def test_the_run_cost_default_passes_classroom_runs_and_refuses_hour_long_ones(real, tmp_path):
    """On the embedded model: the Train tab's defaults cost under half of max_run_tokens on every built-in
    task (a task's first run also scores the prompts it is compared with, once for the class), and the load
    test's runs far less; 128 virtual tokens at batch 32 with the metric measured every step on 100 held-out
    examples is refused (that run took 280 s a step)."""
    pg = Playground(real, Library(tmp_path / "lib"), Limits())
    cap = pg.limits.max_run_tokens
    for name in ("sentiment", "topic", "fr_en", "headline", "shout", "capitals"):
        ui_default = pg.check_settings(PrefixSettings(20), TrainSettings(steps=20, batch_size=8, eval_every=5,
                                                                          eval_examples=32), get_task(name))
        load_test = pg.check_settings(PrefixSettings(20), TrainSettings(steps=3, batch_size=8, eval_every=0,
                                                                         eval_examples=4), get_task(name))
        assert ui_default.cost < cap / 2 and load_test.cost < cap / 20, (name, ui_default.cost, load_test.cost)
    for steps in (20, 100):
        with pytest.raises(PlaygroundError, match="--max-run-tokens"):
            pg.check_settings(PrefixSettings(128), TrainSettings(steps=steps, batch_size=32, eval_every=1,
                                                                  eval_examples=100), get_task("headline"))


def test_a_prompt_past_the_token_cap_is_refused_before_any_model_work(pg, monkeypatch):
    """2,000 digits pass the 2,000-character cap one token each; --max-prompt-tokens (256) holds them,
    so a hostile prompt costs the server a tokenization, not an Attention or Switch pass."""
    import playground.service as service_mod

    def never(*a, **k):
        raise AssertionError("the model ran on a prompt over the token cap")

    monkeypatch.setattr(service_mod, "prefix_attention", never)
    monkeypatch.setattr(pg.scheduler, "generate", never)
    monkeypatch.setattr(pg.scheduler, "attention", never)
    pg.library.save("p", create_prefix(pg.base, PrefixSettings(4, "random"), seed=1), {})
    text = digits(2000)
    assert len(text) <= pg.limits.max_prompt_chars
    for call in (lambda: pg.switch("k", ["(no prefix)"], text), lambda: pg.attention("k", text, ["p"])):
        with pytest.raises(PlaygroundError, match=r"tokens long .*the limit is 256 tokens \(--max-prompt-tokens\)\. "
                                                  r"Shorten it"):
            call()


def test_a_huge_seed_gets_a_clear_message(pg):
    for bad in (10**30, -1):
        with pytest.raises(PlaygroundError, match=r"seed must be a whole number from 0 to 4,294,967,295"):
            TrainSettings(seed=bad).validate()
        with pytest.raises(PlaygroundError, match="seed must be"):
            pg.start_run("k", get_task("sentiment"), PrefixSettings(4), TrainSettings(steps=2, seed=bad))
    TrainSettings(seed=2**32 - 1).validate()


# ---- the real server --------------------------------------------------------------------------
def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise KeyError(field)


def _picker(config: dict) -> str:
    """The API name of the event that fills the Attention tab's prefix picker (elem_id att-prefix)."""
    elem = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    return next("/" + d["api_name"] for d in config["dependencies"]
                if d.get("outputs") and elem.get(d["outputs"][0]) == "att-prefix" and isinstance(d.get("api_name"), str))


@pytest.mark.real_model
def test_a_real_server_stays_under_its_memory_budget_and_answers(tmp_path):
    """Four Attention clicks on 2,000 random digits at once, then a CSV of 1,990-digit fields
    trained at batch 8, on the embedded model with --memory-budget-mb 3500: the server's peak RSS
    stays under 3,500 MB (before: 4.7 GB for one such click), and it answers throughout."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    from bench.driver import start_app, stop_app

    budget_mb = 3500
    lib = tmp_path / "lib"
    # --max-prompt-tokens 2000: past the default cap of 256, so that the memory budget itself is what holds
    proc, url, _ = start_app(["--library", str(lib), "--memory-budget-mb", str(budget_mb), "--max-prompt-tokens",
                              "2000"], tmp_path / "app.log")
    try:
        clients = [Client(url, verbose=False, download_files=False, analytics_enabled=False) for _ in range(4)]
        for i, c in enumerate(clients):
            c.predict("sentiment", 20, "task text", "", False, 256, 1e-2, 1, 8, i, 0, 4, "auto", fork_on=False,
                      api_name="/train")
            c.predict(None, api_name=_picker(c.config))  # what selecting the Attention tab runs

        def look(i):
            try:
                out = clients[i].predict(digits(2000, i), "(just trained)", "(none)", api_name="/attention")
                return out[0]
            except Exception as exc:  # noqa: BLE001 - a polite refusal is an answer too
                return f"refused: {exc}"

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(look, range(4)))
        assert all(re.search(r"20 virtual tokens, 30 layers", a) for a in answers), answers
        peak_attention = _status(proc.pid, "VmHWM")
        assert peak_attention < budget_mb, peak_attention

        path = tmp_path / "wide.csv"
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, ["input", "target"])
            w.writeheader()
            w.writerows({"input": digits(1990, i), "target": digits(1990, 500 + i)} for i in range(40))
        up = Client(url, verbose=False, download_files=False, analytics_enabled=False)
        up.predict(handle_file(str(path)), api_name="/on_file")
        status = up.predict(handle_file(str(path)), "input", "target", "Copy the digits.", "exact_match",
                            api_name="/on_use")[2]
        assert "40 examples were longer than this server's 256 tokens" in status, status
        with pytest.raises(Exception, match=r"A training step \(batch 8 x \d+ tokens.*memory budget.*"
                                            r"Lower the batch size"):
            up.predict("upload", 20, "task text", "", False, 256, 1e-2, 2, 8, 0, 0, 4, "auto", fork_on=False,
                       api_name="/train")
        out = up.predict("upload", 20, "task text", "", False, 256, 1e-2, 2, 2, 0, 0, 4, "auto", fork_on=False,
                         api_name="/train")
        assert 'data-state="finished" data-step="2"' in out[0]
        peak = _status(proc.pid, "VmHWM")
        assert peak < budget_mb, peak
        assert proc.poll() is None
        again = clients[0].predict("A warm film.", "(just trained)", "(none)", api_name="/attention")
        assert "20 virtual tokens" in again[0]
        print(f"server peak RSS: {peak_attention} MB after 4 attention calls, {peak} MB after the CSV training "
              f"(budget {budget_mb} MB)")
    finally:
        stop_app(proc)
