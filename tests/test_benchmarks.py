"""The benchmarks' small modes, so the long runs they stand for keep working."""

from __future__ import annotations

import json

import pytest

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


def test_locate_accuracy_smoke(tmp_path):
    out = tmp_path / "locate.json"
    result = run_benchmark("locate_accuracy.py", "--smoke", "--locate-template", "recipes/demo-locate.txt",
                           "--json", str(out), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["locate_template"] == "recipes/demo-locate.txt"
    assert set(data["methods"]) == {"ask", "surprise"} and data["pairs"] > 0
    for method in data["methods"].values():
        shares = method["shares"]
        assert shares["pairs"] == data["pairs"]
        assert sum(shares[c] for c in ("right", "early", "late", "none")) == pytest.approx(1.0)
    assert data["methods"]["surprise"]["locate_tokens_per_pair"] == 0  # surprise decodes nothing to locate
    assert 0 < data["methods"]["ask"]["locate_tokens_per_pair"] <= 16  # --smoke: the locate budget
    assert data["sweep"] and all(sum(row["shares"][c] for c in ("right", "early", "late", "none")) == pytest.approx(1.0)
                                 for row in data["sweep"])
    assert "| ask |" in result.stdout and "| surprise |" in result.stdout
