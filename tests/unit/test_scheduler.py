"""The scheduler that owns the model: shared training ticks and a shared decode loop give each learner exactly
what they would get alone, in round-robin turns, within a per-learner cap and the token budget."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from playground.attention import AttentionRequest, prefix_attention
from playground.errors import PlaygroundError
from playground.generate import greedy_mixed
from playground.library import Library
from playground.prefix import PrefixSettings, create_prefix
from playground.prompts import PromptFormat
from playground.scheduler import Scheduler, SchedulerSettings
from playground.service import NO_PREFIX, Limits, Playground
from playground.sharedstep import SharedRun
from playground.tasks import get_task
from playground.training import TrainSettings

pytestmark = pytest.mark.unit

LIMITS = dict(max_steps=10, max_batch_size=8, max_virtual_tokens=8, max_eval_examples=8, max_new_tokens=6,
              max_prompt_chars=200, max_switch_prefixes=4)
RUNS = [  # three students: different tasks, prefix lengths (one through the MLP), batch sizes and seeds
    ("sentiment", PrefixSettings(4, "task"), TrainSettings(1e-2, 4, 4, 0, 2, 4, "fp32")),
    ("topic", PrefixSettings(6, "random", prefix_projection=True, encoder_hidden_size=16),
     TrainSettings(3e-2, 4, 2, 1, 0, 4, "fp32")),
    ("capitals", PrefixSettings(3, "random"), TrainSettings(2e-2, 4, 3, 2, 3, 5, "fp32")),
]


@pytest.fixture(autouse=True)
def _one_thread(_threads):
    torch.set_num_threads(1)


def playground(base, tmp_path, scheduled: bool, name: str) -> Playground:
    pg = Playground(base, Library(tmp_path / name), Limits(**LIMITS), scheduled=scheduled)
    return pg


def train_class(pg: Playground) -> list:
    """Every student presses Train at once (a thread each, as the web server's workers); returns their runs."""
    runs = [pg.start_run(f"s{i}", get_task(t), p, s) for i, (t, p, s) in enumerate(RUNS)]
    errors = []

    def go(run):
        try:
            list(pg.run_steps(run))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and all(not t.is_alive() for t in threads)
    return runs


def test_runs_trained_in_shared_ticks_end_as_each_trained_alone(tiny_llama, tmp_path):
    """Whatever else shares a tick, a run's losses, held-out answers and prefix equal training.train alone (fp32)."""
    together = playground(tiny_llama, tmp_path, True, "a")
    try:
        shared = train_class(together)
        assert max(together.scheduler.tick_runs) > 1  # runs really did share ticks
        assert together.scheduler.decode_steps > 0  # and their evaluations went through the shared decode loop
    finally:
        together.close()
    alone = playground(tiny_llama, tmp_path, False, "b")
    for i, (t, p, s) in enumerate(RUNS):
        run = alone.start_run(f"s{i}", get_task(t), p, s)
        recs = list(alone.run_steps(run))
        mine = shared[i].records
        assert [r.loss for r in mine] == pytest.approx([r.loss for r in recs], rel=1e-5, abs=1e-6)
        assert [r.metric for r in mine] == [r.metric for r in recs]
        assert [r.predictions for r in mine] == [r.predictions for r in recs]
        for a, b in zip(shared[i].prefix.parameters(), run.prefix.parameters()):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
        assert shared[i].state == run.state == "finished"


def test_switch_through_the_decode_loop_gives_the_tokens_of_each_prefix_alone(tiny_llama, tmp_path):
    pgs = [playground(tiny_llama, tmp_path, s, n) for s, n in ((True, "a"), (False, "b"))]
    for pg in pgs:
        for i, n in enumerate((2, 5)):
            prefix = create_prefix(tiny_llama, PrefixSettings(n, "random"), seed=i)
            with torch.no_grad():
                for p in prefix.parameters():
                    p.mul_(8.0)  # far from init, so the rows differ
            pg.library.save(f"p{i}", prefix, {"task": "sentiment"})
    names = ["p0", "p1", NO_PREFIX]
    try:
        got = [pg.switch("k", names, "the cat sat on the mat") for pg in pgs]
        assert [o.text for o in got[0].outputs] == [o.text for o in got[1].outputs]
        assert [o.cut for o in got[0].outputs] == [o.cut for o in got[1].outputs]
        assert pgs[0].scheduler.decode_steps > 0 and pgs[1].scheduler.decode_steps == 0
    finally:
        pgs[0].close()


def test_requests_that_arrive_while_others_decode_join_the_running_batch(tiny_llama):
    """Four learners' generations at once: the loop holds rows of several requests in one step, and each
    request's ids are what greedy_mixed gives it alone."""
    fmt = PromptFormat.for_tokenizer(tiny_llama.tokenizer)
    prefixes = [create_prefix(tiny_llama, PrefixSettings(n, "random"), seed=n) for n in (2, 3, 4, 5)]
    prompts = [fmt.encode_prompt(x, "prefix") for x in ("hi", "a longer input here", "le chat", "one two three")]
    sched = Scheduler(tiny_llama)
    results: dict[int, list] = {}

    def ask(i):
        results[i] = sorted(sched.generate(f"s{i}", [prompts[i]] * 2, [prefixes[i], None], [6, 3 + i]))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        sched.close()
    for i in range(4):
        alone = greedy_mixed(tiny_llama, [prompts[i]] * 2, [prefixes[i], None], [6, 3 + i])
        assert [ids for _, ids in results[i]] == alone
    assert max(sched.decode_rows) > 2  # more than one request's rows decoded together


def hold(sched: Scheduler, key: str = "holder"):
    """Take the model in a thread and keep it until the returned event is set (the queue builds up meanwhile)."""
    taken, release = threading.Event(), threading.Event()

    def body():
        with sched.turn(key):
            taken.set()
            release.wait(30)

    threading.Thread(target=body, daemon=True).start()
    assert taken.wait(30)
    return release


@contextmanager
def held_while_queued(sched: Scheduler, threads: list[threading.Thread], timeout: float = 60):
    """The model held while the body starts ``threads`` and waits for their work to queue; then released, the
    threads joined and the scheduler closed."""
    release = hold(sched)
    try:
        yield
    finally:
        release.set()
        for t in threads:
            t.join(timeout=timeout)
        sched.close()


def wait_for(cond, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_turns_go_round_robin_by_session_so_a_busy_learner_does_not_starve_the_others(tiny_llama):
    sched = Scheduler(tiny_llama, SchedulerSettings(max_waiting=3))
    order: list[str] = []
    release = hold(sched)

    def take(key, label):
        with sched.turn(key):
            order.append(label)

    threads = []
    for key, label in (("A", "A1"), ("A", "A2"), ("A", "A3"), ("B", "B1")):  # A floods first, then B asks once
        threads.append(threading.Thread(target=take, args=(key, label)))
        threads[-1].start()
        wait_for(lambda n=len(threads): sched.load()["turn"] == n, "items queued")
    wait = sched.waiting("B")
    assert wait is not None and wait.ahead == 1 and "1 learner ahead" in wait.note()
    assert sched.waiting("nobody") is None
    release.set()
    for t in threads:
        t.join(timeout=30)
    sched.close()
    assert order == ["A1", "B1", "A2", "A3"]  # B is served right after A's first, not after all of A's


def test_a_learner_may_have_only_so_many_items_waiting(tiny_llama):
    sched = Scheduler(tiny_llama, SchedulerSettings(max_waiting=2))
    release = hold(sched)
    done = []

    def take():
        with sched.turn("A"):
            done.append(1)

    threads = [threading.Thread(target=take) for _ in range(2)]
    for t in threads:
        t.start()
    wait_for(lambda: sched.load()["turn"] == 2, "two items queued")
    with pytest.raises(PlaygroundError, match="2 requests waiting .* limit is 2 per learner"):
        with sched.turn("A"):
            pass
    with sched.turn("holder"):  # the holder's nested call runs at once: it already has the model
        pass
    release.set()
    for t in threads:
        t.join(timeout=30)
    sched.close()
    assert len(done) == 2


def test_work_larger_than_a_tick_may_hold_is_refused_before_it_waits(tiny_llama):
    sched = Scheduler(tiny_llama, SchedulerSettings(token_budget=50, decode_positions=40))
    run = SharedRun.start(tiny_llama, create_prefix(tiny_llama, PrefixSettings(8, "random")), get_task("headline"),
                          TrainSettings(batch_size=8))
    with pytest.raises(PlaygroundError, match=r"token positions, more than this server lets one batch hold \(50"):
        sched.submit_step("k", run)
    fmt = PromptFormat.for_tokenizer(tiny_llama.tokenizer)
    with pytest.raises(PlaygroundError, match="Pick fewer prefixes, or shorten the prompt"):
        list(sched.generate("k", [fmt.encode_prompt("a sentence of some length", "base")] * 3, [None] * 3, [8] * 3))
    with pytest.raises(PlaygroundError, match=r"attention view of .* more memory than this server lets one batch take"):
        Scheduler(tiny_llama, SchedulerSettings(tick_bytes=1)).attention("k", [AttentionRequest(run.prefix, "a film")])
    assert sched.load() == {"train": 0, "generate": 0, "turn": 0, "attention": 0, "decoding": 0, "ticks": 0,
                            "decode_steps": 0}


def test_a_stopped_run_takes_back_its_waiting_step(tiny_llama, tmp_path):
    pg = playground(tiny_llama, tmp_path, True, "a")
    run = pg.start_run("k", get_task("sentiment"), PrefixSettings(3, "random"), TrainSettings(steps=3, batch_size=2, eval_examples=4))
    release = hold(pg.scheduler)
    try:
        steps = pg.run_steps(run, heartbeat=0.05)
        assert next(steps) is None  # waiting: a heartbeat, and the page can show its place in line
        assert pg.waiting("k").ahead == 0
        run.cancel.set()
        assert list(steps) == []
        assert run.state == "stopped" and pg.scheduler.load()["train"] == 0
    finally:
        release.set()
        pg.close()


def test_work_queued_for_the_model_holds_no_memory_while_it_waits(tiny_llama, tmp_path):
    """A caller that reserved memory and then waited for the model would starve the shared batches it waits for
    (a class's reservations fill the budget and the worker's batch can't start): with the scheduler, scoring and
    Switch are only checked against the budget up front, and a turn reserves once it holds the model."""
    pg = playground(tiny_llama, tmp_path, True, "a")
    pg.library.save("p", create_prefix(tiny_llama, PrefixSettings(3, "random"), seed=1), {"task": "sentiment"})
    run = pg.start_run("k", get_task("sentiment"), PrefixSettings(3, "random"), TrainSettings(steps=1, batch_size=2,
                                                                                               eval_examples=4))
    release = hold(pg.scheduler)
    done = []
    threads = [threading.Thread(target=lambda: done.append(pg.score_start(run))),
               threading.Thread(target=lambda: done.append(pg.switch("s", ["p", NO_PREFIX], "a fine film"))),
               threading.Thread(target=lambda: done.append(pg.attention("a", "a fine film", ["p"])))]
    try:
        for t in threads:
            t.start()
        wait_for(lambda: sum(pg.scheduler.load()[k] for k in ("generate", "turn", "attention")) == 3,
                 "three callers queued")
        assert pg.budget.used == 0  # nobody holds memory while queued
    finally:
        release.set()
        for t in threads:
            t.join(timeout=60)
        pg.close()
    assert len(done) == 3 and pg.budget.used == 0


def test_a_tick_never_takes_more_runs_than_its_memory_cap_allows(tiny_llama, tmp_path):
    """tick_bytes (from the memory budget) caps a tick's estimated peak: with room for about one run's step, the
    runs of a class take their steps one per tick (and still each gets exactly its own result)."""
    from playground.budget import train_step_bytes

    one = train_step_bytes(tiny_llama, 2, 128, 3, 128, None)  # a run of batch 2, longer than any sentiment row
    sched = Scheduler(tiny_llama, SchedulerSettings(tick_bytes=int(one * 1.5)))
    runs = [SharedRun.start(tiny_llama, create_prefix(tiny_llama, PrefixSettings(3, "random"), seed=i),
                            get_task("sentiment"), TrainSettings(batch_size=2, seed=i)) for i in range(3)]
    release = hold(sched)
    tickets = [sched.submit_step(f"s{i}", r) for i, r in enumerate(runs)]
    release.set()
    assert all(np.isfinite(t.result()[0]) for t in tickets)
    sched.close()
    assert sched.tick_runs and max(sched.tick_runs) < 3
    big = SharedRun.start(tiny_llama, create_prefix(tiny_llama, PrefixSettings(8, "random")), get_task("headline"),
                          TrainSettings(batch_size=8))
    with pytest.raises(PlaygroundError, match="more memory than this server lets one batch take"):
        Scheduler(tiny_llama, SchedulerSettings(tick_bytes=one // 4)).submit_step("k", big)


def test_a_tick_is_sized_padded_so_a_run_of_long_rows_does_not_pad_the_short_ones(tiny_llama):
    """Every row of a tick is padded to its longest row: a run of long rows (headline) beside runs of short ones
    (capitals) would make the tick cost as if all rows were long. A run that would pass the token budget padded
    waits for the next tick, where it goes first; the short runs behind it still share this one."""
    def run(task, seed):
        return SharedRun.start(tiny_llama, create_prefix(tiny_llama, PrefixSettings(3, "random"), seed=seed),
                               get_task(task), TrainSettings(batch_size=2, seed=seed))

    runs = [run("capitals", 0), run("headline", 1), run("capitals", 2)]
    sched = Scheduler(tiny_llama)
    release = hold(sched)
    tickets = [sched.submit_step(f"s{i}", r) for i, r in enumerate(runs)]
    shapes = [it.batch.ids.shape for it in sched._train]  # (rows, T) of each queued step, in order
    (r0, t0), (r1, t1), (r2, t2) = shapes
    assert t1 > 2 * max(t0, t2)  # the headline rows are the long ones
    sched.settings.token_budget = (r0 + r2) * (3 + max(t0, t2))  # the two short runs fit; with the long one, not
    release.set()
    assert all(np.isfinite(t.result()[0]) for t in tickets)
    sched.close()
    assert sched.tick_runs[-2:] == [2, 1]  # the short runs together, then the long one alone


def test_a_malformed_request_fails_alone_and_the_scheduler_goes_on(tiny_llama):
    fmt = PromptFormat.for_tokenizer(tiny_llama.tokenizer)
    sched = Scheduler(tiny_llama)
    try:
        with pytest.raises(ValueError, match="empty prompt"):
            list(sched.generate("a", [[]], [None], [3]))
        prompt = fmt.encode_prompt("hi", "base")
        assert [ids for _, ids in sched.generate("b", [prompt], [None], [3])] == greedy_mixed(tiny_llama, [prompt],
                                                                                               [None], 3)
    finally:
        sched.close()


def test_attention_views_of_several_learners_share_one_forward_and_each_gets_its_own(tiny_llama):
    """Three learners ask for attention views while the model is busy (one of them for two prefixes): the
    four views run in one forward, and each learner gets exactly the views it would get alone."""
    prefixes = [create_prefix(tiny_llama, PrefixSettings(n, "random"), seed=n) for n in (2, 4, 6)]
    asks = {"a": [AttentionRequest(prefixes[0], "a fine film")],
            "b": [AttentionRequest(prefixes[1], "le chat"), AttentionRequest(prefixes[2], "le chat")],
            "c": [AttentionRequest(prefixes[2], "one two three four five")]}
    sched = Scheduler(tiny_llama)
    got: dict[str, list] = {}
    threads = [threading.Thread(target=lambda k=k: got.__setitem__(k, sched.attention(k, asks[k]))) for k in asks]
    with held_while_queued(sched, threads):
        for t in threads:
            t.start()
        wait_for(lambda: sched.load()["attention"] == 3, "three learners' views queued")
    assert sched.stats()["attention_forwards"] == 1 and sched.stats()["most_views_in_a_forward"] == 4
    for k, reqs in asks.items():
        assert len(got[k]) == len(reqs)
        for view, r in zip(got[k], reqs):
            want = prefix_attention(tiny_llama, r.prefix, r.text)
            assert view.tokens == want.tokens
            torch.testing.assert_close(view.weights, want.weights, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(view.layer_share, want.layer_share, rtol=1e-5, atol=1e-6)
    with pytest.raises(PlaygroundError, match="empty"):
        Scheduler(tiny_llama).attention("d", [AttentionRequest(prefixes[0], "  ")])


def test_a_watched_answer_decodes_ahead_of_the_scoring_rows_in_its_own_loop(tiny_llama):
    """A Switch answer (interactive) queued beside a long scoring chunk is finished before the chunk's first
    row ends: it decodes in its own small batch, first in the round, not behind the scoring rows' steps. Both
    still get exactly their ids alone."""
    fmt = PromptFormat.for_tokenizer(tiny_llama.tokenizer)
    prefix = create_prefix(tiny_llama, PrefixSettings(3, "random"), seed=3)
    chunk = [fmt.encode_prompt(f"review number {i} of the film", "prefix") for i in range(8)]
    answer = [fmt.encode_prompt("the cat sat", "prefix")]
    sched = Scheduler(tiny_llama)
    events: list[str] = []
    out: dict[str, list] = {}

    def score():
        rows = []
        for r in sched.generate("scorer", chunk, [prefix] * 8, [40] * 8):
            events.append("score row")
            rows.append(r)
        out["score"] = sorted(rows)

    def watch():
        out["answer"] = list(sched.generate("watcher", answer, [prefix], [4], interactive=True))
        events.append("answer")

    threads = [threading.Thread(target=score), threading.Thread(target=watch)]
    with held_while_queued(sched, threads, timeout=120):
        threads[0].start()
        wait_for(lambda: sched.load()["generate"] == 1, "the scoring chunk queued")
        threads[1].start()
        wait_for(lambda: sched.load()["generate"] == 2, "the answer queued")
    assert events[0] == "answer" and events.count("score row") == 8
    assert [ids for _, ids in out["answer"]] == greedy_mixed(tiny_llama, answer, [prefix], 4)
    assert [ids for _, ids in out["score"]] == greedy_mixed(tiny_llama, chunk, [prefix] * 8, 40)


def run_together(sched: Scheduler, *bodies, timeout: float = 120) -> None:
    """Run each body in its own thread (as the web server's workers would), join them, and close the scheduler."""
    threads = [threading.Thread(target=b) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    sched.close()


def test_a_long_turn_pauses_for_a_watched_answer_and_then_goes_on(tiny_llama):
    """A turn (the prompts' baselines, a Compare lab step) holds the model for as long as its body runs; at each
    pause point (a decode step, a prefill chunk) it hands the model to the worker while a watched answer waits.
    The answer is served mid-turn, exactly as alone, and the turn's own answers are unchanged."""
    fmt = PromptFormat.for_tokenizer(tiny_llama.tokenizer)
    prefix = create_prefix(tiny_llama, PrefixSettings(3, "random"), seed=3)
    answer = [fmt.encode_prompt("the cat sat", "prefix")]
    long = [fmt.encode_prompt(f"a long scoring of review {i}", "instruction") for i in range(3)]
    sched = Scheduler(tiny_llama, SchedulerSettings(answer_share=0.5))
    started, answered = threading.Event(), threading.Event()
    out: dict[str, object] = {}

    def turn():
        with sched.turn("baselines", "scoring the prompts"):
            started.set()
            rounds = []
            while not answered.is_set() and len(rounds) < 200:  # bounded: fails below if no answer came
                rounds.append(greedy_mixed(tiny_llama, long, [None] * 3, 12))
            out["turn"], out["answered_during_turn"] = rounds, answered.is_set()

    def watch():
        started.wait(30)
        out["answer"] = list(sched.generate("watcher", answer, [prefix], [4], interactive=True))
        answered.set()

    run_together(sched, turn, watch)
    assert out["answered_during_turn"] and sched.stats()["turn_pauses"] >= 1
    assert [ids for _, ids in out["answer"]] == greedy_mixed(tiny_llama, answer, [prefix], 4)
    alone = greedy_mixed(tiny_llama, long, [None] * 3, 12)
    assert all(r == alone for r in out["turn"])
    busy = sched.stats()["busy_s"]
    assert busy["answers"] > 0 and busy["turns"] > 0


def test_a_long_turn_pauses_for_an_attention_view_too(tiny_llama):
    """A learner who clicks Show attention while a long turn holds the model is served at the turn's next pause
    point, with exactly the view alone."""
    fmt = PromptFormat.for_tokenizer(tiny_llama.tokenizer)
    prefix = create_prefix(tiny_llama, PrefixSettings(4, "random"), seed=4)
    long = [fmt.encode_prompt("a long scoring of a review", "instruction")]
    sched = Scheduler(tiny_llama)
    started, viewed = threading.Event(), threading.Event()
    out: dict[str, object] = {}

    def turn():
        with sched.turn("baselines", "scoring the prompts"):
            started.set()
            for _ in range(200):  # bounded: fails below if no view came
                greedy_mixed(tiny_llama, long, [None], 12)
                if viewed.is_set():
                    break
            out["viewed_during_turn"] = viewed.is_set()

    def view():
        started.wait(30)
        out["view"] = sched.attention("viewer", [AttentionRequest(prefix, "le chat noir")])[0]
        viewed.set()

    run_together(sched, turn, view)
    assert out["viewed_during_turn"] and sched.stats()["turn_pauses"] >= 1
    want = prefix_attention(tiny_llama, prefix, "le chat noir")
    torch.testing.assert_close(out["view"].weights, want.weights, rtol=1e-5, atol=1e-6)


def test_pause_points_come_between_decode_steps_and_do_nothing_outside_a_turn(tiny_llama):
    from playground.pauses import pausable

    fmt = PromptFormat.for_tokenizer(tiny_llama.tokenizer)
    prompts = [fmt.encode_prompt("one two three", "instruction")]
    calls = []
    plain = greedy_mixed(tiny_llama, prompts, [None], 9)  # no hook: nothing to call
    with pausable(lambda: calls.append(1)):
        hooked = greedy_mixed(tiny_llama, prompts, [None], 9)
    assert hooked == plain
    assert len(calls) == len(hooked[0]) - 1  # one per decode step after the prefill's token


def test_the_answers_share_of_the_model_is_by_session(tiny_llama):
    """Watched answers get the share of the learners waiting on them among all learners with work waiting, and
    at least the floor: five switchers beside one learner's long scoring get 5/6 of the model's time, three
    beside thirty trainers the floor of 1/3, and alone all of it. Shared work (key "") counts as one learner."""
    from playground.scheduler import _Gen, _Turn

    sched = Scheduler(tiny_llama, SchedulerSettings(answer_share=1 / 3))

    def answers(*keys):
        out = []
        for k in keys:
            g = _Gen(k, 1, [[1]], [None], [1], ())
            g.interactive = True
            out.append(g)
        return out

    sched._gen = answers("a", "b", "c", "d", "e")
    assert sched._answer_share() == 1.0
    sched._turns = [_Turn("", "scoring the prompts")]
    assert sched._answer_share() == pytest.approx(5 / 6)
    sched._holder, sched._turns = "", []  # the turn holds the model (paused at a pause point): it still counts
    assert sched._answer_share() == pytest.approx(5 / 6)
    sched._holder = None
    sched._gen = answers("a", "b", "c") + [_Gen(f"t{i}", 1, [[1]], [None], [1], ()) for i in range(30)]
    assert sched._answer_share() == pytest.approx(1 / 3)
    sched._gen = answers("a") + [_Gen("a", 1, [[1]], [None], [1], ())]  # one learner, both kinds: theirs alone
    assert sched._answer_share() == 1.0
    sched._gen = []
    assert sched._answer_share() == 1.0
