"""The class's runs from made-up run records: one line per run from step 0, hovers that name the run and its
settings, a diff of only the settings that differ, the leaderboard's order and ties, empty inputs. No model."""

from __future__ import annotations

import time

import pytest

from playground.runfigures import (
    LEADERBOARD_HEADERS,
    leaderboard_rows,
    run_label,
    run_labels,
    runs_figure,
    settings_diff,
    settings_text,
    strongest_prompt,
)

pytestmark = pytest.mark.unit

T0 = 1795734900.0  # epoch seconds


def make_run(author: str = "alex", started: float = T0, final: float | None = 0.8, start: float | None = 0.25,
             state: str = "finished", task: str = "sentiment", metric: str = "exact_match", n: int = 32,
             split: str = "validation", prefix: dict | None = None, train: dict | None = None,
             forked_from: str = "", run_id: str = "") -> dict:
    """A run record of 20 steps, evaluated every 5 steps (metric 0.5, 0.6, 0.7, ``final``)."""
    ts = dict(learning_rate=0.01, steps=20, batch_size=8, seed=0, eval_every=5, eval_examples=n, precision="auto")
    ts.update(train or {})
    ps = dict(num_virtual_tokens=20, init="task", init_text="", prefix_projection=False, encoder_hidden_size=256,
              init_shots=4)
    ps.update(prefix or {})
    done = 20 if state != "running" else 12
    evals = {5: 0.5, 10: 0.6, 15: 0.7, 20: final}
    steps = [dict(step=s, loss=round(3.0 / s, 4), metric=evals.get(s), elapsed=0.8 * s) for s in range(1, done + 1)]
    return dict(run_id=run_id or f"20261126-231500-{author}-{int(started) % 1000:06d}", author=author, task=task,
                task_title=task.title(), metric=metric, state=state, steps_done=done, start_metric=start,
                final_metric=final if state != "running" else None, held_out=dict(split=split, n=n),
                prefix_settings=ps, train_settings=ts, forked_from=forked_from, started=started, steps=steps)


def hhmm(t: float) -> str:
    return time.strftime("%H:%M", time.localtime(t))


def test_settings_text_and_label():
    run = make_run()
    assert settings_text(run) == "sentiment · 20 virtual tokens · init task · lr 1e-2 · 20 steps · batch 8 · seed 0"
    mlp = make_run(prefix=dict(prefix_projection=True, init="random"), train=dict(learning_rate=0.003),
                   forked_from="20261126-230000-sam-000001")
    assert settings_text(mlp).endswith("init random · lr 3e-3 · 20 steps · batch 8 · seed 0 · MLP 256 · forked")
    assert "lr 1.5e-2" in settings_text(make_run(train=dict(learning_rate=0.015)))
    assert "init demos (4 shots)" in settings_text(make_run(prefix=dict(init="demos")))
    assert run_label(run) == f"alex · {hhmm(T0)}"
    # two runs of one author in the same minute still get two legend entries
    twins = [make_run(run_id="a-111111"), make_run(run_id="a-222222"), make_run(author="sam")]
    assert run_labels(twins) == [f"alex · {hhmm(T0)} · 111111", f"alex · {hhmm(T0)} · 222222", f"sam · {hhmm(T0)}"]
    assert run_labels([make_run(run_id="a-1"), make_run(run_id="a-1")]) == [f"alex · {hhmm(T0)} · 1",
                                                                           f"alex · {hhmm(T0)} · 1 #2"]


def test_loss_figure_has_a_line_per_run_with_every_step_and_a_hover_naming_it():
    runs = [make_run(), make_run(author="sam", started=T0 + 600, state="running")]
    fig = runs_figure(runs, "loss")
    assert len(fig.data) == 2
    alex, sam = fig.data
    assert list(alex.x) == list(range(1, 21)) and alex.y[1] == 1.5 and list(sam.x) == list(range(1, 13))
    assert alex.meta[0] == run_label(runs[0]) and alex.meta[1] == settings_text(runs[0])
    assert "%{meta[0]}" in alex.hovertemplate and "%{meta[1]}" in alex.hovertemplate
    assert "step %{x}" in alex.hovertemplate and "%{y:.4f}" in alex.hovertemplate
    # a run still training is dotted and says so in the legend
    assert sam.name.endswith("(running)") and sam.line.dash == "dot" and alex.line.dash == "solid"
    assert "2 runs (1 running)" in fig.layout.title.text and fig.layout.showlegend
    assert fig.layout.xaxis.dtick == 2 and fig.layout.xaxis.tick0 == 0  # whole steps only


