"""The Compare tab's figures and tables from made-up results: step 0, legends under the plots, log ticks,
the metric beside its n, split and interval, latencies with their spread. No model."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from playground.compare import MethodResult
from playground.figures import compare_figure, log_ticks, loss_curves_figure, step_ticks
from playground.report import (
    ABLATION_HEADERS,
    TABLE_HEADERS,
    ablation_rows,
    metric_cell,
    study_figure,
    table_rows,
    wilson,
)
from playground.training import StepRecord

BASE = SimpleNamespace(num_parameters=134_515_008)


def records(metrics: dict[int, float]) -> list[StepRecord]:
    return [StepRecord(s, 2.0 / s, 0.5 * s, 8.0, metrics.get(s)) for s in range(1, 6)]


def legend_is_under_the_plot(fig) -> bool:
    lg = fig.layout.legend
    return (lg.orientation == "h" and lg.yref == "container" and lg.y == 0 and lg.yanchor == "bottom"
            and fig.layout.margin.b >= 72 + 22)


def test_each_trained_curve_starts_at_step_0_with_its_metric_at_init():
    curves = {"Prefix tuning": records({5: 0.75}), "LoRA": records({5: 0.5})}
    fig = compare_figure(curves, "exact match", "step", {"Instruction prompt": 0.25},
                         {"Prefix tuning": 0.125, "LoRA": 0.0}, held_out="n = 8, validation",
                         interval=lambda p: wilson(p, 8))
    prefix, lora = fig.data
    assert list(prefix.x) == [0, 5] and list(prefix.y) == [12.5, 75.0]  # one measurement + step 0: a line
    assert list(lora.x) == [0, 5] and list(lora.y) == [0.0, 50.0]
    lo, hi = wilson(0.75, 8)
    assert list(prefix.customdata[1]) == pytest.approx([100 * lo, 100 * hi]) and "95% interval" in prefix.hovertemplate
    assert "n = 8, validation" in fig.layout.title.text and fig.layout.shapes[0].y0 == 25.0  # the baseline
    timed = compare_figure(curves, "exact match", "time", starts={"LoRA": 0.0})
    assert list(timed.data[1].x) == [0.0, 2.5] and list(timed.data[0].x) == [2.5]  # no start given: no step 0
    assert legend_is_under_the_plot(fig) and legend_is_under_the_plot(timed)


def test_the_loss_plot_has_a_curve_per_trained_method():
    curves = {"Prefix tuning": records({}), "Prompt tuning": records({})}
    fig = compare_figure(curves, "exact match", y="loss")
    assert [t.name for t in fig.data] == ["Prefix tuning", "Prompt tuning"]
    assert list(fig.data[0].x) == [1, 2, 3, 4, 5] and fig.data[0].y[1] == 1.0
    assert fig.layout.xaxis.dtick == 1  # whole steps: no tick at step 1.5
    assert step_ticks(60)["dtick"] == 10 and step_ticks(11)["dtick"] == 2
    assert fig.layout.yaxis.title.text == "loss (cross-entropy)" and legend_is_under_the_plot(fig)


def test_many_long_names_get_more_legend_rows_and_a_taller_figure():
    few = compare_figure({"LoRA": records({5: 0.5})}, "exact match")
    names = ["Prefix tuning", "Prefix tuning + MLP", "Prompt tuning", "LoRA", "Few-shot, cached (no training)"]
    many = compare_figure({n: records({5: 0.5}) for n in names}, "exact match")
    assert many.layout.margin.b > few.layout.margin.b and many.layout.height > few.layout.height


def test_log_ticks_are_few_and_readable():
    assert log_ticks([0.001, 0.03, 0.001], at_values=True)["ticktext"] == ["0.001", "0.03"]
    t = log_ticks([0.31, 0.9, 2.4])
    assert t["ticktext"] == ["0.2", "0.5", "1", "2", "5"]  # 1-2-5 across the range, one beyond each end
    wide = log_ticks([0.0005, 40.0])
    assert wide["ticktext"] == ["0.0001", "0.001", "0.01", "0.1", "1", "10", "100"]  # powers of ten only
    assert log_ticks([7.2, 18.0])["ticktext"] == ["7", "8", "9", "10", "15", "20"]  # narrow: finer steps
    assert log_ticks([0.0, float("nan")]) == {}


def run(series: str, x: float, seed: int, metric: float, start: float = 0.0) -> dict:
    return dict(study="mlp", series=series, x=x, seed=seed, learning_rate=x, train_examples=50, metric_start=start,
                metric=metric, final_loss=1.0, seconds=1.0, curve=[(1, 3.0, None), (2, 0.4, 0.5)])


def test_the_ablation_title_speaks_of_error_bars_only_with_several_seeds():
    one = [run("direct", 1e-3, 0, 0.5), run("MLP", 1e-3, 0, 0.25), run("direct", 3e-2, 0, 0.75)]
    fig = study_figure(one, "mlp", "exact match", "n = 24, validation")
    title = fig.layout.title.text
    assert "one seed, so no error bars" in title and "n = 24, validation" in title and "mean of" not in title
    assert all(t.error_y.visible is False for t in fig.data)
    assert list(fig.layout.xaxis.ticktext) == ["0.001", "0.03"] and legend_is_under_the_plot(fig)
    three = [run("direct", 1e-3, s, m) for s, m in enumerate((0.5, 0.25, 0.75))]
    title = study_figure(three, "mlp", "exact match").layout.title.text
    assert "mean of 3 seeds; error bars from the worst seed to the best" in title


def test_the_loss_curves_have_clean_log_ticks_and_say_how_many_seeds():
    fig = loss_curves_figure([run("direct", 1e-3, 0, 0.5), run("MLP", 1e-3, 0, 0.25)])
    assert list(fig.layout.yaxis.ticktext) == ["0.2", "0.5", "1", "2", "5"]
    assert "one seed" in fig.layout.title.text and legend_is_under_the_plot(fig)


def test_the_ablation_table_gives_n_split_and_interval():
    rows = ablation_rows([run("direct", 1e-3, 0, 0.5, 0.125)], 24, "validation", "exact_match")
    lo, hi = wilson(0.5, 24)
    assert len(rows[0]) == len(ABLATION_HEADERS)
    assert rows[0][2] == f"50.0% (n = 24, validation; 95% interval {100 * lo:.0f}–{100 * hi:.0f}%)"
    assert rows[0][3] == "– (one seed)" and rows[0][4].startswith("12.5% (n = 24, validation; 95% interval 4–31%")


def result(method: str, **kw) -> MethodResult:
    r = MethodResult(method, 230_400, 230_400, 921_688, 20, 1_966_080, metric=0.625, train_seconds=12.3,
                     per_token_s=0.0305, per_token_spread=(0.029, 0.0331), timing_repeats=5, metric_name="exact_match",
                     n_eval=24, eval_split="validation", start_metric=0.125)
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_the_table_puts_the_metric_first_with_its_interval_and_latency_spread():
    rows = table_rows([result("prefix_mlp"), result("lora", per_token_merged_s=0.02, per_token_merged_spread=(0.019, 0.021),
                                                    busy_note="The machine was busy while timing.")], BASE)
    assert TABLE_HEADERS[:2] == ["method (PEFT's name)", "held-out metric"] and len(rows[0]) == len(TABLE_HEADERS)
    assert rows[0][0] == ("Prefix tuning + MLP (PrefixTuningConfig, prefix_projection=True (an MLP of "
                          "encoder_hidden_size units))")
    assert rows[0][1] == "62.5% (n = 24, validation; 95% interval 43–79%); 12.5% at init"
    assert rows[0][4].startswith("30.5 ms/token (median of 5; 25th–75th percentile 29.0–33.1). +20 KV positions")
    assert "merged into the weights: 20.0 ms/token (median of 5; 25th–75th percentile 19.0–21.0)" in rows[1][4]
    assert "busy" in rows[1][4] and "busy" not in rows[0][4]
    rouge = table_rows([result("prompt", metric_name="rouge_l", start_metric=None)], BASE)[0][1]
    assert rouge == "62.5% (n = 24, validation; a mean score, no interval)"
    assert metric_cell(1.0, 8, "validation", "exact_match_cased") == "100.0% (n = 8, validation; 95% interval 68–100%)"


def test_the_status_lines_say_what_runs_and_how_it_ended():
    from ui.compare import ablation_status, status_html

    assert 'data-state="running"' in status_html([], "scoring Prefix tuning at init (step 0) on 24 validation examples…")
    assert "finished: LoRA" in status_html(["LoRA"], "training Prompt tuning: step 3/10")
    assert 'data-done="1"' in status_html(["LoRA"], "done", "finished", "busy machine")
    assert "Press Run ablation." in ablation_status(0, 0, state="idle")
    stopped = ablation_status(2, 4, "stopped after run 2/4", "stopped")
    assert 'data-state="stopped"' in stopped and "stopped after run 2/4" in stopped


def test_the_lab_says_how_many_runs_an_ablation_makes_and_where_it_scores():
    from playground.lab import CompareLab
    from playground.tasks import get_task

    lab, topic = CompareLab(BASE), get_task("topic")
    assert lab.ablation_runs(topic, "mlp", steps=2, seeds=1) == 4  # 2 series x 2 learning rates
    assert lab.ablation_runs(topic, "mlp", steps=2, seeds=3) == 12 and lab.ablation_runs(topic, "depth", 2) == 0
    assert lab.held_out(topic) == (24, "validation") and lab.held_out(topic, 4) == (4, "validation")
