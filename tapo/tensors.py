"""Token rows to padded tensors: shared by the engine's batching and the offline samplers."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def stack_rows(
    rows: Sequence[Sequence[int]], *, pad_id: int, side: str, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows -> (ids, mask), padded on `side` to `width` (default: the longest row).

    >>> ids, mask = stack_rows([[5, 6, 7], [8]], pad_id=0, side="right")
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]])
    """
    width = max([len(r) for r in rows] + [width or 0])
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [N, W]
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # [N, W]
    for i, row in enumerate(rows):
        if not row:
            continue
        span = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        ids[i, span] = torch.tensor(list(row), dtype=torch.long)
        mask[i, span] = 1
    return ids, mask
