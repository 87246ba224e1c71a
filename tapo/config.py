"""Run configuration: dataclasses read from YAML, overridable with `key=value`, saved with every run.

A config file has these sections besides `algorithm`, `seed` and `output_dir`:

    algorithm: tapo            # or grpo, or sdpo
    model: {name: builtin:tiny, dtype: float32}
    data: {source: builtin:arithmetic, n: 256, n_steps: 3, max_operand: 20}
    reward: {timeout_s: 5.0, workers: 2}     # answer checking: limit per item, items checked at once
    trainer: {learning_rate: 1.0e-5, max_steps: 5, num_generations: 8, ...}   # TRL GRPOConfig fields
    tapo: {n_pos: 2, n_neg: 4, m_max: 4, construction: aligned, ...}       # TAPO options (TAPOConfig)
    sdpo: {teacher_model_kind: ema, distillation_weight: 1.0, ...}        # SDPO options (SDPOConfig's own)

Under `algorithm: sdpo`, `trainer:` takes TRL's SDPOConfig fields other than SDPO's own (which go under
`sdpo:`): GRPOConfig's, less the few SDPOTrainer lacks. A `tapo:` or `sdpo:` section is an error with
another algorithm.

Every key is checked when a config is built (`build_config`, so `tapo train` and its dry run alike):
unknown keys (with a "did you mean"), the type of every value (our sections' annotations, TRL's
GRPOConfig / SDPOConfig field types under `trainer:` and `sdpo:`), and the ranges, choices and
combinations in `tapo.config_checks`. Each error names the file, the key, and the `--set key=value`
that gave it if one did.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tapo.config_checks import ALGORITHMS, key_problem, origin_note, suggest, type_problem, value_problems

# Keys the runner sets itself; a config that sets them under `trainer:` would be silently overridden.
RUNNER_OWNED_TRAINER_KEYS = ("output_dir", "seed", "logging_steps", "report_to")
ENGINE_SECTIONS = ("trainer", "tapo", "sdpo")  # mappings handed to the engine's argument classes
LISTED_KEYS_MAX = 30  # an unknown key's error lists the allowed ones only for sections this small
RESERVED_STARTS = "@`&*%"  # YAML indicators a `--set` value cannot start with (quote the value instead)
_log = logging.getLogger("tapo")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-5` and `1.0e5` as floats (YAML 1.1 only knows `1.0e-5`); quoted stays str.

    A key given twice in one mapping is an error: PyYAML keeps the last, so a second `trainer:` block
    would silently drop every key of the first.
    """

    def construct_mapping(self, node, deep=False):
        _check_duplicate_keys(self, node)
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes strings `_Loader` would read as floats, so save -> load gives them back."""


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )


def _check_duplicate_keys(loader: _Loader, node: yaml.MappingNode) -> None:
    """Raise ConfigError naming a key that `node` gives twice and both its lines (1-based).

    Only the keys written in the mapping count: those a merge (`<<: *base`) brings in are meant to be
    overridden by them.
    """
    first_line: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            seen = first_line.get(key)
        except TypeError:  # an unhashable key: SafeLoader's own error names it
            continue
        line = key_node.start_mark.line + 1
        if seen is not None:
            raise ConfigError(
                f"duplicate key {key!r} on line {line} (first on line {seen}): YAML keeps only the last, so the "
                "first would be silently lost; keep one (merge the two if they are sections)"
            )
        first_line[key] = line


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
class RewardSection:
    """Answer checking (`tapo.rewards`): the wall-clock limit per item, and how many items run at once."""

    timeout_s: float = 5.0
    workers: int = 2


@dataclass
class RunConfig:
    algorithm: str = "grpo"
    seed: int = 0
    output_dir: str = "runs/default"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    reward: RewardSection = field(default_factory=RewardSection)
    trainer: dict = field(default_factory=dict)  # TRL GRPOConfig fields, validated against it
    tapo: dict = field(default_factory=dict)  # TAPO options, validated against TAPOConfig
    sdpo: dict = field(default_factory=dict)  # SDPO options, validated against SDPOConfig's own fields

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the file and key."""


def _check_keys(
    section: str,
    given: dict,
    allowed: set[str],
    *,
    where: str,
    set_by: dict[str, str] | None = None,
    elsewhere: dict[str, set[str]] | None = None,
) -> None:
    """Unknown keys are errors, each with the closest allowed key ("did you mean"), else the closest key
    of another section (`elsewhere`: section -> keys), and the allowed keys listed when none is close
    and the section is small (TRL's ~200 fields are never listed)."""
    unknown = sorted(set(given) - allowed)
    if not unknown:
        return
    parts, close = [], False
    for key in unknown:
        match = _suggest_key(key, allowed, elsewhere or {})
        close = close or bool(match)
        dotted = key if section == "top level" else f"{section}.{key}"
        parts.append(f"{key}{f' (did you mean {match}?)' if match else ''}{origin_note(dotted, set_by)}")
    message = f"{where}: unknown key(s) in '{section}': {', '.join(parts)}"
    if not close and len(allowed) <= LISTED_KEYS_MAX:
        message += f". Allowed: {', '.join(sorted(allowed))}"
    raise ConfigError(message)


