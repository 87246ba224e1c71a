"""The dry run's checks of a run config: TRL's argument objects, and the files a run reads and writes.

The value rules every load applies (types, ranges, choices, combinations) are in
`tapo.config_checks`, called by `tapo.config.validate` whenever a config is built, so the real run
and the dry run alike; TRL's own `__post_init__` checks run here (`engine_args`).

Dry run (`tapo train --dry-run`, `describe_run`): nothing is fetched. It builds the engine's
argument objects (TRL's GRPOConfig / TAPOConfig / SDPOConfig / SFTConfig), checks the files a run reads and
writes (synthesis template, run directory), and describes the model and data: built-in and local
data are loaded and counted (cheap, and they can hold bad rows or none), hub ids are only named.
A local model or data path that does not exist is an error ("model folder not found: PATH"),
unless it lies under the `output_dir` of another recipe next to this one, i.e. an earlier step of
a chained recipe makes it (recipes/paper: coldstart -> filter -> tapo); then it is reported as
"not there yet: made by RECIPE". The real run checks the same files strictly (`check_run`).
Settings that need a GPU (bf16, tf32) are checked as if on a GPU and reported.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from tapo.config import ConfigError, DataSection, RunConfig, origin_note
from tapo.paths import looks_local

GPU_ONLY_KEYS = ("tf32",)  # TrainingArguments refuses these without a matching GPU
_GPU_ERROR = re.compile(r"gpu|cuda|bf16|fp16|tf32|ampere|npu|xpu|use_cpu", re.IGNORECASE)

# ---- the dry run: files, model, data, engine arguments ---------------------------------------------------


def planned_outputs(config_path: str | Path | None) -> dict[Path, str]:
    """Resolved `output_dir` -> recipe file, for every other recipe in the folder of `config_path`.

    These are what earlier steps of a chained recipe make (recipes/paper/filter.yaml writes
    runs/paper/filter/kept.jsonl, which recipes/paper/tapo.yaml trains on). Unreadable files are skipped.
    """
    if config_path is None or not Path(config_path).is_file():
        return {}
    config_path = Path(config_path)
    outputs = {}
    for recipe in sorted([*config_path.parent.glob("*.yaml"), *config_path.parent.glob("*.yml")]):
        if recipe.resolve() == config_path.resolve():
            continue
        try:
            raw = yaml.safe_load(recipe.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        output = raw.get("output_dir") if isinstance(raw, dict) else None
        if isinstance(output, str) and output.strip():
            outputs[Path(output).expanduser().resolve()] = str(recipe)
    return outputs


def made_by(path: str, planned: Mapping[Path, str]) -> str | None:
    """The recipe whose output_dir holds `path` (a path not there yet), or None."""
    resolved = Path(path).expanduser().resolve()
    for output, recipe in planned.items():
        if resolved == output or output in resolved.parents:
            return recipe
    return None


def _later(planned: Mapping[Path, str] | None, path: str) -> str | None:
    """How a missing local path is described instead of failing: None (fail) unless an earlier step makes it.

    `planned` None means the caller does not know its recipe (a command that does not pass its
    file yet): missing paths are then reported, not errors, as before.
    """
    if planned is None:
        return "not there yet: an earlier step of the recipe makes it"
    recipe = made_by(path, planned)
    return f"not there yet: made by {recipe}" if recipe else None


def describe_model(
    name: str, *, where: str = "config", planned: Mapping[Path, str] | None = None, note: str = ""
) -> str:
    """One line about the model source, without loading it; a missing local folder is a ConfigError.

    `planned` (`planned_outputs`) names the folders earlier steps make; `note` says where the key came from.
    """
    if name.startswith("builtin:"):
        from tapo.models import BUILTIN_MODELS

        if name not in BUILTIN_MODELS:
            known = ", ".join(BUILTIN_MODELS)
            raise ConfigError(f"{where}: model.name: unknown built-in model {name!r}{note}; built-in models: {known}")
        return f"model: built-in {name}"
    if not looks_local(name):
        return f"model: hub model {name} (not fetched)"
    folder = Path(name).expanduser()
    if (folder / "config.json").is_file():
        return f"model: local folder {name}"
    later = _later(planned, name)
    if later:
        return f"model: local folder {name} ({later})"
    if folder.exists():
        raise ConfigError(f"{where}: model.name: {name} is not a model folder (it has no config.json){note}")
    raise ConfigError(f"{where}: model.name: model folder not found: {name}{note}{_chain_hint(where)}")


def _chain_hint(where: str) -> str:
    return (
        f"; if an earlier step makes it, keep that step's recipe (its output_dir above this path) next to {where}"
        if Path(where).is_file() else ""
    )


def count_rows(data: DataSection) -> int:
    """The rows `tapo train` would train on (built-in or local data: loaded here, in seconds)."""
    from tapo.data import build_dataset

    return len(build_dataset(data))


def describe_data(
    data: DataSection, *, where: str = "config", planned: Mapping[Path, str] | None = None, note: str = ""
) -> str:
    """One line about the data source; built-in and existing local data are loaded and counted.

    A local file that is missing is a ConfigError unless `planned` says an earlier step makes it.
    """
    source = data.source
    builtin = source.startswith("builtin:")
    if not builtin and not looks_local(source):
        return f"data: hub dataset {source} (split {data.split}; not fetched)"
    if not builtin and not Path(source).expanduser().exists():
        later = _later(planned, source)
        if later is None:
            raise ConfigError(f"{where}: data.source: data file not found: {source}{note}{_chain_hint(where)}")
        return f"data: local file {source} ({later})"
    return f"data: {source} ({count_rows(data)} rows)"


def check_output_dir(path: str, *, where: str, note: str = "") -> None:
    """The run directory can be made: not a file, under no file, in a folder we may write to."""
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{where}: output_dir: {path} is a file, not a folder{note}")
    existing = next((p for p in (target, *target.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise ConfigError(f"{where}: output_dir: {path} cannot be made: {existing} is a file{note}")
    if existing != target and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: output_dir: {path} cannot be made: {existing} is not writable{note}")


def check_template(path: str, *, where: str, note: str = "", key: str = "tapo.synthesis_template") -> None:
    """A template file (`key`: tapo.synthesis_template or tapo.splice_locate_template) exists and uses exactly
    its prompt's placeholders ($question, $negative, $positive)."""
    from tapo.core.synthesis import build_locate_prompt, build_self_prompt
    from tapo.data.datasets import read_text

    build = build_locate_prompt if key.endswith("locate_template") else build_self_prompt
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{where}: {key}: file not found: {path}{note}")
    try:
        build(question="q", negative="n", positive="p", template=read_text(file))  # as the run reads it
    except (ValueError, UnicodeDecodeError) as error:  # a DataError (not UTF-8) is a ValueError
        raise ConfigError(f"{where}: {key}: {path}: {error}{note}") from error


