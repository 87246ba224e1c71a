"""Appending constructed rows to a TRL-like GRPO batch: slots, padding, per-token advantages, untouched originals."""

import pytest
import torch

from tapo.engine.batching import (
    CONSTRUCTED,
    PADDING,
    PER_TOKEN_KEYS,
    ROLLOUT,
    ROW_KIND_KEY,
    append_rows,
    pad_left,
    pad_right,
    slots_per_process,
)
from tapo.tensors import stack_rows

PAD = 0

# --- slots_per_process ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "total, processes, multiple_of, expected",
    [
        (0, 1, 1, 0),  # no pairs, no slots
        (0, 4, 2, 0),
        (-3, 2, 2, 0),
        (8, 2, 2, 4),  # exact division, already a multiple
        (8, 4, 1, 2),
        (12, 3, 4, 4),
        (5, 2, 2, 4),  # ceil(5/2)=3 -> rounded up to 4
        (6, 2, 4, 4),  # 3 -> 4
        (9, 1, 4, 12),  # 9 -> 12
        (1, 1, 1, 1),
        (3, 8, 1, 1),  # more processes than pairs: one slot each
        (3, 8, 2, 2),  # ... still a multiple of 2
    ],
)
def test_slots_per_process_hand_cases(total, processes, multiple_of, expected):
    assert slots_per_process(total, num_processes=processes, multiple_of=multiple_of) == expected


def test_slots_per_process_fit_all_pairs_and_are_the_smallest_such_multiple():
    for total in range(0, 40):
        for processes in (1, 2, 3, 8):
            for multiple_of in (1, 2, 3, 4):
                slots = slots_per_process(total, num_processes=processes, multiple_of=multiple_of)
                assert slots % multiple_of == 0
                assert slots * processes >= total
                assert slots == 0 or (slots - multiple_of) * processes < total  # no spare multiple


# --- pad_right / pad_left ------------------------------------------------------------------------------------


def test_pad_right_and_left_pad_the_last_dimension_with_the_value():
    x = torch.tensor([[1, 2], [3, 4]])
    assert pad_right(x, 4, value=9).tolist() == [[1, 2, 9, 9], [3, 4, 9, 9]]
    assert pad_left(x, 3, value=-1).tolist() == [[-1, 1, 2], [-1, 3, 4]]
    assert pad_right(torch.tensor([0.5]), 3).tolist() == [0.5, 0.0, 0.0]


def test_pad_to_the_same_width_is_a_no_op():
    x = torch.tensor([[1, 2, 3]])
    assert pad_right(x, 3) is x
    assert pad_left(x, 3) is x


@pytest.mark.parametrize("pad", [pad_right, pad_left])
def test_pad_refuses_to_shrink(pad):
    with pytest.raises(ValueError, match="cannot pad a tensor of width 3 down to 2"):
        pad(torch.zeros(2, 3), 2)


# --- stack_rows ----------------------------------------------------------------------------------------------


def test_stack_rows_right_with_explicit_width():
    ids, mask = stack_rows([[5, 6, 7], [8]], pad_id=-1, side="right", width=5)
    assert ids.tolist() == [[5, 6, 7, -1, -1], [8, -1, -1, -1, -1]]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]
    assert ids.dtype == torch.long and mask.dtype == torch.long


def test_stack_rows_left_with_explicit_width():
    ids, mask = stack_rows([[5, 6, 7], [8]], pad_id=-1, side="left", width=4)
    assert ids.tolist() == [[-1, 5, 6, 7], [-1, -1, -1, 8]]
    assert mask.tolist() == [[0, 1, 1, 1], [0, 0, 0, 1]]


def test_stack_rows_default_width_is_the_longest_row_and_never_cuts():
    ids, mask = stack_rows([[1, 2], [3, 4, 5, 6]], pad_id=0, side="right", width=3)  # 3 < longest row
    assert ids.tolist() == [[1, 2, 0, 0], [3, 4, 5, 6]]
    assert mask.sum(dim=1).tolist() == [2, 4]
    ids, _ = stack_rows([[1], [2, 3]], pad_id=0, side="left")
    assert ids.tolist() == [[0, 1], [2, 3]]


def test_stack_rows_empty_row_is_all_padding():
    ids, mask = stack_rows([[], [4, 5]], pad_id=7, side="left", width=3)
    assert ids.tolist() == [[7, 7, 7], [7, 4, 5]]
    assert mask.tolist() == [[0, 0, 0], [0, 1, 1]]


# --- append_rows ---------------------------------------------------------------------------------------------