def _suggest_key(key: str, allowed: set[str], elsewhere: dict[str, set[str]]) -> str | None:
    """The closest key of this section, else `section.key` of the closest key of another."""
    match = suggest(key, allowed)
    if match or not elsewhere:
        return match
    dotted = {k: f"{name}.{k}" for name, keys in elsewhere.items() for k in keys}
    found = suggest(key, dotted)
    return dotted[found] if found else None


def override_origins(overrides: list[str] | None) -> dict[str, str]:
    """Dotted key -> the `--set` text that gave it (the last one wins, as in `apply_overrides`)."""
    origins = {}
    for text in overrides or []:
        path, _ = parse_override(text)
        origins[".".join(path)] = text
    return origins


def _field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _section_keys() -> dict[str, set[str]]:
    """Section -> its keys, for suggestions across sections."""
    from tapo.engine.arguments import GRPOConfig, sdpo_option_names, sdpo_trainer_keys, tapo_option_names

    trainer = (_field_names(GRPOConfig) | sdpo_trainer_keys()) - set(RUNNER_OWNED_TRAINER_KEYS)
    return {"model": _field_names(ModelSection), "data": _field_names(DataSection), "reward": _field_names(RewardSection),
            "trainer": trainer, "tapo": tapo_option_names(), "sdpo": sdpo_option_names()}


def parse_override(text: str) -> tuple[list[str], Any]:
    """`"trainer.learning_rate=1e-5"` -> (["trainer", "learning_rate"], 1e-05); values are YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value (e.g. trainer.max_steps=10)")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set {text!r}: empty key")
    return key.strip().split("."), _override_value(text, key.strip(), raw)


def _override_value(text: str, key: str, raw: str) -> Any:
    """The YAML value of one `--set`; what YAML cannot read is a ConfigError that says how to quote it.

    A value starting with one of YAML's reserved indicators is refused too: `@x` and `*x` fail in YAML,
    and `&x` (an anchor with nothing after it) would silently read as null.
    """
    if not raw.strip():
        return ""
    quoted = f"--set '{key}={json.dumps(raw.strip())}'"
    start = raw.strip()[0]
    if start in RESERVED_STARTS:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML (it starts with {start!r}, which YAML "
                          f"reserves); quote it to give it as text, e.g. {quoted}")
    try:
        return _load_yaml(raw)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({problem}); quote it to give it as "
                          f"text, e.g. {quoted}") from None
    except ConfigError as error:  # a duplicate key in a mapping value
        raise ConfigError(f"--set {text!r}: {error}") from None


class OverrideOrigins(dict):
    """`override_origins` (dotted key -> the `--set` text that gave it) of a config file's overrides, and in
    `started` the dotted paths of the mappings a `--set` created because the file has none there.

    A section's loader starts those from the field's default (`_section_mapping`), so that
    `--set build.mix.plain=1` on a file without `mix:` adds a weight to the default mix instead of
    replacing the whole mix with `{plain: 1}`.
    """

    def __init__(self, origins: dict[str, str], *, started: set[str] | frozenset[str] = frozenset()):
        super().__init__(origins)
        self.started = frozenset(started)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `--set a.b=value` overrides to a raw config mapping (a copy is returned)."""
    return _merge_overrides(raw, overrides)[0]


def _merge_overrides(raw: dict, overrides: list[str]) -> tuple[dict, set[str]]:
    """(`apply_overrides`'s copy, the dotted paths of the mappings the overrides created).

    A mapping counts as created when the file lacks it (or leaves it empty) and a later `--set` does not
    give it whole: `--set build.mix.plain=1` creates `build` and `build.mix` on a file without `build:`.
    """
    merged = yaml.safe_load(yaml.safe_dump(raw)) or {}
    started: set[str] = set()
    for text in overrides:
        path, value = parse_override(text)
        node = merged
        for depth, part in enumerate(path[:-1], start=1):
            if node.get(part) is None:  # absent, or an empty section (`tapo:` with nothing under it)
                node[part] = {}
                started.add(".".join(path[:depth]))
            if depth == 1 and part == "model" and isinstance(node[part], str):  # the `model: NAME` short form
                node[part] = {"name": node[part]}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: '{part}' is not a section")
        node[path[-1]] = value
        dotted = ".".join(path)
        started = {p for p in started if p != dotted and not p.startswith(f"{dotted}.")}  # given whole
    return merged, started


