"""A class in real browsers: three students and a teacher, each in their own browser context.

The app runs as a subprocess on the real embedded model, with a teacher login (``--teacher-auth``)
and no student logins: students type their names, and the teacher signs in inside the app. Tests
run in file order and build on each other: the students train, one reloads mid-run, the teacher
watches the class, sets an exercise, pushes a run, a student forks it, and the teacher exports and
resets the class. Screenshots go to ``artifacts/screenshots/`` (docs/deploy.md shows them).
"""

from __future__ import annotations

import csv
import re
import zipfile
from pathlib import Path

import pytest

from bench.driver import ROOT, launch_chromium, plot_data, start_app, stop_app, tab, wait_until
from tests.browser.test_browser import progress, set_number  # the Train tab's readers, as the other tests use them

SHOTS = ROOT / "artifacts" / "screenshots"
SHIPPED = ROOT / "prefixes"
STUDENTS = ("Alex", "Bea", "Cy")

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("class")
    return root / "library", root / "library-class"


@pytest.fixture(scope="module")
def server(folders):
    library, _ = folders
    proc, url, _ = start_app(["--library", str(library), "--teacher-auth", "ms-t:chalk-42",
                              "--reload-grace-seconds", "60"], library.parent / "server.log")
    yield url
    stop_app(proc)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


def open_page(browser, url: str):
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#header")
    return page


@pytest.fixture(scope="module")
def pages(browser, server) -> dict:
    """One browser context per person: the three students and the teacher."""
    out = {name: open_page(browser, server) for name in (*STUDENTS, "teacher")}
    yield out
    for p in out.values():
        p.context.close()


