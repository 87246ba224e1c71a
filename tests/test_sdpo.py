"""`algorithm: sdpo` (issue 15, item 1): TRL's SDPOTrainer through `tapo train` on recipes/tiny-sdpo.yaml.

One real 3-step run (a checkpoint at each step) is shared by the module: its metrics carry SDPO's own
keys and ours, the policy and the EMA teacher moved as TRL's EMA says, the run directory, card and report
are SDPO's; a resume from checkpoint-2 ends with the same weights (and does not without the saved teacher);
the gold answer reaches the teacher as privileged context when asked; two processes share groups.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from conftest import ROOT, run_tapo

RECIPE = ROOT / "recipes" / "tiny-sdpo.yaml"
TEACHER = "sdpo_teacher.safetensors"
SDPO_KEYS = ("sdpo/distillation_loss", "self_distillation/reprompt_sample_fraction",
             "self_distillation/success_group_fraction", "self_distillation/reward_mean", "step_time")


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def config(*overrides: str):
    from tapo.config import load_config

    return load_config(RECIPE, list(overrides))


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in keys)


@pytest.fixture(scope="module")
def sdpo_run(tmp_path_factory) -> Path:
    """A real `tapo train --config recipes/tiny-sdpo.yaml` (3 steps). Read it, don't write into it."""
    run = tmp_path_factory.mktemp("sdpo") / "tiny-sdpo"
    result = run_tapo("train", "--config", str(RECIPE), "--output-dir", str(run))
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def test_metrics_carry_sdpos_own_keys_and_the_shared_ones(sdpo_run):
    logged = rows(sdpo_run)
    assert [r["step"] for r in logged] == [1, 2, 3]
    for row in logged:
        for key in SDPO_KEYS:
            assert key in row, key
        assert row["step_time"] > 0
        assert row["reward"] == row["self_distillation/reward_mean"]  # every algorithm's rows share these two
        assert row["accuracy"] == row["self_distillation/rewards/math_reward"]
    # the tiny arithmetic model solves some problems, so rollouts had a successful sibling and were distilled
    assert any(r["self_distillation/reprompt_sample_fraction"] > 0 and r["sdpo/distillation_loss"] != 0 for r in logged)
    assert (sdpo_run / "train_summary.json").is_file() and not (sdpo_run / "constructions.jsonl").exists()


def test_policy_moved_and_the_teacher_follows_it_by_trls_ema(sdpo_run):
    """teacher_k = (1 - rate) teacher_(k-1) + rate * policy_k, from the base model: what each checkpoint saved."""
    from tapo.models import load_policy

    model, _ = load_policy("builtin:tiny-arith")
    teacher = {k: v.detach().clone() for k, v in model.state_dict().items()}
    base = dict(teacher)
    rate = config().sdpo["teacher_update_rate"]
    for step in (1, 2, 3):
        policy = weights(sdpo_run / f"checkpoint-{step}" / "model.safetensors")
        saved = weights(sdpo_run / f"checkpoint-{step}" / TEACHER)
        teacher = {k: (1 - rate) * teacher[k] + rate * policy[k] for k in policy}
        assert max_diff(saved, teacher, policy) < 5e-7, step
        assert max_diff(saved, base, policy) > 1e-6  # the teacher did move
    final = weights(sdpo_run / "model" / "model.safetensors")
    assert max_diff(final, base, final) > 1e-5  # training changed the policy
    assert max_diff(final, policy, final) == 0.0  # model/ is the last checkpoint's policy, not its teacher


def test_run_directory_card_and_report_are_sdpos(sdpo_run, tmp_path):
    from tapo.cli import main

    assert not (sdpo_run / "model" / TEACHER).exists()  # training state stays in the checkpoints
    card = (sdpo_run / "model" / "README.md").read_text()
    for fact in ("SDPO", "2601.20802", "teacher: `ema`", "builtin:tiny-arith", "after 3 of 3"):
        assert fact in card, fact
    saved = (sdpo_run / "config.yaml").read_text()
    assert "algorithm: sdpo" in saved and "teacher_model_kind: ema" in saved
    copy = Path(shutil.copytree(sdpo_run, tmp_path / "run"))
    assert main(["report", str(copy)]) == 0
    page = (copy / "report.html").read_text()
    for title in ("Self-distillation loss (SDPO)", "Rollouts distilled", "Accuracy", "Reward"):
        assert title in page, title
    assert "Construction pairs" not in page  # no TAPO chart for a run without TAPO's metrics