def build_config(raw: dict, *, where: str = "config", set_by: dict[str, str] | None = None) -> RunConfig:
    """Validate a raw mapping into a RunConfig; `set_by` (`override_origins`) lets errors name a `--set`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
    if set(raw) - _field_names(RunConfig):  # the sections' keys are suggested too (TRL imported on this path only)
        _check_keys("top level", raw, _field_names(RunConfig), where=where, set_by=set_by, elsewhere=_section_keys())
    sections = {}
    for name, cls in (("model", ModelSection), ("data", DataSection), ("reward", RewardSection)):
        # types are judged afterwards, with every other value, so that all problems are raised together
        sections[name] = cls(**_section_mapping(raw, name, cls, where=where, set_by=set_by))
    for name in ENGINE_SECTIONS:
        if not isinstance(raw.get(name) or {}, dict):
            raise ConfigError(f"{where}: '{name}' must be a mapping{origin_note(name, set_by)}")
    config = RunConfig(
        algorithm=raw.get("algorithm", RunConfig.algorithm),
        seed=raw.get("seed", RunConfig.seed),
        output_dir=raw.get("output_dir", RunConfig.output_dir),
        **{name: dict(raw.get(name) or {}) for name in ENGINE_SECTIONS},
        **sections,
    )
    validate(config, where=where, set_by=set_by)
    return config


def validate(config: RunConfig, *, where: str = "config", set_by: dict[str, str] | None = None) -> None:
    """Keys, then every value (`tapo.config_checks.value_problems`); all problems are raised together.

    Values that would run but leave TAPO inert are logged as warnings (stderr), not errors.
    """
    # TRL imports, deferred so --help stays fast
    from tapo.engine.arguments import GRPOConfig, sdpo_option_names, sdpo_trainer_keys, tapo_option_names

    owned = sorted(set(config.trainer) & set(RUNNER_OWNED_TRAINER_KEYS))
    if owned:
        raise ConfigError(f"{where}: set {', '.join(owned)} at the top level or on the command line, not in 'trainer'")
    sdpo = config.algorithm == "sdpo"
    trainer_keys = sdpo_trainer_keys() if sdpo else _field_names(GRPOConfig)
    options = {"tapo": tapo_option_names(), "sdpo": sdpo_option_names()}
    for section, belongs, keys in (("trainer", "tapo", options["tapo"]), ("trainer", "sdpo", options["sdpo"]),
                                   ("tapo", "trainer", trainer_keys), ("sdpo", "trainer", trainer_keys)):
        misplaced = sorted(set(getattr(config, section)) & keys)
        if misplaced:
            notes = "".join(origin_note(f"{section}.{key}", set_by) for key in misplaced)
            raise ConfigError(
                f"{where}: {', '.join(misplaced)} {'belongs' if len(misplaced) == 1 else 'belong'} in the "
                f"'{belongs}' section, not '{section}'{notes}"
            )
    if sdpo:
        _check_sdpo_lacks(config.trainer, trainer_keys, where=where, set_by=set_by)
    _check_keys("trainer", config.trainer, trainer_keys, where=where, set_by=set_by, elsewhere=options)
    for name, keys in options.items():
        _check_keys(name, getattr(config, name), keys, where=where, set_by=set_by, elsewhere={"trainer": trainer_keys})
        given = getattr(config, name)
        if given and config.algorithm in ALGORITHMS and config.algorithm != name:  # a bad algorithm: value_problems
            notes = "".join(dict.fromkeys(origin_note(f"{name}.{key}", set_by) for key in given))
            raise ConfigError(f"{where}: a '{name}' section was given but algorithm is {config.algorithm}{notes}")
    errors, warnings = value_problems(config, set_by=set_by)
    if errors:
        raise ConfigError("\n".join(f"{where}: {problem}" for problem in errors))
    for warning in warnings:
        _log.warning("warning: %s: %s", where, warning)


def _check_sdpo_lacks(trainer: dict, sdpo_keys: set[str], *, where: str, set_by: dict[str, str] | None) -> None:
    """GRPOConfig options that TRL's SDPOConfig does not have are errors under `algorithm: sdpo` (SDPOTrainer
    would never read them), said as such rather than as unknown keys."""
    from tapo.engine.arguments import GRPOConfig

    lacking = sorted((set(trainer) & _field_names(GRPOConfig)) - sdpo_keys)
    if lacking:
        notes = "".join(origin_note(f"trainer.{key}", set_by) for key in lacking)
        raise ConfigError(f"{where}: trainer.{', trainer.'.join(lacking)}: GRPOConfig option(s) that TRL's SDPOConfig "
                          f"does not have, so SDPOTrainer (algorithm sdpo) would ignore them; remove them{notes}")


def read_config_file(path: str | Path | None, overrides: list[str] | None = None) -> tuple[dict, str, OverrideOrigins]:
    """(raw mapping with `--set` overrides applied, where it came from, `OverrideOrigins`), for every config kind.

    The file is UTF-8 (a byte-order mark is accepted); no file (`None`) gives {} and "command line".
    """
    set_by = override_origins(overrides)
    if path is None:
        merged, started = _merge_overrides({}, overrides or [])
        return merged, "command line", OverrideOrigins(set_by, started=started)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = _load_yaml(path.read_text(encoding="utf-8-sig")) or {}
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    except ConfigError as error:  # a duplicate key (`_Loader`)
        raise ConfigError(f"{path}: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    merged, started = _merge_overrides(raw, overrides or [])
    return merged, str(path), OverrideOrigins(set_by, started=started)


def _section_mapping(raw: dict, name: str, cls, *, where: str, set_by: dict[str, str] | None) -> dict:
    """A section's raw mapping (`model: NAME` short form allowed), its keys checked against `cls`."""
    given = raw.get(name) or {}
    if isinstance(given, str) and name == "model":
        given = {"name": given}
    if not isinstance(given, dict):
        raise ConfigError(f"{where}: '{name}' must be a mapping{origin_note(name, set_by)}")
    _check_keys(name, given, _field_names(cls), where=where, set_by=set_by)
    return _over_defaults(given, name, cls, started=getattr(set_by, "started", frozenset()))


