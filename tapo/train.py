"""`tapo train`: build the model, data and trainer from a RunConfig, run, and leave a run directory.

RUN_DIR/
  config.yaml          the resolved configuration
  metrics.jsonl        one JSON row per optimizer step
  constructions.jsonl  (tapo) one record per constructed trajectory, with provenance
  checkpoint-N/        Hugging Face checkpoints (model, optimizer, RNG, trainer state)
  model/               the final model and tokenizer, loadable by `tapo train --set model.name=RUN_DIR/model`
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tapo.callbacks import METRICS_FILE, MetricsFileCallback, ProgressBarCallback, truncate_jsonl
from tapo.config import RunConfig, save_config

# Sensible small-run defaults; any of them can be set under `trainer:`.
TRAINER_DEFAULTS = {
    "logging_steps": 1,
    "save_strategy": "steps",
    "save_steps": 50,
    "report_to": [],
    "disable_tqdm": True,  # our own bar replaces the Trainer's
    "bf16": False,
    "epsilon_high": 0.28,  # DESIGN: clip 0.2 low, 0.28 high (DAPO), for both algorithms
}


def build_dataset(config: RunConfig):
    from tapo.data import load_records, to_prompt_dataset

    data = config.data
    records = load_records(
        data.source,
        split=data.split,
        problem_key=data.problem_key,
        answer_key=data.answer_key,
        limit=data.limit,
        **(
            {"n": data.n, "seed": data.data_seed, "n_steps": _steps(data.n_steps), "max_operand": data.max_operand}
            if data.source == "builtin:arithmetic"
            else {}
        ),
    )
    return to_prompt_dataset(records, instruction=data.instruction, system_prompt=data.system_prompt)


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def _steps(value):
    return tuple(value) if isinstance(value, list) else value


def build_trainer(config: RunConfig, *, run_dir: Path):
    """The configured trainer (TRL GRPOTrainer for grpo, TAPOTrainer for tapo) with our callbacks."""
    from trl import GRPOConfig, GRPOTrainer

    from tapo.models import load_policy
    from tapo.rewards import math_reward
    from tapo.trainer import TAPOConfig, TAPOTrainer

    model, tokenizer = load_policy(config.model.name, dtype=config.model.dtype, seed=config.seed)
    dataset = build_dataset(config)
    settings = {**TRAINER_DEFAULTS, **config.trainer, "output_dir": str(run_dir), "seed": config.seed}
    settings["logging_steps"] = 1  # metrics.jsonl promises one row per step
    if "use_cpu" not in config.trainer and not _has_accelerator():
        # Under a torchrun-style launch (`accelerate launch --multi_gpu`), accelerate builds the gloo
        # process group (MULTI_CPU) only when told the run is on CPU.
        settings["use_cpu"] = True
    if config.algorithm == "tapo":
        args, trainer_cls = TAPOConfig(**settings, **config.tapo), TAPOTrainer
    else:
        args, trainer_cls = GRPOConfig(**settings), GRPOTrainer
    trainer = trainer_cls(
        model=model, reward_funcs=[math_reward], args=args, train_dataset=dataset, processing_class=tokenizer
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for noisy in (PrinterCallback, ProgressCallback):  # they print raw log dicts; our bar replaces them
        trainer.remove_callback(noisy)
    trainer.add_callback(MetricsFileCallback(run_dir))
    trainer.add_callback(ProgressBarCallback())
    return trainer


def last_checkpoint(run_dir: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    found = get_last_checkpoint(str(run_dir)) if run_dir.is_dir() else None
    return Path(found) if found else None


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[-1])


def run_training(config: RunConfig, *, output_dir: str | None = None, resume: bool = False) -> Path:
    """Train as configured; with `resume`, continue from the last checkpoint with no step lost or repeated."""
    run_dir = Path(output_dir or config.output_dir)
    config = replace(config, output_dir=str(run_dir))
    checkpoint = last_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        raise FileNotFoundError(f"--resume: no checkpoint-N folder in {run_dir}")
    if not resume and (run_dir / METRICS_FILE).exists():
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --output-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        # Steps after the checkpoint were logged but their weights were lost: they are trained again.
        step = checkpoint_step(checkpoint)
        truncate_jsonl(run_dir / METRICS_FILE, after_step=step)
        truncate_jsonl(run_dir / "constructions.jsonl", after_step=step)
    save_config(config, run_dir / "config.yaml")
    trainer = build_trainer(config, run_dir=run_dir)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    trainer.save_model(str(run_dir / "model"))
    trainer.processing_class.save_pretrained(str(run_dir / "model"))
    return run_dir
