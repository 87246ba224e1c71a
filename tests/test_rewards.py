r"""Answer checking: extraction, fast path, math-verify equivalence, and the worker pool's limits."""

from __future__ import annotations

import doctest
import functools
import os
import re
import subprocess
import sys
import threading
import time

import pytest

import tapo.rewards as rewards
from tapo.rewards import (
    DEFAULT_TIMEOUT_S,
    DEFAULT_WORKERS,
    CheckingSettings,
    VerifierStats,
    checking_settings,
    configure_checking,
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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 5.\n\n#### Double-check\n5*2=10, good.", "5"),
        ("The answer is 5.\n\n#### 2. Verify\n5*2=10, good.", "5"),  # a numbered heading
        ("Thus 5.\n##### 7", None),  # a deeper heading is never GSM8K's marker
        ("Total: 48 + 24 = 72\n#### -3", "-3"),
        ("#### $18", "18"),
    ],
)
def test_a_markdown_heading_is_no_gsm8k_answer(text, expected):
    assert extract_answer(text) == expected


def test_an_escaped_dollar_neither_opens_nor_closes_a_math_span():
    assert extract_answer("The final answer is $\\$18$. I hope it is correct.") == r"\$18"
    assert extract_answer(r"It costs \$5, and the answer is $7$.") == "7"
    assert is_correct("The final answer is $\\$18$. I hope it is correct.", "18") is True


@pytest.mark.parametrize(
    "text",
    [
        "The final answer is:\n$$\n\\frac{1}{2}\n$$",
        "Final Answer\n\\[\n\\frac{1}{2}\n\\]",
        "**Final Answer:**\n\n$$\\frac{1}{2}$$\nDone.",
        "Final Answer: $$\n\\frac{1}{2}\n$$",
    ],
)
def test_a_display_opened_below_the_answer_phrase_is_the_answer(text):
    assert extract_answer(text) == r"\frac{1}{2}"
    assert math_reward([text], ["0.5"]) == [1.0]


def test_a_display_cut_off_below_the_answer_phrase_is_no_answer():
    assert extract_answer("Final Answer\n\\[\n\\frac{1}{2}\n") is None
    assert extract_answer("The answer is 3.\nFinal Answer:\n$$\n\\frac{1}{2}") == "3"


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


# --- equivalences a careful grader accepts (each class with several instances) ---------------

