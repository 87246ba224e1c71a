"""Cold-start and filter configuration: dataclasses read from YAML, overridable with `--set key=value`.

A cold-start config (see `recipes/coldstart-demo.yaml`, `recipes/paper/coldstart.yaml`):

    seed: 0
    output_dir: runs/coldstart
    model: {name: builtin:smollm2-135m-instruct}        # the base model (same section as `tapo train`)
    data: {source: builtin:arithmetic, n: 64, n_steps: 1}  # the queries (same section as `tapo train`)
    build: {construction: aligned, samples: 4, ...}        # BuildSection: sampling, pairing, mix
    teacher: {base_url: ..., model: ...}                   # TeacherSection, for construction: teacher
    sft: {learning_rate: 5.0e-6, num_train_epochs: 3, ...} # TRL SFTConfig fields, validated against it

A filter config has `model`, `data` and a `filter` section (FilterSection). Unknown keys are errors
that name the file and section and list what is allowed, as in `tapo.config`.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from pathlib import Path

from tapo.config import (
    ConfigError,
    DataSection,
    ModelSection,
    _check_keys,
    _field_names,
    load_section,
    load_top_level,
    origin_note,
    read_config_file,
    type_problem,
)
from tapo.sampling.backends import BACKENDS

CONSTRUCTIONS = ("aligned", "self", "splice", "teacher")
POSITIVE_SOURCES = ("policy", "reference", "either")
SYNTHETIC_NEGATIVE = ("never", "unparsable", "always")
MIX_KINDS = ("trajectory", "synthesis", "plain", "locate")  # the kinds of cold-start SFT example (build.mix keys)
# The paper's cold start (DESIGN section 1): lr 5e-6, 50 warm-up steps, cosine decay, 3 epochs.
SFT_DEFAULTS = {
    "learning_rate": 5e-6,
    "warmup_steps": 50,
    "lr_scheduler_type": "cosine",
    "num_train_epochs": 3,
    "per_device_train_batch_size": 8,
    "max_length": 4096,
    "logging_steps": 1,
    "save_strategy": "steps",
    "save_steps": 100,
    "report_to": [],
    "bf16": False,
}
# Keys the runner sets itself (the output folder, the seed, the loss mask).
RUNNER_OWNED_SFT_KEYS = ("output_dir", "seed", "completion_only_loss")


@dataclass
class SamplingSection:
    """How responses are sampled from a model (shared by `build` and `filter`)."""

    samples: int = 8  # responses per query (K)
    max_new_tokens: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 32  # sequences per generate call (HF backend)
    backend: str = "auto"  # auto (vLLM on a CUDA GPU when installed, else hf) | hf | vllm
    chat_template_kwargs: dict = field(default_factory=dict)  # e.g. {enable_thinking: false} for Qwen3


@dataclass
class BuildSection(SamplingSection):
    """`tapo coldstart build`: sample, pair wrong with right, construct, mix into SFT examples."""

    construction: str = "aligned"  # aligned | self | splice | teacher
    n_pos: int = 1  # a query is eligible with >= n_pos right samples (ignored when positive_source: reference)
    n_neg: int = 1  # ... and >= n_neg wrong ones (ignored when synthetic_negative: always)
    # Where y+ comes from. policy: the model's own right samples (the paper). reference: the task's
    # gold reference solution (builtin:arithmetic only; fine for supervised data, and the only way
    # when the base model is almost never right). either: the policy's when it has n_pos, else the reference.
    positive_source: str = "policy"
    # When y- is a corrupted reference solution (builtin:arithmetic only): never; unparsable (the
    # model's wrong sample has no checkable step); always (no sampling needed at all).
    synthetic_negative: str = "never"
    # trajectory : synthesis : plain : locate examples (the paper: 2 : 1, no plain or locate). The largest
    # weight uses every kept construction; the others are drawn from the same constructions. A plain example
    # is the pair's y+ alone (no reflection), so the model also learns to answer without reflecting. A locate
    # example is splice's `ask` locate prompt -> <quote>y-'s first wrong step</quote><analysis>...</analysis>,
    # for runs that train with construction: splice (aligned constructions only: their wrong step is known).
    mix: dict = field(default_factory=lambda: {"trajectory": 2, "synthesis": 1})
    synthesis_temperature: float = 0.7  # self / splice: the model writes the construction
    synthesis_top_p: float = 0.95
    synthesis_max_new_tokens: int = 1536
    max_reflection_chars: int | None = None
    self_template: str | None = None  # path of a custom synthesis template ($question, $negative, $positive)
    locate_template: str | None = None  # path of a custom splice locate template (the same placeholders)


@dataclass
class TeacherSection:
    """An OpenAI-compatible chat endpoint (`tapo.endpoint.EndpointConfig`) for construction: teacher."""

    base_url: str | None = None  # e.g. http://localhost:8000/v1
    model: str | None = None  # the served model's name
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this environment variable, never from the file
    max_concurrency: int = 4
    max_retries: int = 4
    timeout_s: float = 120.0
    temperature: float = 0.0
    max_tokens: int = 1024
    cache_dir: str | None = None  # default: <output_dir>/teacher-cache (a rerun pays nothing twice)


@dataclass
class FilterSection(SamplingSection):
    """`tapo filter`: keep queries whose estimated pass rate lies in [low, high] (inclusive)."""

    low: float = 0.125
    high: float = 0.875


@dataclass
class ColdStartConfig:
    seed: int = 0
    output_dir: str = "runs/coldstart"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    build: BuildSection = field(default_factory=BuildSection)
    teacher: TeacherSection = field(default_factory=TeacherSection)
    sft: dict = field(default_factory=dict)  # TRL SFTConfig fields over SFT_DEFAULTS

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class FilterConfig:
    seed: int = 0
    output_dir: str = "runs/filter"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    filter: FilterSection = field(default_factory=FilterSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _choice(value: str, allowed: tuple[str, ...], *, key: str, where: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{where}: {key} must be one of {', '.join(allowed)}, got {value!r}")


def check_generation(*, temperature: float, top_p: float, max_new_tokens: int, prefix: str, where: str) -> None:
    """Raise ConfigError naming `PREFIX`temperature / top_p / max_new_tokens when `SamplingSettings` would refuse it.

    Shared by the sampling options (`build.temperature`) and the synthesis ones (`build.synthesis_temperature`),
    so that a bad value is named by its own key at load, not as a bare `top_p` after the sampling stage.

    >>> check_generation(temperature=0.7, top_p=1.5, max_new_tokens=8, prefix="build.synthesis_", where="c.yaml")
    Traceback (most recent call last):
    ...
    tapo.config.ConfigError: c.yaml: build.synthesis_top_p must be in (0, 1], got 1.5
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"{where}: {prefix}max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ConfigError(f"{where}: {prefix}temperature must be >= 0, got {temperature!r}")
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ConfigError(f"{where}: {prefix}top_p must be in (0, 1], got {top_p!r}")


