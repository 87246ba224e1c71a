"""Two TAPO training steps under each TRL option users combine with GRPO, each with an assertion that
fails if that option broke TAPO (not only that it runs). builtin:tiny-arith, HF generate, one process;
the two-process, vLLM and FSDP paths are in test_vllm_paths.py, test_fsdp_cpu.py and test_cli.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tapo.engine.batching import CONSTRUCTED, PADDING, ROW_KIND_KEY
from tapo.engine.trainer import TAPOTrainer
from tests.test_tapo_trainer import LOSS_TYPES, make_trainer


class RecordingTrainer(TAPOTrainer):
    """Keeps what every micro-batch's loss saw (instrumentation: the loss itself is the parent's)."""

    def _compute_loss(self, model, inputs):
        loss = super()._compute_loss(model, inputs)
        self.micro_batches = getattr(self, "micro_batches", [])
        self.micro_batches.append({"kinds": inputs[ROW_KIND_KEY].tolist(), "loss": float(loss.detach()),
                                   "ids": inputs["completion_ids"].tolist(), "step": self.state.global_step})
        return loss


def train(tmp_path: Path, **options) -> RecordingTrainer:
    settings = dict(max_steps=2, m_max=4, per_device_train_batch_size=16, logging_steps=1)
    settings.update(options)
    trainer = make_trainer(tmp_path, trainer_cls=RecordingTrainer, **settings)
    trainer.train()
    return trainer


def step_logs(trainer) -> list[dict]:
    return [row for row in trainer.state.log_history if "loss" in row]


def records(trainer) -> list[dict]:
    path = Path(trainer.args.output_dir) / "constructions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


PHASES = ("rollouts", "synthesis", "score", "ots")


def check_common(trainer, *, built: bool = True) -> None:
    logs = step_logs(trainer)
    assert trainer.state.global_step == 2 and len(logs) == 2
    for row in logs:  # every step, reused generations included, logs TAPO's counters and where its time went
        assert "tapo/eligible_frac" in row and "tapo/pairs" in row, row.keys()
        measured = [row[f"tapo/time/{phase}"] for phase in PHASES]
        assert min(measured) >= 0.0 and row["tapo/time/update"] >= 0.0
        assert row["tapo/time/update"] == pytest.approx(row["step_time"] - sum(measured), abs=1e-9)
    assert all(math.isfinite(m["loss"]) for m in trainer.micro_batches)
    trained = sum(kind == CONSTRUCTED for m in trainer.micro_batches for kind in m["kinds"])
    assert (trained > 0) is built, f"constructed rows trained: {trained}"


def test_steps_per_generation_with_accumulation(tmp_path):
    trainer = train(tmp_path, steps_per_generation=2, gradient_accumulation_steps=2)
    check_common(trainer)
    sizes = [len(m["kinds"]) for m in trainer.micro_batches]
    assert len(sizes) == 4 and len(set(sizes)) == 1, sizes  # appended rows keep TRL's split even


def test_num_iterations_reuses_the_constructed_rows(tmp_path):
    trainer = train(tmp_path, num_iterations=2)
    check_common(trainer)
    by_step = {}
    for m in trainer.micro_batches:
        rows = sorted(tuple(ids) for ids, kind in zip(m["ids"], m["kinds"]) if kind == CONSTRUCTED)
        by_step.setdefault(m["step"], []).extend(rows)
    assert len(by_step) == 2 and sorted(by_step[0]) == sorted(by_step[1])  # one generation, trained twice
    first, second = step_logs(trainer)
    assert first["tapo/pairs"] == second["tapo/pairs"]
    assert first["tapo/time/rollouts"] > 0 and first["tapo/time/synthesis"] > 0  # aligned: it runs, if briefly
    assert all(second[f"tapo/time/{phase}"] == 0.0 for phase in PHASES)  # the reused generation ran no phase
    assert second["tapo/time/update"] == second["step_time"]


def test_top_entropy_quantile(tmp_path):
    trainer = train(tmp_path, top_entropy_quantile=0.2)
    check_common(trainer)
    assert all("tapo/entropy" in row and "entropy" in row for row in step_logs(trainer))


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_every_loss_type(tmp_path, loss_type):
    trainer = train(tmp_path, loss_type=loss_type)
    check_common(trainer)
    if loss_type not in ("sapo", "vespo"):  # the loss types whose clip metrics TRL logs
        assert all("tapo/clip_ratio" in row for row in step_logs(trainer))


def test_sequence_level_importance_sampling(tmp_path):
    trainer = train(tmp_path, importance_sampling_level="sequence", loss_type="grpo")
    check_common(trainer)
    assert all(0.0 <= row["tapo/clip_ratio"] <= 1.0 for row in step_logs(trainer))


def test_kl_to_the_reference(tmp_path):
    trainer = train(tmp_path, beta=0.1)
    check_common(trainer)
    for row in step_logs(trainer):
        assert math.isfinite(row["kl"]) and math.isfinite(row["tapo/kl"]) and row["tapo/kl"] >= 0


def test_mask_truncated_completions(tmp_path):
    trainer = train(tmp_path, mask_truncated_completions=True, n_steps=(1, 2))
    check_common(trainer)
    assert all(r["negative"].strip() for r in records(trainer))


@pytest.mark.parametrize("scale_rewards", ["batch", "none"])
def test_scale_rewards(tmp_path, scale_rewards):
    trainer = train(tmp_path, scale_rewards=scale_rewards, ref_baseline="original")
    check_common(trainer)
    values = [r["advantage"] for r in records(trainer)]
    assert values and all(math.isfinite(v) for v in values)
    if scale_rewards == "none":  # centred only: |r - mean| <= 1 for 0/1 rewards
        assert all(abs(v) <= 1.0 for v in values)


def test_mixed_group_ablation(tmp_path):
    trainer = train(tmp_path, decoupled=False)
    check_common(trainer)


@pytest.mark.parametrize("construction", ["self", "splice"])
def test_model_strategies_generate_and_count(tmp_path, construction):
    """The tiny model cannot write the synthesis format: every pair is attempted (tokens generated) and
    counted as not built, each under its reason; no row of a failed construction is trained."""
    trainer = train(tmp_path, construction=construction, synthesis_extra_tokens=16)
    check_common(trainer, built=False)
    for row in step_logs(trainer):
        if row["tapo/pairs"] > 0:
            assert row["tapo/synthesis_tokens"] > 0 and row["tapo/parsed_frac"] == 0.0
            failed = {k.removeprefix("tapo/failed/"): v for k, v in row.items() if k.startswith("tapo/failed/")}
            assert sum(failed.values()) == row["tapo/pairs"] and "built" not in failed
    assert all(kind in (0, PADDING) for m in trainer.micro_batches for kind in m["kinds"])


# synthesis_schedule deferred: splice located by surprise at a threshold this low cuts nearly every y- of the
# tiny model, and its continuations are kept when they run out of budget, so every generation builds some.
DEFERRED = dict(construction="splice", splice_locate="surprise", splice_surprise_threshold=0.01,
                keep_truncated_constructions=True, synthesis_schedule="deferred")


@pytest.mark.parametrize("options, generations", [
    (dict(steps_per_generation=2, gradient_accumulation_steps=2, max_steps=3), [0, 1, 2]),
    (dict(num_iterations=2, max_steps=4), [0, 2]),  # a generation every 2 steps, trained twice
    (dict(beta=0.1, max_steps=3), [0, 1, 2]),
    (dict(loss_type="dr_grpo", max_steps=3), [0, 1, 2]),
], ids=["steps_per_generation", "num_iterations", "beta", "dr_grpo"])
def test_deferred_schedule_under(tmp_path, options, generations):
    """The constructions a generation's pairs make are trained at the next generation (and as often as its
    rollouts); the last generation's pairs are dropped and counted; every loss is finite."""
    trainer = train(tmp_path, **DEFERRED, **options)
    assert all(math.isfinite(m["loss"]) for m in trainer.micro_batches)
    trained = {}
    for m in trainer.micro_batches:
        trained[m["step"]] = trained.get(m["step"], 0) + sum(kind == CONSTRUCTED for kind in m["kinds"])
    first, *later = generations
    assert trained[first] == 0 and all(trained[s] == 0 for s in range(first, later[0]))  # chosen, not yet built
    assert all(trained[s] > 0 for s in range(later[0], trainer.state.global_step)), trained
    logs = step_logs(trainer)
    last = logs[generations[-1]]
    assert last["tapo/deferred_dropped"] == last["tapo/pairs"] > 0 and last["tapo/pending"] == 0
    steps_with_records = sorted({r["step"] for r in records(trainer)})
    assert steps_with_records == [g + 1 for g in later], steps_with_records  # records carry the 1-based step
    if options.get("beta"):
        for row in logs[later[0]:]:
            assert math.isfinite(row["tapo/kl"]) and row["tapo/kl"] >= 0
