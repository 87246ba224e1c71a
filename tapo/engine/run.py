"""`tapo train`: build the model, data and trainer from a RunConfig, run, and leave a run directory.

RUN_DIR/
  config.yaml              the resolved configuration (of the first steps, when settings changed on resume)
  config.resume-N.yaml     the settings of the steps after N, when a resume changed them (--allow-config-change)
  metrics.jsonl            one JSON row per optimizer step
  constructions.jsonl      (tapo) one record per constructed trajectory, with provenance
  train_summary.json       the Trainer's end-of-training summary (runtime, world size, last step)
  README.md                the model card of the run (also in model/ and each checkpoint-N/)
  checkpoint-N/            Hugging Face checkpoints (model, optimizer, RNG, trainer state, model card; for sdpo
                           with an EMA teacher also sdpo_teacher.safetensors, the teacher loaded on resume)
  model/                   the final model, tokenizer and card, loadable by `tapo train --set model.name=RUN_DIR/model`

`--resume` continues from the last complete checkpoint with no step lost or repeated; a finished
run resumes to "already complete" and only saves what is missing (model/, cards).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import MISSING, fields, replace
from pathlib import Path

from tapo.engine.callbacks import METRICS_FILE, MetricsFileCallback, ProgressBarCallback, metric_row, truncate_jsonl
from tapo.engine.interrupts import interrupts_kept
from tapo.config import ConfigError, RunConfig, load_config, save_config
from tapo.engine.model_card import CARD_FILE, RunCard, with_run_card
from tapo.report.data import CONSTRUCTIONS_FILE

CONFIG_FILE = "config.yaml"
MODEL_DIR = "model"
TRAINER_STATE = "trainer_state.json"  # written last into a checkpoint: a checkpoint without it is incomplete
RESUME_CONFIG = re.compile(r"^config\.resume-(\d+)\.yaml$")
# Checkpoint files that are training state, not part of a saved model (model/ is a checkpoint without them).
TRAINING_STATE_FILES = re.compile(r"^(optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*\.pth|trainer_state\.json|"
                                  r"entropy_ctrl_state\.json|sdpo_teacher\.safetensors|README\.md)$")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin")


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def build_trainer(config: RunConfig, *, run_dir: Path):
    """The configured trainer (TRL GRPOTrainer for grpo, TAPOTrainer for tapo, TRL's SDPOTrainer for sdpo, through
    `tapo.engine.sdpo`) with our callbacks and model card."""
    from trl import GRPOConfig, GRPOTrainer

    from tapo.data import build_dataset
    from tapo.engine.arguments import TRAINER_DEFAULTS, checkpointing_by_its_name
    from tapo.models import load_policy
    from tapo.rewards import configure_checking, math_reward
    from tapo.engine.trainer import TAPOConfig, TAPOTrainer

    configure_checking(timeout_s=config.reward.timeout_s, workers=config.reward.workers)
    model, tokenizer = load_policy(config.model.name, dtype=config.model.dtype, seed=config.seed)
    dataset = build_dataset(config.data)
    settings = checkpointing_by_its_name(
        {**TRAINER_DEFAULTS, **config.trainer, "output_dir": str(run_dir), "seed": config.seed}
    )
    settings["logging_steps"] = 1  # metrics.jsonl promises one row per step
    if "use_cpu" not in config.trainer and not _has_accelerator():
        # Under a torchrun-style launch (`accelerate launch --multi_gpu`), accelerate builds the gloo
        # process group (MULTI_CPU) only when told the run is on CPU.
        settings["use_cpu"] = True
    if "dataloader_pin_memory" not in config.trainer and not _has_accelerator():
        settings["dataloader_pin_memory"] = False  # nothing to pin memory for (torch warns on every loader)
    if config.algorithm == "tapo":
        args, trainer_cls = TAPOConfig(**settings, **config.tapo), TAPOTrainer
    elif config.algorithm == "sdpo":
        from tapo.engine.sdpo import SDPOConfig, SDPORunTrainer, with_privileged_context

        args, trainer_cls = SDPOConfig(**settings, **config.sdpo), SDPORunTrainer
        if args.include_environment_feedback:  # the gold answer is the privileged context (tapo.engine.sdpo)
            dataset = with_privileged_context(dataset)
    else:
        args, trainer_cls = GRPOConfig(**settings), GRPOTrainer
    queries = args.generation_batch_size // args.num_generations  # over every process of the launch
    if len(dataset) < queries:  # TRL's sampler drops an incomplete batch: 0 steps, the start model published
        raise ConfigError(
            f"data.source: {config.data.source} has {len(dataset)} row(s), fewer than the {queries} queries of one "
            f"generation ({args.generation_batch_size} completions on {args.world_size} process(es) / "
            f"num_generations {args.num_generations}), so training would run 0 steps"
        )
    trainer = with_run_card(trainer_cls)(
        model=model, reward_funcs=[math_reward], args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.run_card = RunCard(config=config, run_dir=Path(run_dir), max_steps=planned_steps(config))
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for noisy in (PrinterCallback, ProgressCallback):  # they print raw log dicts; our bar replaces them
        trainer.remove_callback(noisy)
    trainer.add_callback(MetricsFileCallback(run_dir))
    trainer.add_callback(ProgressBarCallback(desc=config.algorithm))
    return trainer


# ---- checkpoints ---------------------------------------------------------------------------------


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[-1])


def _checkpoints(run_dir: Path) -> list[Path]:
    """checkpoint-N folders, oldest first (complete or not)."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(found, key=checkpoint_step)


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint: one cut short by an interruption has no trainer_state.json yet."""
    complete = [p for p in _checkpoints(Path(run_dir)) if (p / TRAINER_STATE).is_file()]
    return complete[-1] if complete else None


def read_trainer_state(checkpoint: Path) -> dict:
    path = checkpoint / TRAINER_STATE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {error.lineno}: invalid JSON ({error.msg})") from None


def planned_steps(config: RunConfig) -> int | None:
    steps = config.trainer.get("max_steps", -1)
    return steps if isinstance(steps, int) and steps > 0 else None


# ---- settings across resumes ---------------------------------------------------------------------


def config_history(run_dir: Path) -> list[tuple[int, Path]]:
    """(step the settings apply after, file): config.yaml at 0, then each config.resume-N.yaml."""
    history = [(0, run_dir / CONFIG_FILE)] if (run_dir / CONFIG_FILE).is_file() else []
    resumed = [(int(m.group(1)), p) for p in run_dir.glob("config.resume-*.yaml") if (m := RESUME_CONFIG.match(p.name))]
    return history + sorted(resumed)


def config_in_effect(run_dir: Path, *, step: int) -> Path | None:
    """The settings file the steps up to `step` were trained with (the last one starting before it)."""
    earlier = [path for at, path in config_history(run_dir) if at == 0 or at < step]
    return earlier[-1] if earlier else None


def _defaults(algorithm: str) -> dict[str, object]:
    """Effective values of unset trainer/tapo/sdpo keys, so `--set trainer.beta=0.0` (the default) is no change."""
    from tapo.engine.arguments import TRAINER_DEFAULTS, engine_config_class, sdpo_option_names, tapo_option_names

    own = {**{key: "tapo" for key in tapo_option_names()}, **{key: "sdpo" for key in sdpo_option_names()}}
    values = {}
    for f in fields(engine_config_class(algorithm)):
        if f.default is not MISSING:
            value = f.default
        else:
            value = f.default_factory() if f.default_factory is not MISSING else None
        values[f"{own.get(f.name, 'trainer')}.{f.name}"] = value
    values.update({f"trainer.{key}": value for key, value in TRAINER_DEFAULTS.items()})
    return values


def _flatten(mapping: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif not isinstance(value, dict):
            flat[f"{prefix}{key}"] = value
    return flat


def _shown(value) -> str:
    return value if isinstance(value, str) and value else json.dumps(value)


def config_changes(old: RunConfig, new: RunConfig) -> list[str]:
    """`dotted.key: old -> new` for every setting that differs; the run directory (`output_dir`) is no setting."""
    before, after = _flatten(old.to_dict()), _flatten(new.to_dict())
    for flat in (before, after):
        flat.pop("output_dir", None)
    defaults = _defaults(new.algorithm) if before.keys() != after.keys() else {}
    changes = []
    for key in sorted(before.keys() | after.keys()):
        if key in before and key in after:
            if before[key] != after[key]:
                changes.append(f"{key}: {_shown(before[key])} -> {_shown(after[key])}")
            continue
        default = defaults.get(key, MISSING)
        given = before.get(key, after.get(key))
        if default is MISSING or default != given:
            unset = "unset" if default is MISSING else f"{_shown(default)} (default)"
            old_text, new_text = (_shown(given), unset) if key in before else (unset, _shown(given))
            changes.append(f"{key}: {old_text} -> {new_text}")
    return changes


def _load_saved_config(path: Path) -> RunConfig:
    try:
        return load_config(path)
    except ConfigError as error:
        raise ConfigError(f"cannot read the run's saved settings: {error}") from None


def history_changes(run_dir: Path) -> tuple[tuple[int, tuple[str, ...]], ...]:
    """For the model card: (step, changes) of each config.resume-N.yaml against the settings before it."""
    history, out = config_history(run_dir), []
    for (_, before), (at, after) in zip(history, history[1:]):
        out.append((at, tuple(config_changes(_load_saved_config(before), _load_saved_config(after)))))
    return tuple(out)


# ---- running -------------------------------------------------------------------------------------


def resolve_run_dir(config: RunConfig, output_dir: str | None = None) -> Path:
    return Path(output_dir or config.output_dir)


def is_main_process() -> bool:
    """Rank 0 of a launch (or the only process); only it edits the run directory's files."""
    return os.environ.get("RANK", "0") == "0"


