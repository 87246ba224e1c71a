"""Advantages: GRPO's group-normalized ones, and TAPO's decoupled ones for reflection groups (DAE).

Original rollouts keep their own group and advantages. The constructed trajectories y_ref of one
query form a separate reflection group G_ref, normalized on its own (paper-literal) or against the
original group's statistics (`baseline="original"`), and never mixed into the original group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

BASELINES = ("reflection", "original")


def _finite_rewards(rewards: Sequence[float], *, what: str) -> list[float]:
    """Rewards as floats, or a ValueError naming the first one that is not a finite number."""
    values = [float(r) for r in rewards]
    for i, value in enumerate(values):
        if not math.isfinite(value):
            raise ValueError(f"{what}[{i}] is {value}; rewards must be finite numbers")
    return values


def _mean_and_std(values: Sequence[float], *, unbiased: bool = False) -> tuple[float, float]:
    """Mean and standard deviation of a non-empty list: population (1/K) or, with `unbiased`, sample (1/(K-1))."""
    mean = math.fsum(values) / len(values)
    denominator = len(values) - 1 if unbiased else len(values)
    variance = math.fsum((v - mean) ** 2 for v in values) / denominator if denominator > 0 else 0.0
    return mean, math.sqrt(variance)


def group_advantages(
    rewards: Sequence[float],
    eps: float = 1e-6,
    *,
    unbiased: bool = False,
    scale: bool = True,
    std: float | None = None,
) -> list[float]:
    """GRPO advantages of one group: A_i = (r_i - mean) / (std + eps), std over K (population).

    A lone sample keeps its reward (A = r, as the paper does for |G_ref| = 1); a group whose
    rewards are all equal gets exact zeros; an empty group gets [].

    Keyword options give the engine's convention, so advantages computed here share a scale with
    the engine's: `unbiased=True` uses the sample std (1/(K-1), TRL's `nanstd`), `scale=False`
    only centres (TRL's `scale_rewards: none`), and `std` divides by a given std instead of the
    group's (TRL's `scale_rewards: batch`, the std of the whole batch).

    >>> [round(a, 4) for a in group_advantages([1.0, 0.0, 0.0, 1.0])]
    [1.0, -1.0, -1.0, 1.0]
    >>> group_advantages([1.0])
    [1.0]
    >>> group_advantages([1.0, 1.0, 1.0])
    [0.0, 0.0, 0.0]
    >>> [round(a, 4) for a in group_advantages([1.0, 0.0, 0.0, 1.0], 1e-4, unbiased=True)]  # TRL's group scaling
    [0.8659, -0.8659, -0.8659, 0.8659]
    >>> group_advantages([1.0, 0.0, 0.0, 0.0], scale=False)  # TRL's scale_rewards: none
    [0.75, -0.25, -0.25, -0.25]
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if std is not None and not (math.isfinite(std) and std >= 0):
        raise ValueError(f"std must be a finite number >= 0, got {std}")
    values = _finite_rewards(rewards, what="rewards")
    if len(values) <= 1:
        return values
    if is_degenerate(values):
        return [0.0] * len(values)
    mean, group_std = _mean_and_std(values, unbiased=unbiased)
    if not scale:
        return [v - mean for v in values]
    divisor = (group_std if std is None else std) + eps
    return [(v - mean) / divisor for v in values]


def batch_std(rewards: Sequence[float], *, unbiased: bool = True) -> float:
    """The std of a whole batch of rewards (TRL's `scale_rewards: batch`); 0.0 for fewer than two.

    >>> round(batch_std([1.0, 0.0, 0.0, 1.0]), 4)
    0.5774
    """
    values = _finite_rewards(rewards, what="rewards")
    return _mean_and_std(values, unbiased=unbiased)[1] if len(values) > 1 else 0.0


def is_degenerate(rewards: Sequence[float]) -> bool:
    """Whether a group has more than one member and zero reward variance (all rewards equal).

    Such a group gets all-zero advantages under its own normalization, so it adds no gradient;
    that is what `tapo/ref_groups_degenerate_frac` counts. Groups of 0 or 1 members are not
    counted: a lone y_ref keeps A = r.

    >>> is_degenerate([1.0, 1.0]), is_degenerate([0.0, 1.0]), is_degenerate([1.0])
    (True, False, False)
    """
    values = [float(r) for r in rewards]
    return len(values) > 1 and max(values) == min(values)


