"""Difficulty-aware candidate selection (DCS): which wrong rollouts get a construction, and from which reference.

A group (the K rollouts of one query) splits into correct P (reward > 0) and incorrect N
(reward <= 0). The query is eligible iff |P| >= n_pos and |N| >= n_neg; an eligible query gives
min(m_max, |N|) distinct y- drawn from N, each with a y+ drawn uniformly from P (independently per
y-). Every draw comes from an explicit `random.Random`, so a run is reproducible.

A rollout cut off by its token budget has no final answer to diagnose: it counts in |N| for
eligibility but is never drawn as y- (`truncated`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from tapo.core.types import ConstructionPair


def split_group(rewards: Sequence[float]) -> tuple[list[int], list[int]]:
    """Indices of the correct (reward > 0) and incorrect (reward <= 0) rollouts of one group.

    A NaN reward is a rollout no reward function could score (TRL's "unscorable": every function
    returned None); it is in neither list, so it is never y- or y+ and counts toward no threshold.

    >>> split_group([1.0, 0.0, 0.5, -1.0])
    ([0, 2], [1, 3])
    >>> split_group([1.0, float("nan"), 0.0])
    ([0], [2])
    """
    positives: list[int] = []
    negatives: list[int] = []
    for i, reward in enumerate(rewards):
        reward = float(reward)
        if not math.isnan(reward):
            (positives if reward > 0 else negatives).append(i)
    return positives, negatives


def check_thresholds(*, n_pos: int, n_neg: int, m_max: int) -> None:
    """Raise ValueError naming the first selection threshold that makes no sense.

    >>> check_thresholds(n_pos=2, n_neg=4, m_max=4)
    >>> check_thresholds(n_pos=0, n_neg=4, m_max=4)
    Traceback (most recent call last):
    ...
    ValueError: n_pos must be >= 1 (every y- needs a correct reference y+), got 0
    """
    if n_pos < 1:
        raise ValueError(f"n_pos must be >= 1 (every y- needs a correct reference y+), got {n_pos}")
    if n_neg < 0:
        raise ValueError(f"n_neg must be >= 0, got {n_neg}")
    if m_max < 0:
        raise ValueError(f"m_max must be >= 0, got {m_max}")


def is_eligible(rewards: Sequence[float], *, n_pos: int = 2, n_neg: int = 4) -> bool:
    """Whether a group sits at the capability boundary: |P| >= n_pos and |N| >= n_neg.

    >>> is_eligible([1, 1, 0, 0, 0, 0, 0, 0], n_pos=2, n_neg=4)
    True
    >>> is_eligible([1, 0, 0, 0, 0, 0, 0, 0], n_pos=2, n_neg=4)
    False
    """
    positives, negatives = split_group(rewards)
    return len(positives) >= n_pos and len(negatives) >= n_neg


def select_pairs(
    rewards: Sequence[float],
    n_pos: int = 2,
    n_neg: int = 4,
    m_max: int = 4,
    rng: random.Random | None = None,
    *,
    truncated: Sequence[bool] | None = None,
) -> list[tuple[int, int]]:
    """(index of y-, index of y+) construction pairs for one group; [] when it is not eligible.

    min(m_max, |N'|) distinct y- are drawn without replacement from N' = the incorrect rollouts
    that are not `truncated` (`rng.sample`), then for each y-, in the order drawn, a y+ is drawn
    uniformly from P (`rng.choice`). Eligibility counts every incorrect rollout, truncated or not.
    `rng=None` means `random.Random(0)`, so a call without an rng is deterministic.

    >>> select_pairs([1, 0, 0, 1, 0, 0, 0, 0], rng=random.Random(0))
    [(5, 3), (7, 3), (1, 3), (2, 3)]
    >>> select_pairs([1, 0, 0, 0, 0, 0, 0, 0])  # |P| = 1 < n_pos
    []
    >>> select_pairs([1, 0, 0, 1, 0, 0], n_neg=4, truncated=[False, True, True, False, True, False])
    [(5, 3)]
    """
    check_thresholds(n_pos=n_pos, n_neg=n_neg, m_max=m_max)
    positives, negatives = split_group(rewards)
    if len(positives) < n_pos or len(negatives) < n_neg:
        return []
    if truncated is not None:
        if len(truncated) != len(rewards):
            raise ValueError(f"truncated has {len(truncated)} flags for a group of {len(rewards)} rollouts")
        negatives = [i for i in negatives if not truncated[i]]
    rng = random.Random(0) if rng is None else rng
    chosen = rng.sample(negatives, min(m_max, len(negatives)))
    return [(negative, rng.choice(positives)) for negative in chosen]


def selection_rng(*, seed: int, step: int) -> random.Random:
    """The RNG of one training step's selection, the same in every process for the same (seed, step).

    Seeded from a string, which `random` hashes with SHA-512 (not Python's salted `hash`), so the
    stream does not depend on PYTHONHASHSEED, the process, or the machine.

    >>> selection_rng(seed=7, step=3).random() == selection_rng(seed=7, step=3).random()
    True
    """
    return random.Random(f"tapo/dcs/seed={int(seed)}/step={int(step)}")


def select_construction_pairs(
    groups: Sequence[tuple[str, Sequence[float]]],
    *,
    n_pos: int = 2,
    n_neg: int = 4,
    m_max: int = 4,
    seed: int,
    step: int,
    truncated: Sequence[Sequence[bool]] | None = None,
) -> list[ConstructionPair]:
    """Construction pairs for a whole gathered batch of groups, identical on every process.

    `groups` is the gathered view, (query_id, rewards of that query's rollouts) in the same order
    on every process; one `selection_rng(seed=seed, step=step)` serves the groups in that order.
    Query ids must be distinct, or a pair could not be traced back to its group. `truncated`, one
    list of flags per group, marks rollouts that may not be y- (see `select_pairs`).

    >>> select_construction_pairs([("q0", [1, 0, 0, 0, 0, 1]), ("q1", [1, 1, 1, 1, 1, 1])],
    ...                           n_pos=2, n_neg=4, m_max=2, seed=0, step=0)  # doctest: +NORMALIZE_WHITESPACE
    [ConstructionPair(query_id='q0', negative_index=3, positive_index=5),
     ConstructionPair(query_id='q0', negative_index=2, positive_index=5)]
    """
    check_thresholds(n_pos=n_pos, n_neg=n_neg, m_max=m_max)
    rng = selection_rng(seed=seed, step=step)
    seen: dict[str, int] = {}
    pairs: list[ConstructionPair] = []
    for position, (query_id, rewards) in enumerate(groups):
        if query_id in seen:
            raise ValueError(
                f"query_id {query_id!r} appears twice in the gathered groups (positions {seen[query_id]} "
                f"and {position}); ids must be unique so each pair traces back to one group"
            )
        seen[query_id] = position
        flags = truncated[position] if truncated is not None else None
        for negative, positive in select_pairs(rewards, n_pos, n_neg, m_max, rng, truncated=flags):
            pairs.append(ConstructionPair(query_id=query_id, negative_index=negative, positive_index=positive))
    return pairs