@pytest.fixture
def at_step_2(sdpo_run, tmp_path) -> Path:
    """A copy of the run as a kill after checkpoint-2 leaves it (step 3 logged, its checkpoint and model/ not)."""
    run = Path(shutil.copytree(sdpo_run, tmp_path / "run"))
    shutil.rmtree(run / "checkpoint-3")
    shutil.rmtree(run / "model")
    return run


def _resume(run: Path) -> None:
    from tapo.engine.run import run_training

    run_training(config(), output_dir=str(run), resume=True)


def test_resume_continues_from_the_checkpoint_with_its_teacher(sdpo_run, at_step_2):
    _resume(at_step_2)
    assert [r["step"] for r in rows(at_step_2)] == [1, 2, 3]
    final = weights(at_step_2 / "model" / "model.safetensors")
    uninterrupted = weights(sdpo_run / "model" / "model.safetensors")
    assert max_diff(final, uninterrupted, final) < 1e-7
    assert max_diff(weights(at_step_2 / "checkpoint-3" / TEACHER), weights(sdpo_run / "checkpoint-3" / TEACHER),
                    final) < 1e-7


def test_without_the_saved_teacher_a_resume_would_train_another_step(sdpo_run, at_step_2, monkeypatch):
    """The control of the test above: TRL alone rebuilds the teacher from the base model on resume."""
    from tapo.engine.sdpo import SDPORunTrainer

    monkeypatch.setattr(SDPORunTrainer, "_load_teacher", lambda self, checkpoint: None)
    _resume(at_step_2)
    final = weights(at_step_2 / "model" / "model.safetensors")
    assert max_diff(final, weights(sdpo_run / "model" / "model.safetensors"), final) > 1e-6


def test_an_in_memory_model_gets_a_teacher_equal_to_it(tmp_path):
    """builtin:tiny is built in memory (no folder): TRL builds its teacher from a temporary one."""
    from tapo.engine.run import build_trainer

    trainer = build_trainer(config("model.name=builtin:tiny"), run_dir=tmp_path)
    student, teacher = trainer.model.state_dict(), trainer.teacher_model.state_dict()
    assert trainer.teacher_model is not trainer.model and set(student) == set(teacher)
    assert all(torch.equal(student[k], teacher[k]) for k in student)
    assert trainer.model.config._name_or_path == ""  # the temporary folder is gone and not remembered


def test_resume_names_changed_sdpo_settings_and_not_their_defaults():
    """`--resume` refuses changed settings by name; SDPOConfig's defaults (sdpo and trainer keys) are no change."""
    from tapo.engine.run import config_changes

    base = config()
    assert config_changes(base, config("sdpo.distillation_is_clip=2.0", "trainer.max_prompt_length=512",
                                       "trainer.learning_rate=1.0e-4")) == []
    assert config_changes(base, config("sdpo.teacher_model_kind=live")) == ["sdpo.teacher_model_kind: ema -> live"]
    assert config_changes(base, config("sdpo.teacher_sync_steps=2")) == ["sdpo.teacher_sync_steps: 1 (default) -> 2"]
    assert config_changes(base, config("trainer.max_prompt_length=null")) == [
        "trainer.max_prompt_length: 512 (default) -> null"]