def _file_problems(
    config: RunConfig, *, where: str, set_by: dict[str, str], output_dir: str | None, planned
) -> tuple[list[str], str | None, str | None]:
    """(errors, model line, data line): every file check, so that one dry run reports all of them."""
    errors, lines = [], {}
    note = functools.partial(origin_note, set_by=set_by)
    checks = {
        "output": lambda: check_output_dir(output_dir or config.output_dir, where=where, note=note("output_dir")),
        "model": lambda: describe_model(config.model.name, where=where, planned=planned, note=note("model.name")),
        "data": lambda: describe_data(config.data, where=where, planned=planned, note=note("data.source")),
    }
    for name in ("synthesis_template", "splice_locate_template"):
        template = config.tapo.get(name) if config.algorithm == "tapo" else None
        if template:
            key = f"tapo.{name}"
            checks[name] = functools.partial(check_template, template, where=where, note=note(key), key=key)
    for name, check in checks.items():
        try:
            lines[name] = check()
        except (ConfigError, ValueError, TypeError) as error:  # a DataError (bad rows) is a ValueError
            errors.append(str(error) if str(error).startswith(where) else f"{where}: {name}: {error}")
    return errors, lines.get("model"), lines.get("data")


def _rows_problem(rows: int, queries: int, *, where: str, data: DataSection, set_by: dict) -> str | None:
    """An error when the data cannot fill one generation: TRL's sampler drops incomplete batches, so 0 steps."""
    if rows >= queries:
        return None
    what = "has no rows" if rows == 0 else f"has {rows} row(s), fewer than the {queries} queries of one generation"
    sizes = [f"data.{key} {getattr(data, key)}" for key in ("n", "limit")
             if getattr(data, key) is not None and (key == "limit" or data.source == "builtin:arithmetic")]
    size = f" ({', '.join(sizes)})" if sizes else ""
    notes = "".join(dict.fromkeys(origin_note(f"data.{key}", set_by) for key in ("source", "n", "limit")))
    return f"{where}: data.source: {data.source}{size} {what}, so training would run 0 steps{notes}"


