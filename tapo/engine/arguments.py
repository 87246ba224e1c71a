"""The engine's argument dataclasses, for validating configs without building a trainer.

Config validation outside this folder reads them from here, so only `tapo.engine` imports TRL.
"""

from trl import GRPOConfig, SFTConfig

from tapo.engine.sdpo import SDPO_LOSS_TYPES, TEACHER_KINDS, SDPOConfig, sdpo_option_names, sdpo_trainer_keys
from tapo.engine.trainer import TAPOConfig, tapo_option_names

# Sensible small-run defaults; any of them can be set under `trainer:`.
TRAINER_DEFAULTS = {
    "logging_steps": 1,
    "save_strategy": "steps",
    "save_steps": 50,
    "report_to": [],
    "disable_tqdm": True,  # our own bar replaces the Trainer's
    "bf16": False,
    "epsilon_high": 0.28,  # DESIGN: clip 0.2 low, 0.28 high (DAPO), for every algorithm (SDPO's policy term too)
}


def engine_config_class(algorithm: str):
    """The TRL argument class an algorithm's trainer takes: SDPOConfig for sdpo, else TAPOConfig (GRPOConfig's
    fields and TAPO's; a grpo run builds GRPOConfig from the same `trainer:` keys)."""
    return SDPOConfig if algorithm == "sdpo" else TAPOConfig


def checkpointing_by_its_name(settings: dict, *, default: bool = True) -> dict:
    """The settings with activation checkpointing named as transformers names it now.

    TRL 1.16's configs default `gradient_checkpointing` to True, the name transformers 5 deprecates
    (a FutureWarning on every config built). Passing TRL's default under the new name,
    `activation_checkpointing`, keeps the behaviour and silences nothing; a config that names either
    key keeps its own value (and a user's old name still gets transformers' notice).

    >>> checkpointing_by_its_name({"learning_rate": 1.0})
    {'learning_rate': 1.0, 'activation_checkpointing': True}
    >>> checkpointing_by_its_name({"gradient_checkpointing": False})
    {'gradient_checkpointing': False}
    """
    if "activation_checkpointing" in settings or "gradient_checkpointing" in settings:
        return settings
    return {**settings, "activation_checkpointing": default}


__all__ = ["SDPO_LOSS_TYPES", "TEACHER_KINDS", "TRAINER_DEFAULTS", "GRPOConfig", "SDPOConfig", "SFTConfig",
           "TAPOConfig", "checkpointing_by_its_name", "engine_config_class", "sdpo_option_names",
           "sdpo_trainer_keys", "tapo_option_names"]
