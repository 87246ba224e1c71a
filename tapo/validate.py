"""Validation of a run config: the value rules every load applies, and the dry run's checks of files.

Value rules (`value_problems`, called by `tapo.config.validate` whenever a config is built, so the
real run and the dry run alike): the type of every value (our sections' annotations; TRL's GRPOConfig
field types under `trainer:`), the ranges and choices in the tables below, and combinations that
cannot run or would leave TAPO inert. Choices come from the modules that act on them
(`tapo.core`), not copies; TRL's own `__post_init__` checks run in the dry run (`engine_args`).

Dry run (`tapo train --dry-run`, `describe_run`): nothing is fetched. It builds the engine's
argument objects (TRL's GRPOConfig / TAPOConfig / SFTConfig), checks the files a run reads and
writes (synthesis template, run directory), and describes the model and data: built-in and local
data are loaded and counted (cheap, and they can hold bad rows or none), hub ids are only named.
A local model or data path that does not exist is an error ("model folder not found: PATH"),
unless it lies under the `output_dir` of another recipe next to this one, i.e. an earlier step of
a chained recipe makes it (recipes/paper: coldstart -> filter -> tapo); then it is reported as
"not there yet: made by RECIPE". The real run checks the same files strictly (`check_run`).
Settings that need a GPU (bf16, tf32) are checked as if on a GPU and reported.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from tapo.config import (
    ALGORITHMS,
    ConfigError,
    DataSection,
    ModelSection,
    RewardSection,
    RunConfig,
    origin_note,
    suggest,
)

GPU_ONLY_KEYS = ("tf32",)  # TrainingArguments refuses these without a matching GPU
_GPU_ERROR = re.compile(r"gpu|cuda|bf16|fp16|tf32|ampere|npu|xpu|use_cpu", re.IGNORECASE)
MODEL_DTYPES = ("float32", "bfloat16", "float16", "float64")  # torch dtypes `tapo.models.load_policy` takes

# ---- value rules ----------------------------------------------------------------------------------------

Check = Callable[[Any], "str | None"]  # a value of the right type -> what is wrong with it, or None


def at_least(low: float, why: str = "") -> Check:
    return lambda value: None if value is None or value >= low else f"must be >= {low}{why}, got {value!r}"


def above(low: float, why: str = "") -> Check:
    return lambda value: None if value is None or value > low else f"must be > {low}{why}, got {value!r}"


def in_unit_interval(value) -> str | None:  # top_p
    return None if value is None or 0 < value <= 1 else f"must be in (0, 1], got {value!r}"


def not_empty(value) -> str | None:
    return None if value is None or value.strip() else f"must not be empty, got {value!r}"


def steps_or_unset(value) -> str | None:
    """`max_steps`: -1 (train num_train_epochs) or a positive count; 0 and other negatives mean nothing."""
    if value is None or value == -1 or value >= 1:
        return None
    return f"must be -1 (use num_train_epochs) or >= 1, got {value!r}"


def group_size(value) -> str | None:
    """`num_generations`: TRL's minimum, checked before TRL divides by it (0 raised ZeroDivisionError)."""
    if value is None or value < 2:
        return f"must be >= 2 (GRPO's advantages compare the rollouts of a query), got {value!r}"
    return None


def seed_range(value) -> str | None:
    return None if 0 <= value < 2**32 else f"must be in [0, 2**32) (numpy's seed range), got {value!r}"


def step_counts(value) -> str | None:
    """`data.n_steps`: an integer >= 1 or a [low, high] pair with 1 <= low <= high."""
    if isinstance(value, int) and not isinstance(value, bool):
        return None if value >= 1 else f"must be >= 1, got {value!r}"
    pair = isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)
    if pair and 1 <= value[0] <= value[1]:
        return None
    return f"must be an integer >= 1 or a [low, high] pair with 1 <= low <= high, got {value!r}"


