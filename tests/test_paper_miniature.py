"""The paper-in-miniature benchmark in its smoke mode: the outputs exist and are consistent across arms
(GRPO, SDPO and a TAPO arm)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_benchmark


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("miniature") / "smoke"
    result = run_benchmark("paper_miniature.py", "--smoke", "--output", str(out), timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_outputs_exist(smoke):
    assert (smoke / "results.md").read_text().startswith("# GRPO vs SDPO vs TAPO in miniature")
    assert (smoke / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((smoke / "results.json").read_text())
    table = (smoke / "results.md").read_text()
    for arm in results["arms"]:
        assert f"| {arm} |" in table
    assert set(results["arms"]) == {"grpo", "sdpo", "tapo_ref_original"}
    assert "| Δ vs SDPO (paired) | verdict vs SDPO |" in table and "| groups with a success |" in table


def test_arms_are_comparable(smoke):
    results = json.loads((smoke / "results.json").read_text())
    run = results["runs"]["0"]
    arms = results["arms"]
    assert {run[a]["steps_trained"] for a in arms} == {2}
    assert {run[a]["final_step"] for a in arms} == {2}
    assert {tuple(sorted(run[a]["curve"])) for a in arms} == {("0", "2")}
    # every arm (and every checkpoint) is evaluated on the same held-out problems, all from the test split
    ids = results["heldout_problem_ids"]
    assert len(ids) == results["eval"]["n_problems"] and all(i.startswith("arith-test-") for i in ids)
    for arm in arms:
        assert run[arm]["final"]["problem_ids"] == ids
        assert run[arm]["curve"]["0"] == run["start_eval"]["pass_at_1"]  # same start, same sampling seed
        assert run[arm]["final"]["n_responses"] == len(ids) * results["eval"]["samples"]
    # the run directories hold the same data order: the same first-step prompts for both arms
    lengths = {a: len((smoke / "runs" / "seed0" / a / "metrics.jsonl").read_text().splitlines()) for a in arms}
    assert set(lengths.values()) == {2}


def test_numbers_in_range(smoke):
    results = json.loads((smoke / "results.json").read_text())
    run = results["runs"]["0"]
    for arm in results["arms"]:
        final = run[arm]["final"]
        assert 0.0 <= final["pass_at_1"] <= 1.0
        assert 0.0 < final["mean_length"] <= results["config"]["max_completion_length"]
        for key in ("direct_solution_rate", "effective_reflection_rate", "reflection_rate"):
            assert final[key] is None or 0.0 <= final[key] <= 1.0
        for value in run[arm]["curve"].values():
            assert 0.0 <= value <= 1.0
        assert final["n_correct"] == round(final["pass_at_1"] * final["n_responses"])


def test_tapo_arms_report_counters_grpo_does_not(smoke):
    results = json.loads((smoke / "results.json").read_text())
    run = results["runs"]["0"]
    assert run["grpo"]["counters"] == {}
    assert set(run["sdpo"]["counters"]) == {"success_group_share", "distilled_share", "distillation_loss"}
    counters = run["tapo_ref_original"]["counters"]
    assert 0.0 <= counters["eligible_share"] <= 1.0
    assert counters["constructions_per_step"] >= 0.0
    summary = results["summary"]
    assert summary["grpo"]["counters"] == {}
    assert "eligible_share" in summary["tapo_ref_original"]["counters"]
    assert "verdict_vs_grpo" in summary["tapo_ref_original"] and "verdict_vs_sdpo" in summary["tapo_ref_original"]
    assert "verdict_vs_grpo" in summary["sdpo"] and "verdict_vs_sdpo" not in summary["sdpo"]


def test_the_sdpo_arm_ran_trls_sdpotrainer_in_the_same_protocol(smoke):
    """Same start model, steps, batch, budget and seed as GRPO; SDPO's own metrics and a distillation signal."""
    import yaml

    results = json.loads((smoke / "results.json").read_text())
    runs = smoke / "runs" / "seed0"
    sdpo, grpo = (yaml.safe_load((runs / arm / "config.yaml").read_text()) for arm in ("sdpo", "grpo"))
    assert sdpo["algorithm"] == "sdpo" and grpo["algorithm"] == "grpo"
    assert {k: v for k, v in sdpo.items() if k not in ("algorithm", "output_dir")} == {
        k: v for k, v in grpo.items() if k not in ("algorithm", "output_dir")}
    rows = [json.loads(line) for line in (runs / "sdpo" / "metrics.jsonl").read_text().splitlines()]
    assert all("sdpo/distillation_loss" in row and row["step_time"] > 0 for row in rows)
    assert (runs / "sdpo" / "checkpoint-2" / "sdpo_teacher.safetensors").is_file()
    counters = results["runs"]["0"]["sdpo"]["counters"]
    assert 0.0 <= counters["distilled_share"] <= 1.0 and 0.0 <= counters["success_group_share"] <= 1.0
    for arm in results["arms"]:
        assert results["runs"]["0"][arm]["step_seconds"] > 0


def test_starting_model_went_through_the_cold_start(smoke):
    results = json.loads((smoke / "results.json").read_text())
    start = results["start_model"]
    assert start["cold_start"] is not None  # on by default (--no-cold-start turns it off)
    build = start["cold_start_data"]["cold_build"]  # tapo.coldstart.build_coldstart's own stats
    assert build["construction"] == "aligned" and build["kept"] > 0
    assert build["examples"]["trajectory"] == build["kept"]
    assert build["examples"]["plain"] == build["kept"]  # the default mix is trajectory 1 : plain 1
    data = Path(start["folder"]) / "coldstart_data.jsonl"
    kinds = [json.loads(line)["kind"] for line in data.read_text().splitlines()]
    assert kinds.count("trajectory") == build["kept"] and kinds.count("plain") == build["kept"]
