"""`tapo train` end to end on the tiny recipes: run directory, resume, TAPO constructions, two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import TrainerCallback

from conftest import run_benchmark

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tapo(*args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "tapo"), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )


def metric_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_tiny_grpo_leaves_a_run_directory(tmp_path):
    run = tmp_path / "grpo"
    result = tapo("train", "--config", "recipes/tiny-grpo.yaml", "--output-dir", str(run))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = metric_rows(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all("reward" in r and "accuracy" in r for r in rows)
    assert (run / "config.yaml").is_file() and (run / "checkpoint-4" / "model.safetensors").is_file()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run / "model")
    assert model.config.num_hidden_layers == 2


def test_train_tiny_tapo_logs_constructions(tiny_tapo_run):
    run = tiny_tapo_run
    rows = metric_rows(run)
    for key in ("tapo/eligible_frac", "tapo/pairs", "tapo/parsed_frac", "tapo/ots_w_mean", "tapo/prefix_fidelity"):
        assert key in rows[-1], key
    for row in rows:  # where each step's time went: the phases and the rest add up to TRL's step_time
        phases = [row[f"tapo/time/{phase}"] for phase in ("rollouts", "synthesis", "score", "ots", "update")]
        assert min(phases) >= 0.0 and sum(phases) == pytest.approx(row["step_time"], rel=1e-9)
    records = [json.loads(line) for line in (run / "constructions.jsonl").read_text().splitlines()]
    assert records, "no constructed trajectory was logged"
    first = records[0]
    assert first["strategy"] == "aligned" and first["negative_index"] != first["positive_index"]
    assert first["text"].rstrip().endswith(f"\\boxed{{{first['answer']}}}.")
    assert 0.0 < first["ots_w_mean"] <= 10.0
    # kept prefix | reflection | correction: the reflection is the templated diagnosis line of `aligned`
    reflection = first["text"][first["reflection_start_char"] : first["correction_start_char"]]
    assert reflection.strip() == first["analysis"].strip()


def test_bad_config_is_a_clear_error(tmp_path):
    result = tapo("train", "--config", "recipes/tiny-grpo.yaml", "--set", "trainer.learning_rat=1e-3", "--dry-run")
    assert result.returncode == 2
    assert "learning_rat" in result.stderr and "trainer" in result.stderr and "tiny-grpo.yaml" in result.stderr


def test_dry_run_validates_without_training(tmp_path):
    result = tapo("train", "--config", "recipes/tiny-tapo.yaml", "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "config OK: algorithm=tapo" in result.stdout


class _InterruptAfter(TrainerCallback):
    """Stops the run after `step` as an interruption would (the last checkpoint is older)."""

    def __init__(self, step: int):
        self.step = step

    def on_log(self, args, state, control, logs=None, **kwargs):  # after the step's row was written
        if state.global_step >= self.step:
            raise KeyboardInterrupt


def test_resume_logs_every_step_exactly_once(tmp_path, monkeypatch):
    import tapo.engine.run as train
    from tapo.config import load_config

    config = load_config(ROOT / "recipes/tiny-grpo.yaml", ["trainer.max_steps=5", "trainer.save_steps=2"])
    run = tmp_path / "resume"
    real_build = train.build_trainer

    def build_interrupted(config, *, run_dir):
        trainer = real_build(config, run_dir=run_dir)
        trainer.add_callback(_InterruptAfter(3))
        return trainer

    monkeypatch.setattr(train, "build_trainer", build_interrupted)
    with pytest.raises(KeyboardInterrupt):
        train.run_training(config, output_dir=str(run))
    assert [r["step"] for r in metric_rows(run)] == [1, 2, 3]  # step 3 was logged; its checkpoint was not saved
    monkeypatch.setattr(train, "build_trainer", real_build)
    train.run_training(config, output_dir=str(run), resume=True)
    assert [r["step"] for r in metric_rows(run)] == [1, 2, 3, 4, 5]
    assert (run / "checkpoint-4").is_dir() and (run / "model").is_dir()


def test_step_time_benchmark_smoke(tmp_path):
    """Every arm of benchmarks/step_time.py in one process on the tiny model: one table, consistent numbers."""
    out = tmp_path / "step_time.json"
    result = run_benchmark("step_time.py", "--smoke", "--json", str(out), timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    numbers = json.loads(out.read_text())
    arms = numbers["arms"]
    assert list(arms) == ["grpo", "self", "self+one_pass", "splice", "splice+surprise", "splice+surprise+deferred",
                          "splice+surprise+deferred+drop", "aligned"]
    table = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in result.stdout.splitlines() if line.startswith("| ") and not line.startswith("| arm ")}
    assert list(table) == list(arms)  # one table, a row per arm
    grpo_total = arms["grpo"]["seconds"]["total"]
    for name, arm in arms.items():
        seconds = arm["seconds"]
        assert arm["timed_steps"] == [2]  # step 1 (warm-up) left out
        assert sum(seconds[p] for p in ("rollouts", "synthesis", "score", "ots", "update")) == pytest.approx(
            seconds["total"], rel=1e-9)
        assert arm["ratio_to_grpo"] == pytest.approx(seconds["total"] / grpo_total, rel=1e-12)
        assert table[name][5] == f"{seconds['total']:.3f}" and table[name][6] == f"{arm['ratio_to_grpo']:.2f}"
        assert seconds["rollouts"] > 0, name  # GRPO's rollouts are timed by the benchmark itself
        longest = arm["longest_rollout_tokens"]  # one timed step: that step's longest rollout
        assert 1 <= longest <= 24 and table[name][7] == f"{longest:.1f}", name  # tiny-tapo: max_completion_length 24
    assert "constructions" not in arms["grpo"] and table["grpo"][1:4] == ["–", "–", "–"]
    for name in ("self", "splice", "splice+surprise"):  # the tiny model cannot write syntheses, but it pays for trying
        c = arms[name]["constructions"]
        assert c["tries"] > 0 and c["synthesis_tokens"] > 0 and arms[name]["seconds"]["synthesis"] > 0
        assert sum(c["failed"].values()) == c["tries"] - c["built"] > 0, name  # each failed try under its reason
        assert table[name][-1] == ", ".join(f"{reason} {n}" for reason, n in c["failed"].items()), name
    aligned = arms["aligned"]["constructions"]
    assert aligned["built"] > 0 and aligned["synthesis_tokens"] == 0 and aligned["right_frac"] == 1.0
    assert aligned["built_per_step"] == aligned["built"] / 2 and aligned["built_per_try"] <= 1.0


def test_two_processes_with_groups_spanning_both(tmp_path):
    """Two CPU processes (gloo): 20 rollouts per process with K = 8, so a group straddles the two.

    accelerate 1.15's `launch --cpu --num_processes 2` starts one process unless MPI is set up; its
    torchrun launcher (`--multi_gpu`) with our CPU default (`use_cpu`) gives the MULTI_CPU gloo group.
    """
    run = tmp_path / "two"
    per_device, k = 20, 8
    assert per_device % k != 0  # so at least one group's rollouts are split over both processes
    command = [
        str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        "-m", "tapo.cli", "train", "--config", "recipes/tiny-tapo.yaml", "--output-dir", str(run),
        "--set", f"trainer.per_device_train_batch_size={per_device}", "--set", f"trainer.num_generations={k}",
        "--set", "trainer.max_steps=2",
    ]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 2
    rows = metric_rows(run)
    assert [r["step"] for r in rows] == [1, 2]  # one writer: the main process
    queries_per_step = 2 * per_device // k
    for row in rows:  # selection ran on the gathered view of all 5 queries, not on one process's share
        assert round(row["tapo/eligible_frac"] * queries_per_step, 6) == int(round(row["tapo/eligible_frac"] * queries_per_step))
    records = [json.loads(line) for line in (run / "constructions.jsonl").read_text().splitlines()]
    assert records, "no constructed trajectory was logged"
    built = sum(round(r.get("tapo/built", 0.0)) for r in rows)
    assert len(records) == built  # logged once, not once per process
    assert all(r["reward"] == 1.0 for r in records)


def test_help_lists_every_command():
    result = tapo("--help", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    for command in ("demo", "train", "coldstart", "filter", "eval", "analyze", "compare", "report"):
        assert f"    {command}" in result.stdout, command