_NO_ROWS = " (it would keep no rows)"
RANGES: dict[str, Check] = {
    "seed": seed_range,
    "output_dir": not_empty,
    "model.name": not_empty,
    "data.source": not_empty,
    "data.limit": at_least(1, _NO_ROWS),
    "data.n": at_least(1, _NO_ROWS),
    "data.n_steps": step_counts,
    "data.max_operand": at_least(2),
    "reward.timeout_s": above(0, " (seconds per answer check)"),
    "reward.workers": at_least(1),
    # TAPO (tapo.engine.trainer.TAPOConfig)
    "tapo.n_pos": at_least(1, " (every y- is paired with a correct y+)"),
    "tapo.n_neg": at_least(0),
    "tapo.m_max": at_least(0),
    "tapo.ref_loss_weight": at_least(0),
    "tapo.ots_w_min": at_least(0, " (OTS weights scale advantages and must not flip their sign)"),
    "tapo.ots_w_max": at_least(0),
    "tapo.synthesis_temperature": above(0, " (synthesis samples)"),
    "tapo.synthesis_top_p": in_unit_interval,
    "tapo.synthesis_extra_tokens": at_least(0),
    "tapo.synthesis_template": not_empty,
    "tapo.max_construction_tokens": at_least(1),
    # TRL keys whose bad values TRL's __post_init__ lets through (they fail later, or train nothing)
    "trainer.num_generations": group_size,
    "trainer.per_device_train_batch_size": at_least(1),
    "trainer.gradient_accumulation_steps": at_least(1),
    "trainer.steps_per_generation": at_least(1),
    "trainer.generation_batch_size": at_least(1),
    "trainer.num_iterations": at_least(1),
    "trainer.max_completion_length": at_least(1),
    "trainer.learning_rate": at_least(0),
    "trainer.temperature": above(0, " (rollouts are sampled)"),
    "trainer.top_p": in_unit_interval,
    "trainer.top_k": at_least(0),
    "trainer.num_train_epochs": above(0),
    "trainer.max_steps": steps_or_unset,
    "trainer.save_steps": above(0),
    "trainer.beta": at_least(0),
    "trainer.epsilon": at_least(0),
    "trainer.epsilon_high": at_least(0),
}


@functools.cache
def choices() -> dict[str, tuple]:
    """Key -> the values it may take (checked instead of its type: `scale_rewards` also takes true/false)."""
    from tapo.core.advantages import BASELINES
    from tapo.core.constructors import SPLICE_FALLBACKS, STRATEGIES

    table = {
        "algorithm": ALGORITHMS,
        "model.dtype": MODEL_DTYPES,
        "tapo.construction": STRATEGIES,
        "tapo.splice_fallback": SPLICE_FALLBACKS,
        "tapo.ref_baseline": BASELINES,
        # TRL 1.16's GRPOConfig documents these in its help texts, and fails on others only mid-run.
        "trainer.loss_type": ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"),
        "trainer.scale_rewards": ("group", "batch", "none", True, False),
        "trainer.vllm_mode": ("server", "colocate"),
        "trainer.importance_sampling_level": ("token", "sequence"),
        "trainer.multi_objective_aggregation": ("sum_then_normalize", "normalize_then_sum"),
        "trainer.vllm_importance_sampling_mode": ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"),
    }
    for f in _engine_fields():  # TRL's fields that declare choices in their metadata
        if "choices" in f.metadata:
            table.setdefault(f"trainer.{f.name}", (*f.metadata["choices"], *((None,) if f.default is None else ())))
    return table


