"""The built-in arithmetic task: generation, splits, step parsing, first wrong step, aligned correction."""

import doctest
import random
import re

import pytest

from tapo.data import arithmetic
from tapo.data.arithmetic import (
    CORRUPTION_KINDS,
    aligned_correction,
    corrupt_solution,
    diagnose_steps,
    evaluate,
    first_wrong_step,
    generate_problems,
    make_problem,
    parse_question,
    parse_steps,
    split_of,
)

P = make_problem(12, [("+", 7), ("*", 3), ("-", 5)], id="demo")  # 12 -> 19 -> 57 -> 52


def test_doctests():
    result = doctest.testmod(arithmetic)
    assert result.attempted > 5 and result.failed == 0


def test_problem_text_steps_and_solution():
    assert P.question == "Start with 12. Add 7, then multiply by 3, then subtract 5. What is the result?"
    assert P.steps == ("Step 1: 12 + 7 = 19", "Step 2: 19 * 3 = 57", "Step 3: 57 - 5 = 52")
    assert P.answer == "52"
    assert P.solution == "Step 1: 12 + 7 = 19\nStep 2: 19 * 3 = 57\nStep 3: 57 - 5 = 52\nThe answer is \\boxed{52}."
    assert parse_question(P.question).ops == P.ops
    assert parse_question("What is 2 + 2?") is None


def test_generation_is_deterministic_and_seeded():
    a = generate_problems(split="train", n=50, seed=3)
    b = generate_problems(split="train", n=50, seed=3)
    c = generate_problems(split="train", n=50, seed=4)
    assert a == b
    assert [(p.start, p.ops) for p in a] != [(p.start, p.ops) for p in c]
    assert [p.id for p in a[:2]] == ["arith-train-0000", "arith-train-0001"]
    assert generate_problems(split="heldout", n=3, seed=3) == generate_problems(split="test", n=3, seed=3)
    assert generate_problems(split="test", n=1)[0].id == "arith-test-0000"


def test_splits_are_disjoint_and_distinct():
    train = generate_problems(split="train", n=3000, seed=0, n_steps=(2, 3), max_operand=9)
    test = generate_problems(split="test", n=1000, seed=0, n_steps=(2, 3), max_operand=9)
    train_keys = {(p.start, p.ops) for p in train}
    test_keys = {(p.start, p.ops) for p in test}
    assert len(train_keys) == 3000 and len(test_keys) == 1000  # no duplicates inside a split
    assert not train_keys & test_keys
    assert all(split_of(p.start, p.ops) == "train" for p in train)
    assert all(split_of(p.start, p.ops) == "test" for p in test)
    # another seed draws other problems, but still never a test problem for training
    other = generate_problems(split="train", n=1000, seed=9, n_steps=(2, 3), max_operand=9)
    assert not {(p.start, p.ops) for p in other} & test_keys


def test_reference_solution_is_right_and_answer_is_the_chain_value():
    for p in generate_problems(split="train", n=300, seed=1, n_steps=(1, 5)):
        steps = parse_steps(p.solution)
        assert len(steps) == len(p.ops)
        assert all(s.is_arithmetic_right for s in steps)
        assert first_wrong_step(p, p.solution) is None
        assert aligned_correction(p, p.solution) is None
        assert p.answer == str(evaluate(p.start, p.ops))
        assert p.solution.endswith(f"The answer is \\boxed{{{p.answer}}}.")
        assert all(v >= 1 for v in p.values)


def test_difficulty_knobs():
    easy = generate_problems(split="train", n=200, seed=0, n_steps=2, max_operand=5)
    hard = generate_problems(split="train", n=200, seed=0, n_steps=(4, 6), max_operand=50)
    assert {len(p.ops) for p in easy} == {2}
    assert {len(p.ops) for p in hard} == {4, 5, 6}
    assert all(1 <= p.start <= 5 and all(1 <= x <= 5 for _, x in p.ops) for p in easy)
    assert max(max(x for _, x in p.ops) for p in hard) > 20
    assert all(x <= 50 for p in hard for _, x in p.ops)


def test_too_small_space_raises():
    with pytest.raises(ValueError, match="lower n"):
        generate_problems(split="test", n=500, n_steps=1, max_operand=3)
    with pytest.raises(ValueError, match="split"):
        generate_problems(split="validation", n=1)
    with pytest.raises(ValueError, match="n_steps"):
        generate_problems(split="train", n=1, n_steps=(3, 2))


def test_parse_steps_is_tolerant():
    text = (
        "Let me compute.\n"
        "**Step 1:**  12  +  7 =19\n"
        "- step 2) then 19 × 3 = 57, good\n"
        "12 + 7 + 3 = 22\n"  # a chain, not a step
        "Step 3: 57 x 2 = 114\n"
        "1,000 \\times 2 = 2,000\n"
        "The answer is \\boxed{114}."
    )
    steps = parse_steps(text)
    assert [(s.index, s.left, s.op, s.right, s.result) for s in steps] == [
        (1, 12, "+", 7, 19),
        (2, 19, "*", 3, 57),
        (3, 57, "*", 2, 114),
        (4, 1000, "*", 2, 2000),
    ]
    for s in steps:
        line = text[s.span[0] : s.span[1]]
        assert "\n" not in line and str(s.result) in line.replace(",", "")
    assert text[steps[1].span[0] : steps[1].span[1]] == "- step 2) then 19 × 3 = 57, good"
    assert parse_steps("no steps here\nThe answer is \\boxed{3}.") == []
    assert [(s.left, s.result) for s in parse_steps("Step 1: -3 + 5 = 2")] == [(-3, 2)]


