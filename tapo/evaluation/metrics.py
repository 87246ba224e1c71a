"""Evaluation metrics: Pass@k (unbiased), maj@k, avg@n, and their mean and std over runs.

The evaluation protocol of the paper: n samples per problem (default 5) in each of R runs
(default 16). Within one run every metric is a mean over problems; the reported number is the
mean over runs, with the (population) standard deviation over runs beside it.

- Pass@k: the unbiased estimator of Chen et al. (2021), 1 - C(n-c, k) / C(n, k), for a problem
  with c correct of n samples.
- maj@k: the share of problems where the majority answer of k samples is right; averaged over
  every k-subset of the n samples (exact up to `MAX_SUBSETS` subsets, a fixed sample beyond).
  Answers vote by equivalence, not spelling: "1/2", "0.5" and "\\frac{1}{2}" are one answer.
- avg@n: the mean accuracy of all n samples, which equals Pass@1.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
import random
import statistics
from collections.abc import Callable, Mapping, Sequence

MAX_SUBSETS = 2000  # maj@k averages over all k-subsets up to this many, else over this many seeded ones
SAME_ANSWER_TIMEOUT_S = 2.0  # limit of one equivalence check of two answers; a late one counts as different


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k of one problem with `c` correct among `n` samples: 1 - C(n-c, k) / C(n, k).

    Computed as the stable product 1 - prod_{i=n-c+1..n} (1 - k / i), with no large binomials.

    >>> round(pass_at_k(5, 1, 1), 12), pass_at_k(5, 0, 3), pass_at_k(5, 3, 3)
    (0.2, 0.0, 1.0)
    >>> round(pass_at_k(10, 2, 3), 12) == round(1 - 56 / 120, 12)  # 1 - C(8, 3) / C(10, 3)
    True
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # numpy integers are Integral
            raise ValueError(f"pass_at_k: {name} must be an integer, got {value!r}")
        if value < 0:
            raise ValueError(f"pass_at_k: {name} must be non-negative, got {name}={value}")
    n, c, k = int(n), int(c), int(k)
    if k == 0:
        raise ValueError("pass_at_k: k must be at least 1, got k=0")
    if n == 0:
        raise ValueError("pass_at_k: n must be at least 1 (no samples), got n=0")
    if c > n:
        raise ValueError(f"pass_at_k: more correct samples than samples (c={c} > n={n})")
    if k > n:
        raise ValueError(f"pass_at_k: k={k} is larger than the number of samples n={n}")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def avg_at_n(correct: Sequence[bool]) -> float:
    """Mean accuracy of one problem's samples (the same number as Pass@1).

    >>> avg_at_n([True, False, False, True])
    0.5
    """
    if not correct:
        raise ValueError("avg_at_n: no samples")
    return sum(bool(x) for x in correct) / len(correct)


@functools.lru_cache(maxsize=1 << 16)  # the same wrong answers recur across runs and k
def same_answer(answer: str, other: str) -> bool:
    r"""Whether two extracted answers are equal by the answer checker (`tapo.rewards.is_correct`, `other` as gold).

    Equal text (spaces aside) is equal. An `answer` that would not come back out of a box, or an
    `other` the checker cannot read as a gold, is equal to nothing else (so it votes by its text).

    >>> same_answer("1/2", r"\frac{1}{2}"), same_answer("0.5", "1/2"), same_answer("0.5", "3")
    (True, True, False)
    """
    if "".join(answer.split()) == "".join(other.split()):
        return True
    from tapo.rewards import extract_answer, is_correct

    boxed = f"\\boxed{{{answer}}}"
    if extract_answer(boxed) != answer.strip():  # unbalanced braces: the box would hold another answer
        return False
    try:
        return is_correct(boxed, other, timeout_s=SAME_ANSWER_TIMEOUT_S)
    except ValueError:  # `other` is no answer the checker can read as a gold
        return False


def answer_groups(
    answers: Sequence[str | None], correct: Sequence[bool], *, same: Callable[[str, str], bool] = same_answer
) -> list[int | None]:
    """The vote of each sample: 0 for the correct ones, 1, 2, ... for groups of equal wrong answers, None for none.

    Every correct sample equals the gold, so they are one group. A wrong answer joins the first
    group whose first answer it equals (`same(answer, first)`), else starts a new one: a problem
    costs at most one check per sample and group, whatever the number of k-subsets voted over.

    >>> answer_groups(["3", "1/2", "0.5", None, "7", "3"], [True, False, False, False, False, True])
    [0, 1, 1, None, 2, 0]
    """
    if len(answers) != len(correct):
        raise ValueError(f"answer_groups: {len(answers)} answers but {len(correct)} verdicts")
    firsts: list[str] = []  # the first answer of each wrong group, group i + 1
    groups: list[int | None] = []
    for answer, ok in zip(answers, correct):
        if ok:
            groups.append(0)
        elif answer is None:
            groups.append(None)
        else:
            group = next((i + 1 for i, first in enumerate(firsts) if same(answer, first)), None)
            if group is None:
                firsts.append(answer)
                group = len(firsts)
            groups.append(group)
    return groups


def _majority_is_correct(groups: Sequence[int | None]) -> bool:
    """Whether group 0 (the correct answers) has the most votes; ties go to the group seen first."""
    votes: dict[int, int] = {}
    for group in groups:
        if group is not None:
            votes[group] = votes.get(group, 0) + 1
    if not votes:
        return False
    return max(votes, key=lambda group: votes[group]) == 0  # max keeps the first of equal counts


def majority_correct(answers: Sequence[str | None], correct: Sequence[bool]) -> bool:
    r"""Whether the most frequent final answer among these samples is right.

    Answers vote by equivalence (`answer_groups`): all correct samples form one vote (they all
    equal the gold), and wrong answers the checker finds equal form one vote too; a sample with
    no extracted answer (None) does not vote. Ties go to the answer seen first. No votes at all:
    wrong.

    >>> majority_correct(["4", "5", "5", "4.0"], [True, False, False, True])  # "4" and "4.0" agree
    True
    >>> majority_correct(["7", "5", "5", None], [True, False, False, False])
    False
    >>> majority_correct(["3", "1/2", "0.5", "3", "\\frac{1}{2}"], [True, False, False, True, False])  # 3 halves
    False
    """
    if len(answers) != len(correct):
        raise ValueError(f"majority_correct: {len(answers)} answers but {len(correct)} verdicts")
    return _majority_is_correct(answer_groups(answers, correct))


def maj_at_k(answers: Sequence[str | None], correct: Sequence[bool], k: int, *, max_subsets: int = MAX_SUBSETS) -> float:
    """maj@k of one problem: the mean of `majority_correct` over k-subsets of its n samples.

    Exact (every k-subset) when there are at most `max_subsets`; otherwise `max_subsets` subsets
    drawn with a fixed seed, so the result is still reproducible. The answers are grouped once,
    over all n samples, and every subset votes with those groups.

    >>> maj_at_k(["1", "2", "2"], [True, False, False], 1)  # one sample: its own correctness
    0.3333333333333333
    >>> maj_at_k(["1", "2", "2"], [True, False, False], 3)
    0.0
    """
    n = len(answers)
    if not 1 <= k <= n:
        raise ValueError(f"maj_at_k: k={k} must lie in 1..n={n}")
    if math.comb(n, k) <= max_subsets:
        subsets: Sequence[Sequence[int]] = list(itertools.combinations(range(n), k))
    else:
        rng = random.Random(f"maj@{k}/{n}")
        subsets = [sorted(rng.sample(range(n), k)) for _ in range(max_subsets)]
    groups = answer_groups(answers, correct)
    hits = sum(_majority_is_correct([groups[i] for i in s]) for s in subsets)
    return hits / len(subsets)


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """{"mean", "std"} of per-run values; std is the population std (0.0 for a single run).

    >>> mean_std([0.5, 0.25])
    {'mean': 0.375, 'std': 0.125}
    """
    if not values:
        raise ValueError("mean_std: no values")
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0}


def run_metrics(
    problems: Mapping[str, tuple[Sequence[str | None], Sequence[bool]]], *, ks: Sequence[int]
) -> dict[str, dict[str, float] | float]:
    """Metrics of one run: {"pass@k": {k: mean}, "maj@k": {k: mean}, "avg@n": mean} over problems.

    `problems` maps a problem id to (extracted answers, verdicts) of its n samples in this run.

    >>> m = run_metrics({"a": (["1", "2"], [True, False]), "b": (["3", "3"], [False, False])}, ks=[1, 2])
    >>> m["pass@k"], m["avg@n"]
    ({1: 0.25, 2: 0.5}, 0.25)
    """
    if not problems:
        raise ValueError("run_metrics: no problems")
    pass_k = {k: 0.0 for k in ks}
    maj_k = {k: 0.0 for k in ks}
    avg = 0.0
    for problem_id, (answers, correct) in problems.items():
        n, c = len(correct), sum(bool(x) for x in correct)
        if n == 0:
            raise ValueError(f"run_metrics: problem {problem_id!r} has no samples")
        for k in ks:
            pass_k[k] += pass_at_k(n, c, k)
            maj_k[k] += maj_at_k(answers, correct, k)
        avg += c / n
    count = len(problems)
    return {
        "pass@k": {k: v / count for k, v in pass_k.items()},
        "maj@k": {k: v / count for k, v in maj_k.items()},
        "avg@n": avg / count,
    }