@functools.cache
def _engine_fields() -> tuple:
    from tapo.engine.trainer import TAPOConfig

    return tuple(dataclasses.fields(TAPOConfig))


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_ok(value, hint) -> bool:
    """Whether a YAML value fits a type annotation; an annotation this cannot read lets the value through."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in args)
    if origin is typing.Literal:
        return any(value is arg or (type(value) is type(arg) and value == arg) for arg in args)
    if origin in (list, tuple, set) or hint in (list, tuple, set):
        return isinstance(value, list) and (not args or all(_type_ok(item, args[0]) for item in value))
    if origin is dict or hint is dict:
        return isinstance(value, dict) and (not args or all(_type_ok(v, args[1]) for v in value.values()))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return value in {member.value for member in hint}
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _type_words(hint) -> list[str]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        words = [word for arg in args for word in _type_words(arg)]
        if "a string" in words:  # `SchedulerType | str`: the enum is a kind of string
            words = [w for w in words if not w.startswith("one of ")]
        return list(dict.fromkeys(words))
    if origin is typing.Literal:
        return [yaml.safe_dump(arg).split("\n")[0] for arg in args]
    if hint is None or hint is type(None):
        return ["null"]
    named = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in named:
        return [named[hint]]
    if origin in (list, tuple, set) or hint in (list, tuple, set):
        return ["a list"]
    if origin is dict or hint is dict:
        return ["a mapping"]
    if isinstance(hint, type) and issubclass(hint, Enum):
        return [f"one of {', '.join(str(m.value) for m in hint)}"]
    return [f"a {getattr(hint, '__name__', hint)}"]


def type_problem(value, hint) -> str | None:
    """`"must be an integer, got 'abc'"` when `value` does not fit `hint`, else None."""
    if _type_ok(value, hint):
        return None
    words = _type_words(hint)
    return f"must be {', '.join(words[:-1]) + ' or ' + words[-1] if len(words) > 1 else words[0]}, got {value!r}"


def choice_problem(value, allowed: tuple) -> str | None:
    if any(value is a or (type(value) is type(a) and value == a) for a in allowed):
        return None
    shown = ", ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in allowed)
    match = suggest(value, [a for a in allowed if isinstance(a, str)]) if isinstance(value, str) else None
    return f"must be one of {shown}, got {value!r}{f' (did you mean {match!r}?)' if match else ''}"


def key_problem(key: str, value, hint) -> str | None:
    """What is wrong with one dotted key's value: its choices, else its type and then its range."""
    table = choices()
    if key in table:
        return choice_problem(value, table[key])
    problem = type_problem(value, hint)
    if problem is None and key in RANGES:
        problem = RANGES[key](value)
    return problem


def _values(config: RunConfig) -> list[tuple[str, Any, Any]]:
    """(dotted key, value, type annotation) of every key a config sets or defaults."""
    from tapo.engine.trainer import TAPOConfig

    engine = _hints(TAPOConfig)
    items = [(key, getattr(config, key), _hints(RunConfig)[key]) for key in ("algorithm", "seed", "output_dir")]
    for section, cls in (("model", ModelSection), ("data", DataSection), ("reward", RewardSection)):
        hints = _hints(cls)
        items += [(f"{section}.{key}", getattr(getattr(config, section), key), hints[key]) for key in hints]
    for section in ("trainer", "tapo"):
        items += [(f"{section}.{key}", value, engine.get(key, Any)) for key, value in getattr(config, section).items()]
    return items