def check_sampling(section: SamplingSection, *, name: str, where: str) -> None:
    """Raise ConfigError naming the first sampling option that cannot work."""
    if not isinstance(section.samples, int) or section.samples < 0:
        raise ConfigError(f"{where}: {name}.samples must be a non-negative integer, got {section.samples!r}")
    check_generation(temperature=section.temperature, top_p=section.top_p, max_new_tokens=section.max_new_tokens,
                     prefix=f"{name}.", where=where)
    if not isinstance(section.batch_size, int) or section.batch_size < 1:
        raise ConfigError(f"{where}: {name}.batch_size must be a positive integer, got {section.batch_size!r}")
    _choice(section.backend, BACKENDS, key=f"{name}.backend", where=where)


def check_build(
    build: BuildSection,
    teacher: TeacherSection,
    data: DataSection,
    *,
    where: str,
    set_by: dict[str, str] | None = None,
) -> None:
    """Raise ConfigError naming the first build option that cannot work with this data.

    Everything the build would otherwise find only after its sampling stage (minutes to hours) is
    checked here: the synthesis sampling options and the templates' placeholders among them.
    """
    check_sampling(build, name="build", where=where)
    check_generation(temperature=build.synthesis_temperature, top_p=build.synthesis_top_p,
                     max_new_tokens=build.synthesis_max_new_tokens, prefix="build.synthesis_", where=where)
    _choice(build.construction, CONSTRUCTIONS, key="build.construction", where=where)
    _choice(build.positive_source, POSITIVE_SOURCES, key="build.positive_source", where=where)
    _choice(build.synthetic_negative, SYNTHETIC_NEGATIVE, key="build.synthetic_negative", where=where)
    if data.source != "builtin:arithmetic":
        needs_task = {
            "construction": build.construction == "aligned",
            "positive_source": build.positive_source != "policy",
            "synthetic_negative": build.synthetic_negative != "never",
        }
        for key, needs in needs_task.items():
            if needs:
                raise ConfigError(
                    f"{where}: build.{key}: {getattr(build, key)} needs the built-in arithmetic task (reference "
                    f"solutions with checkable steps), but data.source is {data.source!r}"
                )
    mix = build.mix
    if not isinstance(mix, dict) or set(mix) - set(MIX_KINDS):
        raise ConfigError(f"{where}: build.mix must map trajectory, synthesis, plain and/or locate to weights, got {mix!r}")
    weights = [mix.get(kind, 0) for kind in MIX_KINDS]
    if any(not isinstance(w, (int, float)) or w < 0 for w in weights) or sum(weights) == 0:
        raise ConfigError(f"{where}: build.mix weights must be non-negative numbers, not all 0, got {mix!r}")
    if build.samples == 0 and build.synthetic_negative != "always":
        raise ConfigError(f"{where}: build.samples is 0, so y- must come from build.synthetic_negative: always")
    if build.samples == 0 and build.positive_source == "policy":
        raise ConfigError(f"{where}: build.samples is 0, so y+ must come from build.positive_source: reference")
    for key in ("n_pos", "n_neg"):
        if not isinstance(getattr(build, key), int) or getattr(build, key) < (1 if key == "n_pos" else 0):
            raise ConfigError(f"{where}: build.{key} must be an integer >= {1 if key == 'n_pos' else 0}")
    check_eligibility(build, where=where)
    check_templates(build, where=where, set_by=set_by)
    if mix.get("locate", 0) and build.construction != "aligned":
        raise ConfigError(
            f"{where}: build.mix.locate needs construction: aligned (a locate example quotes y-'s known first wrong "
            f"step), got {build.construction!r}"
        )
    if build.construction == "teacher" and (not teacher.base_url or not teacher.model):
        raise ConfigError(f"{where}: construction: teacher needs teacher.base_url and teacher.model")


