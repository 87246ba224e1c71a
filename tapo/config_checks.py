"""The value rules every config load applies (`value_problems`, called by `tapo.config.validate`).

The type of every value (our sections' annotations; TRL's GRPOConfig field types under
`trainer:`, SDPOConfig's under `trainer:` and `sdpo:` for algorithm sdpo), the ranges and choices in
the tables below, and combinations that cannot run, that TRL would get wrong silently or only fail
on mid-run, or that would leave TAPO or SDPO inert. Choices come from the modules that act on them
(`tapo.core`, `tapo.engine.sdpo`), not copies.

This module sits below `tapo.config` (which imports it) and imports nothing of it: `config` is a
`tapo.config.RunConfig`, and its dataclasses are read from the config object itself. The dry
run's checks of files and of TRL's own `__post_init__` are in `tapo.validate`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Callable
from enum import Enum
from typing import Any

import yaml

ALGORITHMS = ("grpo", "tapo", "sdpo")
MODEL_DTYPES = ("float32", "bfloat16", "float16", "float64")  # torch dtypes `tapo.models.load_policy` takes


def suggest(word: str, candidates) -> str | None:
    """The candidate closest to a misspelt `word` (difflib, case-insensitive), or None."""
    by_lower = {str(c).lower(): c for c in candidates}
    match = difflib.get_close_matches(str(word).lower(), list(by_lower), n=1, cutoff=0.6)
    return str(by_lower[match[0]]) if match else None


def origin_note(key: str, set_by: dict[str, str] | None) -> str:
    """` (from --set KEY=VALUE)` when a `--set` gave `key` or a section above it; else "" (the file did)."""
    parts = key.split(".")
    for depth in range(len(parts), 0, -1):
        text = (set_by or {}).get(".".join(parts[:depth]))
        if text is not None:
            return f" (from --set {text})"
    return ""


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
    "tapo.splice_locate_tokens": at_least(1, " (the token budget of splice's locate call)"),
    "tapo.splice_continuation_tokens": at_least(1, " (the token budget of splice's continuation)"),
    "tapo.update_buckets": at_least(1, " (forward passes of the update, rows grouped by length)"),
    "tapo.splice_surprise_threshold": above(0, " (nats of surprise that mark y-'s first mistake)"),
    "tapo.synthesis_template": not_empty,
    "tapo.splice_locate_template": not_empty,
    "tapo.max_construction_tokens": at_least(1),
    # SDPO (TRL's SDPOConfig, whose __post_init__ checks distillation_weight and distillation_alpha only)
    "sdpo.distillation_weight": lambda v: None if 0 <= v <= 1 else f"must be in [0, 1] (1: pure self-distillation, "
                                                                     f"0: the policy-gradient term alone), got {v!r}",
    "sdpo.distillation_topk": at_least(1),
    "sdpo.distillation_is_clip": above(0, " (null turns the clipping off)"),
    "sdpo.teacher_update_rate": lambda v: None if 0 <= v <= 1 else f"must be in [0, 1] (the EMA step), got {v!r}",
    "sdpo.teacher_sync_steps": at_least(1),
    "sdpo.max_reprompt_len": at_least(1, " (tokens of the teacher's prompt)"),
    "sdpo.diagnostics_warning_interval": at_least(0),
    "sdpo.diagnostics_flat_tolerance": at_least(0),
    "trainer.max_prompt_length": at_least(1, " (null keeps prompts whole)"),
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
    from tapo.core.constructors import SPLICE_FALLBACKS, SPLICE_LOCATORS, STRATEGIES
    from tapo.engine.arguments import TEACHER_KINDS

    table = {
        "algorithm": ALGORITHMS,
        "model.dtype": MODEL_DTYPES,
        "tapo.construction": STRATEGIES,
        "tapo.splice_fallback": SPLICE_FALLBACKS,
        "tapo.splice_locate": SPLICE_LOCATORS,
        "tapo.synthesis_schedule": ("inline", "deferred"),
        "tapo.ref_baseline": BASELINES,
        "sdpo.teacher_model_kind": TEACHER_KINDS,
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


def _values(config) -> list[tuple[str, Any, Any]]:
    """(dotted key, value, type annotation) of every key a config sets or defaults."""
    from tapo.engine.arguments import engine_config_class

    engine = _hints(engine_config_class(config.algorithm))
    items = [(key, getattr(config, key), _hints(type(config))[key]) for key in ("algorithm", "seed", "output_dir")]
    for section in ("model", "data", "reward"):  # ModelSection, DataSection, RewardSection
        cls = type(getattr(config, section))
        hints = _hints(cls)
        items += [(f"{section}.{key}", getattr(getattr(config, section), key), hints[key]) for key in hints]
    for section in ("trainer", "tapo", "sdpo"):
        items += [(f"{section}.{key}", value, engine.get(key, Any)) for key, value in getattr(config, section).items()]
    return items


def value_problems(config, *, set_by: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
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


def engine_setting(config, key: str):
    """A `trainer`, `tapo` or `sdpo` key's value as the engine will see it: the config's, our default, else TRL's
    (SDPOConfig's for algorithm sdpo, whose defaults differ from GRPOConfig's: learning_rate, max_completion_length)."""
    from tapo.engine.arguments import TRAINER_DEFAULTS, engine_config_class

    for given in (config.tapo, config.sdpo, config.trainer, TRAINER_DEFAULTS):
        if key in given:
            return given[key]
    field = next(f for f in dataclasses.fields(engine_config_class(config.algorithm)) if f.name == key)
    return field.default if field.default_factory is dataclasses.MISSING else field.default_factory()


def combination_problems(config) -> list[tuple[tuple[str, ...], str, bool]]:
    """(keys, problem, fatal) for values that are fine alone but cannot run, or leave TAPO inert, together."""
    if config.algorithm == "sdpo":
        return sdpo_problems(config)
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


def sdpo_problems(config) -> list[tuple[tuple[str, ...], str, bool]]:
    """(keys, problem, fatal) for SDPO settings that TRL's SDPOTrainer ignores, rejects only after the model has
    loaded, fails on mid-run, or that leave it nothing to distil."""
    from tapo.engine.arguments import SDPO_LOSS_TYPES

    get = functools.partial(engine_setting, config)
    found = []
    if get("beta") != 0:
        found.append((("trainer.beta",), f"trainer.beta is {get('beta')}: TRL 1.16's SDPOTrainer has no KL term to a "
                      "reference model (it stores beta and never uses it); set beta 0, or use algorithm grpo or tapo "
                      "for a KL penalty", True))
    if get("loss_type") not in SDPO_LOSS_TYPES:
        found.append((("trainer.loss_type",), f"trainer.loss_type {get('loss_type')!r}: SDPOTrainer's policy term "
                      f"implements {', '.join(SDPO_LOSS_TYPES)} only", True))
    mode, topk = get("distillation_mode"), get("distillation_topk")
    if mode == "topk_logits" and topk is None:
        found.append((("sdpo.distillation_mode", "sdpo.distillation_topk"), "sdpo.distillation_mode topk_logits needs "
                      "sdpo.distillation_topk (TRL fails on it at the first loss otherwise)", True))
    if mode != "topk_logits" and topk is not None:
        found.append((("sdpo.distillation_topk", "sdpo.distillation_mode"), f"sdpo.distillation_topk is for "
                      f"distillation_mode topk_logits only (TRL: leave it unset otherwise), mode is {mode!r}", True))
    if get("use_teacher_server"):
        # SDPOTrainer's own rules, checked here so that the dry run and the real run fail before a model loads.
        wrong = [text for ok, text in (
            (get("use_vllm") and get("vllm_mode") == "server", "trainer.use_vllm true with trainer.vllm_mode server"),
            (get("teacher_model_kind") == "live", "sdpo.teacher_model_kind live"),
            (get("distillation_weight") == 1.0, "sdpo.distillation_weight 1.0"),
            (mode in ("sampled_token", "topk_logits"), "sdpo.distillation_mode sampled_token or topk_logits"),
        ) if not ok]
        if wrong:
            found.append((("sdpo.use_teacher_server",), "sdpo.use_teacher_server (teacher log-probs from the vLLM "
                          f"generation server) needs {'; '.join(wrong)}", True))
    if not get("use_successful_as_teacher") and not get("include_environment_feedback") and get("distillation_weight"):
        found.append((("sdpo.use_successful_as_teacher", "sdpo.include_environment_feedback"), "sdpo: neither "
                      "successful rollouts (use_successful_as_teacher) nor the gold answer "
                      "(include_environment_feedback) reach the teacher, so no rollout is ever distilled and the "
                      "self-distillation loss is 0", False))
    elif get("use_successful_as_teacher") and get("success_reward_threshold") > 1.0 \
            and not get("include_environment_feedback") and get("distillation_weight"):
        threshold = get("success_reward_threshold")
        found.append((("sdpo.success_reward_threshold",), f"sdpo.success_reward_threshold {threshold} is above the "
                      "reward's maximum (math_reward scores 1.0 for a right answer), so no rollout is ever a "
                      "demonstration and the self-distillation loss is 0", False))
    return found