def _over_defaults(given: dict, name: str, cls, *, started: frozenset[str]) -> dict:
    """`given` with each mapping a `--set` started (`OverrideOrigins.started`) laid over its field's default:
    `{mix: {plain: 1}}` of section `build` with `build.mix` started gives BuildSection's default mix plus
    `plain: 1` (`{trajectory: 2, synthesis: 1, plain: 1}`); a mix the file gives is kept as it is."""
    merged = dict(given)
    for f in dataclasses.fields(cls):
        if f"{name}.{f.name}" in started and isinstance(given.get(f.name), dict) \
                and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
            if isinstance(default, dict):
                merged[f.name] = {**default, **given[f.name]}
    return merged


def load_section(raw: dict, name: str, cls, *, where: str, set_by: dict[str, str] | None = None):
    """One dataclass section of any config: a mapping, known keys (did-you-mean), values of the annotated types.

    Shared by the run config and the cold-start / filter configs, so every config kind reports a bad
    section the same way, naming the key and the `--set` that gave it. A key with choices or a range in
    `tapo.config_checks` (`model.dtype`, `data.n_steps`, ...) is held to them here as `tapo train` holds
    it, so `--set model.dtype=bf16` fails at load, not as a missing `torch.bf16` once the model loads.
    """
    given = _section_mapping(raw, name, cls, where=where, set_by=set_by)
    hints = typing.get_type_hints(cls)
    problems = [f"{where}: {name}.{key} {problem}{origin_note(f'{name}.{key}', set_by)}"
                for key, value in given.items() if (problem := key_problem(f"{name}.{key}", value, hints[key]))]
    if problems:
        raise ConfigError("\n".join(problems))
    return cls(**given)


def load_top_level(raw: dict, cls, *, where: str, set_by: dict[str, str] | None = None) -> dict:
    """A config's top level: a mapping of known keys (did-you-mean), and its plain keys (seed, output_dir, ...)
    of the annotated types, as {name: value} for the dataclass; sections are read with `load_section`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
    _check_keys("top level", raw, _field_names(cls), where=where, set_by=set_by)
    hints = typing.get_type_hints(cls)
    plain = [f.name for f in dataclasses.fields(cls) if not dataclasses.is_dataclass(hints[f.name]) and hints[f.name] is not dict]
    problems = [f"{where}: {key} {problem}{origin_note(key, set_by)}"
                for key in plain if key in raw and (problem := type_problem(raw[key], hints[key]))]
    if problems:
        raise ConfigError("\n".join(problems))
    return {key: raw[key] for key in plain if key in raw}


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML file, apply `--set` overrides, validate."""
    raw, where, set_by = read_config_file(path, overrides)
    return build_config(raw, where=where, set_by=set_by)


def dump_config(config) -> str:
    """A config dataclass (anything with `to_dict`) as the YAML `save_config` writes; it loads back the same."""
    return yaml.dump(config.to_dict(), Dumper=_Dumper, sort_keys=False)


def save_config(config, path: str | Path) -> None:
    """Write any config dataclass (run, cold start, filter) as YAML that its loader reads back the same."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(dump_config(config), encoding="utf-8")
