"""The model card (README.md) saved with a run: in `model/`, in each `checkpoint-N/` and in the run directory.

TRL's own card names no base model when it is a built-in name or a local folder ("a fine-tuned
version of [None]") and says "trained with GRPO" for every GRPOTrainer subclass, TAPO included. We
write ours instead, from what the run really was: algorithm, base model, data, the resolved config
and how to load the result. `RunCardMixin` replaces TRL's `create_model_card` (which the Trainer
calls before each checkpoint and from `push_to_hub`, writing into the run directory), so a card
pushed to the hub is ours too.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path


from tapo.config import RunConfig, dump_config  # save_config's YAML: the block reads back as config.yaml does

CARD_FILE = "README.md"
PAPERS = {
    "tapo": ("TAPO (Trajectory-Augmented Policy Optimization)", "https://arxiv.org/abs/2606.18844", "arXiv:2606.18844"),
    "grpo": (
        "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models (GRPO)",
        "https://arxiv.org/abs/2402.03300",
        "arXiv:2402.03300",
    ),
    "sdpo": ("Reinforcement Learning via Self-Distillation (SDPO)", "https://arxiv.org/abs/2601.20802",
             "arXiv:2601.20802"),
}
ALGORITHM_TEXT = {
    "tapo": "TAPO (Trajectory-Augmented Policy Optimization): GRPO whose batches also hold corrective "
    "trajectories built from the policy's own wrong answers",
    "grpo": "GRPO (Group Relative Policy Optimization), the plain TRL `GRPOTrainer` baseline",
    "sdpo": "SDPO (self-distillation), TRL's experimental `SDPOTrainer`: the policy re-prompted with a successful "
    "rollout of the same group is the teacher whose next-token distribution it distils",
}


@dataclass(frozen=True)
class RunCard:
    """What a card says about a run; `render` adds where the card lies and after how many steps."""

    config: RunConfig
    run_dir: Path
    max_steps: int | None = None  # the run's planned optimizer steps, when known
    # Settings changed on resume: (step resumed from, ["trainer.key: old -> new", ...]).
    changes: tuple[tuple[int, tuple[str, ...]], ...] = field(default_factory=tuple)

    def render(self, *, step: int, folder: str) -> str:
        """The card of `folder` (`model`, `checkpoint-N` or `.` for the run directory) after `step` steps."""
        config = self.config
        algorithm = config.algorithm
        title, url, arxiv = PAPERS[algorithm]
        where = self.run_dir / ("model" if folder == "." else folder)  # the run directory's model is model/
        steps = f"{step} of {self.max_steps}" if self.max_steps else str(step)
        what = {"model": "the final model of", ".": "the run directory of"}.get(folder, f"`{folder}` of")
        lines = [
            "---",
            *_front_matter(config),
            "---",
            "",
            f"# {self.run_dir.name}: {algorithm.upper()} on {config.model.name}",
            "",
            f"This folder is {what} a `tapo train` run: `{config.model.name}` trained with "
            f"{ALGORITHM_TEXT[algorithm]} ([{arxiv}]({url})), after {steps} optimizer steps.",
            "",
            f"- Algorithm: {algorithm.upper()}" + _algorithm_detail(config),
            f"- Base model: `{config.model.name}` ({config.model.dtype})",
            f"- Data: {_data_text(config)}",
            f"- Steps: {steps}",
            f"- Run directory: `{self.run_dir}` (metrics.jsonl, config.yaml"
            + (", constructions.jsonl" if algorithm == "tapo" else "") + ")",
            f"- Software: {_versions()}",
            "",
            "## How to load it",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained("{where}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{where}")',
            "```",
            "",
            f"Train on from it with `tapo train --config FILE --set model.name={where}`, or evaluate it with "
            f"`tapo eval --model {where} --output evals/{self.run_dir.name}`.",
            "",
            "## Configuration",
            "",
            "The resolved configuration of the run (`config.yaml`), as `tapo train --config` reads it:",
            "",
            "```yaml",
            dump_config(config).rstrip(),
            "```",
        ]
        if self.changes:
            lines += ["", "Settings changed on resume (`--allow-config-change`); the block above is the latest:", ""]
            for at, diffs in self.changes:
                lines.append(f"- from step {at + 1} (`config.resume-{at}.yaml`): " + "; ".join(f"`{d}`" for d in diffs))
        lines += ["", "## Paper", "", f"{title}, [{arxiv}]({url})."]
        if algorithm == "tapo":
            lines.append(f"TAPO extends GRPO: {PAPERS['grpo'][0]}, [{PAPERS['grpo'][2]}]({PAPERS['grpo'][1]}).")
        return "\n".join(lines) + "\n"

    def write(self, folder: Path, *, step: int, label: str | None = None) -> Path:
        """Write the card into `folder` (atomically: a reader never sees half a card).

        `label` is the folder's name in the run directory when it is written elsewhere first (model.partial).
        """
        folder = Path(folder)
        label = label or ("." if folder.resolve() == self.run_dir.resolve() else folder.name)
        path = folder / CARD_FILE
        tmp = folder / (CARD_FILE + ".tmp")
        tmp.write_text(self.render(step=step, folder=label), encoding="utf-8")
        os.replace(tmp, path)
        return path


def _algorithm_detail(config: RunConfig) -> str:
    """What distinguishes a run of its algorithm: TAPO's construction strategy, SDPO's teacher."""
    if config.algorithm == "tapo":
        return f" (construction: `{config.tapo.get('construction', 'self')}`)"
    if config.algorithm == "sdpo":
        from tapo.engine.sdpo import SDPOConfig

        return f" (teacher: `{config.sdpo.get('teacher_model_kind', SDPOConfig.teacher_model_kind)}`)"
    return ""


def _front_matter(config: RunConfig) -> list[str]:
    """Hub metadata; `base_model` only for a hub id (a built-in name or a local folder is no hub model)."""
    name = config.model.name
    lines = ["library_name: transformers", "pipeline_tag: text-generation"]
    if not name.startswith("builtin:") and not Path(name).exists() and name.count("/") == 1:
        lines.append(f"base_model: {name}")
    return lines + ["tags:", f"- {config.algorithm}", "- reinforcement-learning", "- math"]


def _data_text(config: RunConfig) -> str:
    data = config.data
    if data.source == "builtin:arithmetic":
        return (f"`builtin:arithmetic` (generated: n={data.n}, n_steps={data.n_steps}, max_operand={data.max_operand}, "
                f"data_seed={data.data_seed})")
    limit = f", first {data.limit} rows" if data.limit else ""
    return f"`{data.source}` (split `{data.split}`{limit})"


@functools.cache
def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for package in ("trl", "transformers", "torch"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            pass
    return "tapo on " + ", ".join(parts)


class RunCardMixin:
    """Put before a TRL trainer class: our card instead of TRL's, and one in each checkpoint.

    TRL calls `create_model_card` before each checkpoint (it writes the run directory's README.md)
    and transformers calls it from `push_to_hub`; with `run_card` unset, TRL's card is written.
    """

    run_card: RunCard | None = None

    def create_model_card(self, model_name=None, dataset_name=None, tags=None, **kwargs):
        if self.run_card is None:
            return super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags, **kwargs)
        if self.is_world_process_zero():
            self.run_card.write(Path(self.args.output_dir), step=self.state.global_step)

    def _save_checkpoint(self, model, trial):
        """The checkpoint, then its card (a checkpoint is a loadable model folder too)."""
        super()._save_checkpoint(model, trial)
        if self.run_card is not None and self.is_world_process_zero():
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            if folder.is_dir():
                self.run_card.write(folder, step=self.state.global_step)


@functools.cache
def with_run_card(trainer_cls: type) -> type:
    """`trainer_cls` with `RunCardMixin` in front (one class per trainer class)."""
    return type(trainer_cls.__name__, (RunCardMixin, trainer_cls), {"__doc__": trainer_cls.__doc__,
                                                                     "__module__": __name__})