def _note(text: str) -> None:
    if is_main_process():
        print(f"tapo train: {text}", file=sys.stderr, flush=True)


def _holds_run(run_dir: Path) -> bool:
    return (run_dir / METRICS_FILE).exists() or (run_dir / MODEL_DIR).exists() or bool(_checkpoints(run_dir))


def run_training(config: RunConfig, *, output_dir: str | None = None, resume: bool = False,
                 allow_config_change: bool = False) -> Path:
    """Train as configured; with `resume`, continue from the last checkpoint with no step lost or repeated.

    A resume refuses settings that differ from those the checkpoint was trained with (naming each
    dotted key) unless `allow_config_change`; then config.yaml keeps the earlier settings and
    config.resume-N.yaml records the new ones. A finished run resumes to "already complete".
    """
    run_dir = resolve_run_dir(config, output_dir)
    config = replace(config, output_dir=str(run_dir))
    if not resume:
        if _holds_run(run_dir):
            raise FileExistsError(
                f"{run_dir} already holds a run; pass --resume to continue it or choose another --output-dir"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / CONFIG_FILE)
        return _train(config, run_dir=run_dir, checkpoint=None)
    checkpoint = last_checkpoint(run_dir)
    if checkpoint is None:
        return _restart(config, run_dir=run_dir)
    step = checkpoint_step(checkpoint)
    state = read_trainer_state(checkpoint)
    earlier = config_in_effect(run_dir, step=step)
    trained_with = _load_saved_config(earlier) if earlier is not None else config
    changes = config_changes(trained_with, config)
    if changes and not allow_config_change:
        raise ConfigError(
            f"--resume {run_dir}: the settings differ from {earlier.name}, which trained steps up to {step}: "
            f"{'; '.join(changes)}. Resume with the same config and --set values, or pass --allow-config-change "
            f"to continue with the new ones (kept in config.resume-{step}.yaml)"
        )
    target = planned_steps(config) or state.get("max_steps") or 0
    if step >= target > 0:
        _finish_complete(trained_with, run_dir=run_dir, checkpoint=checkpoint, state=state, target=target)
        return run_dir
    if is_main_process():
        _prepare_resume(config, run_dir=run_dir, checkpoint=checkpoint, state=state, trained_with=trained_with,
                        changes=changes, missing_config=earlier is None)
    return _train(config, run_dir=run_dir, checkpoint=checkpoint)


