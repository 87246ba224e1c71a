"""tapo: TAPO (Trajectory-Augmented Policy Optimization) on Hugging Face TRL.

Used as a GRPOTrainer user would:

    from tapo import TAPOConfig, TAPOTrainer, math_reward

The names load on first use, so `import tapo` (and the `tapo` command's --help) stays fast.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "TAPOConfig": "tapo.engine.trainer",
    "TAPOTrainer": "tapo.engine.trainer",
    "math_reward": "tapo.rewards",
    "is_correct": "tapo.rewards",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tapo' has no attribute {name!r}")
