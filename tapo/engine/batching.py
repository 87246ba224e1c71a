"""Appending constructed rows to the batch the engine hands over: padding, fixed slots, per-token advantages.

Pure tensor code (no engine import), so it is tested on its own. The keys follow TRL's GRPO batch:
prompts are left-padded, completions right-padded, advantages (B,) or (B, T).
"""

from __future__ import annotations

import math

import torch

# Per-token tensors of width T (the completion width) that grow when a constructed row is longer.
PER_TOKEN_KEYS = ("old_per_token_logps", "sampling_per_token_logps", "ref_per_token_logps")

# A per-row tensor the loss reads to tell the kinds of rows apart (TRL shuffles and splits it with the rest).
ROW_KIND_KEY = "tapo_row_kind"
ROLLOUT, CONSTRUCTED, PADDING = 0, 1, 2  # PADDING: an unused construction slot (all-zero mask, zero advantage)


def slots_per_process(total_pairs: int, *, num_processes: int, multiple_of: int) -> int:
    """Construction slots each process gets: enough for all pairs, equal everywhere, splittable.

    Every process appends the same number of rows (so collective calls and batch shapes match), and that
    number divides by `multiple_of` (TRL splits a generation batch into `steps_per_generation` parts).

    >>> slots_per_process(5, num_processes=2, multiple_of=2)
    4
    >>> slots_per_process(0, num_processes=2, multiple_of=2)
    0
    """
    if total_pairs <= 0:
        return 0
    per_process = math.ceil(total_pairs / num_processes)
    return math.ceil(per_process / multiple_of) * multiple_of


def pad_right(tensor: torch.Tensor, width: int, *, value: float | int = 0) -> torch.Tensor:
    """Pad the last dimension on the right up to `width` (a no-op when already that wide)."""
    missing = width - tensor.size(-1)
    if missing < 0:
        raise ValueError(f"cannot pad a tensor of width {tensor.size(-1)} down to {width}")
    if missing == 0:
        return tensor
    return torch.nn.functional.pad(tensor, (0, missing), value=value)


def pad_left(tensor: torch.Tensor, width: int, *, value: float | int = 0) -> torch.Tensor:
    missing = width - tensor.size(-1)
    if missing < 0:
        raise ValueError(f"cannot pad a tensor of width {tensor.size(-1)} down to {width}")
    return torch.nn.functional.pad(tensor, (missing, 0), value=value) if missing else tensor


def append_rows(
    batch: dict,
    *,
    prompt_ids: torch.Tensor,  # [S, P'] left-padded prompts of the constructed rows
    prompt_mask: torch.Tensor,  # [S, P']
    completion_ids: torch.Tensor,  # [S, T'] right-padded constructed trajectories
    completion_mask: torch.Tensor,  # [S, T'] 0 on padding and on unused slots
    advantages: torch.Tensor,  # [S, T'] per-token advantages lambda * w_t * A_ref (0 on unused slots)
    per_token_logps: torch.Tensor,  # [S, T'] current-policy log-probs of the constructed tokens
    ref_per_token_logps: torch.Tensor | None = None,  # [S, T'] reference-model log-probs (needed when beta != 0)
    row_kinds: torch.Tensor | None = None,  # [S] CONSTRUCTED or PADDING per new row
    trained_mask: torch.Tensor | None = None,  # [S, T'] 0 on attended tokens the loss leaves out; None: none
    pad_token_id: int,
) -> dict:
    """The batch with S constructed rows appended; the original rows' values are unchanged.

    Advantages become (B+S, T): original rows carry their scalar advantage on every token. Old and
    sampling log-probs of new rows are the current policy's (they were just computed with the same
    weights), so their importance ratios start at 1; their reference log-probs are the reference
    model's (`ref_per_token_logps`, required when the batch has that key). `ROW_KIND_KEY` tells
    rollouts, constructed rows and unused slots apart for the loss. `trained_mask` becomes the new
    rows' part of TRL's `tool_mask` (the tokens of a completion that are context, as a tool's output
    is: attended, but in no loss, KL or entropy term and no token count); the batch's rows get 1 where
    it had none. `num_items_in_batch` is left to the caller, which must recompute it across processes.
    """
    out = dict(batch)
    width_t = max(batch["completion_ids"].size(1), completion_ids.size(1))
    width_p = max(batch["prompt_ids"].size(1), prompt_ids.size(1))
    device = batch["completion_ids"].device
    rows = completion_ids.size(0)

    def cat(original: torch.Tensor, new: torch.Tensor, *, side: str, width: int, value) -> torch.Tensor:
        pad = pad_right if side == "right" else pad_left
        return torch.cat([pad(original, width, value=value), pad(new.to(device), width, value=value)], dim=0)

    out["prompt_ids"] = cat(batch["prompt_ids"], prompt_ids, side="left", width=width_p, value=pad_token_id)
    out["prompt_mask"] = cat(batch["prompt_mask"], prompt_mask, side="left", width=width_p, value=0)
    out["completion_ids"] = cat(batch["completion_ids"], completion_ids, side="right", width=width_t, value=pad_token_id)
    out["completion_mask"] = cat(batch["completion_mask"], completion_mask, side="right", width=width_t, value=0)

    original_adv = batch["advantages"]
    if original_adv.dim() == 1:
        original_adv = original_adv.unsqueeze(1).expand(-1, batch["completion_ids"].size(1))  # [B, T]
    out["advantages"] = cat(original_adv, advantages.to(original_adv.dtype), side="right", width=width_t, value=0.0)

    new_values = {"old_per_token_logps": per_token_logps, "sampling_per_token_logps": per_token_logps,
                  "ref_per_token_logps": ref_per_token_logps}
    for key in PER_TOKEN_KEYS:
        if key in batch and batch[key] is not None:
            if new_values[key] is None:
                raise ValueError(f"the batch has {key!r}, so the constructed rows need theirs too")
            out[key] = cat(batch[key], new_values[key].to(batch[key].dtype), side="right", width=width_t, value=0.0)
    if "importance_sampling_ratio" in batch:
        ratio = batch["importance_sampling_ratio"]
        ones = torch.ones(rows, ratio.size(1) if ratio.size(1) == 1 else width_t)
        out["importance_sampling_ratio"] = (
            torch.cat([ratio, ones.to(ratio)], dim=0)
            if ratio.size(1) == 1
            else cat(ratio, ones, side="right", width=width_t, value=1.0)  # 1 as TRL's own padding: VESPO sums
            # log(ratio) over every position, masked or not
        )
    if "tool_mask" in batch or trained_mask is not None:
        before = batch.get("tool_mask", torch.ones_like(batch["completion_mask"]))
        after = torch.ones_like(completion_mask) if trained_mask is None else trained_mask.to(before.dtype)
        out["tool_mask"] = cat(before, after, side="right", width=width_t, value=1)
    kinds = batch.get(ROW_KIND_KEY)
    if kinds is None:
        kinds = torch.full((batch["completion_ids"].size(0),), ROLLOUT, dtype=torch.long, device=device)
    new_kinds = row_kinds if row_kinds is not None else torch.full((rows,), CONSTRUCTED, dtype=torch.long)
    out[ROW_KIND_KEY] = torch.cat([kinds, new_kinds.to(device=device, dtype=torch.long)])
    return out


def mark_rollouts(batch: dict) -> dict:
    """The batch with `ROW_KIND_KEY` set to ROLLOUT on every row (a step that constructs nothing)."""
    rows = batch["completion_ids"].size(0)
    return {**batch, ROW_KIND_KEY: torch.full((rows,), ROLLOUT, dtype=torch.long, device=batch["completion_ids"].device)}
