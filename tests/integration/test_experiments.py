"""On the real embedded model: experiments."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.real_model
def test_experiments_cli_on_the_real_model_writes_tables_and_charts(tmp_path):
    out = tmp_path / "exp"
    cmd = [sys.executable, "-m", "playground", "experiments", "--studies", "length", "--seeds", "0", "--steps", "1",
           "--lengths", "1,20", "--prompt-lengths", "20", "--eval-examples", "4", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((out / "results.json").read_text())
    assert [(r["series"], r["x"]) for r in data["runs"]] == [("prefix", 1), ("prefix", 20), ("prompt", 20)]
    assert "| prompt | 20 |" in (out / "results.md").read_text()
    assert (out / "length.png").stat().st_size > 10_000 and (out / "length.html").exists()
    bad = subprocess.run(cmd[:4] + ["--studies", "length,depth"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "Unknown or no studies: depth" in bad.stderr
