"""`tapo coldstart train`: supervised fine-tuning on cold-start data with TRL's `SFTTrainer`.

The data set is the JSONL of `tapo coldstart build`: conversational prompt-completion rows, which
TRL tokenizes with the chat template and masks so that only the completion (the assistant turn)
carries loss (`completion_only_loss`; prompt tokens get label -100). Defaults are the paper's
(lr 5e-6, 50 warm-up steps, cosine decay, 3 epochs); the config's `sft` section overrides any
SFTConfig field.

DIR/
  config.yaml       the resolved cold-start config (plus the data path)
  metrics.jsonl     one JSON row per optimizer step
  checkpoint-N/     Hugging Face checkpoints; `--resume` continues from the last one
  model/            the fine-tuned model and tokenizer: `tapo train --set model.name=DIR/model`
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from tapo.coldstart.config import ColdStartConfig, sft_settings
from tapo.config import save_config
from tapo.data.datasets import DataError, text_lines

MODEL_DIR = "model"
CONFIG_FILE = "config.yaml"


def read_sft_rows(path: str | Path) -> list[dict]:
    """The prompt / completion of every row of a cold-start JSONL; errors name the file, row and key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cold-start data not found: {path} (make it with `tapo coldstart build`)")
    rows = []
    for line_no, line in text_lines(path):  # UTF-8 (a BOM is fine); another encoding names the row
        if not line.strip():
            continue
        where = f"{path} row {line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{where}: invalid JSON: {error.msg}") from None
        for key in ("prompt", "completion"):
            value = row.get(key) if isinstance(row, dict) else None
            if not isinstance(value, list) or not value or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in value
            ):
                raise DataError(f"{where}: '{key}' must be a non-empty list of chat messages (role, content)")
        if row["completion"][-1]["role"] != "assistant":
            raise DataError(f"{where}: the completion's last message must be the assistant's")
        rows.append({"prompt": row["prompt"], "completion": row["completion"]})
    if not rows:
        raise DataError(f"{path}: no examples")
    return rows


def build_sft_trainer(config: ColdStartConfig, *, data: str | Path, output_dir: str | Path):
    """The configured `SFTTrainer` over the cold-start data (model from `config.model`)."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from tapo.engine.callbacks import SFT_BAR_FIELDS, MetricsFileCallback, ProgressBarCallback
    from tapo.engine.run import _has_accelerator
    from tapo.models import load_policy

    model, tokenizer = load_policy(config.model.name, dtype=config.model.dtype, seed=config.seed)
    tokenizer.padding_side = "right"  # training pads on the right; load_policy sets left for generation
    rows = read_sft_rows(data)
    if config.build.chat_template_kwargs:  # TRL applies a row's chat_template_kwargs when it tokenizes it
        rows = [{**row, "chat_template_kwargs": config.build.chat_template_kwargs} for row in rows]
    dataset = datasets.Dataset.from_list(rows)
    settings = sft_settings(config, output_dir=output_dir)
    if "dataloader_pin_memory" not in config.sft and not _has_accelerator():
        settings["dataloader_pin_memory"] = False  # nothing to pin memory for (torch warns on every loader)
    args = SFTConfig(**settings)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    for noisy in (PrinterCallback, ProgressCallback):  # they print raw log dicts; our bar replaces them
        trainer.remove_callback(noisy)
    trainer.add_callback(MetricsFileCallback(output_dir))
    trainer.add_callback(ProgressBarCallback(desc="cold start SFT", fields=SFT_BAR_FIELDS))
    return trainer


def refuse_existing_run(run_dir: Path) -> None:
    """A FileExistsError when `run_dir` holds a cold-start run (its model or a checkpoint): a new one would
    overwrite it. `coldstart run` asks before it builds, so the data that run trained on is not rebuilt."""
    from tapo.engine.run import last_checkpoint

    if (run_dir / MODEL_DIR).exists() or last_checkpoint(run_dir) is not None:
        raise FileExistsError(f"{run_dir} already holds a cold-start run; pass --resume or choose another --output-dir")


def _note(message: str) -> None:
    print(f"tapo coldstart: {message}", file=sys.stderr, flush=True)


def run_sft(config: ColdStartConfig, *, data: str | Path, output_dir: str | Path | None = None,
            resume: bool = False) -> Path:
    """Fine-tune and save DIR/model; with `resume`, continue from the last checkpoint in DIR."""
    from tapo.engine.callbacks import METRICS_FILE, truncate_jsonl
    from tapo.engine.run import checkpoint_step, last_checkpoint

    run_dir = Path(output_dir or config.output_dir)
    config = replace(config, output_dir=str(run_dir))
    if resume and (run_dir / MODEL_DIR).is_dir():  # saved whole at the end: the run finished
        _note(f"{run_dir} is already complete ({MODEL_DIR}/ saved); nothing to do")
        return run_dir
    checkpoint = last_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:  # cut off before its first checkpoint
        if not (run_dir / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"--resume: {run_dir} holds no cold-start run to resume (no {CONFIG_FILE}, "
                                    "no checkpoint-N folder)")
        _note(f"no checkpoint in {run_dir} yet: the fine-tuning starts again from step 0")
    if checkpoint is not None:  # as `tapo train --resume`: the steps to come train with the settings of those before
        from tapo.coldstart.build import settings_changes

        changes = settings_changes(run_dir / CONFIG_FILE, config)
        if changes:
            raise ValueError(f"--resume {run_dir}: the settings differ from {CONFIG_FILE}, which trained steps up to "
                             f"{checkpoint_step(checkpoint)}: {'; '.join(changes)}. Resume with the same config and "
                             "--set values, or start a new run in another --output-dir")
    if not resume:
        refuse_existing_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        truncate_jsonl(run_dir / METRICS_FILE, after_step=checkpoint_step(checkpoint))
    elif (run_dir / METRICS_FILE).exists():
        (run_dir / METRICS_FILE).unlink()
    save_config(config, run_dir / CONFIG_FILE)
    (run_dir / "data.json").write_text(json.dumps({"data": str(data)}) + "\n")
    trainer = build_sft_trainer(config, data=data, output_dir=run_dir)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    # Saved whole, then renamed: DIR/model exists only complete (what `tapo demo` reads as "done").
    partial = run_dir / (MODEL_DIR + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    trainer.save_model(str(partial))
    tokenizer = trainer.processing_class
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(str(partial))
    os.replace(partial, run_dir / MODEL_DIR)
    return run_dir
