"""Run configuration: dataclasses read from YAML, overridable with `key=value`, saved with every run.

A config file has five sections besides `algorithm`, `seed` and `output_dir`:

    algorithm: tapo            # or grpo
    model: {name: builtin:tiny, dtype: float32}
    data: {source: builtin:arithmetic, n: 256, n_steps: 3, max_operand: 20}
    trainer: {learning_rate: 1.0e-5, max_steps: 5, num_generations: 8, ...}   # TRL GRPOConfig fields
    tapo: {n_pos: 2, n_neg: 4, m_max: 4, construction: aligned, ...}       # TAPO options (TAPOConfig)

Unknown keys are errors that name the section and list what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ALGORITHMS = ("grpo", "tapo")
# Keys the runner sets itself; a config that sets them under `trainer:` would be silently overridden.
RUNNER_OWNED_TRAINER_KEYS = ("output_dir", "seed", "logging_steps", "report_to")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-5` and `1.0e5` as floats (YAML 1.1 only knows `1.0e-5`); quoted stays str."""


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes strings `_Loader` would read as floats, so save -> load gives them back."""


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


@dataclass
class ModelSection:
    name: str = "builtin:tiny"  # builtin:tiny | builtin:smollm2-135m-instruct | hub id | local folder
    dtype: str = "float32"


@dataclass
class DataSection:
    source: str = "builtin:arithmetic"  # builtin:arithmetic | local .jsonl/.parquet | hub id
    split: str = "train"
    problem_key: str | None = None
    answer_key: str | None = None
    limit: int | None = None
    instruction: str = "Please reason step by step, and put your final answer within \\boxed{}."
    system_prompt: str | None = None
    # builtin:arithmetic only
    n: int = 256
    data_seed: int = 0
    n_steps: Any = 3  # int or [low, high]
    max_operand: int = 20


@dataclass
class RunConfig:
    algorithm: str = "grpo"
    seed: int = 0
    output_dir: str = "runs/default"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    trainer: dict = field(default_factory=dict)  # TRL GRPOConfig fields, validated against it
    tapo: dict = field(default_factory=dict)  # TAPO options, validated against TAPOConfig

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the file and key."""


def _check_keys(section: str, given: dict, allowed: set[str], *, where: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) in '{section}': {', '.join(unknown)}. Allowed: {', '.join(sorted(allowed))}"
        )


def _field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def parse_override(text: str) -> tuple[list[str], Any]:
    """`"trainer.learning_rate=1e-5"` -> (["trainer", "learning_rate"], 1e-05); values are YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value (e.g. trainer.max_steps=10)")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set {text!r}: empty key")
    value = _load_yaml(raw) if raw.strip() else ""
    return key.strip().split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `--set a.b=value` overrides to a raw config mapping (a copy is returned)."""
    merged = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for text in overrides:
        path, value = parse_override(text)
        node = merged
        for part in path[:-1]:
            if node.get(part) is None:  # absent, or an empty section (`tapo:` with nothing under it)
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: '{part}' is not a section")
        node[path[-1]] = value
    return merged


def build_config(raw: dict, *, where: str = "config") -> RunConfig:
    """Validate a raw mapping into a RunConfig; engine-specific sections are checked against TRL's dataclasses."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
    _check_keys("top level", raw, _field_names(RunConfig), where=where)
    sections = {}
    for name, cls in (("model", ModelSection), ("data", DataSection)):
        given = raw.get(name) or {}
        if isinstance(given, str) and name == "model":
            given = {"name": given}
        if not isinstance(given, dict):
            raise ConfigError(f"{where}: '{name}' must be a mapping")
        _check_keys(name, given, _field_names(cls), where=where)
        sections[name] = cls(**given)
    trainer = dict(raw.get("trainer") or {})
    tapo = dict(raw.get("tapo") or {})
    config = RunConfig(
        algorithm=str(raw.get("algorithm", "grpo")),
        seed=int(raw.get("seed", 0)),
        output_dir=str(raw.get("output_dir", RunConfig.output_dir)),
        trainer=trainer,
        tapo=tapo,
        **sections,
    )
    validate(config, where=where)
    return config


def validate(config: RunConfig, *, where: str = "config") -> None:
    if config.algorithm not in ALGORITHMS:
        raise ConfigError(f"{where}: algorithm must be one of {', '.join(ALGORITHMS)}, got {config.algorithm!r}")
    from tapo.trainer import TAPOConfig, tapo_option_names  # TRL import, deferred so --help stays fast

    owned = sorted(set(config.trainer) & set(RUNNER_OWNED_TRAINER_KEYS))
    if owned:
        raise ConfigError(f"{where}: set {', '.join(owned)} at the top level or on the command line, not in 'trainer'")
    tapo_keys = tapo_option_names()
    misplaced = sorted(set(config.trainer) & tapo_keys)
    if misplaced:
        raise ConfigError(f"{where}: {', '.join(misplaced)} belong in the 'tapo' section, not 'trainer'")
    _check_keys("trainer", config.trainer, _field_names(TAPOConfig) - tapo_keys, where=where)
    _check_keys("tapo", config.tapo, tapo_keys, where=where)
    if config.algorithm == "grpo" and config.tapo:
        raise ConfigError(f"{where}: a 'tapo' section was given but algorithm is grpo")


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML file, apply `--set` overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = _load_yaml(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    return build_config(apply_overrides(raw, overrides or []), where=str(path))


def save_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.dump(config.to_dict(), Dumper=_Dumper, sort_keys=False))