def check_eligibility(build: BuildSection, *, where: str) -> None:
    """Refuse n_pos / n_neg that a query's `build.samples` samples can never meet: the build would sample every
    query and keep nothing (as `tapo.n_pos + tapo.n_neg > trainer.num_generations` is refused in training).

    `tapo.coldstart.build.choose_pair`: the policy's own y+ (positive_source: policy) needs >= n_pos right
    samples; a sampled y- (synthetic_negative: never / unparsable) needs >= n_neg wrong ones, and at least
    one even at n_neg 0 (`select_pairs` draws y- from them). `either` falls back to the reference y+, and
    `always` corrupts the reference for y-, so those needs drop out.

    >>> check_eligibility(BuildSection(samples=2, n_pos=2, n_neg=1), where="c.yaml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tapo.config.ConfigError: c.yaml: build.n_pos + build.n_neg (2 + 1) must be <= build.samples (2): ...
    """
    always = build.synthetic_negative == "always"
    needs = {
        "build.n_pos": build.n_pos if build.positive_source == "policy" else 0,
        "build.n_neg": 0 if always else max(build.n_neg, 1),
    }
    needs = {key: n for key, n in needs.items() if n}
    if sum(needs.values()) <= build.samples:
        return
    zero = " (build.n_neg 0 still needs one wrong sample: y- is one)" if not always and build.n_neg == 0 else ""
    eligible = " and ".join(f">= {n} {'right' if key == 'build.n_pos' else 'wrong'}" for key, n in needs.items())
    raise ConfigError(
        f"{where}: {' + '.join(needs)} ({' + '.join(map(str, needs.values()))}) must be <= build.samples "
        f"({build.samples}){zero}: with positive_source: {build.positive_source} and synthetic_negative: "
        f"{build.synthetic_negative} a query is eligible with {eligible} samples out of its {build.samples}, so "
        f"none ever would be and the build would keep nothing; raise build.samples or lower {' / '.join(needs)}"
    )


def check_templates(build: BuildSection, *, where: str, set_by: dict[str, str] | None = None) -> None:
    """`build.self_template` / `build.locate_template` exist and use exactly their prompt's placeholders
    ($question, $negative, $positive), checked at load as `tapo train` checks its templates, not only when
    the first prompt is filled after the sampling stage."""
    from tapo.validate import check_template  # deferred: tapo.validate describes cold-start configs too

    for name in ("self_template", "locate_template"):
        path, key = getattr(build, name), f"build.{name}"
        if path is None:
            continue
        if not Path(path).is_file():  # the path as the build reads it (no ~ expansion)
            raise ConfigError(f"{where}: {key}: file not found: {path}{origin_note(key, set_by)}")
        check_template(path, where=where, note=origin_note(key, set_by), key=key)


def sft_settings(config: ColdStartConfig, *, output_dir: str | Path) -> dict:
    """The keyword arguments of TRL's SFTConfig: our defaults, then the config's `sft` section."""
    settings = {
        **SFT_DEFAULTS,
        **config.sft,
        "output_dir": str(output_dir),
        "seed": config.seed,
        "completion_only_loss": True,  # loss on the completion (the assistant turn) only
    }
    if "activation_checkpointing" not in settings and "gradient_checkpointing" not in settings:
        # TRL's SFTConfig default (True), under the name transformers 5 uses (the old one is deprecated)
        settings["activation_checkpointing"] = True
    return settings


