"""The SmolLM2 GRPO-vs-TAPO benchmark in its smoke mode (builtin:tiny-arith): equal steps, shared held-out
problems, and construction counts that agree with the run's own files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_benchmark


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smollm2") / "smoke"
    result = run_benchmark("smollm2_comparison.py", "--smoke", "--output", str(out), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_both_arms_train_the_same_steps_from_the_same_model(smoke):
    results = json.loads((smoke / "results.json").read_text())
    assert set(results["models"]) == {"start", "grpo", "tapo"}
    configs = results["configs"]
    assert configs["grpo"]["algorithm"] == "grpo" and "tapo" not in configs["grpo"]
    assert configs["tapo"]["tapo"]["construction"] == "self" and configs["tapo"]["tapo"]["ref_baseline"] == "reflection"
    for arm in ("grpo", "tapo"):
        assert configs[arm]["model"]["name"] == results["start_model"]
        assert configs[arm]["data"] == configs["grpo"]["data"] and configs[arm]["seed"] == results["seed"]
        assert results["models"][arm]["steps_trained"] == results["steps"]
        saved = json.loads((smoke / "runs" / arm / "arm_config.json").read_text())
        assert saved == configs[arm]
    evals = [results["models"][m]["eval"] for m in ("start", "grpo", "tapo")]
    assert len({tuple(e["problem_ids"]) for e in evals}) == 1  # the same held-out problems for every model
    for e in evals:
        assert e["n_responses"] == results["eval"]["n_problems"] * results["eval"]["samples"]
        assert e["n_correct"] == round(e["pass_at_1"] * e["n_responses"])


def test_construction_counts_match_the_run_files(smoke):
    results = json.loads((smoke / "results.json").read_text())
    c = results["models"]["tapo"]["constructions"]
    rows = [json.loads(line) for line in (smoke / "runs" / "tapo" / "metrics.jsonl").read_text().splitlines()]
    assert c["attempts"] == round(sum(r["tapo/pairs"] for r in rows)) and c["attempts"] > 0
    built_file = smoke / "runs" / "tapo" / "constructions.jsonl"
    built = built_file.read_text().splitlines() if built_file.is_file() else []
    assert c["built"] == len(built) and c["parse_rate"] == pytest.approx(len(built) / c["attempts"], abs=1e-6)
    assert c["synthesis_tokens"] > 0  # the policy was asked to write syntheses
    table = (smoke / "results.md").read_text()
    assert f"{c['attempts']} synthesis attempts, {c['built']} built" in table
