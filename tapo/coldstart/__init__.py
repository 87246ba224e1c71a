"""The cold start (DESIGN section 1.7): constructed-trajectory SFT data, fine-tuning on it, and the query filter.

- `config`: the cold-start and filter configs (YAML + `--set`, saved with every run);
- `build`: sample -> pair -> construct (aligned | self | splice | teacher) -> trajectory + synthesis examples;
- `teacher`: constructions written by a model behind an OpenAI-compatible endpoint;
- fine-tuning on the examples (TRL's `SFTTrainer`, loss on the completion only, resumable) is
  `tapo.engine.sft.run_sft`, beside everything else that knows TRL; sampling is `tapo.sampling`.

Modules import their engines (transformers, TRL) only when called, so `import tapo.coldstart` stays light.
"""

from tapo.coldstart.config import (
    BuildSection,
    ColdStartConfig,
    FilterConfig,
    FilterSection,
    TeacherSection,
    load_coldstart_config,
    load_filter_config,
)

__all__ = [
    "BuildSection",
    "ColdStartConfig",
    "FilterConfig",
    "FilterSection",
    "TeacherSection",
    "build_coldstart",
    "load_coldstart_config",
    "load_filter_config",
]


def __getattr__(name: str):
    if name == "build_coldstart":
        from tapo.coldstart.build import build_coldstart

        return build_coldstart
    raise AttributeError(f"module 'tapo.coldstart' has no attribute {name!r}")