def test_a_name_with_markup_or_template_syntax_is_shown_as_typed():
    fig = runs_figure([make_run(author="<b>%{x}</b>")], "loss")
    assert fig.data[0].meta[0].startswith("&lt;b&gt;%{x}&lt;/b&gt; · ")  # read from meta, never as template
    assert "%{x}</b>" not in fig.data[0].hovertemplate


def test_metric_figure_starts_at_step_0_in_percent_and_names_the_held_out_set():
    runs = [make_run(), make_run(author="sam", start=None, state="running")]
    fig = runs_figure(runs, "metric")
    alex, sam = fig.data
    assert list(alex.x) == [0, 5, 10, 15, 20] and list(alex.y) == pytest.approx([25.0, 50.0, 60.0, 70.0, 80.0])
    assert list(sam.x) == [5, 10]  # no step-0 measurement, and still running
    assert "exact match %{y:.2f}%" in alex.hovertemplate and alex.meta[1] == settings_text(runs[0])
    title = fig.layout.title.text
    assert "Held-out exact match" in title and "validation, n = 32" in title
    assert fig.layout.yaxis.title.text == "exact match (%)"


def test_metric_figure_with_mixed_metrics_and_held_out_sets_says_so():
    runs = [make_run(), make_run(author="sam", task="summary", metric="rouge_l", n=16)]
    fig = runs_figure(runs, "metric")
    assert len(fig.data) == 2 and "n varies" in fig.layout.title.text
    assert "mixed metrics" in fig.layout.yaxis.title.text and "ROUGE-L F1" in fig.layout.yaxis.title.text
    assert "ROUGE-L F1 %{y:.2f}%" in fig.data[1].hovertemplate


def test_no_runs_gives_an_empty_figure_that_says_so():
    for what in ("loss", "metric"):
        fig = runs_figure([], what)
        assert len(fig.data) == 0 and "No runs yet" in fig.layout.title.text
    fresh = make_run(state="running")
    fresh["held_out"], fresh["steps"], fresh["start_metric"] = {}, [], None  # just started: nothing measured yet
    fig = runs_figure([fresh], "metric")
    assert len(fig.data) == 1 and len(fig.data[0].x) == 0 and fig.layout.title.text.startswith("Held-out exact match, 1")
    with pytest.raises(ValueError, match="loss"):
        runs_figure([make_run()], "accuracy")


def test_thirty_runs_get_thirty_colors_and_a_legend_that_fits():
    runs = [make_run(author=f"student{i:02d}", started=T0 + 60 * i) for i in range(30)]
    fig = runs_figure(runs, "loss")
    assert len(fig.data) == 30 and len({t.line.color for t in fig.data}) == 30
    assert len({t.name for t in fig.data}) == 30
    assert fig.layout.height >= 20 * 30  # one legend row per run
    # the same runs keep their colors from one plot to the other
    assert [t.line.color for t in runs_figure(runs, "metric").data] == [t.line.color for t in fig.data]


def test_settings_diff_shows_only_what_differs():
    a = make_run()
    b = make_run(author="sam", final=0.5, train=dict(learning_rate=0.003, seed=1))
    headers, rows = settings_diff([a, b])
    assert headers == ["run", "learning_rate", "seed", "held-out %"]
    assert rows == [[run_label(a), "1e-2", "0", "80.0% (n = 32)"], [run_label(b), "3e-3", "1", "50.0% (n = 32)"]]
    # an unused field (the MLP's width with no MLP) is no difference; the MLP itself is
    c = make_run(prefix=dict(encoder_hidden_size=512))
    assert settings_diff([a, c])[0] == ["run", "same settings", "held-out %"]
    d = make_run(author="kim", prefix=dict(prefix_projection=True, init="random", encoder_hidden_size=512),
                 forked_from="20261126-231500-alex-3fa2c1")
    headers, rows = settings_diff([a, d])
    assert headers == ["run", "init", "prefix_projection", "encoder_hidden_size", "forked_from", "held-out %"]
    assert rows[0][1:5] == ["task", "no", "—", "—"] and rows[1][1:5] == ["random", "yes", "512", d["forked_from"]]
    other = make_run(author="lee", task="summary", metric="rouge_l", final=None)
    headers, rows = settings_diff([a, other])
    assert headers == ["run", "task", "metric", "held-out %"] and rows[1][-1] == "—"