@pytest.mark.parametrize(
    "text, index, kind",
    [
        ("Step 1: 12 + 7 = 19\nStep 2: 19 * 3 = 56\nStep 3: 56 - 5 = 51", 1, "arithmetic"),
        ("Step 1: 12 + 7 = 19\nStep 2: 18 * 3 = 54\nStep 3: 54 - 5 = 49", 1, "carry"),
        ("Step 1: 12 + 7 = 19\nStep 2: 19 * 4 = 76\nStep 3: 76 - 5 = 71", 1, "operand"),
        ("Step 1: 12 + 7 = 19\nStep 2: 19 + 3 = 22\nStep 3: 22 - 5 = 17", 1, "operation"),
        ("Step 1: 12 + 7 = 19\nStep 2: 19 - 5 = 14\nThe answer is \\boxed{14}.", 1, "skip"),
        ("Step 1: 12 + 7 = 19\nThe answer is \\boxed{19}.", 1, "missing"),
        ("The answer is \\boxed{50}.", 0, "missing"),
        (P.solution.replace("The answer", "Step 4: 52 + 1 = 53\nThe answer"), 3, "extra"),
        ("Step 1: 13 + 7 = 20\nStep 2: 20 * 3 = 60", 0, "carry"),
    ],
)
def test_first_wrong_step_on_hand_written_responses(text, index, kind):
    assert first_wrong_step(P, text) == index
    assert diagnose_steps(P, text).kind == kind


@pytest.mark.parametrize("kind", CORRUPTION_KINDS)
def test_corrupted_solutions_are_caught_at_the_corrupted_step(kind):
    rng = random.Random(kind)
    problems = generate_problems(split="train", n=200, seed=5, n_steps=(2, 5))
    for p in problems:
        text, at = corrupt_solution(p, rng=rng, kind=kind)
        assert first_wrong_step(p, text) == at, (p.question, text)
        final = re.search(r"\\boxed\{(-?\d+)\}", text).group(1)
        assert final != p.answer  # one mistake always changes the final answer
        prefix, start, continuation = aligned_correction(p, text)
        assert text.startswith(prefix) and start == len(prefix)
        assert continuation.endswith(f"The answer is \\boxed{{{p.answer}}}.")
        # the continuation redoes the wrong step onwards with the reference's steps
        assert continuation.endswith("\n".join(p.steps[at:] + (f"The answer is \\boxed{{{p.answer}}}.",)))


def test_aligned_correction_arithmetic_slip():
    text = "Step 1: 12 + 7 = 19\nStep 2: 19 * 3 = 56\nStep 3: 56 - 5 = 51\nThe answer is \\boxed{51}."
    prefix, start, continuation = aligned_correction(P, text)
    assert prefix == "Step 1: 12 + 7 = 19\nStep 2: 19 * 3 = 56"
    assert start == len(prefix) == 39
    assert continuation == (
        "\nWait, let me double-check step 2: 19 * 3 is 57, not 56. That was an arithmetic slip.\n"
        "Step 2: 19 * 3 = 57\nStep 3: 57 - 5 = 52\nThe answer is \\boxed{52}."
    )


def test_aligned_correction_wrong_operand_keeps_prose_of_the_wrong_line():
    text = "First, 12 + 7 = 19.\nNext I carry 18: 18 * 3 = 54 so far.\nThen 54 - 5 = 49.\n\\boxed{49}"
    prefix, start, continuation = aligned_correction(P, text)
    assert prefix == "First, 12 + 7 = 19.\nNext I carry 18: 18 * 3 = 54 so far."
    assert start == len(prefix)
    assert continuation.startswith("\nWait, let me double-check step 2: it should start from 19, the result of step 1, not 18.")
    assert "wrong operand" in continuation
    assert continuation.endswith("Step 2: 19 * 3 = 57\nStep 3: 57 - 5 = 52\nThe answer is \\boxed{52}.")


def test_aligned_correction_skipped_operation():
    text = "Step 1: 12 + 7 = 19\nStep 2: 19 - 5 = 14\nThe answer is \\boxed{14}."
    prefix, start, continuation = aligned_correction(P, text)
    assert prefix == "Step 1: 12 + 7 = 19\nStep 2: 19 - 5 = 14"
    assert continuation == (
        "\nWait, I skipped an operation: before subtracting 5, I need to multiply by 3.\n"
        "Step 2: 19 * 3 = 57\nStep 3: 57 - 5 = 52\nThe answer is \\boxed{52}."
    )


def test_aligned_correction_missing_steps_cuts_after_last_right_step():
    text = "Step 1: 12 + 7 = 19\nSo the answer is \\boxed{19}."
    prefix, start, continuation = aligned_correction(P, text)
    assert prefix == "Step 1: 12 + 7 = 19"
    assert start == 19
    assert continuation.startswith("\nWait, I have not finished: the problem still asks me to multiply by 3 and subtract 5.")
    assert continuation.endswith("Step 2: 19 * 3 = 57\nStep 3: 57 - 5 = 52\nThe answer is \\boxed{52}.")
    # no step at all: nothing is kept, the continuation is the whole reference
    prefix, start, continuation = aligned_correction(P, "It is \\boxed{50}.")
    assert (prefix, start) == ("", 0)
    assert continuation.endswith(P.solution)
