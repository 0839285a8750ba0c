"""The image, running: what a Space (or any host) gets from the Dockerfile, checked inside the container
and through its published port in Chromium.

`make test-docker` builds the image, runs it, waits for its HEALTHCHECK and runs these tests
(`pytest -m docker`; the default run leaves them out). Tests run in file order on one container, so
what the training saves stays for the checks after it.
"""

from __future__ import annotations

import json
import subprocess

from bench.driver import tab, wait_until
from playground.recipes import RECIPES
from tests.browser.test_browser_shipped import outputs
from tests.browser.test_library_ui import close_toasts, error_text, pick, set_number

APP = "/home/user/app"  # WORKDIR: the code and the shipped prefixes, root's
LIBRARY = "/home/user/.local/share/prefix-playground/library"  # the class's folder, uid 1000's
PORT_HEX = f"{7860:04X}"  # /proc/net/tcp writes ports in hex


def docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def sh(container: str, script: str) -> subprocess.CompletedProcess:
    """`script` run by sh in the container's app folder, as the image's user (uid 1000)."""
    return docker("exec", "-w", APP, container, "sh", "-c", script)


def test_it_runs_as_uid_1000_listening_on_all_interfaces_at_7860(container):
    info = json.loads(docker("inspect", container).stdout)[0]
    assert info["Config"]["User"] == "user" and "7860/tcp" in info["Config"]["ExposedPorts"]
    assert info["State"]["Health"]["Status"] == "healthy" and info["Config"]["StopSignal"] == "SIGINT"
    assert info["Config"]["Healthcheck"]["StartInterval"] == 1_000_000_000  # 1 s while it starts: healthy soon
    status = sh(container, "cat /proc/1/status").stdout
    assert "\nUid:\t1000\t1000\t1000\t1000\n" in status  # PID 1 itself, not only `docker exec`
    assert sh(container, "cat /proc/1/cmdline").stdout.split("\0")[:6] == [
        "python", "app.py", "--host", "0.0.0.0", "--port", "7860"]  # exec'd: the app is PID 1 and gets SIGINT
    listening = [line.split() for line in sh(container, "cat /proc/net/tcp").stdout.splitlines()[1:]]
    assert any(f[1] == f"00000000:{PORT_HEX}" and f[3] == "0A" for f in listening), listening  # 0A: LISTEN


def test_the_shipped_prefixes_are_read_only_to_uid_1000(container):
    before = sh(container, "ls -lR prefixes | md5sum").stdout
    for write in ("touch prefixes/new-file", "mkdir prefixes/new-prefix", "echo x >> prefixes/sentiment/card.json",
                  "rm prefixes/sentiment/card.json", "mv prefixes/sentiment prefixes/renamed",
                  "mv prefixes shipped-elsewhere"):
        r = sh(container, write)
        assert r.returncode != 0 and "Permission denied" in r.stderr, (write, r)
    assert sh(container, "ls -lR prefixes | md5sum").stdout == before
    # while the class's folder is the user's own
    assert sh(container, f"touch {LIBRARY}/.probe && rm {LIBRARY}/.probe").returncode == 0


def test_the_library_lists_the_shipped_prefixes_and_refuses_to_delete_one(page, container):
    tab(page, "Library")
    grid = page.locator("#lib-table")
    wait_until(lambda: all(name in grid.inner_text() for name in RECIPES), what="the shipped prefixes listed")
    assert grid.inner_text().count("shipped") >= len(RECIPES)
    pick(page, "sentiment")
    page.locator("#lib-delete").click()
    assert "shipped prefixes are read-only" in error_text(page)  # refused before any confirmation
    close_toasts(page)
    assert not page.locator("#lib-delete-confirm").is_visible()
    assert sh(container, "test -f prefixes/sentiment/adapter_model.safetensors").returncode == 0


def test_switch_between_two_shipped_prefixes(page):
    tab(page, "Switch")
    for tick in page.locator("#sw-choice").get_by_role("checkbox").all():
        tick.set_checked(tick.evaluate("e => e.closest('label').innerText.trim()") in ("sentiment", "topic"))
    box = page.locator("#sw-input textarea")
    box.fill("The acting was wooden and the plot made no sense at all.")
    box.press("Enter")
    outs = outputs(page, 2)  # two task prefixes, one input, one frozen model
    assert outs["sentiment"].strip().lower() == "negative", outs
    assert outs["topic"].strip().lower() in {"world", "sports", "business", "science"}, outs


def test_a_short_training_saves_to_the_class_library_never_over_a_shipped_prefix(page, container):
    tab(page, "Train")
    set_number(page, "steps", 2)
    if not page.locator("#eval-n").is_visible():
        page.get_by_text("Held-out evaluation").click()
    set_number(page, "eval-every", 0)
    set_number(page, "eval-n", 4)
    asked = {k: page.locator(f"#{k} input[type=number]").first.input_value() for k in ("steps", "eval-every", "eval-n")}
    page.locator("#train-btn").click()
    run = "() => { const d = document.querySelector('#pp-progress'); return d ? [d.dataset.state, d.dataset.total] : [] }"
    wait_until(lambda: page.evaluate(run)[:1] == ["finished"], timeout=300, what="training to finish")
    assert page.evaluate(run)[1] == "2", asked  # the steps asked for, not the default
    name = page.locator("#save-name textarea, #save-name input").first
    name.fill("sentiment")
    page.locator("#save-overwrite input").check()  # even asked to overwrite: refused, with no confirmation
    page.locator("#save-btn").click()
    assert "'sentiment' is a shipped prefix, and shipped prefixes are read-only" in error_text(page)
    close_toasts(page)
    assert not page.locator("#save-confirm").is_visible()
    page.locator("#save-overwrite input").uncheck()
    name.fill("from-the-container")
    page.locator("#save-btn").click()
    page.wait_for_selector("#save-status :text('Saved')")
    card = json.loads(sh(container, f"cat {LIBRARY}/from-the-container/card.json").stdout)
    assert card["task"] == "sentiment" and card["metrics"]["n"] == 4, (card["metrics"], asked)
    owner = sh(container, f"stat -c %u {LIBRARY}/from-the-container/adapter_model.safetensors").stdout.strip()
    assert owner == "1000"
    assert sh(container, "test -e prefixes/from-the-container").returncode != 0  # not among the shipped