class _TeacherPrompts(TrainerCallback):
    """Records the teacher's prompts (SDPOTrainer's own callback event)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.texts = tokenizer, []

    def on_teacher_context_built(self, args, state, control, teacher_input_ids=None, **kwargs):
        self.texts += self.tokenizer.batch_decode(teacher_input_ids, skip_special_tokens=True)


def test_the_gold_answer_reaches_the_teacher_as_privileged_context(tmp_path):
    from tapo.engine.run import build_trainer

    trainer = build_trainer(config("sdpo.include_environment_feedback=true", "trainer.max_steps=1"), run_dir=tmp_path)
    first = trainer.train_dataset[0]
    assert first["privileged_context"] == f"The correct final answer is {first['answer']}."
    prompts = _TeacherPrompts(trainer.processing_class)
    trainer.add_callback(prompts)
    trainer.train()
    log = next(entry for entry in trainer.state.log_history if "sdpo/distillation_loss" in entry)
    assert log["self_distillation/feedback_used_fraction"] == 1.0
    assert log["self_distillation/reprompt_sample_fraction"] == 1.0  # every rollout is distilled now
    answers = {row["answer"] for row in trainer.train_dataset}
    assert prompts.texts and all("The correct final answer is" in text for text in prompts.texts)
    assert all(any(f"answer is {a}." in text for a in answers) for text in prompts.texts)


def test_without_feedback_the_data_has_no_privileged_context(tmp_path):
    from tapo.engine.run import build_trainer

    trainer = build_trainer(config(), run_dir=tmp_path)
    assert "privileged_context" not in trainer.train_dataset.column_names  # TRL would warn it is ignored


class _Generations(TrainerCallback):
    """Counts SDPOTrainer's generations (its own callback event, once per generation batch built)."""

    def __init__(self):
        self.count = 0

    def on_generation_batch_built(self, args, state, control, **kwargs):
        self.count += 1


def _train_two_steps(tmp_path, *overrides: str):
    from tapo.engine.run import build_trainer

    trainer = build_trainer(config("trainer.max_steps=2", *overrides), run_dir=tmp_path)
    generations = _Generations()
    trainer.add_callback(generations)
    trainer.train()
    return [entry for entry in trainer.state.log_history if "loss" in entry], generations.count


def test_steps_per_generation_with_accumulation(tmp_path):
    """One generation of 2 x 32 rollouts per optimizer step, split over its 2 micro-steps: one row each step."""
    logged, generations = _train_two_steps(tmp_path, "trainer.steps_per_generation=2",
                                           "trainer.gradient_accumulation_steps=2")
    assert generations == 2 and len(logged) == 2
    for row in logged:
        assert row["step_time"] > 0 and row["completions/mean_length"] > 0 and "sdpo/distillation_loss" in row


def test_num_iterations_reuses_the_generation_and_logs_it_again(tmp_path):
    """num_iterations 2: step 2 trains on step 1's rollouts (TRL's buffer) and logs that generation's metrics."""
    logged, generations = _train_two_steps(tmp_path, "trainer.num_iterations=2")
    assert generations == 1 and len(logged) == 2
    first, second = logged
    for key in ("self_distillation/reward_mean", "self_distillation/reprompt_sample_fraction", "completions/mean_length"):
        assert second[key] == first[key], key
    assert second["sdpo/distillation_loss"] != first["sdpo/distillation_loss"]  # trained again, by a moved policy


def test_two_processes_with_groups_spanning_both(tmp_path):
    """Two CPU processes (gloo), 20 rollouts each with K = 8: SDPO finds successful siblings on the gathered
    batch, so its group counts are fifths of the 5 groups, not halves of a process's 2."""
    run = tmp_path / "two"
    command = [
        str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        "-m", "tapo.cli", "train", "--config", str(RECIPE), "--output-dir", str(run),
        "--set", "trainer.per_device_train_batch_size=20", "--set", "trainer.max_steps=2",
    ]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 2
    logged = rows(run)
    assert [r["step"] for r in logged] == [1, 2]  # one writer: the main process
    for row in logged:
        groups = row["self_distillation/success_group_fraction"] * 5
        assert abs(groups - round(groups)) < 1e-6, row["self_distillation/success_group_fraction"]
    assert (run / "checkpoint-2" / TEACHER).is_file()


def test_doctests():
    import doctest

    import tapo.engine.sdpo as module

    result = doctest.testmod(module)
    assert result.attempted and not result.failed