def test_settings_diff_of_identical_or_no_runs():
    a, b = make_run(), make_run(author="sam", final=0.75)
    headers, rows = settings_diff([a, b])
    assert headers == ["run", "same settings", "held-out %"]
    assert rows[1] == [run_label(b), settings_text(b), "75.0% (n = 32)"]
    assert settings_diff([]) == (["run", "same settings", "held-out %"], [])


def test_leaderboard_ranks_per_task_best_first_with_ties_in_start_order():
    runs = [make_run("ana", T0 + 300, final=0.7), make_run("ben", T0 + 100, final=0.9),
            make_run("cy", T0 + 200, final=0.7), make_run("dee", T0, state="running"),
            make_run("eve", T0 + 50, final=0.6, task="antonyms", n=24, split="test"),
            make_run("fay", T0 + 400, final=0.3, state="stopped")]
    headers, rows = leaderboard_rows(runs)
    assert headers == LEADERBOARD_HEADERS
    # tasks in alphabetical order, each ranked on its own
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (1, "eve", "Antonyms"), (1, "ben", "Sentiment"), (2, "cy", "Sentiment"), (2, "ana", "Sentiment"),
        (4, "fay", "Sentiment"), ("—", "dee", "Sentiment")]
    eve, ben, cy = rows[0], rows[1], rows[2]
    assert eve[3] == "60.0% (n = 24, test)" and ben[3] == "90.0% (n = 32, validation)"
    assert cy[5] == "finished" and cy[6] == "20/20" and cy[7] == settings_text(runs[2])
    assert rows[5][3] == "—" and rows[5][5] == "running" and rows[5][6] == "12/20"
    assert rows[4][5] == "stopped"
    assert all(r[4] == "—" for r in rows)  # no run was compared with the prompts yet


def test_leaderboard_shows_the_strongest_prompt_with_its_cost_beside_each_run():
    run = make_run()
    run["summary"] = [
        {"key": "base", "label": "the model as is", "mean": 0.95, "prompt_tokens": 0},  # never a prompt
        {"key": "instruction", "label": "instruction", "mean": 0.5, "prompt_tokens": 21},
        {"key": "few_shot_4", "label": "instruction + 4 examples", "mean": 0.781, "prompt_tokens": 112},
        {"key": "few_shot_8", "label": "instruction + 8 examples", "mean": 0.781, "prompt_tokens": 230},
        {"key": "prefix", "label": "the trained prefix", "mean": 0.99, "prompt_tokens": 0}]  # nor the prefix
    assert strongest_prompt(run) == "instruction + 4 examples: 78.1% · 112 prompt tokens"  # a tie: the first
    assert leaderboard_rows([run])[1][0][4] == strongest_prompt(run)
    assert strongest_prompt(make_run()) == "—"


def test_uploads_of_different_examples_are_ranked_apart():
    a, b, c = (make_run(name, T0 + i, final=f, task="upload") for i, (name, f) in
               enumerate((("ana", 0.5), ("ben", 0.9), ("cy", 0.7))))
    a["data_fingerprint"], b["data_fingerprint"], c["data_fingerprint"] = "aa", "bb", "aa"
    _, rows = leaderboard_rows([a, b, c])
    assert [(r[0], r[1]) for r in rows] == [(1, "cy"), (2, "ana"), (1, "ben")]


def test_leaderboard_of_no_runs():
    assert leaderboard_rows([]) == (LEADERBOARD_HEADERS, [])
