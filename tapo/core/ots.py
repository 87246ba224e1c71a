"""OOD token suppression (OTS): down-weight constructed tokens the current policy finds unnatural.

For each token t of a constructed trajectory, s_t = log p(y_t | x, y<t) + H[p(. | x, y<t)] under the
current policy and w_t = clamp(exp(s_t), w_min, w_max), with no gradient through w_t. A token the
policy would hardly pick where it is confident (low log-prob, low entropy) gets a small weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

TensorLike = torch.Tensor | Sequence[float] | Sequence[Sequence[float]]


def _float_tensor(values: TensorLike) -> torch.Tensor:
    """A detached floating tensor: float32 unless the input already is float32 or float64."""
    tensor = torch.as_tensor(values).detach()  # [...]
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))  # [...] bf16/half/ints -> float32


def ots_weights(
    logps: TensorLike,  # [...] log p(y_t | x, y<t) of the constructed tokens under the current policy
    entropies: TensorLike,  # [...] entropy of the policy's next-token distribution at each of those positions
    w_min: float = 0.01,
    w_max: float = 10.0,
) -> torch.Tensor:
    """OTS weights w_t = clamp(exp(logp_t + H_t), w_min, w_max), detached, same shape as the inputs.

    Inputs may be tensors of any (equal) shape or nested lists; bf16/half inputs are computed in
    float32. -inf log-probs give w_min and overflowing sums give w_max.

    >>> w = ots_weights([0.0, -1.0, -2.0, -10.0, -0.5], [0.0, 1.0, 1.0, 1.0, 4.0])
    >>> [round(x, 4) for x in w.tolist()]  # exp(0), exp(0), exp(-1), floor, cap
    [1.0, 1.0, 0.3679, 0.01, 10.0]
    """
    if w_min < 0:
        raise ValueError(f"w_min must be >= 0 (weights scale advantages and must not flip their sign), got {w_min}")
    if w_min > w_max:
        raise ValueError(f"w_min must be <= w_max, got w_min={w_min} and w_max={w_max}")
    with torch.no_grad():
        logps = _float_tensor(logps)  # [...]
        entropies = _float_tensor(entropies).to(logps.device)  # [...]
        if logps.shape != entropies.shape:
            raise ValueError(
                f"logps and entropies must have the same shape, got {tuple(logps.shape)} and {tuple(entropies.shape)}"
            )
        scores = logps.to(torch.promote_types(logps.dtype, entropies.dtype)) + entropies  # [...] s_t
        return torch.exp(scores).clamp(min=w_min, max=w_max)  # [...] w_t


def masked_mean_and_low_frac(
    weights: torch.Tensor,  # [...] OTS weights
    mask: torch.Tensor,  # [...] 1/True where a weight belongs to a real constructed token
    *,
    w_min: float,
) -> tuple[float, float]:
    """Mean weight over the masked tokens and the share of them at the floor (w_t <= w_min).

    These are the metrics `tapo/ots_w_mean` and `tapo/ots_w_low_frac`. No masked tokens gives
    (0.0, 0.0). The floor comparison runs in the weights' dtype, so w_min clamped in float32
    still counts as at the floor.

    >>> mean, low = masked_mean_and_low_frac(torch.tensor([[0.01, 1.0, 2.0], [3.0, 0.01, 5.0]]),
    ...                                      torch.tensor([[1, 1, 1], [1, 1, 0]]), w_min=0.01)
    >>> round(mean, 6), low  # (0.01 + 1 + 2 + 3 + 0.01) / 5, 2 of 5 at the floor
    (1.204, 0.4)
    """
    weights = torch.as_tensor(weights).detach()  # [...]
    mask = torch.as_tensor(mask, device=weights.device).detach()  # [...]
    if weights.shape != mask.shape:
        raise ValueError(
            f"weights and mask must have the same shape, got {tuple(weights.shape)} and {tuple(mask.shape)}"
        )
    selected = weights[mask.bool()].double()  # [M] weights of the real tokens
    if selected.numel() == 0:
        return 0.0, 0.0
    floor = torch.tensor(w_min, dtype=weights.dtype).double()  # w_min as the weights' dtype stores it
    return selected.mean().item(), (selected <= floor).double().mean().item()


def token_entropy_from_logits(
    logits: torch.Tensor,  # [..., V] next-token logits
    *,
    chunk_rows: int = 1024,
) -> torch.Tensor:
    """Entropy H = -sum_v p_v log p_v of each next-token distribution, [..., V] -> [...].

    Computed with log_softmax in float32 (float64 stays float64), `chunk_rows` positions at a
    time to bound the memory of the [.., V] temporaries; -inf logits (masked-out vocabulary)
    contribute 0. Gradients flow if the logits require them (`ots_weights` detaches anyway).

    >>> token_entropy_from_logits(torch.tensor([[0.0, 0.0], [0.0, float("-inf")]]))
    tensor([0.6931, 0.0000])
    """
    if logits.dim() < 1 or logits.shape[-1] == 0:
        raise ValueError(f"logits must have a non-empty last (vocabulary) dimension, got shape {tuple(logits.shape)}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    flat = logits.reshape(-1, logits.shape[-1])  # [N, V]
    parts = []
    for start in range(0, flat.shape[0], chunk_rows):
        logp = torch.log_softmax(flat[start : start + chunk_rows].to(dtype), dim=-1)  # [n, V]
        p = logp.exp()  # [n, V]
        plogp = torch.where(p > 0, p * logp, torch.zeros_like(logp))  # [n, V] 0 * -inf -> 0
        parts.append(0.0 - plogp.sum(dim=-1))  # [n] (0.0 - x, not -x: a certain token gets 0.0, not -0.0)
    entropy = torch.cat(parts) if parts else flat.new_zeros(0, dtype=dtype)  # [N]
    return entropy.reshape(logits.shape[:-1])  # [...]