EQUIVALENT_CLASSES = {
    "scientific": [
        (r"1.5e3", "1500"), (r"2.5E-2", "0.025"), (r"1.0E3", "1000"), (r"-3e-1", "-0.3"), (r"4E+2", "400"),
        (r"1.5\times 10^{3}", "1500"), (r"6.02 \times 10^{23}", "602000000000000000000000"),
        (r"2.5\cdot10^{-2}", r"\frac{1}{40}"), ("1500", r"1.5e3"), (r"7.5 \times 10^4", "7.5e4"),
    ],
    "inequality-interval": [
        (r"x>3", r"(3,\infty)"), (r"x \ge -1", r"[-1,\infty)"), (r"3 < x", r"(3, \infty)"),
        (r"-2 \le x < 5", r"[-2,5)"), (r"y \leq \frac{1}{2}", r"(-\infty,\frac{1}{2}]"),
        (r"x < -1 \text{ or } x > 2", r"(-\infty,-1)\cup(2,\infty)"), (r"x \neq 0", r"(-\infty,0)\cup(0,\infty)"),
        (r"(3,\infty)", r"x>3"), (r"x \in [1, 2)", "[1,2)"), (r"x>\sqrt{2}", r"(\sqrt{2},\infty)"),
        (r"t \geq 0", r"[0, \infty)"), (r"5 > x \geq 1", "[1,5)"), (r"x \geqslant 2", r"x \ge 2"),
    ],
    "repeating-decimal": [
        (r"0.\overline{3}", r"\frac{1}{3}"), (r"0.1\overline{6}", "1/6"), (r"0.\overline{142857}", r"\frac{1}{7}"),
        (r"1.\overline{3}", r"\frac{4}{3}"), (r"0.\bar{3}", "1/3"), (r"0.(3)", "1/3"), (r"0.1\dot{6}", "1/6"),
        (r"0.\dot{1}4285\dot{7}", "1/7"), (r"-0.\overline{3}", r"-\frac{1}{3}"), ("1/3", r"0.\overline{3}"),
        (r"0.2\overline{45}", r"\frac{27}{110}"),
    ],
    "answer-choice": [
        (r"\textbf{(B) } 5", "B"), ("(C)", "C"), (r"\text{(C)}", "C"), ("C)", "C"), (r"\textbf{(C)}", "C"),
        ("C", r"\text{(C)}"), ("(D) 12", "D"), (r"\mathrm{(E)}", "E"), (r"\text{(A) } \frac{1}{2}", "0.5"),
        ("B", r"\textbf{(B) }5"), ("(A)", "(A)"),
    ],
    "redundant-grouping": [
        ("((((7))))", "7"), ("{{{{7}}}}", "7"), (r"\left(\left(7\right)\right)", "7"), ("({({7})})", "7"),
        ("(" * 30 + "-3.5" + ")" * 30, "-3.5"), ("{" * 24 + r"\frac{1}{2}" + "}" * 24, "0.5"),
        ("((((x+1))))", "x+1"), ("{{{{" + r"\sqrt{8}" + "}}}}", r"2\sqrt{2}"), ("((1, 2))", "(1,2)"),
    ],
    "percent": [
        (r"50\%", "0.5"), ("0.5", r"50\%"), (r"50\%", "50"), ("50", r"50\%"), (r"12.5\%", r"\frac{1}{8}"),
        (r"50\%", r"50\%"), ("50%", "0.5"), (r"50 \text{ percent}", "50"),
    ],
}
DIFFERENT_CLASSES = {
    "scientific": [(r"1.5e3", "15"), (r"2.5E-2", "0.25"), (r"1.5e3", "150"), (r"1.5\times10^{3}", "15000")],
    "inequality-interval": [
        (r"x>3", r"[3,\infty)"), (r"x \ge 3", r"(3,\infty)"), (r"x<3", r"(3,\infty)"), (r"x>3", r"(-\infty,3)"),
        (r"-2 < x \le 5", "[-2,5]"), (r"x \neq 0", r"(0,\infty)"),
    ],
    "repeating-decimal": [
        (r"0.\overline{3}", "0.3"), ("0.333", r"0.\overline{3}"), (r"0.1\overline{6}", "1/3"), (r"0.\overline{16}", "1/6"),
    ],
    "answer-choice": [
        ("B", "C"), ("(B)", "C"), (r"\textbf{(B) } 5", "C"), ("(A) and (C)", "A"), (r"\text{(C)}", "5"), ("(B) 5", "(C) 5"),
    ],
    "redundant-grouping": [("((((7))))", "8"), ("((1,2))", "1"), ("{{{{7}}}}", "17"), ("((((x+1))))", "x-1")],
    "percent": [("50", "0.5"), ("0.5", "50"), (r"25\%", "0.5"), (r"50\%", "5"), (r"50\%", r"0.5\%")],
}


def _cases(classes):
    return [
        pytest.param(response, gold, id=f"{name}-{i}")
        for name, pairs in classes.items()
        for i, (response, gold) in enumerate(pairs)
    ]


@pytest.mark.parametrize(("answer", "gold"), _cases(EQUIVALENT_CLASSES))
def test_equivalence_classes_are_correct(answer, gold):
    assert is_correct(rf"so \boxed{{{answer}}}", gold, timeout_s=10) is True


@pytest.mark.parametrize(("answer", "gold"), _cases(DIFFERENT_CLASSES))
def test_near_misses_of_the_equivalence_classes_are_wrong(answer, gold):
    assert is_correct(rf"so \boxed{{{answer}}}", gold, timeout_s=10) is False


