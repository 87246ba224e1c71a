"""The rivals benchmark (benchmarks/rivals.py) in its smoke mode (builtin:tiny-arith): one protocol for every
arm, one result file per finished part that a rerun skips, a comparison rebuilt from the files, and an arm
cut off mid-training that resumes instead of starting again."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_benchmark

sys.path.insert(0, str(ROOT / "benchmarks"))

ARMS = ("grpo", "sdpo", "tapo", "tapo_fast")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rivals")
    result = run_benchmark("rivals.py", "--smoke", "--results", str(out / "results"), "--runs", str(out / "runs"),
                           timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def parts(smoke: Path) -> dict[str, dict]:
    return {arm: json.loads((smoke / "results" / f"seed0-{arm}.json").read_text()) for arm in ARMS}


def test_every_arm_runs_one_protocol(smoke):
    configs = {arm: part["key"]["config"] for arm, part in parts(smoke).items()}
    assert {arm: c["algorithm"] for arm, c in configs.items()} == {
        "grpo": "grpo", "sdpo": "sdpo", "tapo": "tapo", "tapo_fast": "tapo"}
    for arm, config in configs.items():
        # Only the algorithm and its own section differ between arms.
        shared = {k: v for k, v in config.items() if k not in ("algorithm", "tapo", "sdpo")}
        assert shared == {k: v for k, v in configs["grpo"].items() if k not in ("algorithm", "tapo", "sdpo")}, arm
    assert "tapo" not in configs["grpo"] and "tapo" not in configs["sdpo"]
    assert configs["tapo"]["tapo"]["construction"] == "self"
    assert configs["tapo"]["tapo"]["synthesis_schedule"] == "inline"
    fast = configs["tapo_fast"]["tapo"]
    assert (fast["construction"], fast["splice_locate"], fast["synthesis_schedule"]) == ("splice", "surprise", "deferred")
    for part in parts(smoke).values():
        assert part["steps_trained"] == 2
        assert part["key"]["eval"] == json.loads((smoke / "results" / "seed0-start.json").read_text())["key"]["eval"]
        spec = part["key"]["eval"]
        assert len(part["eval"]["responses"]) == spec["n_problems"] * spec["samples"]
        correct = sum(row[1] for row in part["eval"]["responses"])
        assert part["eval"]["pass_at_1"] == pytest.approx(correct / len(part["eval"]["responses"]), abs=1e-6)


def test_checkpoints_are_freed_and_tapo_counts_match_its_files(smoke):
    for arm in ARMS:
        run_dir = smoke / "runs" / "seed0" / arm
        assert (run_dir / "model" / "config.json").is_file() and not list(run_dir.glob("checkpoint-*"))
    for arm in ("tapo", "tapo_fast"):
        c = parts(smoke)[arm]["constructions"]
        rows = [json.loads(line) for line in (smoke / "runs" / "seed0" / arm / "metrics.jsonl").read_text().splitlines()]
        tries = sum(r.get("tapo/pairs", 0) - r.get("tapo/deferred_dropped", 0) for r in rows)  # no step reuses
        assert c["tries"] == round(tries) and c["tries"] > 0  # the policy was asked to construct
        assert c["tries"] == round(sum(r.get("tapo/tried", 0) for r in rows))  # every chosen pair was tried once
        assert c["synthesis_tokens"] == round(sum(r.get("tapo/synthesis_tokens", 0) for r in rows))


def test_the_report_is_the_files_and_a_rerun_skips_them(smoke):
    import rivals

    results = json.loads((smoke / "results" / "results.json").read_text())
    finals = {arm: part["eval"]["pass_at_1"] for arm, part in parts(smoke).items()}
    for arm in ARMS:
        assert results["summary"][arm]["pass_at_1"]["mean"] == pytest.approx(finals[arm], abs=1e-6)
    assert results["summary"]["tapo"]["diff_vs_grpo"]["mean"] == pytest.approx(finals["tapo"] - finals["grpo"], abs=1e-6)
    assert results["summary"]["tapo"]["diff_vs_sdpo"]["mean"] == pytest.approx(finals["tapo"] - finals["sdpo"], abs=1e-6)
    assert "| tapo_fast |" in (smoke / "results" / "results.md").read_text()

    before = {p.name: p.read_bytes() for p in (smoke / "results").glob("seed*.json")}
    rerun = run_benchmark("rivals.py", "--smoke", "--results", str(smoke / "results"), "--runs", str(smoke / "runs"))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert all(f"seed 0 {arm}: done before, skipped" in rerun.stdout for arm in ARMS)
    assert {p.name: p.read_bytes() for p in (smoke / "results").glob("seed*.json")} == before

    # A part made with other settings is an error that names the file, never overwritten.
    with pytest.raises(SystemExit, match="seed0-grpo.json was made with other settings"):
        rivals.load_part(smoke / "results" / "seed0-grpo.json", {"config": {}, "eval": {}})


def test_an_arm_cut_off_mid_training_resumes_from_its_checkpoint(tmp_path):
    import rivals
    from paper_miniature import read_metrics, train_arm

    raw = rivals.arm_raw({"trainer": {"max_completion_length": 16, "num_generations": 4,
                                      "per_device_train_batch_size": 8, "temperature": 1.0},
                          "data": {"source": "builtin:arithmetic", "n": 16, "n_steps": 1}},
                         "grpo", model="builtin:tiny-arith", steps=2, seed=0, smoke=True)
    raw["trainer"]["save_total_limit"] = 2  # keep checkpoint-1 to resume from
    run_dir = tmp_path / "grpo"
    train_arm(raw, run_dir)
    first = read_metrics(run_dir)
    # Cut off after step 1: the step-2 checkpoint and the final model never got written.
    shutil.rmtree(run_dir / "model")
    shutil.rmtree(run_dir / "checkpoint-2")
    kept = (run_dir / "metrics.jsonl").read_text().splitlines()[:1]
    (run_dir / "metrics.jsonl").write_text("\n".join(kept) + "\n")
    assert (run_dir / "checkpoint-1" / "trainer_state.json").is_file()
    train_arm(raw, run_dir)
    again = read_metrics(run_dir)
    assert [r["step"] for r in again] == [1, 2]  # no step lost or repeated
    assert again[0] == first[0]  # step 1 was not trained again
    assert (run_dir / "model" / "config.json").is_file()
