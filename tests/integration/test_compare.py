"""On the real embedded model: compare."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.real_model
def test_compare_cli_on_the_real_model(tmp_path):
    out = tmp_path / "compare.json"
    proc = subprocess.run([sys.executable, "-m", "playground", "compare", "--methods", "prefix,prompt,instruction",
                           "--steps", "2", "--eval-every", "0", "--eval-examples", "8", "--json", str(out),
                           "--out", str(tmp_path / "figs")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| Prefix tuning (PrefixTuningConfig) | " in proc.stdout and "| 230,400 (0.171%) |" in proc.stdout
    assert "| Prompt tuning (PromptTuningConfig) | " in proc.stdout and "| 11,520 (" in proc.stdout
    assert "(n = 8, validation; 95% interval" in proc.stdout and "(median of 5; 25th–75th percentile" in proc.stdout
    data = json.loads(out.read_text())
    assert set(data) == {"prefix", "prompt", "instruction"} and len(data["prefix"][0]["records"]) == 2
    assert 0 <= data["prefix"][0]["start_metric"] <= 1 and data["instruction"][0]["start_metric"] is None
    assert json.loads((tmp_path / "figs" / "results.json").read_text()) == data
    assert (tmp_path / "figs" / "compare_step.png").stat().st_size > 10_000
    bad = subprocess.run([sys.executable, "-m", "playground", "compare", "--methods", "prefix,loraa"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Unknown method(s): loraa" in bad.stderr