def reflection_advantages(
    ref_rewards: Sequence[float],
    *,
    baseline: str = "reflection",
    original_rewards: Sequence[float] | None = None,
    eps: float = 1e-6,
    unbiased: bool = False,
    scale: bool = True,
    std: float | None = None,
) -> list[float]:
    """Advantages of one query's reflection group G_ref, decoupled from its original group.

    - `baseline="reflection"` (paper-literal): normalize within G_ref, i.e. `group_advantages`
      (|G_ref| = 1 gives A = r; an all-right or all-wrong G_ref gives zeros).
    - `baseline="original"`: A_ref_j = (r_ref_j - mean_Gorig) / (std_Gorig + eps), using the
      statistics of the query's original rollouts (which stay untouched). Never degenerate for an
      eligible query, whose original group is mixed; a zero-variance original group is an error.

    `unbiased`, `scale` and `std` are `group_advantages`'s engine-convention options; with
    `baseline="original"` and `std` given, that std replaces the original group's.

    >>> [round(a, 4) for a in reflection_advantages([1.0, 0.0])]
    [1.0, -1.0]
    >>> [round(a, 4) for a in reflection_advantages([1.0, 1.0], baseline="original",
    ...                                              original_rewards=[1.0, 0.0, 0.0, 1.0])]
    [1.0, 1.0]
    """
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    if baseline == "reflection":
        return group_advantages(ref_rewards, eps, unbiased=unbiased, scale=scale, std=std)
    if original_rewards is None:
        raise ValueError("baseline 'original' needs original_rewards (the rewards of the query's rollouts)")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    values = _finite_rewards(ref_rewards, what="ref_rewards")
    originals = _finite_rewards(original_rewards, what="original_rewards")
    if len(originals) < 2 or is_degenerate(originals):
        raise ValueError(
            f"baseline 'original' needs an original group with reward variance, got {originals}; "
            "selection only constructs for mixed groups, so this group should not have a reflection group"
        )
    mean, group_std = _mean_and_std(originals, unbiased=unbiased)
    if not scale:
        return [v - mean for v in values]
    divisor = (group_std if std is None else std) + eps
    return [(v - mean) / divisor for v in values]


def reflection_token_advantages(
    advantage: float,
    ots: torch.Tensor,  # [T] weights of one constructed trajectory, detached
    *,
    loss_weight: float = 1.0,
) -> torch.Tensor:
    """Per-token advantages of one constructed trajectory: lambda * w_t * A_ref.

    Carrying the OTS weight inside the advantage lets the engine's ordinary clipped loss train
    constructed rows: for w_t >= 0, w_t * min(r*A, clip(r)*A) == min(r*(w_t*A), clip(r)*(w_t*A)).

    >>> reflection_token_advantages(0.5, torch.tensor([1.0, 0.01, 2.0]), loss_weight=1.0)
    tensor([0.5000, 0.0050, 1.0000])
    """
    return loss_weight * advantage * ots  # [T]


def trained_from(reflection_starts: Sequence[int], width: int) -> torch.Tensor:
    """[S, width] 1.0 where a constructed token is trained: from its reflection on.

    For the `ref_train_prefix: false` ablation: the kept prefix (y-'s own tokens, which contain the
    mistake) stays as context but is not trained (no policy-gradient, KL or entropy term), so a
    rewarded construction does not also reward the error it corrects. The paper trains every y_ref
    token (`ref_train_prefix: true`).

    >>> trained_from([2, 0], 4)
    tensor([[0., 0., 1., 1.],
            [1., 1., 1., 1.]])
    """
    positions = torch.arange(width).unsqueeze(0)  # [1, width]
    starts = torch.tensor(list(reflection_starts), dtype=torch.long).unsqueeze(1)  # [S, 1]
    return (positions >= starts).float()  # [S, width]