def check_run(
    config: RunConfig, *, where: str = "config", overrides: list[str] | None = None, output_dir: str | None = None
) -> None:
    """The real run's up-front checks of what it reads and writes, before the model is loaded.

    As the dry run's, but strict: a local model or data path must exist now. Local data is loaded
    once here to see it is not empty (TRL would "train" 0 steps on it). Whether it fills one generation
    needs the world size, which only the launched run knows: `tapo.engine.run` checks that once its
    engine arguments are built (the TRL configuration must not be built here, before the launch's own).
    """
    from tapo.config import override_origins

    set_by = override_origins(overrides)
    errors, _, data_line = _file_problems(config, where=where, set_by=set_by, output_dir=output_dir, planned={})
    rows = re.search(r"\((\d+) rows\)", data_line or "")
    if rows and int(rows.group(1)) == 0:
        errors.append(_rows_problem(0, 1, where=where, data=config.data, set_by=set_by))
    if errors:
        raise ConfigError("\n".join(errors))


def run_args(config: RunConfig, *, where: str, run_dir: str):
    """(TRL config of the run's algorithm, note): TRL's own checks of the trainer section, as `engine_args`."""
    from tapo.engine.arguments import TRAINER_DEFAULTS, GRPOConfig, SDPOConfig, TAPOConfig

    settings = {**TRAINER_DEFAULTS, **config.trainer, "output_dir": run_dir, "seed": config.seed}
    if config.algorithm == "tapo":
        return engine_args(TAPOConfig, {**settings, **config.tapo}, where=where, section="trainer/tapo")
    if config.algorithm == "sdpo":
        return engine_args(SDPOConfig, {**settings, **config.sdpo}, where=where, section="trainer/sdpo")
    return engine_args(GRPOConfig, settings, where=where, section="trainer")


def engine_args(cls, settings: dict, *, where: str, section: str):
    """Instantiate a TRL config class from `settings`; a bad value is a ConfigError naming the file.

    A value that needs a GPU this machine lacks (bf16, tf32) is checked again as if on a GPU
    (`use_cpu`, tf32 left out) and accepted; the returned note says so. Any other exception of
    TRL's `__post_init__` (it once divided by num_generations=0) is a ConfigError too.
    """
    try:
        return cls(**settings), None
    except Exception as error:  # noqa: BLE001 - whatever TRL's checks raise, the config is what is wrong
        if not isinstance(error, (ValueError, TypeError)) or not _GPU_ERROR.search(str(error)):
            raise ConfigError(f"{where}: '{section}': {_engine_error(error)}") from error
        hardware_error = str(error)
    relaxed = {k: v for k, v in settings.items() if k not in GPU_ONLY_KEYS}
    relaxed["use_cpu"] = True
    try:
        hardware = ", ".join(k for k in ("bf16", "fp16", "tf32") if settings.get(k)) or "a setting"
        note = f"{hardware} needs a GPU ({hardware_error.split('.')[0]}); everything else was checked with use_cpu"
        return cls(**relaxed), note
    except Exception as error:  # noqa: BLE001
        raise ConfigError(f"{where}: '{section}': {_engine_error(error)}") from error


