"""The benchmarks' small modes, so the long runs they stand for keep working."""

from __future__ import annotations

import json

from conftest import run_benchmark


def test_construction_quality_smoke(tmp_path):
    out = tmp_path / "cq.json"
    result = run_benchmark("construction_quality.py", "--smoke", "--json", str(out), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["pairs"] == round(data["problems"] * (1 - data["rollout_accuracy"]))
    budget = 12 + 12  # --smoke: rollout budget + synthesis extra tokens
    self_arm, splice_arm = data["strategies"]["self"], data["strategies"]["splice"]
    assert 0 < self_arm["generated_tokens_per_attempt"] <= budget  # one synthesis call per pair
    assert 0 < splice_arm["generated_tokens_per_attempt"] <= 2 * budget  # locate, then continue or fall back
    for arm in (self_arm, splice_arm):
        assert 0.0 <= arm["correct_over_pairs"] <= arm["parse_rate"] <= 1.0
    assert "| self |" in result.stdout and "| splice |" in result.stdout