B, P, T = 2, 3, 4


def trl_batch(**extra) -> dict:
    """A hand-built batch shaped like TRL's `_generate_and_score_completions` output (B=2, P=3, T=4)."""
    batch = {
        "prompt_ids": torch.tensor([[PAD, 11, 12], [13, 14, 15]]),  # [B, P] left-padded
        "prompt_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]),  # [B, P]
        "completion_ids": torch.tensor([[21, 22, PAD, PAD], [23, 24, 25, 26]]),  # [B, T] right-padded
        "completion_mask": torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]),  # [B, T]
        "advantages": torch.tensor([0.5, -0.25]),  # [B]
        "num_items_in_batch": torch.tensor(6),
        "old_per_token_logps": torch.tensor([[-0.1, -0.2, 0.0, 0.0], [-0.3, -0.4, -0.5, -0.6]]),  # [B, T]
    }
    batch.update(extra)
    return batch


def constructed(completions: list[list[int]], prompts: list[list[int]]) -> dict:
    """Constructed rows with distinct per-token advantages and log-probs (0 on padding)."""
    prompt_ids, prompt_mask = stack_rows(prompts, pad_id=PAD, side="left")
    completion_ids, completion_mask = stack_rows(completions, pad_id=PAD, side="right")
    steps = torch.arange(1, completion_ids.size(1) + 1, dtype=torch.float32)  # [T']
    rows = torch.arange(1, len(completions) + 1, dtype=torch.float32).unsqueeze(1)  # [S, 1]
    advantages = rows * 0.1 * steps * completion_mask  # [S, T']
    logps = -(rows + steps / 100) * completion_mask  # [S, T']
    return dict(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        advantages=advantages,
        per_token_logps=logps,
    )


# one constructed row shorter than T, one LONGER than T; one prompt longer than P
MIXED = dict(completions=[[41, 42], [43, 44, 45, 46, 47, 48]], prompts=[[31, 32, 33, 34, 35], [36]])


def test_append_rows_keeps_original_rows_and_grows_to_the_widest():
    batch = trl_batch()
    new = constructed(**MIXED)
    out = append_rows(batch, **new, pad_token_id=PAD)
    S, W, WP = 2, 6, 5

    assert out["prompt_ids"].shape == (B + S, WP)
    assert out["completion_ids"].shape == (B + S, W)
    for key in ("prompt_mask", "completion_mask", "advantages", "old_per_token_logps"):
        assert out[key].shape[0] == B + S, key

    # originals: prompts gain padding on the left, completions on the right, values unchanged
    assert torch.equal(out["prompt_ids"][:B, WP - P :], batch["prompt_ids"])
    assert torch.equal(out["prompt_mask"][:B, WP - P :], batch["prompt_mask"])
    assert (out["prompt_ids"][:B, : WP - P] == PAD).all() and (out["prompt_mask"][:B, : WP - P] == 0).all()
    assert torch.equal(out["completion_ids"][:B, :T], batch["completion_ids"])
    assert torch.equal(out["completion_mask"][:B, :T], batch["completion_mask"])
    assert (out["completion_ids"][:B, T:] == PAD).all() and (out["completion_mask"][:B, T:] == 0).all()
    assert torch.equal(out["old_per_token_logps"][:B, :T], batch["old_per_token_logps"])

    # the scalar advantage of an original row is on every one of its tokens
    assert out["advantages"].shape == (B + S, W)
    assert torch.equal(out["advantages"][:B, :T], batch["advantages"].unsqueeze(1).expand(B, T))

    # new rows carry exactly what was given
    assert torch.equal(out["prompt_ids"][B:], new["prompt_ids"])
    assert torch.equal(out["prompt_mask"][B:], new["prompt_mask"])
    assert torch.equal(out["completion_ids"][B:], new["completion_ids"])
    assert torch.equal(out["completion_mask"][B:], new["completion_mask"])
    assert torch.equal(out["advantages"][B:], new["advantages"])
    assert torch.equal(out["old_per_token_logps"][B:], new["per_token_logps"])
    assert out["completion_mask"][B:].sum(dim=1).tolist() == [2, 6]
    assert out["advantages"][B, :2].tolist() == pytest.approx([0.1, 0.2])
    assert (out["advantages"][B, 2:] == 0).all()  # padding of the short new row
    assert out["completion_ids"][B].tolist() == [41, 42, PAD, PAD, PAD, PAD]

    # every padding position, old or new, is masked
    assert (out["completion_ids"][out["completion_mask"] == 0] == PAD).all()
    assert (out["prompt_ids"][out["prompt_mask"] == 0] == PAD).all()

    # num_items_in_batch is the caller's to recompute: passed through unchanged
    assert out["num_items_in_batch"] is batch["num_items_in_batch"]