def _restart(config: RunConfig, *, run_dir: Path) -> Path:
    """`--resume` of a run cut off before its first checkpoint: nothing of it survives, so it starts again."""
    if not (run_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"--resume: {run_dir} holds no run to resume (no {CONFIG_FILE}, no checkpoint-N folder)"
        )
    if (run_dir / MODEL_DIR).is_dir():  # finished with no checkpoint kept (save_strategy: no): model/ is saved whole
        _note(f"{run_dir} is already complete ({MODEL_DIR}/ saved, no checkpoint to resume from); nothing to do")
        return run_dir
    _note(f"no checkpoint in {run_dir} yet: training starts again from step 0")
    if is_main_process():
        for name in (METRICS_FILE, CONSTRUCTIONS_FILE, "train_summary.json"):
            (run_dir / name).unlink(missing_ok=True)
        for _, path in config_history(run_dir)[1:]:
            path.unlink()
        for partial in _checkpoints(run_dir):
            shutil.rmtree(partial)
        save_config(config, run_dir / CONFIG_FILE)
    return _train(config, run_dir=run_dir, checkpoint=None)


def _prepare_resume(config: RunConfig, *, run_dir: Path, checkpoint: Path, state: dict, trained_with: RunConfig,
                    changes: list[str], missing_config: bool) -> None:
    """Make the run directory what it was at `checkpoint`: logs, settings history, cards, no stale files."""
    step = checkpoint_step(checkpoint)
    if not (checkpoint / CARD_FILE).is_file():  # cut off between its trainer state and its card
        _run_card(trained_with, run_dir=run_dir).write(checkpoint, step=step)
    for partial in _checkpoints(run_dir):
        if checkpoint_step(partial) > step:  # cut short while being saved: trainer_state.json is written last
            shutil.rmtree(partial)
            _note(f"removed {partial.name}, which an interruption left incomplete")
    _repair_logs(run_dir, step=step, state=state)
    for at, path in config_history(run_dir)[1:]:
        if at >= step:  # the settings of steps that were lost
            path.unlink()
    if missing_config:
        save_config(config, run_dir / CONFIG_FILE)
    elif changes:
        save_config(config, run_dir / f"config.resume-{step}.yaml")
        _note(f"continuing after step {step} with changed settings ({'; '.join(changes)}); "
              f"{CONFIG_FILE} keeps the earlier ones, config.resume-{step}.yaml the new ones")
    # model/ says "finished"; this run goes on and saves model/ again at its end (a checkpoint keeps the old one).
    _remove_model(run_dir)
    shutil.rmtree(run_dir / (MODEL_DIR + ".partial"), ignore_errors=True)


