"""A quiet console for the CLI: no per-file bars from loading models, no deprecation notices we cannot fix.

Our own calls use the current names (e.g. `activation_checkpointing`, not `gradient_checkpointing`),
so their notices never fire. What is left comes from code inside our dependencies, which we cannot
change: those notices are filtered one by one, by their message, and nothing else is. Errors and
every other warning still show.

>>> any(pattern.startswith("`is_gradient_checkpointing`") for pattern, _ in DEPENDENCY_WARNINGS)
True
"""

from __future__ import annotations

import os
import warnings

# (message regex, category): notices that only a dependency's own code triggers.
DEPENDENCY_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # TRL 1.16 (trl.models.utils.disable_gradient_checkpointing, unwrap_model_for_generation) still reads and
    # toggles the model's checkpointing under transformers' deprecated names, on every generation.
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning),
    (r"`gradient_checkpointing_(enable|disable)` is deprecated", FutureWarning),
)


def filter_dependency_warnings() -> None:
    """Ignore exactly the notices in DEPENDENCY_WARNINGS (by message and category), nothing else."""
    for pattern, category in DEPENDENCY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)


# huggingface_hub reads the first at import, and transformers' bars follow it; datasets reads the second.
BAR_SWITCHES = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")


def disable_loading_bars() -> None:
    """No progress bar per weight, shard or file from transformers, huggingface_hub or datasets.

    Set through their environment switches (a value the user set is kept), so nothing heavy is
    imported here and processes started from this one (`accelerate launch`) inherit them; a library
    already imported is switched through its own call. The stages' own bars (training steps,
    evaluation chunks, sampling) are plain tqdm and stay.
    """
    import sys

    for name in BAR_SWITCHES:
        os.environ.setdefault(name, "1")
    hub_off = os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    if hub_off and "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()  # "Loading weights", one tick per tensor
    if hub_off and "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1" and "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()  # "Map", "Tokenizing train dataset" in TRL's trainers


def quiet_console() -> None:
    """Both of the above: what `tapo` sets up before it runs a command."""
    filter_dependency_warnings()
    disable_loading_bars()
