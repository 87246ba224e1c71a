"""The engine's argument dataclasses, for validating configs without building a trainer.

Config validation outside this folder reads them from here, so only `tapo.engine` imports TRL.
"""

from trl import GRPOConfig, SFTConfig

from tapo.engine.trainer import TAPOConfig, tapo_option_names

# Sensible small-run defaults; any of them can be set under `trainer:`.
TRAINER_DEFAULTS = {
    "logging_steps": 1,
    "save_strategy": "steps",
    "save_steps": 50,
    "report_to": [],
    "disable_tqdm": True,  # our own bar replaces the Trainer's
    "bf16": False,
    "epsilon_high": 0.28,  # DESIGN: clip 0.2 low, 0.28 high (DAPO), for both algorithms
}

__all__ = ["TRAINER_DEFAULTS", "GRPOConfig", "SFTConfig", "TAPOConfig", "tapo_option_names"]
