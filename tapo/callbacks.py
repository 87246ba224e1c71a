"""What a run shows and leaves: a progress bar with the TAPO counters, and metrics.jsonl (one row per step)."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm
from transformers import TrainerCallback

METRICS_FILE = "metrics.jsonl"
REWARD_KEY = "rewards/math_reward/mean"
# Shown on the progress bar when present, in this order, under these short names.
BAR_FIELDS = {
    "reward": "reward",
    REWARD_KEY: "acc",
    "tapo/eligible_frac": "elig",
    "tapo/pairs": "pairs",
    "tapo/parsed_frac": "parsed",
    "tapo/ref_correct_frac": "ref_ok",
    "tapo/ots_w_mean": "ots_w",
}


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
        row = {"step": state.global_step, **logs}
        if REWARD_KEY in logs:
            row["accuracy"] = logs[REWARD_KEY]  # the reward is 1 exactly when the answer is right
        with self.path.open("a") as out:
            out.write(json.dumps(row) + "\n")


class ProgressBarCallback(TrainerCallback):
    """A tqdm bar over optimizer steps whose postfix shows reward, accuracy and the TAPO counters."""

    def __init__(self):
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step", dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        shown = {short: f"{logs[key]:.3g}" for key, short in BAR_FIELDS.items() if key in logs}
        if shown:
            self.bar.set_postfix(shown, refresh=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def truncate_jsonl(path: str | Path, *, after_step: int) -> int:
    """Drop rows whose step is beyond `after_step` (used on resume); returns how many were dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        if json.loads(line).get("step", 0) > after_step:
            dropped += 1
        else:
            kept.append(line)
    path.write_text("".join(line + "\n" for line in kept))
    return dropped