def value_problems(config: RunConfig, *, set_by: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(errors, warnings) about a config's values, each naming its key(s) and the `--set` that gave them."""
    errors = []
    for key, value, hint in _values(config):
        problem = key_problem(key, value, hint)
        if problem:
            errors.append(f"{key} {problem}{origin_note(key, set_by)}")
    if errors:  # combinations are only judged on values of the right kind
        return errors, []
    errors, warnings = [], []
    for keys, problem, fatal in combination_problems(config):
        notes = "".join(dict.fromkeys(origin_note(key, set_by) for key in keys))
        (errors if fatal else warnings).append(f"{problem}{notes}")
    return errors, warnings


def engine_setting(config: RunConfig, key: str):
    """A `trainer` or `tapo` key's value as the engine will see it: the config's, our default, else TRL's."""
    from tapo.engine.run import TRAINER_DEFAULTS

    for given in (config.tapo, config.trainer, TRAINER_DEFAULTS):
        if key in given:
            return given[key]
    field = next(f for f in _engine_fields() if f.name == key)
    return field.default if field.default_factory is dataclasses.MISSING else field.default_factory()


def combination_problems(config: RunConfig) -> list[tuple[tuple[str, ...], str, bool]]:
    """(keys, problem, fatal) for values that are fine alone but cannot run, or leave TAPO inert, together."""
    found = []
    if config.algorithm != "tapo":
        return found
    get = functools.partial(engine_setting, config)
    k, n_pos, n_neg = get("num_generations"), get("n_pos"), get("n_neg")
    if n_pos + n_neg > k:
        found.append((("tapo.n_pos", "tapo.n_neg", "trainer.num_generations"),
                      f"tapo.n_pos + tapo.n_neg ({n_pos} + {n_neg}) must be <= trainer.num_generations ({k}): a "
                      f"query is eligible with >= n_pos correct and >= n_neg wrong rollouts out of its {k}, so none "
                      "ever would be and TAPO would train with 0 construction pairs", True))
    if not get("decoupled") and get("ref_baseline") != "reflection":
        found.append((("tapo.decoupled", "tapo.ref_baseline"),
                      f"tapo.decoupled: false mixes y_ref into the original group, so tapo.ref_baseline "
                      f"{get('ref_baseline')!r} has no meaning there; set decoupled: true or drop ref_baseline", True))
    if get("ots_w_min") > get("ots_w_max"):
        found.append((("tapo.ots_w_min", "tapo.ots_w_max"),
                      f"tapo.ots_w_min ({get('ots_w_min')}) must be <= tapo.ots_w_max ({get('ots_w_max')})", True))
    if get("multi_objective_aggregation") != "sum_then_normalize":
        found.append((("trainer.multi_objective_aggregation",),
                      "TAPO normalises reflection groups like TRL's multi_objective_aggregation "
                      f"'sum_then_normalize'; {get('multi_objective_aggregation')!r} is not supported", True))
    if get("m_max") == 0:
        found.append((("tapo.m_max",), "tapo.m_max is 0: no query gets a construction, so this trains as GRPO at "
                      "TAPO's cost (for a GRPO baseline set algorithm: grpo)", False))
    if get("ref_loss_weight") == 0:
        found.append((("tapo.ref_loss_weight",), "tapo.ref_loss_weight is 0: constructions are made (and cost "
                      "generation time) but their loss is multiplied by 0, so they never train", False))
    if get("construction") == "aligned" and get("ref_baseline") == "reflection" and get("decoupled") and get("m_max"):
        found.append((("tapo.construction", "tapo.ref_baseline"),
                      "tapo.construction aligned with tapo.ref_baseline reflection: aligned constructions end "
                      "with the gold answer, so a reflection group's rewards are all equal and its advantages 0; "
                      "set ref_baseline: original to train them (recipes/tiny-tapo.yaml)", False))
    return found


# ---- the dry run: files, model, data, engine arguments ---------------------------------------------------


def looks_local(name: str) -> bool:
    """Whether a model or data name is a local path (rather than a hub id).

    An existing path, one starting with `.`, `/` or `~`, a data file name, a path of three or more
    parts, or `DIR/name` where DIR is an existing local folder is local; anything else (`owner/name`,
    a bare name) is a hub id.

    >>> looks_local("runs/x/model"), looks_local("./m"), looks_local("Qwen/Qwen3-8B"), looks_local("data.jsonl")
    (True, True, False, True)
    """
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        return True
    if path.suffix.lower() in (".jsonl", ".json", ".parquet"):
        return True
    return name.count("/") >= 2 or (name.count("/") == 1 and path.parent.is_dir())


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
    from tapo.engine.run import build_dataset

    return len(build_dataset(RunConfig(data=data)))


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


def check_template(path: str, *, where: str, note: str = "") -> None:
    """`tapo.synthesis_template` exists and uses exactly the `self` template's placeholders."""
    from tapo.core.synthesis import build_self_prompt

    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{where}: tapo.synthesis_template: file not found: {path}{note}")
    try:
        build_self_prompt(question="q", negative="n", positive="p", template=file.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"{where}: tapo.synthesis_template: {path}: {error}{note}") from error


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
    template = config.tapo.get("synthesis_template") if config.algorithm == "tapo" else None
    if template:
        checks["template"] = lambda: check_template(template, where=where, note=note("tapo.synthesis_template"))
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
    once here to see it is not empty (TRL would "train" 0 steps on it).
    """
    from tapo.config import override_origins

    set_by = override_origins(overrides)
    errors, _, data_line = _file_problems(config, where=where, set_by=set_by, output_dir=output_dir, planned={})
    rows = re.search(r"\((\d+) rows\)", data_line or "")
    if rows and int(rows.group(1)) == 0:
        errors.append(_rows_problem(0, 1, where=where, data=config.data, set_by=set_by))
    if errors:
        raise ConfigError("\n".join(errors))


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
    from tapo.engine.arguments import GRPOConfig

    from tapo.config import override_origins
    from tapo.engine.run import TRAINER_DEFAULTS
    from tapo.engine.trainer import TAPOConfig

    set_by = override_origins(overrides)
    run_dir = output_dir or config.output_dir
    settings = {**TRAINER_DEFAULTS, **config.trainer, "output_dir": run_dir, "seed": config.seed}
    errors, args, note = [], None, None
    try:
        if config.algorithm == "tapo":
            args, note = engine_args(TAPOConfig, {**settings, **config.tapo}, where=where, section="trainer/tapo")
        else:
            args, note = engine_args(GRPOConfig, settings, where=where, section="trainer")
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