def test_a_comma_followed_by_a_space_separates_answers():
    # "2, 100" is two solutions, not 2100; "1,000" and "1{,}000" stay one number.
    assert math_reward([r"\boxed{2100}", r"\boxed{100, 2}"], ["2, 100", "2, 100"]) == [0.0, 1.0]
    assert math_reward([r"\boxed{2, 100}", r"\boxed{2100}"], ["2100", "2,100"]) == [0.0, 1.0]
    assert math_reward([r"\boxed{1000}", r"\boxed{1000}", r"\boxed{10000}"], ["1,000", "1{,}000", r"10,\!000"]) == [
        1.0, 1.0, 1.0,
    ]


@pytest.mark.parametrize(
    ("response", "gold", "expected"),
    [
        ("The answer is 12 cookies.", "12", True),
        ("The answer is 18 dollars.", "18", True),
        ("The final answer is 1,000 apples in all.", "1000", True),
        ("The answer is 13 cookies.", "12", False),
        ("The answer is 50 percent.", "0.5", True),  # the percent rule still applies
        ("The answer is 45 degrees.", "45", True),
        ("The answer is 5 x.", "5x", True),  # one letter is a variable, not a word
    ],
)
def test_a_sentence_answer_is_graded_like_its_box(response, gold, expected):
    assert is_correct(response, gold) is expected


@pytest.mark.parametrize(
    ("response", "gold", "expected"),
    [
        (r"\boxed{1.414214}", r"\sqrt{2}", True),  # math-verify rounds to 6 places
        (r"\boxed{1,414.213562}", r"1000\sqrt{2}", True),  # thousands separator dropped
        (r"\boxed{1.41}", r"\sqrt{2}", False),  # and no coarser
        (r"\boxed{0.707107}", r"\frac{\sqrt{2}}{2}", True),
    ],
)
def test_a_decimal_against_a_symbolic_gold_is_judged_by_math_verify(response, gold, expected):
    assert is_correct(response, gold) is expected


def test_deep_nesting_is_settled_without_math_verify():
    deep = "(" * 2000 + "7" + ")" * 2000  # math-verify would time out on far less
    before = verifier_stats()
    start = time.monotonic()
    assert is_correct(rf"\boxed{{{deep}}}", "7") is True
    assert is_correct(rf"\boxed{{{'{' * 2000}7{'}' * 2000}}}", "7") is True
    assert time.monotonic() - start < 1.0
    assert verifier_stats().calls == before.calls


def test_a_huge_exponent_is_not_expanded_in_this_process():
    start = time.monotonic()
    assert is_correct(r"\boxed{1e100000000}", "1", timeout_s=SHORT_LIMIT_S) is False
    assert time.monotonic() - start < SHORT_LIMIT_S + 5.0


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


@pytest.mark.parametrize("answer", [None, 7, {"answer": "1"}])
def test_math_reward_rejects_an_answer_that_is_no_column(answer):
    with pytest.raises(ValueError, match="one answer per completion"):
        math_reward([r"\boxed{1}"], answer)


def test_math_reward_names_the_query_of_an_unparseable_gold():
    with pytest.raises(ValueError, match=r"^answer of row 1 \(query_id 'q7'\) cannot be parsed: '\?\?\?'"):
        math_reward([r"\boxed{1}", r"\boxed{1}"], ["1", "???"], query_id=["q3", "q7"])


def test_an_answer_choice_gold_that_validates_also_scores():
    validate_gold("(A) ???", where="row 1")  # valid by its letter
    assert math_reward([r"\boxed{7}", r"\boxed{(A)}", r"\boxed{B}"], ["(A) ???"] * 3) == [0.0, 1.0, 0.0]
    assert math_reward([r"\boxed{2+3}", r"\boxed{6}"], ["(C) 5", r"\textbf{(C) } \sqrt{25}"]) == [1.0, 0.0]


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


def _check_that_allocates(gold: str, pred: str | None):
    """A stand-in for math-verify that wants far more memory than a worker may have."""
    if pred == "huge":
        return len(bytearray(8 << 30))
    return rewards._Outcome.CORRECT


def _check_that_hangs_on_a_gold_alone(gold: str, pred: str | None):
    """A stand-in for math-verify whose gold-only parse check (pred=None) never finishes."""
    if pred is None:
        time.sleep(600)
    return rewards._Outcome.WRONG


