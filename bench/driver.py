"""Drive the real app from outside: start it on loopback, open it in Debian's headless Chromium.

Harness code, not part of the app: the integration tests that need a real server or
browser (``tests/browser/test_browser.py``, ``tests/reliability/test_guard.py`` and others) and the benchmarks
(``bench/app_latency.py``, ``bench/load_test.py``, ``bench/cold_start.py``) use it, so they
all start, wait and check the same way. Playwright's own browser download is not reachable
here, so we point it at ``/usr/bin/chromium``.
"""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playground.browser import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(args: list[str], log_path: Path, timeout: float = 300) -> tuple[subprocess.Popen, str, float]:
    """``python app.py ARGS`` on 127.0.0.1 at a free port. Returns (process, url, seconds until it answered)."""
    port = free_port()
    return start_server([sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port), *args],
                        port, log_path, timeout)


def start_server(cmd: list[str], port: int, log_path: Path, timeout: float = 300,
                 poll: float = 0.1) -> tuple[subprocess.Popen, str, float]:
    """Run ``cmd`` (a web server on 127.0.0.1:port) until it answers HTTP 200. Returns (process, url, seconds)."""
    log = open(log_path, "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{Path(cmd[1]).name} exited with {proc.returncode}: {log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return proc, url, time.perf_counter() - t0
        except OSError:
            pass
        if time.perf_counter() - t0 > timeout:
            proc.kill()
            raise RuntimeError(f"{Path(cmd[1]).name} did not answer within {timeout:.0f} s")
        time.sleep(poll)


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def launch_chromium(playwright):
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package "
                           "(apt-get install chromium).")
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def wait_until(fn, timeout: float = 120, what: str = "condition", poll: float = 0.25):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def set_number(page, elem_id: str, value, tries: int = 4) -> None:
    """Type into a slider's or number box's number input, commit it, and, for a slider, wait until the slider
    itself took the value. Typed again if it did not: a control that has just appeared (an accordion opened
    a moment ago) can still be mounting, and then the first value typed is dropped."""
    box = page.locator(f"#{elem_id} input[type=number]").first
    rng = page.locator(f"#{elem_id} input[type=range]")
    for i in range(tries):
        box.wait_for(state="visible")
        box.fill(str(value))
        box.press("Enter")
        box.blur()
        if not rng.count():  # a number box: nothing else to wait for
            return
        try:
            wait_until(lambda: rng.first.input_value() == str(value), timeout=3 if i < tries - 1 else 10,
                       what=f"{elem_id} = {value}")
            return
        except AssertionError:
            if i == tries - 1:
                raise


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def plot_data(page, elem_id: str) -> list[dict]:
    """The traces plotly is drawing in a gr.Plot (empty until it renders)."""
    return page.evaluate(
        """(id) => { const d = document.querySelector('#' + id + ' .js-plotly-plot');
                      return d && d.data ? d.data.map(t => ({x: t.x || [], y: t.y || [], z: t.z || null,
                                                             type: t.type || 'scatter', name: t.name || null,
                                                             error_y: t.error_y ? t.error_y.array : null})) : []; }""",
        elem_id)
