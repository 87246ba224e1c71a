"""What a run shows and leaves: a progress bar with the TAPO or SDPO counters, and metrics.jsonl (a row per step)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm.auto import tqdm
from transformers import TrainerCallback

from tapo.report.data import METRICS_FILE, construction_counts, read_jsonl

REWARD_KEY = "rewards/math_reward/mean"
# TRL's SDPOTrainer logs the rollouts' mean reward and math_reward under names of its own; a metrics row
# carries them as `reward` and `accuracy` too, so that every algorithm's rows share those (report, benchmarks).
SDPO_REWARD_KEY = "self_distillation/reward_mean"
SDPO_ACCURACY_KEY = "self_distillation/rewards/math_reward"
# Shown on the training bar when present, in this order, under these short names; the bar adds
# `built`, the constructions built / tried so far (tapo/built and tapo/tried of each generation).
BAR_FIELDS = {
    "reward": "reward",
    SDPO_REWARD_KEY: "reward",
    REWARD_KEY: "acc",
    SDPO_ACCURACY_KEY: "acc",
    "self_distillation/reprompt_sample_fraction": "distilled",
    "sdpo/distillation_loss": "sd_loss",
    "tapo/eligible_frac": "elig",
    "tapo/ref_correct_frac": "ref_ok",
}
SFT_BAR_FIELDS = {"loss": "loss", "mean_token_accuracy": "tok_acc"}  # the cold start's bar


class MetricsFileCallback(TrainerCallback):
    """Appends one JSON row per optimizer step to RUN_DIR/metrics.jsonl (main process only).

    `logging_steps` is 1, so each step's log arrives once; the end-of-training summary (which carries
    the last step number again) goes to train_summary.json instead, so no step is ever written twice.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / METRICS_FILE

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "train_runtime" in logs:
            summary = {**logs, "world_size": args.world_size, "global_step": state.global_step}
            (self.path.parent / "train_summary.json").write_text(json.dumps(summary, indent=2))
            return
        with self.path.open("a") as out:
            out.write(json.dumps(metric_row(state.global_step, logs)) + "\n")


def metric_row(step: int, logs: dict) -> dict:
    """The metrics.jsonl row of one step's logs (also used to restore rows from a checkpoint's log history)."""
    row = {"step": step, **{key: value for key, value in logs.items() if key != "step"}}
    if SDPO_REWARD_KEY in logs and "reward" not in logs:
        row["reward"] = logs[SDPO_REWARD_KEY]
    accuracy = next((key for key in (REWARD_KEY, SDPO_ACCURACY_KEY) if key in logs), None)
    if accuracy is not None:
        row["accuracy"] = logs[accuracy]  # the reward is 1 exactly when the answer is right
    return row


class ProgressBarCallback(TrainerCallback):
    """A tqdm bar over optimizer steps whose postfix shows `fields` of each step's logs (short names),
    and for TAPO the constructions built / tried so far (counted from the run's metrics on a resume)."""

    def __init__(self, *, desc: str = "train", fields: dict[str, str] | None = None):
        self.bar = None
        self.desc = desc
        self.fields = BAR_FIELDS if fields is None else fields
        self.built = self.tried = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            earlier, _ = read_jsonl(Path(args.output_dir) / METRICS_FILE)  # a resume's steps so far
            self.built, self.tried = construction_counts([r for r in earlier if r.get("step", 0) <= state.global_step])
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.desc, unit="step",
                            dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs or "train_runtime" in logs:
            return
        shown = {short: f"{logs[key]:.3g}" for key, short in self.fields.items() if key in logs}
        if "tapo/pairs" in logs:
            built, tried = construction_counts([logs])
            self.built, self.tried = self.built + built, self.tried + tried
            shown["built"] = f"{self.built}/{self.tried}"
        if shown:
            self.bar.set_postfix(shown, refresh=True)

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        """End the bar's line (also on an interruption, so what is printed next starts a line of its own)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Replace the file by these rows atomically (an interruption leaves the old file or the new one)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    os.replace(tmp, path)


def truncate_jsonl(path: str | Path, *, after_step: int, restore: dict[int, dict] | None = None) -> int:
    """Make a run's JSONL file hold the steps up to `after_step` only (used on resume); returns rows dropped.

    A cut-off last line is dropped too (not counted). `restore` maps step -> row for rows that must
    be there: metrics rows lost to a cut are put back from the checkpoint's log history.
    """
    path = Path(path)
    rows, cut = read_jsonl(path)
    kept = [row for row in rows if row.get("step", 0) <= after_step]
    present = {row.get("step") for row in kept}
    missing = [row for step, row in sorted((restore or {}).items()) if step <= after_step and step not in present]
    if missing:
        kept = sorted(kept + missing, key=lambda row: row.get("step", 0))
    if cut or missing or len(kept) != len(rows):
        write_jsonl(path, kept)
    return len(rows) - (len(kept) - len(missing))