@pytest.fixture
def checks_by(monkeypatch):
    """Run scoring's math-verify items with a stand-in check (in a service of its own)."""

    def use(task):
        monkeypatch.setattr(rewards, "_run_checks", functools.partial(rewards._run_checks, task=task))

    return use


def test_a_decided_verdict_survives_a_late_gold_check(checks_by):
    checks_by(_check_that_hangs_on_a_gold_alone)
    before = verifier_stats()
    # The fast path decides (equal spellings); only the gold's parse check goes out, and hangs.
    assert is_correct(r"\boxed{x^2+1}", "x^2+1", timeout_s=1.0) is True
    assert math_reward([r"\boxed{x^2+1}", r"\boxed{x^2+2}"], ["x^2+1", "x^2+1"], timeout_s=1.0) == [1.0, 0.0]
    assert verifier_stats().timeouts == before.timeouts + 2  # still counted


def test_math_reward_logs_its_timeouts_and_crashes(checks_by):
    logged: list[tuple[str, float]] = []
    math_reward([r"\boxed{7}"], ["7"], log_metric=lambda name, value: logged.append((name, value)))
    assert logged == [("verifier/timeouts", 0.0), ("verifier/crashes", 0.0)]  # zeros too
    logged.clear()
    scores = math_reward([r"\boxed{9^{9^{9^{9}}}}", r"\boxed{2\sqrt{2}}"], ["1", r"\sqrt{8}"], timeout_s=SHORT_LIMIT_S,
                         log_metric=lambda name, value: logged.append((name, value)))
    assert scores == [0.0, 1.0] and logged == [("verifier/timeouts", 1.0), ("verifier/crashes", 0.0)]
    logged.clear()
    checks_by(_check_that_can_fail)
    scores = math_reward([r"\boxed{raise}", r"\boxed{die}", r"\boxed{ok}"], ["x"] * 3,
                         log_metric=lambda name, value: logged.append((name, value)))
    assert scores == [0.0, 0.0, 1.0] and logged == [("verifier/timeouts", 0.0), ("verifier/crashes", 2.0)]


def test_the_first_crash_of_the_service_is_told_on_stderr_once(capfd):
    jobs = [("1", "raise"), ("1", "ok"), ("1", "raise"), ("1", "raise")]
    rewards._run_checks(jobs, timeout_s=DEFAULT_TIMEOUT_S, task=_check_that_can_fail)
    err = capfd.readouterr().err
    assert err.count("crashed (it scores 0") == 1 and err.count("RuntimeError: boom") == 1, err
    assert "Traceback (most recent call last)" in err and "_check_that_can_fail" in err


def test_a_runaway_allocation_is_a_crash_not_an_out_of_memory_kill():
    jobs = [("1", "ok"), ("1", "huge"), ("1", "ok")]
    outcomes = rewards._run_checks(jobs, timeout_s=DEFAULT_TIMEOUT_S, task=_check_that_allocates)
    correct, crash = rewards._Outcome.CORRECT, rewards._Outcome.CRASH
    assert outcomes == [correct, crash, correct]


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


def test_stuck_items_run_out_their_limits_side_by_side():
    stuck = [r"\boxed{9^{9^{9^{9}}}}", r"\boxed{(10^{10})!}", r"\boxed{2^{2^{2^{2^{2^{2}}}}}}"] * 2
    completions = [text for pair in zip(stuck, [r"\boxed{2\sqrt{2}}"] * 6) for text in pair]
    answers = ["1", r"\sqrt{8}"] * 6
    is_correct(r"\boxed{\sqrt{4}}", "2")  # the service is up: its start is not what is measured
    before = verifier_stats()
    start = time.monotonic()
    assert math_reward(completions, answers, timeout_s=SHORT_LIMIT_S) == [0.0, 1.0] * 6
    elapsed = time.monotonic() - start
    # One after another, 6 stuck items would take 6 limits (12 s) plus restarts.
    assert elapsed < 3 * SHORT_LIMIT_S, f"{elapsed:.1f} s"
    after = verifier_stats()
    # Only the stuck items' workers were replaced.
    assert (after.timeouts - before.timeouts, after.restarts - before.restarts) == (6, 6)