def shot(page, name: str) -> None:
    toasts = page.locator(".toast-close").all()
    for close in toasts:  # the messages would cover the page's top
        close.click()
    if toasts:
        page.wait_for_timeout(1000)  # their closing animation
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def choose(page, elem_id: str, text: str) -> None:
    """Pick the option of a dropdown whose label contains ``text``."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option").filter(has_text=text).first.click()


def train(page, steps: int, every: int = 3, n_eval: int = 8, seed: int | None = None) -> None:
    tab(page, "Train")
    set_number(page, "steps", steps)
    if seed is not None:
        set_number(page, "seed", seed)
    if not page.locator("#eval-n").is_visible():
        page.get_by_text("Held-out evaluation").click()
    set_number(page, "eval-every", every)
    set_number(page, "eval-n", n_eval)
    page.locator("#train-btn").click()


def name_me(page, name: str) -> None:
    page.locator("#my-name input, #my-name textarea").first.fill(name)
    page.locator("#name-btn").click()
    wait_until(lambda: page.locator("#who-name").get_attribute("data-name") == name, what=f"the name {name}")


def test_students_name_themselves_and_train_and_a_reload_keeps_the_run(pages):
    for name in STUDENTS:
        name_me(pages[name], name)
    # a second browser can't take a name already taken
    pages["teacher"].locator("#my-name input, #my-name textarea").first.fill("alex")
    pages["teacher"].locator("#name-btn").click()
    pages["teacher"].wait_for_selector(".toast-body.error")
    assert "already goes by 'Alex'" in " ".join(pages["teacher"].locator(".toast-body.error").all_inner_texts())
    for seed, (name, steps) in enumerate(zip(STUDENTS, (12, 6, 6))):
        train(pages[name], steps, seed=seed)
    alex = pages["Alex"]
    wait_until(lambda: progress(alex).get("step", 0) >= 2, timeout=300, what="Alex's second step")
    before = progress(alex)["step"]
    alex.reload()  # mid-run: the page comes back to the same run, still going
    alex.wait_for_selector("#header")
    tab(alex, "Train")
    wait_until(lambda: progress(alex).get("total") == 12, what="the run after the reload")
    after = progress(alex)
    assert after["step"] >= before and after["state"] in ("running", "scoring", "finished"), (before, after)
    assert alex.locator("#who-name").get_attribute("data-name") == "Alex"  # the name survives the reload too
    wait_until(lambda: progress(alex).get("step", 0) > before, timeout=180, what="more steps after the reload")
    shot(alex, "class-student-reloaded")
    for name in STUDENTS:
        wait_until(lambda: progress(pages[name]).get("state") == "finished", timeout=600, what=f"{name}'s run")
    loss = plot_data(alex, "loss-plot")[0]
    assert loss["x"] == list(range(1, 13))  # every step, those before the reload included
    cmd = alex.locator("#run-command textarea, #run-command input").first.input_value()
    assert cmd.startswith("python -m playground train --task sentiment") and "--steps 12" in cmd
    # a student has no Class tab
    assert alex.get_by_role("tab", name="Class").count() == 0


def test_the_teacher_signs_in_and_sees_the_whole_class_live(pages):
    t = pages["teacher"]
    t.get_by_text("Teacher", exact=True).click()
    t.locator("#teacher-user input, #teacher-user textarea").first.fill("ms-t")
    t.locator("#teacher-pass input").first.fill("chalk-42")
    t.locator("#teacher-btn").click()
    wait_until(lambda: t.get_by_role("tab", name="Class").count() == 1, what="the Class tab")
    tab(t, "Class")
    status = t.locator("#class-status")
    wait_until(lambda: status.count() and status.get_attribute("data-students") == "3", what="three students")
    wait_until(lambda: len(plot_data(t, "class-loss")) == 3, what="three loss curves")
    names = {re.sub(r" · .*", "", d["name"]) for d in t.evaluate(
        "() => document.querySelector('#class-loss .js-plotly-plot').data.map(t => ({name: t.name}))")}
    assert names == set(STUDENTS), names
    assert len(plot_data(t, "class-metric")) == 3
    board = t.locator("#class-board").inner_text()
    assert all(n in board for n in STUDENTS) and "n = 8, validation" in board
    # beside each finished run, the strongest prompt on the same examples, with its cost
    wait_until(lambda: "prompt tokens" in t.locator("#class-board").inner_text(), timeout=300,
               what="a run's strongest prompt on the leaderboard")
    assert "the strongest prompt, on the same examples" in t.locator("#class-board").inner_text()
    shot(t, "class-tab")


def test_an_exercise_locks_the_settings_it_fixes(pages):
    t, bea = pages["teacher"], pages["Bea"]
    t.get_by_text("Exercise: fix the task").click()
    set_number(t, "ex-n", 5)
    t.locator("#ex-note textarea, #ex-note input").first.fill("Choose your own learning rate.")
    t.locator("#ex-set").click()
    wait_until(lambda: "Exercise set" in t.locator("#ex-status").inner_text(), what="the exercise")
    note = bea.locator("#exercise-note")
    wait_until(lambda: note.is_visible() and "virtual tokens = 5" in note.inner_text(), timeout=30,
               what="the exercise on a student's Train tab")
    assert bea.locator("#n-tokens input[type=number]").first.input_value() == "5"
    assert bea.locator("#n-tokens input[type=number]").first.is_disabled()
    assert not bea.locator("#lr input").first.is_disabled()  # the students' own choice
    shot(bea, "class-exercise")
    t.locator("#ex-clear").click()
    wait_until(lambda: not note.is_visible(), timeout=30, what="the exercise to end")


def test_the_teacher_pushes_a_run_and_it_appears_in_everyones_switch(pages):
    t = pages["teacher"]
    choose(t, "push-run", "Alex")
    t.locator("#push-btn").click()
    wait_until(lambda: "alex-sentiment" in t.locator("#push-status").inner_text(), what="the push")
    for name in ("Bea", "Cy"):
        p = pages[name]
        tab(p, "Switch")
        picker = p.locator("#sw-choice")
        wait_until(lambda: picker.get_by_label("★ alex-sentiment (shared: Alex)", exact=True).count() == 1,
                   what=f"the shared prefix in {name}'s Switch")
        tab(p, "Attention")
        p.locator("#att-prefix input").click()
        assert any("alex-sentiment" in o for o in p.get_by_role("option").all_inner_texts())
        p.keyboard.press("Escape")
    shot(pages["Bea"], "class-switch-shared")


def test_a_student_forks_the_pushed_run(pages):
    bea = pages["Bea"]
    tab(bea, "Train")
    bea.get_by_text("Start from a run the teacher shared (fork)").click()
    wait_until(lambda: bea.locator("#fork-pick input").is_visible(), what="the fork picker")
    choose(bea, "fork-pick", "alex-sentiment")
    bea.locator("#fork-btn").click()
    wait_until(lambda: bea.locator("#fork-on input").is_checked(), what="the fork ticked")
    assert bea.locator("#steps input[type=number]").first.input_value() == "12"  # Alex's settings
    train(bea, 3, every=3)
    wait_until(lambda: progress(bea).get("state") == "finished" and progress(bea).get("total") == 3, timeout=300,
               what="the forked run")
    assert "--start-from" in bea.locator("#run-command textarea, #run-command input").first.input_value()
    tab(bea, "Runs")
    wait_until(lambda: "forked" in bea.locator("#runs-table").inner_text(), what="the fork among Bea's runs")
    bea.locator("#runs-show").click()  # the last two runs are picked: her own and the fork
    wait_until(lambda: len(plot_data(bea, "runs-loss")) == 2, what="two overlaid runs")
    diff = bea.locator("#runs-diff").inner_text()
    assert "forked_from" in diff and "seed" in diff and "batch_size" not in diff  # only what differs
    assert bea.locator("#runs-command textarea").first.input_value().count("python -m playground train") == 2
    shot(bea, "class-runs")


def test_a_student_cannot_delete_a_classmates_prefix(pages, folders):
    library, _ = folders
    cy = pages["Cy"]
    tab(cy, "Library")
    box = cy.locator("#lib-pick input")
    box.click()
    box.fill("alex-sentiment")
    box.press("Enter")
    wait_until(lambda: "alex-sentiment" in cy.locator("#lib-details").inner_text(), what="the card")
    cy.locator("#lib-delete").click()
    cy.wait_for_selector(".toast-body.error")
    assert "alex-sentiment" in " ".join(cy.locator(".toast-body.error").all_inner_texts())
    assert (library / "alex-sentiment").is_dir()


def test_export_then_reset_keeps_the_shipped_set(pages, folders, tmp_path):
    library, class_folder = folders
    t = pages["teacher"]
    tab(t, "Class")
    t.get_by_text("Export and reset").click()
    t.locator("#reset-btn").click()
    confirm = t.locator("#reset-confirm")
    wait_until(lambda: confirm.is_visible() and "4 runs" in confirm.inner_text(), what="the confirmation")
    exports = sorted((class_folder / "exports").iterdir())
    csv_path = next(p for p in exports if p.suffix == ".csv")
    rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    assert sorted(r["student"] for r in rows) == ["Alex", "Bea", "Bea", "Cy"]
    with zipfile.ZipFile(next(p for p in exports if p.suffix == ".zip")) as z:
        assert "alex-sentiment/adapter_model.safetensors" in z.namelist()
    shipped_before = sorted(p.name for p in SHIPPED.iterdir() if p.is_dir())
    shot(t, "class-reset-confirm")
    t.locator("#reset-yes").click()
    wait_until(lambda: "The class is reset" in t.locator("#reset-status").inner_text(), timeout=120,
               what="the reset")
    assert not any(p for p in library.iterdir() if not p.name.startswith(".")) if library.exists() else True
    assert not (class_folder / "runs").exists() or not any((class_folder / "runs").iterdir())
    assert sorted(p.name for p in SHIPPED.iterdir() if p.is_dir()) == shipped_before
    cy = pages["Cy"]
    tab(cy, "Switch")
    picker = cy.locator("#sw-choice")
    wait_until(lambda: picker.get_by_label("alex-sentiment", exact=False).count() == 0, what="the class's prefix gone")
    assert picker.get_by_label("capitals", exact=True).count() == 1  # the shipped set stays
    wait_until(lambda: t.locator("#class-status").get_attribute("data-runs") == "0", what="an empty class view")