def test_append_rows_does_not_modify_the_input_batch():
    batch = trl_batch()
    before = {k: v.clone() for k, v in batch.items()}
    out = append_rows(batch, **constructed(**MIXED), pad_token_id=PAD)
    assert out is not batch
    assert batch.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(batch[key], value), key


def test_append_rows_shorter_rows_are_padded_to_the_batch_width():
    batch = trl_batch()
    new = constructed(completions=[[41], [42, 43, 44]], prompts=[[31], [32, 33]])
    out = append_rows(batch, **new, pad_token_id=PAD)
    assert out["completion_ids"].shape == (B + 2, T)
    assert out["prompt_ids"].shape == (B + 2, P)
    assert torch.equal(out["completion_ids"][:B], batch["completion_ids"])
    assert torch.equal(out["prompt_ids"][:B], batch["prompt_ids"])
    assert out["completion_ids"][B:].tolist() == [[41, PAD, PAD, PAD], [42, 43, 44, PAD]]
    assert out["completion_mask"][B:].tolist() == [[1, 0, 0, 0], [1, 1, 1, 0]]
    assert out["prompt_ids"][B:].tolist() == [[PAD, PAD, 31], [PAD, 32, 33]]
    assert out["prompt_mask"][B:].tolist() == [[0, 0, 1], [0, 1, 1]]
    assert out["advantages"][B:, : new["advantages"].size(1)].tolist() == new["advantages"].tolist()
    assert (out["advantages"][B:, new["advantages"].size(1) :] == 0).all()
    assert (out["old_per_token_logps"][B:][out["completion_mask"][B:] == 0] == 0).all()


def test_append_rows_keeps_per_token_original_advantages_and_their_dtype():
    per_token = torch.tensor([[0.5, 0.4, 0.0, 0.0], [-1.0, -0.9, -0.8, -0.7]])  # [B, T] already per token
    batch = trl_batch(advantages=per_token)
    new = constructed(**MIXED)
    out = append_rows(batch, **{**new, "advantages": new["advantages"].double()}, pad_token_id=PAD)
    assert out["advantages"].dtype == torch.float32
    assert torch.equal(out["advantages"][:B, :T], per_token)
    assert (out["advantages"][:B, T:] == 0).all()
    assert torch.allclose(out["advantages"][B:], new["advantages"])


def test_append_rows_fills_every_per_token_logps_key_present():
    extra = {key: torch.full((B, T), -float(i + 1)) for i, key in enumerate(PER_TOKEN_KEYS)}
    batch = trl_batch(**extra)
    new = constructed(**MIXED)
    ref = new["per_token_logps"] - 0.5  # the reference model's, not the policy's
    out = append_rows(batch, **new, ref_per_token_logps=ref, pad_token_id=PAD)
    for key in PER_TOKEN_KEYS:
        assert out[key].shape == (B + 2, 6), key
        assert torch.equal(out[key][:B, :T], batch[key]), key
    assert torch.equal(out["old_per_token_logps"][B:], new["per_token_logps"])
    assert torch.equal(out["sampling_per_token_logps"][B:], new["per_token_logps"])
    assert torch.equal(out["ref_per_token_logps"][B:], ref)


def test_append_rows_needs_reference_logps_when_the_batch_has_them():
    batch = trl_batch(ref_per_token_logps=torch.zeros(B, T))
    with pytest.raises(ValueError, match="ref_per_token_logps"):
        append_rows(batch, **constructed(**MIXED), pad_token_id=PAD)


def test_append_rows_marks_row_kinds():
    out = append_rows(trl_batch(), **constructed(**MIXED), row_kinds=torch.tensor([CONSTRUCTED, PADDING]),
                      pad_token_id=PAD)
    assert out[ROW_KIND_KEY].tolist() == [ROLLOUT] * B + [CONSTRUCTED, PADDING]


def test_append_rows_leaves_absent_and_none_keys_alone():
    batch = trl_batch(ref_per_token_logps=None)
    out = append_rows(batch, **constructed(**MIXED), pad_token_id=PAD)
    assert out["ref_per_token_logps"] is None
    assert "sampling_per_token_logps" not in out
    assert "importance_sampling_ratio" not in out and "tool_mask" not in out


