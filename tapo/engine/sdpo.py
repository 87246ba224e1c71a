"""The SDPO arm: TRL 1.16's `trl.experimental.sdpo.SDPOTrainer` as `tapo train` runs it (`algorithm: sdpo`).

SDPO ("Reinforcement Learning via Self-Distillation", arXiv 2601.20802) is the implicit
self-distillation TAPO argues against. TRL's trainer does the work: it samples K rollouts per prompt
and scores them with our reward; each rollout whose group holds a *successful* rollout (reward >=
`success_reward_threshold`, another one than itself by default) is re-prompted to a teacher (an EMA of
the policy by default) as prompt + that successful rollout; the teacher's next-token distribution on
the rollout's own tokens is distilled into the policy (reverse KL on the sampled tokens by default).

What this adapter adds, each a few lines around the parent:
- TRL builds a separate teacher from `model.config._name_or_path`; an in-memory model (`builtin:tiny`)
  has none, so it is saved to a temporary folder for TRL to build the teacher from.
- The EMA teacher is training state: TRL keeps it in memory only, and on resume would rebuild it from
  the base model. It is saved into each checkpoint (`TEACHER_FILE`, before TRL's trainer_state.json,
  which marks a checkpoint complete) and loaded on resume, so no step's teacher update is lost.
- `step_time`, as GRPOTrainer logs it (the optimizer step's `training_step` calls), so seconds per step
  compare across algorithms.
- A step that reuses a generation (`num_iterations > 1`) logs that generation's metrics again (reward,
  success and distilled shares, lengths), as TAPO's steps do; TRL logs them only at the generation's step.

The data: SDPO reads `prompt` and, as environment feedback, an optional `privileged_context` column.
Our rows have a gold answer and no feedback; with `include_environment_feedback: true` each row's
privileged context is its gold answer (`ANSWER_FEEDBACK`), the per-problem privileged information
that is there. By default (TRL's) the teacher sees successful rollouts only.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from dataclasses import fields
from pathlib import Path

from trl import GRPOConfig
from trl.import_utils import suppress_experimental_warning

with suppress_experimental_warning():  # imported by every config load; TRL is pinned, the API with it
    from trl.experimental.sdpo import SDPOConfig, SDPOTrainer

from tapo.report.data import STEP_TIME_KEY

TEACHER_FILE = "sdpo_teacher.safetensors"  # the EMA teacher's weights, in each checkpoint-N/
ANSWER_FEEDBACK = "The correct final answer is {answer}."  # privileged_context of a row, from its gold answer
# SDPOConfig fields GRPOConfig 1.16 lacks that are about the data, not SDPO: they stay under `trainer:`.
SHARED_WITH_TRAINER = ("max_prompt_length",)
# The loss types SDPOTrainer's policy term implements (its `_compute_policy_loss`; others raise mid-run).
SDPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
# `teacher_model_kind`'s values (SDPOConfig's help text); TRL does not check it, another value acts as `base`.
TEACHER_KINDS = ("ema", "base", "live")
_log = logging.getLogger("tapo")

__all__ = ["ANSWER_FEEDBACK", "SDPOConfig", "SDPORunTrainer", "TEACHER_FILE", "sdpo_option_names",
           "sdpo_trainer_keys", "with_privileged_context"]


def sdpo_option_names() -> set[str]:
    """The fields SDPOConfig has beyond GRPOConfig's, less the data ones (the `sdpo:` section of a run config)."""
    return {f.name for f in fields(SDPOConfig)} - {f.name for f in fields(GRPOConfig)} - set(SHARED_WITH_TRAINER)


def sdpo_trainer_keys() -> set[str]:
    """SDPOConfig's other fields, TRL's trainer options (the `trainer:` section under `algorithm: sdpo`)."""
    return {f.name for f in fields(SDPOConfig)} - sdpo_option_names()


def with_privileged_context(dataset, *, template: str = ANSWER_FEEDBACK):
    """The prompt dataset with SDPO's `privileged_context` column: each row's gold answer, as feedback text.

    >>> from datasets import Dataset
    >>> with_privileged_context(Dataset.from_list([{"prompt": "2+3?", "answer": "5"}]))[0]["privileged_context"]
    'The correct final answer is 5.'
    """
    return dataset.map(lambda row: {"privileged_context": template.format(answer=row["answer"])})