def _engine_error(error: Exception) -> str:
    return str(error) if isinstance(error, (ValueError, TypeError)) else f"{type(error).__name__}: {error}"


def describe_run(
    config, *, where: str = "config", overrides: list[str] | None = None, output_dir: str | None = None
) -> list[str]:
    """`tapo train --dry-run`: every check the run would hit before training, with nothing fetched.

    The engine arguments are built (TRL's own checks run), the run directory, synthesis template,
    model and data are checked (see the module docstring for paths an earlier step makes), and the
    data must fill at least one generation. All errors are raised together as one ConfigError.
    """
    from tapo.config import override_origins

    set_by = override_origins(overrides)
    run_dir = output_dir or config.output_dir
    errors, args, note = [], None, None
    try:
        args, note = run_args(config, where=where, run_dir=run_dir)
    except ConfigError as error:
        errors.append(str(error))
    file_errors, model_line, data_line = _file_problems(
        config, where=where, set_by=set_by, output_dir=output_dir, planned=planned_outputs(where)
    )
    errors += file_errors
    rows = re.search(r"\((\d+) rows\)", data_line or "")
    if rows and args is not None:
        queries = args.generation_batch_size // args.num_generations
        problem = _rows_problem(int(rows.group(1)), queries, where=where, data=config.data, set_by=set_by)
        errors += [problem] if problem else []
    if errors:
        raise ConfigError("\n".join(errors))
    queries = args.generation_batch_size // args.num_generations
    lines = [
        f"config OK: algorithm={config.algorithm} model={config.model.name} rows={rows.group(1) if rows else '?'}",
        model_line,
        data_line,
        f"trainer: {type(args).__name__} OK; {args.generation_batch_size} completions per generation on "
        f"{args.world_size} process(es) = {queries} queries x {args.num_generations} (times the processes of a "
        f"multi-GPU launch), lr {args.learning_rate:g}, "
        f"vLLM {'on (' + args.vllm_mode + ')' if args.use_vllm else 'off'}",
        f"run directory: {run_dir}",
    ]
    if config.algorithm == "sdpo":
        contexts = [what for on, what in ((args.use_successful_as_teacher, "successful rollouts"),
                                          (args.include_environment_feedback, "the gold answer")) if on]
        lines.append(f"sdpo: teacher {args.teacher_model_kind}, {args.distillation_mode} distillation, weight "
                     f"{args.distillation_weight:g}; the teacher sees {' and '.join(contexts) or 'nothing'}")
    if note:
        lines.append(f"note: {note}")
    return lines


def describe_coldstart(config, *, where: str | None = None) -> list[str]:
    """`tapo coldstart build --dry-run`: SFT arguments built, sources described, nothing fetched.

    With `where` (the config file) a missing local model or data path is an error unless an
    earlier step makes it, as in `describe_run`; without it, it is only reported.
    """
    planned = planned_outputs(where) if where else None
    where = where or "config"
    from tapo.engine.arguments import SFTConfig

    from tapo.coldstart.config import sft_settings

    args, note = engine_args(
        SFTConfig, sft_settings(config, output_dir=config.output_dir), where=where, section="sft"
    )
    build = config.build
    lines = [
        f"config OK: cold start of {config.model.name} with construction={build.construction}",
        describe_model(config.model.name, where=where, planned=planned),
        describe_data(config.data, where=where, planned=planned),
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


def describe_filter(config, *, where: str | None = None) -> list[str]:
    """`tapo filter --dry-run`; `where` as in `describe_coldstart`."""
    planned = planned_outputs(where) if where else None
    where = where or "config"
    section = config.filter
    return [
        f"config OK: filter with {section.samples} samples per query, keep pass rate in [{section.low:g}, {section.high:g}]",
        describe_model(config.model.name, where=where, planned=planned),
        describe_data(config.data, where=where, planned=planned),
    ]