def test_append_rows_sequence_importance_ratio_gets_ones():
    ratio = torch.tensor([[0.9], [1.2]])  # [B, 1] sequence-level
    out = append_rows(trl_batch(importance_sampling_ratio=ratio), **constructed(**MIXED), pad_token_id=PAD)
    assert out["importance_sampling_ratio"].shape == (B + 2, 1)
    assert torch.equal(out["importance_sampling_ratio"][:B], ratio)
    assert (out["importance_sampling_ratio"][B:] == 1).all()


def test_append_rows_token_importance_ratio_gets_ones():
    ratio = torch.tensor([[0.9, 1.1, 1.0, 1.0], [1.2, 0.8, 0.7, 1.3]])  # [B, T] token-level
    out = append_rows(trl_batch(importance_sampling_ratio=ratio), **constructed(**MIXED), pad_token_id=PAD)
    assert out["importance_sampling_ratio"].shape == (B + 2, 6)
    assert out["importance_sampling_ratio"].dtype == ratio.dtype
    assert torch.equal(out["importance_sampling_ratio"][:B, :T], ratio)
    assert (out["importance_sampling_ratio"][B:] == 1).all()
    # the rollouts' new columns hold 1, as TRL's own padding does: VESPO sums log(ratio) over every position
    assert (out["importance_sampling_ratio"][:B, T:] == 1).all()


def test_vespo_weights_of_rollouts_are_unchanged_by_wider_constructed_rows():
    """TRL's VESPO weight of a rollout row, from the batch alone and from the batch with constructed rows
    appended (wider than the rollouts): the same."""
    from trl import GRPOTrainer

    ratio = torch.ones(B, T)  # TRL's token-level ratio on on-policy rows: exp(0), also on the padding
    batch = trl_batch(importance_sampling_ratio=ratio)
    out = append_rows(batch, **constructed(**MIXED), pad_token_id=PAD)
    advantages = batch["advantages"].unsqueeze(1).expand(B, T)  # [B, T]
    alone = GRPOTrainer.get_gamma_weights(advantages, torch.zeros(B, T), batch["completion_mask"].float(), ratio)
    width = out["completion_ids"].size(1)
    joined = GRPOTrainer.get_gamma_weights(out["advantages"], torch.zeros(B + 2, width),
                                           out["completion_mask"].float(), out["importance_sampling_ratio"])
    assert torch.allclose(joined[:B, :T], alone)


def test_append_rows_tool_mask_is_ones_on_new_rows():
    tool_mask = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 1]])  # [B, T]
    out = append_rows(trl_batch(tool_mask=tool_mask), **constructed(**MIXED), pad_token_id=PAD)
    assert out["tool_mask"].shape == (B + 2, 6)
    assert torch.equal(out["tool_mask"][:B, :T], tool_mask)
    assert (out["tool_mask"][B:] == 1).all()


def test_append_rows_trained_mask_becomes_the_new_rows_tool_mask():
    """Context tokens of a constructed row (ref_train_prefix false: its kept prefix) get tool_mask 0; a batch
    without a tool_mask gets one, 1 on every rollout token."""
    trained = torch.tensor([[0, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]])  # [S, T']
    out = append_rows(trl_batch(), **constructed(**MIXED), trained_mask=trained, pad_token_id=PAD)
    assert out["tool_mask"].shape == (B + 2, 6)
    assert (out["tool_mask"][:B] == 1).all()
    assert torch.equal(out["tool_mask"][B:], trained)
    kept = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 1]])  # [B, T] a batch's own (TRL's tools)
    out = append_rows(trl_batch(tool_mask=kept), **constructed(**MIXED), trained_mask=trained, pad_token_id=PAD)
    assert torch.equal(out["tool_mask"][:B, :T], kept) and torch.equal(out["tool_mask"][B:], trained)


def test_append_rows_with_zero_constructed_rows_changes_nothing():
    batch = trl_batch()
    empty = dict(
        prompt_ids=torch.zeros(0, 1, dtype=torch.long),
        prompt_mask=torch.zeros(0, 1, dtype=torch.long),
        completion_ids=torch.zeros(0, 1, dtype=torch.long),
        completion_mask=torch.zeros(0, 1, dtype=torch.long),
        advantages=torch.zeros(0, 1),
        per_token_logps=torch.zeros(0, 1),
    )
    out = append_rows(batch, **empty, pad_token_id=PAD)
    assert torch.equal(out["completion_ids"], batch["completion_ids"])
    assert torch.equal(out["prompt_ids"], batch["prompt_ids"])
    assert torch.equal(out["advantages"], batch["advantages"].unsqueeze(1).expand(B, T))
