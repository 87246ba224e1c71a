r"""Answer checking: extraction, fast path, math-verify equivalence, and the worker pool's limits."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys
import threading
import time

import pytest

import tapo.rewards as rewards
from tapo.rewards import (
    DEFAULT_TIMEOUT_S,
    VerifierStats,
    extract_answer,
    is_correct,
    math_reward,
    validate_gold,
    verifier_stats,
)

SHORT_LIMIT_S = 2.0  # per-item limit for the tests that are meant to time out


# --- extraction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"first \boxed{3}, then \boxed{5}", "5"),  # the last box counts
        (r"so $\boxed{\frac{1}{\sqrt{2}}}$", r"\frac{1}{\sqrt{2}}"),  # nested braces
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),  # escaped set braces do not close the box
        (r"\fbox{12}", "12"),
        (r"the answer is $\boxed 7$.", "7"),
        (r"\boxed {42}", "42"),
        (r"\boxed{5} and later \boxed{}", "5"),  # empty boxes are skipped
        (r"\boxed{3} then truncated \boxed{12", "3"),  # a box that never closes is no answer
        ("Final Answer: 42", "42"),
        ("**Final Answer:** 15", "15"),
        ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", r"\frac{3}{4}"),
        ("Thus the answer is 17.", "17"),
        ("the answer is 3.5", "3.5"),
        ("the answer is 2. Then the answer is 9. Let me write the final answer.", "9"),
        ("Total: 48 + 24 = 72\n#### 72", "72"),
        (r"\boxed{}", None),
        (r"\boxed{  }", None),
        ("I have no idea.", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


# --- comparison ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "gold"),
    [
        pytest.param(r"\boxed{0.5}", r"\frac{1}{2}", id="decimal-vs-fraction"),
        pytest.param(r"\boxed{\frac{1}{2}}", "0.5", id="fraction-vs-decimal"),
        pytest.param(r"\boxed{\dfrac{3}{4}}", "0.75", id="dfrac"),
        pytest.param(r"\boxed{3.0}", "3", id="int-vs-decimal"),
        pytest.param(r"\boxed{2\sqrt{2}}", r"\sqrt{8}", id="radical"),
        pytest.param(r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{\sqrt{2}}{2}", id="rationalized-radical"),
        pytest.param(r"\boxed{(1, 2]}", "(1,2]", id="interval"),
        pytest.param(r"\boxed{[0, \infty)}", r"[0,\infty)", id="infinite-interval"),
        pytest.param(r"\boxed{\{2, 1\}}", r"\{1,2\}", id="set-order"),
        pytest.param(r"\boxed{(3, -1)}", "(3,-1)", id="tuple"),
        pytest.param(r"\boxed{\left( 3, -1 \right)}", "(3,-1)", id="left-right"),
        pytest.param(r"\boxed{x=4}", "4", id="equation"),
        pytest.param(r"\boxed{x = 4}", "4", id="equation-spaces"),
        pytest.param(r"\boxed{(x+1)^2}", "x^2+2x+1", id="expression"),
        pytest.param(r"\boxed{30^\circ}", "30", id="degrees-circ"),
        pytest.param(r"\boxed{30^{\circ}}", "30", id="degrees-braced"),
        pytest.param("The answer is 45 degrees.", "45", id="degrees-word"),
        pytest.param(r"\boxed{5 \text{ cm}}", "5", id="units"),
        pytest.param(r"\boxed{\text{(B)}}", r"\text{(B)}", id="text"),
        pytest.param(r"\boxed{1000}", "Janet pays 10 * 100 = 1,000.\n#### 1,000", id="gsm8k-thousands"),
        pytest.param(r"\boxed{1{,}000}", "1000", id="latex-thousands"),
        pytest.param(r"\boxed{12}", r"so the total is \boxed{12}.", id="boxed-gold"),
        pytest.param(r"\fbox{12}", "12", id="fbox"),
        pytest.param(r"so it is \boxed 7.", "7", id="boxed-space-token"),
        pytest.param(r"\boxed{3} no wait \boxed{5}", "5", id="last-box-counts"),
        pytest.param(r"$\boxed{\frac{1}{\sqrt{2}}}$", r"\frac{\sqrt{2}}{2}", id="nested-braces"),
    ],
)
def test_equivalent_answers_are_correct(response, gold):
    assert is_correct(response, gold) is True


@pytest.mark.parametrize(
    ("response", "gold"),
    [
        pytest.param(r"\boxed{0.25}", "0.5", id="decimal"),
        pytest.param(r"\boxed{91}", "19", id="digits-swapped"),
        pytest.param(r"\boxed{0.333}", r"\frac{1}{3}", id="rounded-fraction"),
        pytest.param(r"\boxed{2\sqrt{3}}", r"\sqrt{8}", id="radical"),
        pytest.param(r"\boxed{[1, 2]}", "(1,2]", id="interval-ends"),
        pytest.param(r"\boxed{\{1, 3\}}", r"\{1,2\}", id="set"),
        pytest.param(r"\boxed{(-1, 3)}", "(3,-1)", id="tuple-order"),
        pytest.param(r"\boxed{x=5}", "4", id="equation"),
        pytest.param(r"\boxed{60^\circ}", "30", id="degrees"),
        pytest.param(r"\boxed{100}", "#### 1,000", id="gsm8k"),
        pytest.param(r"\boxed{5} no wait \boxed{3}", "5", id="earlier-box-ignored"),
        pytest.param(r"\boxed{}", "0", id="empty-box"),
        pytest.param("I could not solve it.", "0", id="no-answer"),
        pytest.param("", r"\sqrt{2}", id="empty-response"),
    ],
)
def test_different_answers_are_wrong(response, gold):
    assert is_correct(response, gold) is False


# --- the TRL reward function -----------------------------------------------------------------


def test_math_reward_scores_strings_and_conversations():
    completions = [
        r"... so $\boxed{\frac{1}{2}}$",
        [{"role": "assistant", "content": r"The answer is $2\sqrt{2}$."}],
        [{"role": "user", "content": r"\boxed{8}"}, {"role": "assistant", "content": r"\boxed{9}"}],
        [{"role": "assistant", "content": [{"type": "text", "text": r"\boxed{(1,2]}"}]}],
        "no idea",
    ]
    answers = ["0.5", r"\sqrt{8}", "8", "(1, 2]", "4"]
    rewards_ = math_reward(completions, answers, prompts=["ignored"] * 5, completion_ids=None)
    assert rewards_ == [1.0, 1.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize(
    ("answers", "row"),
    [
        (["1", "???"], 1),
        (["", "2"], 0),
        (["1", r"\boxed{}"], 1),
        (["1", "2", r"\frac{"], 2),
        (["#### ", "2"], 0),
        ([None, "2"], 0),
    ],
)
def test_math_reward_names_the_row_of_an_unparseable_gold(answers, row):
    completions = [r"\boxed{1}"] * len(answers)
    with pytest.raises(ValueError, match=rf"^answer of row {row} cannot be parsed: "):
        math_reward(completions, answers)


def test_math_reward_rejects_a_misaligned_answer_column():
    with pytest.raises(ValueError, match="one answer per completion"):
        math_reward([r"\boxed{1}", r"\boxed{2}"], ["1"])


@pytest.mark.parametrize("gold", ["42", "#### 1,000", r"\frac{1}{2}", r"\boxed{\sqrt{2}}", "(1, 2]", "x^2+1"])
def test_validate_gold_accepts_checkable_answers(gold):
    validate_gold(gold, where="row 12 of data.jsonl")


@pytest.mark.parametrize("gold", ["", "   ", "#### ", r"\boxed{}", "???", r"\frac{"])
def test_validate_gold_names_where_the_bad_gold_is(gold):
    with pytest.raises(ValueError, match=r"^answer of row 12 of data\.jsonl cannot be parsed: "):
        validate_gold(gold, where="row 12 of data.jsonl")


def test_is_correct_raises_on_an_unparseable_gold():
    with pytest.raises(ValueError, match="gold answer cannot be parsed: '\\?\\?\\?'"):
        is_correct(r"\boxed{???}", "???")


# --- limits of the math-verify pool ----------------------------------------------------------

# Inputs on which sympy runs for minutes (checked by hand: none finishes within 20 s).
PATHOLOGICAL = [
    pytest.param(r"\boxed{9^{9^{9^{9}}}}", "1", id="power-tower"),
    pytest.param(r"\boxed{(10^{10})!}", "1", id="huge-factorial"),
    pytest.param(r"\boxed{2^{2^{2^{2^{2^{2}}}}}}", "1", id="nested-exponents"),
]


@pytest.mark.parametrize(("response", "gold"), PATHOLOGICAL)
def test_a_hanging_check_times_out_scores_zero_and_is_counted(response, gold):
    before = verifier_stats()
    start = time.monotonic()
    assert is_correct(response, gold, timeout_s=SHORT_LIMIT_S) is False
    elapsed = time.monotonic() - start
    assert elapsed < 10.0
    assert verifier_stats().timeouts == before.timeouts + 1
    assert verifier_stats().restarts == before.restarts + 1


def test_the_default_limit_ends_a_hanging_check_within_seconds():
    assert DEFAULT_TIMEOUT_S == 5.0
    before = verifier_stats()
    start = time.monotonic()
    assert is_correct(r"\boxed{9^{9^{9^{9}}}}", "1") is False
    assert DEFAULT_TIMEOUT_S <= time.monotonic() - start < 10.0
    assert verifier_stats().timeouts == before.timeouts + 1


def test_a_batch_with_hanging_items_still_scores_the_others():
    completions = [
        r"\boxed{2\sqrt{2}}",
        r"\boxed{9^{9^{9^{9}}}}",
        r"\boxed{\{2,1\}}",
        r"\boxed{(10^{10})!}",
        r"\boxed{x=4}",
        r"\boxed{(1,2]}",
    ]
    answers = [r"\sqrt{8}", "1", r"\{1,2\}", "1", "4", "[1,2]"]
    before = verifier_stats()
    start = time.monotonic()
    scores = math_reward(completions, answers, timeout_s=SHORT_LIMIT_S)
    assert scores == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert time.monotonic() - start < 3 * SHORT_LIMIT_S + 5.0  # each hang costs one limit plus a restart
    after = verifier_stats()
    assert (after.timeouts - before.timeouts, after.calls - before.calls) == (2, 6)


def test_the_pool_recovers_after_a_timeout():
    assert is_correct(r"\boxed{(10^{10})!}", "1", timeout_s=SHORT_LIMIT_S) is False
    assert is_correct(r"\boxed{2\sqrt{2}}", r"\sqrt{8}") is True


def _check_that_can_fail(gold: str, pred: str | None):
    """A stand-in for math-verify, run in the workers: "die" kills its worker, "raise" raises."""
    if pred == "die":
        os._exit(1)
    if pred == "raise":
        raise RuntimeError("boom")
    return rewards._Outcome.CORRECT


def test_a_crashing_check_scores_crash_and_spares_its_neighbours():
    jobs = [("1", "ok"), ("1", "die"), ("1", "ok"), ("1", "raise"), ("1", "ok")]
    before = verifier_stats()
    outcomes = rewards._run_checks(jobs, timeout_s=DEFAULT_TIMEOUT_S, task=_check_that_can_fail)
    correct, crash = rewards._Outcome.CORRECT, rewards._Outcome.CRASH
    assert outcomes == [correct, crash, correct, crash, correct]
    after = verifier_stats()
    assert (after.crashes - before.crashes, after.timeouts - before.timeouts) == (2, 0)


def test_checks_work_from_other_threads():
    results: dict[str, list[float]] = {}

    def score(name: str, completions: list[str], answers: list[str]) -> None:
        results[name] = math_reward(completions, answers)

    jobs = {
        "a": ([r"\boxed{2\sqrt{2}}", r"\boxed{3}"], [r"\sqrt{8}", r"\sqrt{8}"]),
        "b": ([r"\boxed{\{2,1\}}"], [r"\{1,2\}"]),
    }
    threads = [threading.Thread(target=score, args=(name, *job)) for name, job in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == {"a": [1.0, 0.0], "b": [1.0]}


def test_verifier_stats_is_a_snapshot():
    stats = verifier_stats()
    assert isinstance(stats, VerifierStats)
    is_correct(r"\boxed{\sqrt{4}}", "2")
    assert verifier_stats().calls == stats.calls + 1


def test_import_starts_no_processes():
    code = (
        "import multiprocessing, tapo.rewards as r; "
        "assert r._pool is None and not multiprocessing.active_children(); "
        "assert r.is_correct(r'\\boxed{19}', '19')"  # the fast path needs no pool either
        "; assert r._pool is None"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.getcwd(), timeout=60)


def test_docstring_examples():
    assert doctest.testmod(rewards).failed == 0
