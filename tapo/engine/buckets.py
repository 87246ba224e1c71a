"""The update's forward passes by length: rows padded to their bucket's longest, not the batch's (`tapo.update_buckets`).

TRL scores a training batch in one forward pass, every row right-padded to the longest completion. A
TAPO batch mixes short rollouts with constructions that hold y-'s prefix, a reflection and a
correction, so one construction makes every rollout row as long as itself (measured on the demo's
SmolLM2, README "Where the time goes": 12.9 s padded together, 9.3 s in two buckets). Here the rows
are sorted by completion length and cut into `buckets` groups that waste the fewest padded tokens;
each group runs as its own forward pass, cut to its own longest row, and the log-probs come back in
the batch's row order and width. Trailing padding is causal-invisible to the tokens before it, so the
kept positions are TRL's (to float rounding); every position after a row's last attended token is 0
in every call (update, old and reference log-probs alike), where every loss, ratio and KL term sees
completion_mask 0, and ratios there are exactly 1.

Collective calls: the number of forward passes is min(buckets, rows) on a training batch and TRL's own
ceil(rows / batch_size) on a chunked scoring call, and TAPO gives every process the same number of rows
(its construction slots are padded alike), so ZeRO-3 and FSDP see the same passes everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def length_buckets(lengths: Sequence[int], *, buckets: int) -> list[list[int]]:
    """Row indices in at most `buckets` groups of similar length, fewest padded tokens in all.

    Each group is padded to its longest row; the groups are contiguous runs of the rows sorted by
    length (an optimal split always is), chosen by dynamic programming. Exactly min(buckets, rows)
    groups come back, none empty, so the count depends only on the row count.

    >>> length_buckets([40, 120, 35, 64, 118], buckets=2)
    [[2, 0, 3], [4, 1]]
    >>> length_buckets([5, 5, 5], buckets=2)  # ties still give two groups
    [[0], [1, 2]]
    >>> length_buckets([7, 3], buckets=1)
    [[1, 0]]
    """
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    size = [lengths[i] for i in order]
    n, k = len(order), min(buckets, len(order))
    if k == 0:
        return []
    # cost[j][i]: fewest padded tokens for the first i sorted rows in j groups; cut[j][i]: where the last starts
    inf = float("inf")
    cost = [[inf] * (n + 1) for _ in range(k + 1)]
    cut = [[0] * (n + 1) for _ in range(k + 1)]
    cost[0][0] = 0
    for j in range(1, k + 1):
        for i in range(j, n + 1):
            for start in range(j - 1, i):
                total = cost[j - 1][start] + (i - start) * size[i - 1]
                if total < cost[j][i]:
                    cost[j][i], cut[j][i] = total, start
    groups, end = [], n
    for j in range(k, 0, -1):
        start = cut[j][end]
        groups.append(order[start:end])
        end = start
    return groups[::-1]


def completion_lengths(attention_mask: torch.Tensor, logits_to_keep: int) -> list[int]:
    """Per row, the completion positions up to its last attended one (at least 1: TRL keeps >= 1 logit)."""
    tail = attention_mask[:, attention_mask.size(1) - logits_to_keep:]
    positions = torch.arange(1, logits_to_keep + 1, device=tail.device).expand_as(tail)
    return (positions * (tail != 0)).amax(dim=1).clamp(min=1).tolist()


def score_by_length(
    score: Callable[..., tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    *,
    buckets: int,
    batch_size: int | None,
    compute_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`score(input_ids, attention_mask, logits_to_keep)` (one forward pass) on each group of rows, cut to the
    group's longest completion; the per-token log-probs (and entropies) put back as [rows, logits_to_keep].

    The groups: `length_buckets` (`buckets` of them) for a training batch (`batch_size` None); TRL's own
    chunks of `batch_size` rows in order for a chunked scoring call, so it makes TRL's number of passes.
    """
    lengths = completion_lengths(attention_mask, logits_to_keep)
    rows_in_all = input_ids.size(0)
    groups = (length_buckets(lengths, buckets=buckets) if batch_size is None else
              [range(start, min(start + batch_size, rows_in_all)) for start in range(0, rows_in_all, batch_size)])
    prompt_width = input_ids.size(1) - logits_to_keep
    logps = entropies = None
    for rows in groups:
        width = max(lengths[i] for i in rows)
        index = torch.tensor(list(rows), device=input_ids.device)
        part_logps, part_entropies, _ = score(
            input_ids[index, : prompt_width + width], attention_mask[index, : prompt_width + width], width
        )
        if logps is None:  # the dtype and device of the model's output
            logps = part_logps.new_zeros(input_ids.size(0), logits_to_keep)
            entropies = part_logps.new_zeros(input_ids.size(0), logits_to_keep) if compute_entropy else None
        logps = logps.index_put((index,), torch.nn.functional.pad(part_logps, (0, logits_to_keep - width)))
        if compute_entropy:
            entropies = entropies.index_put(
                (index,), torch.nn.functional.pad(part_entropies, (0, logits_to_keep - width))
            )
    # Zero every position after a row's own completion, not only those cut off its bucket: all calls (the
    # update's buckets, TRL's chunks for old and reference log-probs) then agree there, and ratios stay 1.
    own = torch.arange(logits_to_keep, device=logps.device).unsqueeze(0) < logps.new_tensor(lengths).unsqueeze(1)
    logps = logps * own
    entropies = entropies * own if compute_entropy else None
    return logps, entropies