def _repair_logs(run_dir: Path, *, step: int, state: dict) -> None:
    """The logs as they were at the checkpoint: rows of later steps dropped (those steps are trained again),
    a cut-off last line dropped, and metrics rows lost to a cut put back from the checkpoint's log history."""
    history = {entry["step"]: metric_row(entry["step"], entry) for entry in state.get("log_history", [])
               if isinstance(entry.get("step"), int) and "train_runtime" not in entry}
    truncate_jsonl(run_dir / METRICS_FILE, after_step=step, restore=history)
    truncate_jsonl(run_dir / CONSTRUCTIONS_FILE, after_step=step)


def _run_card(config: RunConfig, *, run_dir: Path, target: int | None = None) -> RunCard:
    return RunCard(config=config, run_dir=run_dir, max_steps=target or planned_steps(config),
                   changes=history_changes(run_dir))


def _train(config: RunConfig, *, run_dir: Path, checkpoint: Path | None) -> Path:
    trainer = build_trainer(config, run_dir=run_dir)
    trainer.run_card = _run_card(config, run_dir=run_dir)
    try:
        with interrupts_kept(trainer):  # a Ctrl-C swallowed by a destructor still stops the run
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except BaseException:
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, ProgressBarCallback):
                callback.close()
        raise
    partial = run_dir / (MODEL_DIR + ".partial")
    trainer.save_model(str(partial))
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(partial))
        _publish_model(partial, run_dir=run_dir, card=trainer.run_card, step=trainer.state.global_step)
    return run_dir


