"""Dry-run validation: check a config as far as possible WITHOUT fetching a model or data set.

`tapo train --dry-run` (and the cold-start / filter dry runs) build the engine's argument objects
(TRL's GRPOConfig / TAPOConfig / SFTConfig) so that bad keys and values fail here with the file
named, and describe the model and data sources: built-in and local data are loaded (cheap, and
they can hold bad rows), hub ids are only named ("not fetched"), and local paths that do not exist
yet (made by an earlier step of a recipe) are reported as such, not as errors.
Settings that need a GPU (bf16, tf32) are checked as if on a GPU and reported.
"""

from __future__ import annotations

import re
from pathlib import Path

from tapo.config import ConfigError, DataSection

GPU_ONLY_KEYS = ("tf32",)  # TrainingArguments refuses these without a matching GPU
_GPU_ERROR = re.compile(r"gpu|cuda|bf16|fp16|tf32|ampere|npu|xpu|use_cpu", re.IGNORECASE)


def looks_local(name: str) -> bool:
    """Whether a model or data name is a local path (rather than a hub id).

    An existing path, one starting with `.`, `/` or `~`, a data file name, or a path of three or
    more parts is local; anything else (`owner/name`, a bare name) is a hub id.

    >>> looks_local("runs/x/model"), looks_local("./m"), looks_local("Qwen/Qwen3-8B"), looks_local("data.jsonl")
    (True, True, False, True)
    """
    if Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        return True
    if Path(name).suffix.lower() in (".jsonl", ".json", ".parquet"):
        return True
    return name.count("/") >= 2


def describe_model(name: str) -> str:
    """One line about the model source, without loading it."""
    if name.startswith("builtin:"):
        from tapo.models import BUILTIN_MODELS

        if name not in BUILTIN_MODELS:
            raise ConfigError(f"model.name: unknown built-in model {name!r}; built-in models: {', '.join(BUILTIN_MODELS)}")
        return f"model: built-in {name}"
    if looks_local(name):
        folder = Path(name).expanduser()
        if (folder / "config.json").is_file():
            return f"model: local folder {name}"
        return f"model: local folder {name} (not there yet: an earlier step of the recipe makes it)"
    return f"model: hub model {name} (not fetched)"


def describe_data(data: DataSection) -> str:
    """One line about the data source; built-in and existing local data are loaded and counted."""
    source = data.source
    if not source.startswith("builtin:") and looks_local(source) and not Path(source).expanduser().exists():
        return f"data: local file {source} (not there yet: an earlier step of the recipe makes it)"
    if not source.startswith("builtin:") and not looks_local(source):
        return f"data: hub dataset {source} (split {data.split}; not fetched)"
    from tapo.config import RunConfig
    from tapo.train import build_dataset

    rows = len(build_dataset(RunConfig(data=data)))
    return f"data: {source} ({rows} rows)"


def engine_args(cls, settings: dict, *, where: str, section: str):
    """Instantiate a TRL config class from `settings`; a bad value is a ConfigError naming the file.

    A value that needs a GPU this machine lacks (bf16, tf32) is checked again as if on a GPU
    (`use_cpu`, tf32 left out) and accepted; the returned note says so.
    """
    try:
        return cls(**settings), None
    except (ValueError, TypeError) as error:
        if not _GPU_ERROR.search(str(error)):
            raise ConfigError(f"{where}: '{section}': {error}") from error
        hardware_error = str(error)
    relaxed = {k: v for k, v in settings.items() if k not in GPU_ONLY_KEYS}
    relaxed["use_cpu"] = True
    try:
        hardware = ", ".join(k for k in ("bf16", "fp16", "tf32") if settings.get(k)) or "a setting"
        note = f"{hardware} needs a GPU ({hardware_error.split('.')[0]}); everything else was checked with use_cpu"
        return cls(**relaxed), note
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{where}: '{section}': {error}") from error


def describe_run(config, *, where: str = "config") -> list[str]:
    """`tapo train --dry-run`: the engine arguments built, and the model and data described."""
    from trl import GRPOConfig

    from tapo.train import TRAINER_DEFAULTS
    from tapo.trainer import TAPOConfig

    settings = {**TRAINER_DEFAULTS, **config.trainer, "output_dir": config.output_dir, "seed": config.seed}
    if config.algorithm == "tapo":
        args, note = engine_args(TAPOConfig, {**settings, **config.tapo}, where=where, section="trainer/tapo")
    else:
        args, note = engine_args(GRPOConfig, settings, where=where, section="trainer")
    data_line = describe_data(config.data)
    rows = re.search(r"\((\d+) rows\)", data_line)
    queries = args.generation_batch_size // args.num_generations
    world = args.world_size
    lines = [
        f"config OK: algorithm={config.algorithm} model={config.model.name} rows={rows.group(1) if rows else '?'}",
        describe_model(config.model.name),
        data_line,
        f"trainer: {type(args).__name__} OK; {args.generation_batch_size} completions per generation on {world} "
        f"process(es) = {queries} queries x {args.num_generations} (times the processes of a multi-GPU launch), "
        f"lr {args.learning_rate:g}, "
        f"vLLM {'on (' + args.vllm_mode + ')' if args.use_vllm else 'off'}",
    ]
    if note:
        lines.append(f"note: {note}")
    return lines


def describe_coldstart(config, *, where: str = "config") -> list[str]:
    """`tapo coldstart build --dry-run`: SFT arguments built, sources described, nothing fetched."""
    from trl import SFTConfig

    from tapo.coldstart.config import sft_settings

    args, note = engine_args(
        SFTConfig, sft_settings(config, output_dir=config.output_dir), where=where, section="sft"
    )
    build = config.build
    lines = [
        f"config OK: cold start of {config.model.name} with construction={build.construction}",
        describe_model(config.model.name),
        describe_data(config.data),
        f"build: {build.samples} samples per query, positive_source={build.positive_source}, "
        f"synthetic_negative={build.synthetic_negative}, mix={build.mix}",
        f"sft: SFTConfig OK; lr {args.learning_rate:g}, {args.warmup_steps} warm-up steps, "
        f"{args.lr_scheduler_type.value if hasattr(args.lr_scheduler_type, 'value') else args.lr_scheduler_type}, "
        f"{args.num_train_epochs:g} epochs",
    ]
    if build.construction == "teacher":
        lines.append(f"teacher: {config.teacher.model} at {config.teacher.base_url} (not contacted)")
    if note:
        lines.append(f"note: {note}")
    return lines


def describe_filter(config) -> list[str]:
    """`tapo filter --dry-run`."""
    section = config.filter
    return [
        f"config OK: filter with {section.samples} samples per query, keep pass rate in [{section.low:g}, {section.high:g}]",
        describe_model(config.model.name),
        describe_data(config.data),
    ]
