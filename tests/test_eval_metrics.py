"""Pass@k, maj@k, avg@n and the Markdown tables, checked against independent computations."""

from __future__ import annotations

import doctest
import itertools
import math

import pytest

from tapo.evaluation import avg_at_n, maj_at_k, majority_correct, mean_std, pass_at_k, run_metrics
from tapo.evaluation import metrics, tables


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of the k-subsets of n samples (c of them correct) that hold at least one correct sample."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_equals_subset_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_equals_binomial_formula_for_large_n():
    for n, c, k in [(100, 3, 10), (200, 50, 7), (64, 1, 32), (1000, 999, 1), (1000, 2, 500)]:
        expected = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_pass_at_k_is_one_when_every_subset_holds_a_correct_sample():
    assert pass_at_k(5, 3, 3) == 1.0 and pass_at_k(5, 5, 1) == 1.0 and pass_at_k(4, 2, 3) == 1.0
    assert pass_at_k(5, 0, 5) == 0.0


@pytest.mark.parametrize(
    "args, fragment",
    [((3, 1, 4), "k=4 is larger"), ((3, 4, 1), "c=4 > n=3"), ((-1, 0, 1), "n must be non-negative"),
     ((3, -1, 1), "c must be non-negative"), ((3, 1, 0), "k must be at least 1"), ((0, 0, 1), "n must be at least 1"),
     ((3.0, 1, 1), "n must be an integer")],
)
def test_pass_at_k_rejects_bad_arguments(args, fragment):
    with pytest.raises(ValueError, match=fragment):
        pass_at_k(*args)


def test_maj_at_k_counts_ties_for_the_first_answer():
    answers = ["1", "1", "2", "2", "2"]  # "1" is the gold
    correct = [True, True, False, False, False]
    # k=1: 2 of 5 singletons are right. k=2 (10 pairs): {1,1} right, 6 mixed pairs tie -> first seen ("1") wins,
    # 3 pairs {2,2} wrong. k=3: right only with both "1"s: 3 of 10. k=5: "2" wins 3 to 2.
    assert maj_at_k(answers, correct, 1) == pytest.approx(0.4)
    assert maj_at_k(answers, correct, 2) == pytest.approx(0.7)
    assert maj_at_k(answers, correct, 3) == pytest.approx(0.3)
    assert maj_at_k(answers, correct, 5) == 0.0


def test_majority_groups_correct_spellings_and_ignores_missing_answers():
    assert majority_correct(["1/2", "0.5", "3", None, None], [True, True, False, False, False])
    assert not majority_correct([None, None], [False, False])
    assert not majority_correct(["3 ", " 3", "1/2"], [False, False, True])  # "3" twice, spaces ignored


def test_maj_at_k_samples_subsets_reproducibly_when_there_are_too_many():
    answers = [str(i % 3) for i in range(20)]
    correct = [a == "0" for a in answers]
    first = maj_at_k(answers, correct, 10, max_subsets=50)
    assert first == maj_at_k(answers, correct, 10, max_subsets=50)
    assert 0.0 <= first <= 1.0
    exact = maj_at_k(answers, correct, 10)  # C(20,10) = 184756 > MAX_SUBSETS: sampled too
    assert abs(first - exact) < 0.3


def test_avg_at_n_and_mean_std():
    assert avg_at_n([True, True, False, False, False]) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        avg_at_n([])
    stats = mean_std([0.2, 0.4, 0.9])
    assert stats["mean"] == pytest.approx(0.5)
    assert stats["std"] == pytest.approx(math.sqrt(((0.3**2) + (0.1**2) + (0.4**2)) / 3))  # population std
    assert mean_std([0.7]) == {"mean": 0.7, "std": 0.0}


def test_run_metrics_averages_over_problems():
    problems = {
        "p1": (["5", "5", "4"], [True, True, False]),
        "p2": (["1", "2", "3"], [False, False, False]),
        "p3": (["7", "7", "7"], [True, True, True]),
    }
    m = run_metrics(problems, ks=[1, 2, 3])
    assert m["pass@k"][1] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert m["pass@k"][2] == pytest.approx((1 + 0 + 1) / 3)  # p1: n-c=1 < 2
    assert m["avg@n"] == pytest.approx(m["pass@k"][1])
    assert m["maj@k"][3] == pytest.approx((1 + 0 + 1) / 3)


def test_tables_show_percentages_with_std():
    result = {
        "model": "m",
        "protocol": {"samples": 2, "runs": 3, "temperature": 0.6, "top_p": 0.9, "max_tokens": 16, "seed": 0},
        "benchmarks": {
            "b": {
                "n_problems": 4,
                "pass_at_k": {"1": {"mean": 0.125, "std": 0.05}, "2": {"mean": 0.25, "std": 0.0}},
                "maj_at_k": {"1": {"mean": 0.125, "std": 0.05}, "2": {"mean": 0.2, "std": 0.01}},
                "avg_at_n": {"mean": 0.125, "std": 0.05},
                "mean_response_tokens": 12.5,
                "per_problem_pass_rate": {},
            }
        },
    }
    text = tables.result_markdown(result)
    assert "| b | 4 | 12.50 ± 5.00 | 25.00 ± 0.00 | 12.5 |" in text
    assert "| Pass@1 | Pass@2 |" in text
    both = tables.compare_markdown({"x": result, "y": {**result, "benchmarks": {}}})
    assert "| x | 4 | 12.50 ± 5.00 | 25.00 ± 0.00 | 20.00 ± 1.00 | 12.50 ± 5.00 | 12.5 |" in both
    assert "| y | – |" in both


@pytest.mark.parametrize("module", [metrics, tables])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