def _publish_model(partial: Path, *, run_dir: Path, card: RunCard, step: int) -> None:
    """Card in, then rename: model/ exists only complete, which is what `make demo` reads as "finished"."""
    card.write(partial, step=step, label=MODEL_DIR)
    _remove_model(run_dir)
    os.replace(partial, run_dir / MODEL_DIR)


def _remove_model(run_dir: Path) -> None:
    """Rename, then delete: an interruption never leaves half a model/ that reads as a finished run."""
    if (run_dir / MODEL_DIR).exists():
        old = run_dir / (MODEL_DIR + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(run_dir / MODEL_DIR, old)
        shutil.rmtree(old)


def _finish_complete(trained_with: RunConfig, *, run_dir: Path, checkpoint: Path, state: dict, target: int) -> None:
    """A run whose last checkpoint is its last step: save only what is missing (model/, model cards, log rows)."""
    step = checkpoint_step(checkpoint)
    saved = []
    if is_main_process():
        card = _run_card(trained_with, run_dir=run_dir, target=target)
        _repair_logs(run_dir, step=step, state=state)
        if not (run_dir / MODEL_DIR).is_dir():
            _model_from_checkpoint(checkpoint, run_dir=run_dir, card=card)
            saved.append(f"{MODEL_DIR}/ (from {checkpoint.name})")
        for folder in (checkpoint, run_dir / MODEL_DIR):
            if not (folder / CARD_FILE).is_file():
                card.write(folder, step=step)
                saved.append(f"{folder.name}/{CARD_FILE}")
    _note(f"{run_dir} is already complete (step {step} of {target}); "
          + (f"saved {', '.join(saved)}" if saved else "nothing to do"))


def _model_from_checkpoint(checkpoint: Path, *, run_dir: Path, card: RunCard) -> None:
    """model/ as `save_model` writes it: the checkpoint's model and tokenizer files, without the training state."""
    if not any((checkpoint / name).is_file() for name in WEIGHT_FILES) or not (checkpoint / "config.json").is_file():
        raise FileNotFoundError(
            f"{checkpoint} holds no model weights in Hugging Face format (a sharded FSDP/DeepSpeed checkpoint?); "
            f"resume it with the same launcher, or convert it, to save {run_dir / MODEL_DIR}"
        )
    partial = run_dir / (MODEL_DIR + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for path in checkpoint.iterdir():
        if path.is_file() and not TRAINING_STATE_FILES.match(path.name):
            shutil.copy2(path, partial / path.name)
    _publish_model(partial, run_dir=run_dir, card=card, step=checkpoint_step(checkpoint))


# ---- interruption --------------------------------------------------------------------------------


def interruption_message(config: RunConfig | None, *, output_dir: str | None, command: list[str]) -> str:
    """One line after Ctrl-C: what survived (the last complete checkpoint, or nothing) and the command that resumes.

    `command` is the `tapo train --config FILE --set ...` that was run, without --output-dir/--resume.
    """
    import shlex

    if config is None:
        return f"tapo train: interrupted before training started; nothing saved; run again: {shlex.join(command)}"
    run_dir = resolve_run_dir(config, output_dir)
    checkpoint = last_checkpoint(run_dir)
    again = [*command, "--output-dir", str(run_dir)]
    if not (run_dir / CONFIG_FILE).is_file():
        return f"tapo train: interrupted before training started; nothing saved; run again: {shlex.join(again)}"
    again.append("--resume")
    if checkpoint is not None:
        earlier = config_in_effect(run_dir, step=checkpoint_step(checkpoint))
        try:
            changed = earlier is not None and bool(config_changes(_load_saved_config(earlier), config))
        except (ConfigError, ValueError):
            changed = False
        if changed:  # interrupted after a --allow-config-change resume, before its first checkpoint
            again.append("--allow-config-change")
        saved = f"saved {checkpoint.name} (step {checkpoint_step(checkpoint)}) in {run_dir}"
    else:
        saved = f"no checkpoint saved yet in {run_dir} (training starts again from step 0)"
    return f"tapo train: interrupted; {saved}; resume with: {shlex.join(again)}"
