"""The engine's argument dataclasses, for validating configs without building a trainer.

Config validation outside this folder reads them from here, so only `tapo.engine` imports TRL.
"""

from trl import GRPOConfig, SFTConfig

from tapo.engine.trainer import TAPOConfig, tapo_option_names

__all__ = ["GRPOConfig", "SFTConfig", "TAPOConfig", "tapo_option_names"]