@pytest.fixture
def restore_settings():
    yield
    configure_checking(timeout_s=DEFAULT_TIMEOUT_S, workers=DEFAULT_WORKERS)


def test_configure_checking_sets_the_limit_and_the_workers(restore_settings):
    assert checking_settings() == CheckingSettings(DEFAULT_TIMEOUT_S, DEFAULT_WORKERS)
    assert configure_checking(timeout_s=SHORT_LIMIT_S, workers=3) == CheckingSettings(SHORT_LIMIT_S, 3)
    assert configure_checking() == CheckingSettings(SHORT_LIMIT_S, 3)  # None keeps a setting
    start = time.monotonic()
    assert is_correct(r"\boxed{9^{9^{9^{9}}}}", "1") is False
    assert SHORT_LIMIT_S <= time.monotonic() - start < SHORT_LIMIT_S + 5.0
    psutil = pytest.importorskip("psutil")
    service = psutil.Process(rewards._service.process.pid)
    # Three warm workers, once the stuck item's worker (SIGKILLed) has finished dying.
    for _ in range(50):
        alive = [child.pid for child in service.children() if child.status() != psutil.STATUS_ZOMBIE]
        if len(alive) == 3:
            break
        time.sleep(0.1)
    assert len(alive) == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout_s": 0}, "timeout_s must be a positive number of seconds, got 0"),
        ({"timeout_s": float("inf")}, "timeout_s must be a positive number of seconds, got inf"),
        ({"timeout_s": "5"}, "timeout_s must be a positive number of seconds, got '5'"),
        ({"workers": 0}, "workers must be a whole number >= 1, got 0"),
        ({"workers": 2.5}, "workers must be a whole number >= 1, got 2.5"),
    ],
)
def test_configure_checking_rejects_bad_settings(options, message):
    with pytest.raises(ValueError, match=f"^configure_checking: {re.escape(message)}$"):
        configure_checking(**options)
    assert checking_settings() == CheckingSettings()


def test_a_call_rejects_a_bad_limit():
    with pytest.raises(ValueError, match="timeout_s must be a positive number of seconds, got -1"):
        math_reward([r"\boxed{\sqrt{2}}"], [r"\sqrt{2}"], timeout_s=-1)


def test_a_service_that_cannot_start_says_why():
    with pytest.raises(RuntimeError, match=r"checking service .* failed to start: ModuleNotFoundError: .*no_such_module"):
        rewards._Service(workers=1, task="no_such_module:check")


def test_a_lost_service_is_replaced_between_and_during_batches():
    assert is_correct(r"\boxed{2\sqrt{2}}", r"\sqrt{8}") is True
    os.kill(rewards._service.process.pid, 9)  # between batches
    assert is_correct(r"\boxed{2\sqrt{2}}", r"\sqrt{8}") is True
    service_pid = rewards._service.process.pid
    threading.Timer(0.5, os.kill, (service_pid, 9)).start()  # during one: a stuck item is running
    before = verifier_stats()
    scores = math_reward([r"\boxed{\{2,1\}}", r"\boxed{9^{9^{9^{9}}}}"], [r"\{1,2\}", "1"], timeout_s=1.0)
    assert scores == [1.0, 0.0] and rewards._service.process.pid != service_pid
    after = verifier_stats()
    # The unanswered item ran again on a fresh service, and timed out there.
    assert (after.timeouts - before.timeouts, after.restarts - before.restarts) == (1, 2)


def test_verifier_stats_is_a_snapshot():
    stats = verifier_stats()
    assert isinstance(stats, VerifierStats)
    is_correct(r"\boxed{\sqrt{4}}", "2")
    assert verifier_stats().calls == stats.calls + 1


def test_import_starts_no_processes():
    code = (
        "import psutil, tapo.rewards as r; "
        "assert r._service is None and not psutil.Process().children(); "
        "assert r.is_correct(r'\\boxed{19}', '19') and r.is_correct(r'\\boxed{(C)}', 'C'); "  # fast path: no service
        "assert r._service is None and not psutil.Process().children()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.getcwd(), timeout=60)


def test_docstring_examples():
    assert doctest.testmod(rewards).failed == 0
