"""The miniature's exact reflection analysis on the arithmetic task."""

from __future__ import annotations

import pytest

from tapo.data.arithmetic import make_problem
from tapo.evaluation.reflection import reflection_outcome, reflection_outcomes

PROBLEM = make_problem(4, [("-", 3), ("*", 5)], id="p")  # 4 - 3 = 1, 1 * 5 = 5


@pytest.mark.parametrize(
    ("text", "correct", "expected"),
    [
        ("Step 1: 4 - 3 = 1\nStep 2: 1 * 5 = 5\nThe answer is \\boxed{5}.", True, None),  # no reflection
        ("Step 1: 4 - 3 = 1\nStep 2: 1 * 5 = 6\nWait, 1 * 5 is 5.\nThe answer is \\boxed{5}.", True, "fixed"),
        ("Step 1: 4 - 3 = 2\nWait, let me double-check step 1: 4 - 3 is 2.\nThe answer is \\boxed{10}.", False,
         "not_fixed"),
        ("Step 1: 4 - 3 = 1\nStep 2: 1 * 5 = 5\nWait, 1 * 5 is 5, not 15.\nThe answer is \\boxed{5}.", True,
         "spurious_kept"),
        ("Step 1: 4 - 3 = 1\nStep 2: 1 * 5 = 5\nWait, 1 * 5 is 15.\nThe answer is \\boxed{15}.", False,
         "spurious_broke"),
        # unfinished but right so far: a reflection here corrects nothing that was wrong
        ("Step 1: 4 - 3 = 1\nHold on, let me recompute.\nStep 2: 1 * 5 = 5\nThe answer is \\boxed{5}.", True,
         "spurious_kept"),
        # the wrong step is judged before the marker only, whatever follows
        ("Step 1: 4 * 3 = 12\nWait, the operation is subtraction.\nStep 1: 4 - 3 = 1\nStep 2: 1 * 5 = 5", True,
         "fixed"),
    ],
)
def test_reflection_outcome(text, correct, expected):
    assert reflection_outcome(PROBLEM, text, correct) == expected


def test_reflection_outcomes_are_shares_of_reflecting_responses():
    rows = [
        {"problem_id": "p", "response": "Step 1: 4 - 3 = 1\nStep 2: 1 * 5 = 5", "correct": True},
        {"problem_id": "p", "response": "Step 1: 4 - 3 = 1\nStep 2: 1 * 5 = 6\nWait, 1 * 5 is 5.", "correct": True},
        {"problem_id": "p", "response": "Step 1: 4 - 3 = 1\nStep 2: 1 * 5 = 5\nWait, it is 15.", "correct": False},
        {"problem_id": "p", "response": "Step 1: 4 - 3 = 1\nStep 2: 1 * 5 = 5\nWait, it is 15.", "correct": False},
    ]
    out = reflection_outcomes([PROBLEM], rows)
    assert out == {"n_reflecting": 3, "fixed": 1 / 3, "not_fixed": 0.0, "spurious_kept": 0.0, "spurious_broke": 2 / 3}
    assert reflection_outcomes([PROBLEM], rows[:1])["fixed"] is None  # nothing reflects: undefined, not 0
