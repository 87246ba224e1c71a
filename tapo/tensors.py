"""Token rows to padded tensors, and token log-probs from logits: shared by the engine and the offline samplers."""

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


def token_logps(logits: torch.Tensor, ids: torch.Tensor, *, chunk: int = 512) -> torch.Tensor:
    """log softmax(logits)[ids] in float32, [B, T] from [B, T, V] logits and [B, T] ids; the normaliser is
    taken over `chunk` positions at a time, so no float copy of the whole [B, T, V] tensor is held.

    >>> logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])
    >>> [round(x, 4) for x in token_logps(logits, torch.tensor([[1, 0]]))[0].tolist()]
    [-0.6931, -0.1269]
    """
    taken = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1).float()  # [B, T]
    norm = torch.cat([torch.logsumexp(part.float(), dim=-1) for part in logits.split(chunk, dim=1)], dim=1)  # [B, T]
    return taken - norm
