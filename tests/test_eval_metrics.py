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


def test_equivalent_wrong_answers_vote_together():
    """1/2, 0.5 and \\frac{1}{2} are one wrong answer with three votes: it beats the gold's two."""
    answers, correct = ["1/2", "0.5", "\\frac{1}{2}", "3", "3"], [False, False, False, True, True]
    assert not majority_correct(answers, correct)
    assert maj_at_k(answers, correct, 5) == 0.0
    # k=3 (10 subsets): the gold wins the 3 holding both "3"s; a subset with one "3" holds two halves
    assert maj_at_k(answers, correct, 3) == pytest.approx(0.3)


def test_equivalent_groups_keep_the_first_seen_tie_rule():
    # "0.5" and "1/2" (two votes) against the gold's two: the answer seen first wins the tie.
    assert not majority_correct(["0.5", "3", "1/2", "3"], [False, True, False, True])
    assert majority_correct(["3", "0.5", "1/2", "3"], [True, False, False, True])


def test_answer_groups_compare_each_answer_with_the_group_representatives_only():
    from tapo.evaluation.metrics import answer_groups

    calls = []

    def same(a, b):
        calls.append((a, b))
        return a.rstrip("0") == b.rstrip("0")

    groups = answer_groups(["5", "7", "50", "70", None, "5", "9"], [False, False, False, False, False, True, False],
                           same=same)
    assert groups == [1, 2, 1, 2, None, 0, 3]
    # each wrong answer against the first answer of each existing wrong group, until one matches
    assert calls == [("7", "5"), ("50", "5"), ("70", "5"), ("70", "7"), ("9", "5"), ("9", "7")]


def test_answers_the_checker_cannot_read_as_a_gold_group_by_their_text():
    from tapo.evaluation.metrics import same_answer

    assert same_answer("x = ?? ][", "x=??][")  # equal text without spaces: no checker needed
    assert not same_answer("x = ?? ][", "3")  # "3" is no unreadable gold, and the texts differ
    assert not same_answer("3", "x = ?? ][")  # the checker refuses this gold: unequal, not an error
    assert not same_answer("a}b{", "a")  # "\boxed{a}b{}" would read as "a": compared as text instead


def test_pass_at_k_accepts_numpy_integers_but_not_bools():
    import numpy as np

    assert pass_at_k(np.int64(5), np.int32(1), np.int8(1)) == pytest.approx(0.2)
    assert pass_at_k(*np.array([10, 2, 3])) == pytest.approx(1 - 56 / 120)
    for bad in (True, np.bool_(True), np.float64(1.0)):
        with pytest.raises(ValueError, match="k must be an integer"):
            pass_at_k(5, 1, bad)