class SDPORunTrainer(SDPOTrainer):
    """TRL's SDPOTrainer with a teacher that survives a resume, built also from an in-memory model."""

    def __init__(self, *args, **kwargs):
        self._step_seconds = 0.0  # the current optimizer step's training_step calls
        self._generation_metrics: dict[str, float] = {}  # what the last training generation logged
        super().__init__(*args, **kwargs)

    def _setup_teacher_model(self):
        with _loadable_source(self.model, needed=self.args.teacher_model_kind != "live"):
            super()._setup_teacher_model()

    def training_step(self, model, inputs, num_items_in_batch):
        started = time.perf_counter()
        loss = super().training_step(model, inputs, num_items_in_batch)  # the parent counts self._step
        self._step_seconds += time.perf_counter() - started
        if self._step % self.current_gradient_accumulation_steps == 0:
            self._metrics["train"][STEP_TIME_KEY].append(self._step_seconds)
            self._step_seconds = 0.0
        return loss

    def _prepare_training_batch(self, inputs):
        if not self.model.training:
            return super()._prepare_training_batch(inputs)
        metrics = self._metrics["train"]
        before = {key: len(values) for key, values in metrics.items()}
        batch = super()._prepare_training_batch(inputs)  # rollouts, rewards, teacher contexts: TRL's
        self._generation_metrics = {key: values[-1] for key, values in metrics.items()
                                    if len(values) > before.get(key, 0)}
        return batch

    def log(self, logs, start_time=None):
        if self.model.training and "loss" in logs:  # a step's log (not the end-of-training summary)
            for key, value in self._generation_metrics.items():
                if not self._metrics["train"].get(key):  # this step reused the generation
                    self._metrics["train"][key].append(value)
        super().log(logs, start_time)

    def _save_checkpoint(self, model, trial):
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        self._save_teacher(folder)  # first: the parent writes trainer_state.json, the "complete" mark, last
        super()._save_checkpoint(model, trial)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        checkpoint = resume_from_checkpoint
        if checkpoint is True:  # the Trainer's "the last checkpoint in output_dir"
            from transformers.trainer_utils import get_last_checkpoint

            checkpoint = get_last_checkpoint(self.args.output_dir)
        if checkpoint:
            self._load_teacher(Path(checkpoint))
        return super().train(resume_from_checkpoint, *args, **kwargs)

    # ---- the EMA teacher in checkpoints ---------------------------------------------------------------

    def _has_own_teacher(self) -> bool:
        """An EMA teacher held as a model of its own (TRL's default; a pure-LoRA run keeps it in an adapter)."""
        return self.args.teacher_model_kind == "ema" and self.teacher_model is not self.model

    def _save_teacher(self, folder: Path) -> None:
        if not self._has_own_teacher():
            return
        from safetensors.torch import save_file

        state = self.accelerator.get_state_dict(self.teacher_model)  # collective under ZeRO-3 / FSDP
        if self.args.should_save:
            folder.mkdir(parents=True, exist_ok=True)
            # clones: tied weights share storage, which safetensors refuses
            save_file({k: v.detach().cpu().clone().contiguous() for k, v in state.items()}, str(folder / TEACHER_FILE))

    def _load_teacher(self, checkpoint: Path) -> None:
        if not self._has_own_teacher():
            return
        path = checkpoint / TEACHER_FILE
        if not path.is_file():
            _log.warning("warning: %s has no %s: the EMA teacher starts again from the base model", checkpoint,
                         TEACHER_FILE)
            return
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            raise ValueError(
                f"resuming an SDPO run whose EMA teacher is sharded (DeepSpeed / FSDP) is not supported: {path} "
                "holds its full weights, which tapo does not load into TRL's sharded teacher"
            )
        from safetensors.torch import load_file

        teacher = self.accelerator.unwrap_model(self.teacher_model)
        teacher.load_state_dict(load_file(str(path), device=str(next(teacher.parameters()).device)))


@contextlib.contextmanager
def _loadable_source(model, *, needed: bool):
    """Let `model.config._name_or_path` name a folder with the model's weights while TRL builds the teacher.

    A model loaded from a folder or the hub already names it; an in-memory one is saved to a temporary
    folder for the duration.
    """
    from tapo.paths import looks_local

    source = getattr(model.config, "_name_or_path", "") or ""
    if not needed or (source and ((Path(source) / "config.json").is_file() or not looks_local(source))):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="tapo-sdpo-teacher-") as folder:
        model.save_pretrained(folder)
        model.config._name_or_path = folder
        try:
            yield
        finally:
            model.config._name_or_path = source