def check_sft(sft: dict, *, where: str, set_by: dict[str, str] | None = None) -> None:
    """The `sft` section's keys are SFTConfig fields, none is one the runner sets, and each value has its
    field's type (as `trainer:` against GRPOConfig), so `sft.learning_rate: abc` is named here, not met as
    a formatting error in the dry run or a TypeError inside TRL."""
    from tapo.engine.arguments import SFTConfig

    owned = sorted(set(sft) & set(RUNNER_OWNED_SFT_KEYS))
    if owned:
        raise ConfigError(f"{where}: {', '.join(owned)} cannot be set under 'sft' (the runner sets it)")
    _check_keys("sft", sft, _field_names(SFTConfig), where=where, set_by=set_by)
    hints = typing.get_type_hints(SFTConfig)
    problems = [f"{where}: sft.{key} {problem}{origin_note(f'sft.{key}', set_by)}"
                for key, value in sft.items() if (problem := type_problem(value, hints[key]))]
    if problems:
        raise ConfigError("\n".join(problems))


def build_coldstart_config(raw: dict, *, where: str = "config", set_by: dict[str, str] | None = None) -> ColdStartConfig:
    """Validate a raw mapping into a ColdStartConfig (sections through `tapo.config.load_section`)."""
    top = load_top_level(raw, ColdStartConfig, where=where, set_by=set_by)
    sft = raw.get("sft") or {}
    if not isinstance(sft, dict):
        raise ConfigError(f"{where}: 'sft' must be a mapping of TRL SFTConfig fields")
    section = functools.partial(load_section, raw, where=where, set_by=set_by)
    config = ColdStartConfig(
        **top,
        model=section("model", ModelSection),
        data=section("data", DataSection),
        build=section("build", BuildSection),
        teacher=section("teacher", TeacherSection),
        sft=dict(sft),
    )
    check_build(config.build, config.teacher, config.data, where=where, set_by=set_by)
    check_sft(config.sft, where=where, set_by=set_by)
    return config


def build_filter_config(raw: dict, *, where: str = "config", set_by: dict[str, str] | None = None) -> FilterConfig:
    """Validate a raw mapping into a FilterConfig (sections through `tapo.config.load_section`)."""
    top = load_top_level(raw, FilterConfig, where=where, set_by=set_by)
    section = functools.partial(load_section, raw, where=where, set_by=set_by)
    config = FilterConfig(
        **top,
        model=section("model", ModelSection),
        data=section("data", DataSection),
        filter=section("filter", FilterSection),
    )
    section = config.filter
    check_sampling(section, name="filter", where=where)
    if section.samples < 1:
        raise ConfigError(f"{where}: filter.samples must be >= 1 to estimate a pass rate")
    if not 0 <= section.low <= section.high <= 1:
        raise ConfigError(f"{where}: need 0 <= filter.low <= filter.high <= 1, got low={section.low}, high={section.high}")
    n = section.samples
    if not any(keep(k / n, low=section.low, high=section.high) for k in range(n + 1)):
        rates = ", ".join(f"{k / n:g}" for k in range(n + 1)) if n <= 10 else f"0, 1/{n}, ..., 1"
        raise ConfigError(
            f"{where}: no pass rate can lie in [{section.low:g}, {section.high:g}] with filter.samples {n} (a query's "
            f"pass rate is k/{n}: {rates}); widen the range or raise filter.samples"
        )
    return config


def keep(pass_rate: float, *, low: float, high: float) -> bool:
    """Whether a query stays: low <= pass_rate <= high (both ends inclusive).

    >>> [keep(p, low=0.125, high=0.875) for p in (0.0, 0.125, 0.5, 0.875, 1.0)]
    [False, True, True, True, False]
    """
    eps = 1e-9  # 1/8 computed as a mean of floats is exactly representable, but a user's 0.1 may not be
    return low - eps <= pass_rate <= high + eps


def load_coldstart_config(path: str | Path | None, overrides: list[str] | None = None) -> ColdStartConfig:
    """Read a YAML file (or nothing), apply `--set` overrides, validate."""
    raw, where, set_by = read_config_file(path, overrides)
    return build_coldstart_config(raw, where=where, set_by=set_by)


def load_filter_config(path: str | Path | None, overrides: list[str] | None = None) -> FilterConfig:
    raw, where, set_by = read_config_file(path, overrides)
    return build_filter_config(raw, where=where, set_by=set_by)
