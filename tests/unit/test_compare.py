"""The Compare lab's runner: every method through one loop, its sizes and costs, the table and the CLI."""

from __future__ import annotations

import json

import pytest

from playground.compare import MethodResult, Stage, check_methods, compare, run_method, to_json
from playground.errors import PlaygroundError
from playground.methods import MethodSettings
from playground.overhead import kv_cache_bytes
from playground.report import summary
from playground.tasks import get_task
from playground.training import StepRecord, TrainSettings


def test_each_method_reports_its_curve_sizes_and_costs(tiny_llama):
    task = get_task("sentiment")
    ts = TrainSettings(steps=2, batch_size=4, eval_every=1, eval_examples=3)
    got = {}
    for name in ("prefix", "prompt", "lora", "instruction"):
        items = list(run_method(tiny_llama, task, MethodSettings(name, num_virtual_tokens=3), ts))
        res = items[-1]
        assert isinstance(res, MethodResult) and all(isinstance(i, (Stage, StepRecord)) for i in items[:-1])
        assert isinstance(items[0], Stage) and items[0].text.endswith("on 3 validation examples")  # said first
        assert res.per_token_s > 0 and 0.0 <= res.metric <= 1.0
        q1, q3 = res.per_token_spread
        assert q1 <= res.per_token_s <= q3 and res.timing_repeats == 5
        assert (res.n_eval, res.eval_split, res.metric_name) == (3, "validation", "exact_match")
        got[name] = res
    assert [len(got[n].records) for n in got] == [2, 2, 2, 0]  # the baseline trains nothing
    assert got["instruction"].start_metric is None and all(0 <= got[n].start_metric <= 1 for n in ("prefix", "lora"))
    assert got["prefix"].kv_bytes_added == got["prompt"].kv_bytes_added == kv_cache_bytes(tiny_llama, 3) > 0
    assert got["lora"].kv_bytes_added == 0 and got["instruction"].trainable == 0
    assert got["lora"].per_token_merged_s > 0 and got["prefix"].per_token_merged_s is None
    assert got["prompt"].stored == 3 * tiny_llama.model.config.hidden_size


def test_seeds_give_a_spread_in_the_table_and_json_round_trips(tiny_llama):
    task = get_task("sentiment")
    ts = TrainSettings(steps=1, batch_size=2, eval_every=0, eval_examples=2)
    res = compare(tiny_llama, task, ["prompt", "instruction"], ts, seeds=[0, 1], num_virtual_tokens=2,
                  say=lambda *_: None)
    assert [len(v) for v in res.values()] == [2, 2]
    table = summary(res, tiny_llama).splitlines()
    assert table[0].endswith("| seeds |") and [r.split(" | ")[-1] for r in table[2:]] == ["2 |", "2 |"]
    data = json.loads(json.dumps(to_json(res)))
    assert data["prompt"][0]["records"][0]["step"] == 1


def test_unknown_or_no_methods_are_refused():
    with pytest.raises(PlaygroundError, match="Unknown method.*adapters"):
        check_methods(["prefix", "adapters"])
    with pytest.raises(PlaygroundError, match="at least one"):
        check_methods([" "])




def test_the_lab_streams_methods_in_turn_and_stops_per_session(tiny_llama):
    from playground.figures import compare_figure
    from playground.lab import CompareLab

    lab = CompareLab(tiny_llama, max_steps=5)
    task = get_task("sentiment")
    items = list(lab.stream("a", task, ["prompt", "instruction"], steps=2, eval_every=1, eval_examples=2))
    assert [n for n, i in items if not isinstance(i, Stage)] == ["prompt", "prompt", "prompt", "instruction"]
    stages = [i.text for n, i in items if isinstance(i, Stage)]
    assert stages[:2] == ["scoring Prompt tuning at init (step 0) on 2 validation examples", "training Prompt tuning: step 0/2"]
    assert "scoring Instruction prompt (no training) on 2 validation examples" in stages
    items = [(n, i) for n, i in items if not isinstance(i, Stage)]
    curves = {"prompt": [i for n, i in items if isinstance(i, StepRecord)]}
    fig = compare_figure(curves, "accuracy", "time", {"instruction": items[-1][1].metric})
    assert len(fig.data) == 1 and list(fig.data[0].x) == [r.elapsed for r in curves["prompt"]]
    with pytest.raises(PlaygroundError, match="outside this server's range"):
        next(lab.stream("a", task, ["prefix"], steps=6))
    gen = lab.stream("b", task, ["prompt", "lora"], steps=3, eval_every=0, eval_examples=2)
    first = next(gen)
    assert first[0] == "prompt" and lab.stop("b") and not lab.stop("nobody")
    rest = list(gen)  # the current step finishes, then nothing more: LoRA never starts
    assert all(n == "prompt" for n, _ in rest)
    assert not any(isinstance(i, MethodResult) for _, i in rest)  # a run stopped part way gives no result


def test_the_labs_runs_hold_their_share_of_the_servers_memory_budget(tiny_llama):
    """Compare trains on the same shared model as Train: each method's run reserves its peak first."""
    from playground.budget import MemoryBudget
    from playground.lab import CompareLab

    task = get_task("sentiment")
    seen = []

    class Watching(MemoryBudget):
        def reserve(self, nbytes, what, fix):
            seen.append((nbytes, self.used))
            return super().reserve(nbytes, what, fix)

    lab = CompareLab(tiny_llama, max_steps=5, budget=Watching(10 * 2**30, 0))
    items = list(lab.stream("a", task, ["prompt", "prefix"], steps=1, eval_every=0, eval_examples=2))
    assert [n for n, i in items if not isinstance(i, Stage)] == ["prompt", "prompt", "prefix", "prefix"]
    assert len(seen) == 2 and all(n > 0 and used == 0 for n, used in seen)  # one at a time, released after each
    tiny = CompareLab(tiny_llama, max_steps=5, budget=MemoryBudget(2**20, 0))  # 1 MB: nothing fits
    with pytest.raises(PlaygroundError, match=r"comparison's training would need about .* MB of memory"):
        next(tiny.stream("a", task, ["prefix"], steps=1))
    with pytest.raises(PlaygroundError, match=r"memory budget"):
        next(tiny.ablate("a", task, "mlp", steps=1, eval_examples=2))
