"""The built-in arithmetic task: seeded multi-step problems whose solutions can be checked step by step.

A problem is a start value and a chain of operations; its reference solution writes one
machine-checkable step per line:

    Start with 12. Add 7, then multiply by 3, then subtract 5. What is the result?

    Step 1: 12 + 7 = 19
    Step 2: 19 * 3 = 57
    Step 3: 57 - 5 = 52
    The answer is \\boxed{52}.

Because every step can be checked by code, a wrong response can be cut after its first wrong
step and continued with the reference's steps (`aligned_correction`), which is what the
rule-based `aligned` constructor trains on. The train and test splits are disjoint by
construction: a problem's split is a stable hash of its (start, ops), independent of the seed
and of the difficulty knobs, so no test problem is ever generated for training.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

OPS = ("+", "-", "*")
SPLITS = ("train", "test")
TEST_FRACTION_PER_MILLE = 200  # 20% of all problems belong to the test split
CORRUPTION_KINDS = ("arithmetic", "carry", "operand", "operation", "skip", "truncate")

_VERBS = {"+": "add {x}", "-": "subtract {x}", "*": "multiply by {x}"}
_GERUNDS = {"+": "adding {x}", "-": "subtracting {x}", "*": "multiplying by {x}"}


@dataclass(frozen=True)
class ArithmeticProblem:
    """One problem of the arithmetic task with its reference steps."""

    id: str  # e.g. "arith-train-0007"
    start: int
    ops: tuple[tuple[str, int], ...]  # (op, operand), op in "+", "-", "*"
    question: str
    answer: str  # the final integer as a string
    steps: tuple[str, ...]  # reference steps, "Step 1: 12 + 7 = 19", ...

    @property
    def solution(self) -> str:
        """The full reference solution: the steps, one per line, then the boxed answer."""
        return "\n".join(self.steps) + "\n" + final_line(int(self.answer))

    @property
    def values(self) -> tuple[int, ...]:
        """Running values: start, then the result of each step."""
        return _running_values(self.start, self.ops)


@dataclass(frozen=True)
class Step:
    """One step parsed from a response: `left op right = result` on one line."""

    index: int  # the step's number as written ("Step 2:" -> 2), else its 1-based position
    left: int
    op: str  # normalized to "+", "-" or "*"
    right: int
    result: int
    span: tuple[int, int]  # (start, end) character offsets of the whole line in the text

    @property
    def is_arithmetic_right(self) -> bool:
        return apply_op(self.left, self.op, self.right) == self.result


@dataclass(frozen=True)
class StepDiagnosis:
    """What is wrong with a response's steps: the first wrong (or missing) step and its kind.

    kind: "arithmetic" (left op right != result), "carry" (left operand is not the running
    value), "operand" (right operand is not the problem's), "operation" (wrong op), "skip"
    (the step does the next operation, skipping this one), "extra" (a step beyond the last
    operation), "missing" (the response stops before the last operation).
    """

    index: int  # 0-based position in parse order == position in the problem's ops
    kind: str
    step: Step | None  # the wrong step as parsed; None when missing
    expected_left: int  # running value before this step
    expected_op: str | None  # None for "extra"
    expected_right: int | None
    expected_result: int | None


def apply_op(left: int, op: str, right: int) -> int:
    """`left op right` for op in "+", "-", "*".

    >>> apply_op(19, "*", 3)
    57
    """
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    raise ValueError(f"unknown operation {op!r}; expected one of {', '.join(OPS)}")


def evaluate(start: int, ops: tuple[tuple[str, int], ...]) -> int:
    """Value of the chain: start, then each (op, operand) in order.

    >>> evaluate(12, (("+", 7), ("*", 3), ("-", 5)))
    52
    """
    return _running_values(start, ops)[-1]


def final_line(answer: int | str) -> str:
    return f"The answer is \\boxed{{{answer}}}."


def split_of(start: int, ops: tuple[tuple[str, int], ...]) -> str:
    """The split a problem belongs to: a stable hash of (start, ops), the same in every run.

    >>> split_of(12, (("+", 7), ("*", 3), ("-", 5))) in ("train", "test")
    True
    """
    digest = hashlib.blake2b(_key(start, ops).encode(), digest_size=8).digest()
    return "test" if int.from_bytes(digest, "big") % 1000 < TEST_FRACTION_PER_MILLE else "train"


def make_problem(start: int, ops: tuple[tuple[str, int], ...] | list, *, id: str = "") -> ArithmeticProblem:
    """Build a problem, its question text and its reference steps from (start, ops).

    >>> p = make_problem(12, [("+", 7), ("*", 3), ("-", 5)], id="demo")
    >>> p.question
    'Start with 12. Add 7, then multiply by 3, then subtract 5. What is the result?'
    >>> print(p.solution)
    Step 1: 12 + 7 = 19
    Step 2: 19 * 3 = 57
    Step 3: 57 - 5 = 52
    The answer is \\boxed{52}.
    """
    ops = tuple((str(op), int(x)) for op, x in ops)
    if not ops:
        raise ValueError("an arithmetic problem needs at least one operation")
    for op, _ in ops:
        if op not in OPS:
            raise ValueError(f"unknown operation {op!r}; expected one of {', '.join(OPS)}")
    values = _running_values(start, ops)
    chain = ", then ".join(_VERBS[op].format(x=x) for op, x in ops)
    question = f"Start with {start}. {chain[0].upper()}{chain[1:]}. What is the result?"
    steps = tuple(
        f"Step {i + 1}: {values[i]} {op} {x} = {values[i + 1]}" for i, (op, x) in enumerate(ops)
    )
    return ArithmeticProblem(id=id, start=int(start), ops=ops, question=question, answer=str(values[-1]), steps=steps)


_QUESTION_START = re.compile(r"Start with\s+(-?\d+)\s*\.\s*(.*?)\.\s*What is the result\?", re.S | re.I)
_QUESTION_OP = re.compile(r"^(add|subtract|multiply by)\s+(-?\d+)$", re.I)
_OP_OF_VERB = {"add": "+", "subtract": "-", "multiply by": "*"}


def parse_question(question: str) -> ArithmeticProblem | None:
    """Recover the problem from its question text (e.g. a constructor that only sees the prompt).

    Returns None when the text is not an arithmetic-task question.

    >>> parse_question("Start with 12. Add 7, then multiply by 3. What is the result?").answer
    '57'
    """
    m = _QUESTION_START.search(question)
    if m is None:
        return None
    ops = []
    for phrase in m.group(2).split(", then "):
        pm = _QUESTION_OP.match(phrase.strip())
        if pm is None:
            return None
        ops.append((_OP_OF_VERB[pm.group(1).lower()], int(pm.group(2))))
    return make_problem(int(m.group(1)), ops)


def generate_problems(
    *,
    split: str,
    n: int,
    seed: int = 0,
    n_steps: int | tuple[int, int] = 3,
    max_operand: int = 20,
) -> list[ArithmeticProblem]:
    """`n` distinct problems of one split, the same for the same arguments.

    Difficulty knobs: `n_steps` (a number, or an inclusive (low, high) range drawn per
    problem) and `max_operand` (start and operands lie in 1..max_operand; multipliers in
    2..max_operand). Running values never drop below 1 (a subtraction is drawn no larger than
    the running value minus 1). `split` is "train" or "test" ("heldout" is an alias of
    "test"); a problem's split is `split_of(start, ops)`, so the splits never share a problem.

    >>> [p.id for p in generate_problems(split="train", n=2, seed=0)]
    ['arith-train-0000', 'arith-train-0001']
    """
    split = _normalize_split(split)
    lo, hi = _steps_range(n_steps)
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not isinstance(max_operand, int) or max_operand < 2:
        raise ValueError(f"max_operand must be an integer >= 2, got {max_operand!r}")
    upper = sum(max_operand * (3 * max_operand - 1) ** k for k in range(lo, hi + 1))  # ignores the no-drop-below-1 rule
    share = TEST_FRACTION_PER_MILLE / 1000 if split == "test" else 1 - TEST_FRACTION_PER_MILLE / 1000
    if n > upper * share * 1.2:  # the hash split is close to its share once the space is not tiny
        raise ValueError(
            f"cannot draw {n} distinct {split} problems with n_steps={n_steps!r}, max_operand={max_operand}: "
            f"the whole space holds at most {upper} problems, about {int(upper * share)} of them in {split}; "
            "lower n or raise n_steps / max_operand"
        )
    rng = random.Random(f"tapo-arith|{seed}|{lo}|{hi}|{max_operand}")
    seen: set[tuple] = set()
    problems: list[ArithmeticProblem] = []
    misses, patience = 0, max(20_000, 50 * n)
    while len(problems) < n:
        start, ops = _draw(rng, rng.randint(lo, hi), max_operand)
        key = (start, ops)
        if key in seen or split_of(start, ops) != split:
            misses += 1
            if misses > patience:
                raise ValueError(
                    f"found only {len(problems)} distinct {split} problems with n_steps={n_steps!r}, "
                    f"max_operand={max_operand} (asked for {n}); lower n or raise n_steps / max_operand"
                )
            continue
        misses = 0
        seen.add(key)
        problems.append(make_problem(start, ops, id=f"arith-{split}-{len(problems):04d}"))
    return problems


# --- parsing and checking responses ---------------------------------------------------------

_NUM = r"[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)"
_EQUATION = re.compile(
    rf"(?<![\d.,])({_NUM})\s*(\+|-|−|\*|×|x|X|·|\\times|\\cdot)\s*({_NUM})\s*=\s*({_NUM})(?![\d])"
)
_LABEL = re.compile(r"^\W*step\s*(\d+)\s*[:.)\-]?\s*\**", re.I)
_CHAINED = re.compile(r"[\d)]\s*(?:\+|-|−|\*|×|x|X|·|/|\^|\\times|\\cdot)\s*$")
_OP_NORMAL = {"+": "+", "-": "-", "−": "-"} | dict.fromkeys(("*", "×", "x", "X", "·", "\\times", "\\cdot"), "*")


def parse_steps(text: str) -> list[Step]:
    """The steps of a response: every line holding an equation `a op b = c`, in order.

    Tolerant of extra spaces, `×`/`x`/`\\times`/`·` for multiply, commas in numbers, a
    `Step N:` label (optional) and prose around the equation; lines without an equation are
    skipped. Only the first equation of a line counts, and one that continues a longer
    chain (`12 + 7 + 3 = 22`) does not.

    >>> [(s.index, s.left, s.op, s.right, s.result) for s in parse_steps("Step 1: 12 + 7 = 19\\nok so\\n19 × 3 = 56")]
    [(1, 12, '+', 7, 19), (2, 19, '*', 3, 56)]
    """
    steps: list[Step] = []
    offset = 0
    for line in text.split("\n"):
        start, end = offset, offset + len(line)
        offset = end + 1
        label = _LABEL.match(line)
        body_at = label.end() if label else 0
        for m in _EQUATION.finditer(line, body_at):
            if _CHAINED.search(line[body_at : m.start()]):
                continue
            left, op, right, result = m.groups()
            steps.append(
                Step(
                    index=int(label.group(1)) if label else len(steps) + 1,
                    left=_to_int(left),
                    op=_OP_NORMAL[op],
                    right=_to_int(right),
                    result=_to_int(result),
                    span=(start, end),
                )
            )
            break
    return steps


def diagnose_steps(problem: ArithmeticProblem, text: str) -> StepDiagnosis | None:
    """The first wrong or missing step of `text` for `problem`, or None when all steps are right.

    See `first_wrong_step` for the rule.
    """
    return _diagnose(problem, parse_steps(text))


def first_wrong_step(problem: ArithmeticProblem, text: str) -> int | None:
    """0-based index (in parse order) of the first wrong step of `text`, or None if none.

    The rule: walk the parsed steps (see `parse_steps`) with a running value that begins at
    `problem.start`. Step i is wrong when
      - it does not follow the problem: its left operand is not the running value, or its
        op / right operand are not the problem's i-th operation (a step beyond the last
        operation is wrong too); or
      - its arithmetic is wrong: left op right != result.
    A right step sets the running value to its result. If every parsed step is right but
    fewer steps than operations were written, the index of the first missing step is
    returned (== the number of parsed steps). Only steps are checked, not the final
    `\\boxed{}` answer (the reward checks that).

    Worked example, problem "Start with 12. Add 7, then multiply by 3, then subtract 5.":
      "Step 1: 12 + 7 = 19 / Step 2: 19 * 3 = 56 / Step 3: 56 - 5 = 51" -> 1 (19 * 3 is 57);
      "Step 1: 12 + 7 = 19 / Step 2: 19 - 5 = 14"                      -> 1 (multiply skipped);
      "Step 1: 12 + 7 = 19 / The answer is \\boxed{19}."               -> 1 (steps 2, 3 missing);
      the reference solution                                           -> None.

    >>> p = make_problem(12, [("+", 7), ("*", 3), ("-", 5)])
    >>> first_wrong_step(p, "Step 1: 12 + 7 = 19\\nStep 2: 19 * 3 = 56\\nStep 3: 56 - 5 = 51")
    1
    >>> first_wrong_step(p, p.solution) is None
    True
    """
    diagnosis = diagnose_steps(problem, text)
    return None if diagnosis is None else diagnosis.index


def aligned_correction(problem: ArithmeticProblem, text: str) -> tuple[str, int, str] | None:
    """Cut `text` after its first wrong step and continue it correctly: (prefix, reflection_start, continuation).

    `prefix` is `text` up to and including the line of the first wrong step (without that
    line's newline); when the first wrong step is missing (the response stops early), it is
    `text` up to the end of the last right step's line ("" when there is none).
    `reflection_start == len(prefix)`, the character index at which the reflection begins in
    `prefix + continuation`. `continuation` is a templated reflection sentence naming the kind of
    error (arithmetic slip, wrong operand, wrong operation, skipped operation, extra step,
    unfinished), then the reference's steps from the wrong one on, computed from the right
    running value, and `The answer is \\boxed{N}.` None when no step is wrong.

    >>> p = make_problem(12, [("+", 7), ("*", 3), ("-", 5)])
    >>> prefix, at, cont = aligned_correction(p, "Step 1: 12 + 7 = 19\\nStep 2: 19 * 3 = 56\\nStep 3: 56 - 5 = 51")
    >>> prefix
    'Step 1: 12 + 7 = 19\\nStep 2: 19 * 3 = 56'
    >>> print(cont)
    <BLANKLINE>
    Wait, let me double-check step 2: 19 * 3 is 57, not 56. That was an arithmetic slip.
    Step 2: 19 * 3 = 57
    Step 3: 57 - 5 = 52
    The answer is \\boxed{52}.
    """
    steps = parse_steps(text)
    diagnosis = _diagnose(problem, steps)
    if diagnosis is None:
        return None
    i = diagnosis.index
    if diagnosis.kind == "missing":
        prefix = text[: steps[i - 1].span[1]] if i > 0 else ""
    else:
        prefix = text[: steps[i].span[1]]
    reflection = reflection_sentence(problem, diagnosis)
    rest = list(problem.steps[i:]) + [final_line(problem.answer)]
    continuation = ("\n" if prefix else "") + reflection + "\n" + "\n".join(rest)
    return prefix, len(prefix), continuation


def reflection_sentence(problem: ArithmeticProblem, diagnosis: StepDiagnosis) -> str:
    """The templated diagnosis that opens an aligned continuation; it names the kind of error."""
    i, kind, step = diagnosis.index, diagnosis.kind, diagnosis.step
    n = i + 1
    values = problem.values
    if kind == "missing":
        if i == 0:
            return "Let me work through it step by step."
        todo = _join_and([_VERBS[op].format(x=x) for op, x in problem.ops[i:]])
        return f"Wait, I have not finished: the problem still asks me to {todo}. That was an unfinished solution."
    if kind == "extra":
        return (
            f"Wait, step {step.index} is not part of the problem: it has only {len(problem.ops)} operations, "
            f"so the result is {problem.answer}. That was an extra step."
        )
    op, x = problem.ops[i]
    if kind == "arithmetic":
        return (
            f"Wait, let me double-check step {n}: {step.left} {step.op} {step.right} is "
            f"{apply_op(step.left, step.op, step.right)}, not {step.result}. That was an arithmetic slip."
        )
    if kind == "carry":
        source = "the starting number" if i == 0 else f"the result of step {i}"
        return (
            f"Wait, let me double-check step {n}: it should start from {values[i]}, {source}, "
            f"not {step.left}. I used the wrong operand."
        )
    if kind == "operand":
        return (
            f"Wait, let me double-check step {n}: the problem says to {_VERBS[op].format(x=x)}, "
            f"not {_VERBS[step.op].format(x=step.right)}. I used the wrong operand."
        )
    if kind == "operation":
        return (
            f"Wait, let me double-check step {n}: the problem says to {_VERBS[op].format(x=x)}, "
            f"not to {_VERBS[step.op].format(x=step.right)}. I used the wrong operation."
        )
    if kind == "skip":
        nxt_op, nxt_x = problem.ops[i + 1]
        return (
            f"Wait, I skipped an operation: before {_GERUNDS[nxt_op].format(x=nxt_x)}, "
            f"I need to {_VERBS[op].format(x=x)}."
        )
    raise ValueError(f"unknown diagnosis kind {kind!r}")


def corrupt_solution(problem: ArithmeticProblem, *, rng: random.Random, kind: str | None = None) -> tuple[str, int]:
    """A plausible wrong solution with one mistake, and the 0-based index of its first wrong step.

    kinds: "arithmetic" (a slipped result), "carry" (a miscopied running value), "operand"
    (a misread operand), "operation" (the wrong operation), "skip" (one operation left out),
    "truncate" (stops early with the running value as its answer). Steps after the mistake
    are computed correctly from the wrong value, so the final answer is wrong (every
    operation is one-to-one). `kind=None`
    draws one that applies to the problem.

    >>> p = make_problem(12, [("+", 7), ("*", 3), ("-", 5)])
    >>> text, at = corrupt_solution(p, rng=random.Random(0), kind="arithmetic")
    >>> first_wrong_step(p, text) == at
    True
    """
    k = len(problem.ops)
    skippable = [j for j in range(k - 1) if problem.ops[j] != problem.ops[j + 1]]  # else a skip looks like a right step
    values = problem.values
    stoppable = [j for j in range(1, k) if values[j] != values[-1]]  # else stopping early looks right
    kinds = [c for c in CORRUPTION_KINDS if (c != "skip" or skippable) and (c != "truncate" or stoppable)]
    if kind is None:
        kind = rng.choice(kinds)
    if kind not in kinds:
        raise ValueError(
            f"corruption kind {kind!r} does not apply to a {k}-step problem; choose from {', '.join(kinds)}"
        )
    if kind == "skip":
        i = rng.choice(skippable)
    else:
        i = rng.choice(stoppable) if kind == "truncate" else rng.randrange(k)
    lines = list(problem.steps[:i])
    v = values[i]
    if kind == "truncate":
        return "\n".join(lines + [final_line(v)]), i
    op, x = problem.ops[i]
    if kind == "arithmetic":
        wrong = apply_op(v, op, x) + rng.choice([-1, 1]) * rng.randint(1, 10)
        lines.append(f"Step {i + 1}: {v} {op} {x} = {wrong}")
        v, rest = wrong, problem.ops[i + 1 :]
    elif kind == "carry":
        left = v + rng.choice([-1, 1]) * rng.randint(1, 9)
        v = apply_op(left, op, x)
        lines.append(f"Step {i + 1}: {left} {op} {x} = {v}")
        rest = problem.ops[i + 1 :]
    elif kind == "operand":
        lo = 2 if op == "*" else 1
        candidates = [y for y in range(lo, max(x + 10, 12)) if y != x]
        y = rng.choice(candidates)
        v_new = apply_op(v, op, y)
        lines.append(f"Step {i + 1}: {v} {op} {y} = {v_new}")
        v, rest = v_new, problem.ops[i + 1 :]
    elif kind == "operation":
        other = rng.choice([o for o in OPS if o != op and apply_op(v, o, x) != apply_op(v, op, x)])
        v_new = apply_op(v, other, x)
        lines.append(f"Step {i + 1}: {v} {other} {x} = {v_new}")
        v, rest = v_new, problem.ops[i + 1 :]
    else:  # skip
        rest = problem.ops[i + 1 :]
    for j, (op_j, x_j) in enumerate(rest, start=len(lines) + 1):
        v_new = apply_op(v, op_j, x_j)
        lines.append(f"Step {j}: {v} {op_j} {x_j} = {v_new}")
        v = v_new
    return "\n".join(lines + [final_line(v)]), i


# --- internals ------------------------------------------------------------------------------


def _diagnose(problem: ArithmeticProblem, steps: list[Step]) -> StepDiagnosis | None:
    values = problem.values
    k = len(problem.ops)
    for i, step in enumerate(steps):
        v = values[i]
        if i >= k:
            return StepDiagnosis(i, "extra", step, v, None, None, None)
        op, x = problem.ops[i]
        expected = apply_op(v, op, x)
        kind = None
        if step.left != v:
            kind = "carry"
        elif (step.op, step.right) != (op, x):
            if i + 1 < k and (step.op, step.right) == problem.ops[i + 1]:
                kind = "skip"
            elif step.op != op and step.right == x:
                kind = "operation"
            else:
                kind = "operand"
        elif step.result != expected:
            kind = "arithmetic"
        if kind is not None:
            return StepDiagnosis(i, kind, step, v, op, x, expected)
    if len(steps) < k:
        i = len(steps)
        op, x = problem.ops[i]
        return StepDiagnosis(i, "missing", None, values[i], op, x, values[i + 1])
    return None


def _running_values(start: int, ops) -> tuple[int, ...]:
    values = [int(start)]
    for op, x in ops:
        values.append(apply_op(values[-1], op, x))
    return tuple(values)


def _draw(rng: random.Random, n_steps: int, max_operand: int) -> tuple[int, tuple[tuple[str, int], ...]]:
    start = rng.randint(1, max_operand)
    v, ops = start, []
    for _ in range(n_steps):
        op = rng.choice(OPS if v >= 2 else ("+", "*"))
        if op == "+":
            x = rng.randint(1, max_operand)
        elif op == "-":
            x = rng.randint(1, min(max_operand, v - 1))
        else:
            x = rng.randint(2, max_operand)
        ops.append((op, x))
        v = apply_op(v, op, x)
    return start, tuple(ops)


def _key(start: int, ops) -> str:
    return f"{start}|" + "|".join(f"{op}{x}" for op, x in ops)


def _normalize_split(split: str) -> str:
    split = {"heldout": "test", "held-out": "test", "held_out": "test"}.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test' (alias 'heldout')")
    return split


def _steps_range(n_steps) -> tuple[int, int]:
    if isinstance(n_steps, int) and not isinstance(n_steps, bool):
        lo = hi = n_steps
    elif isinstance(n_steps, (tuple, list)) and len(n_steps) == 2 and all(isinstance(v, int) for v in n_steps):
        lo, hi = n_steps
    else:
        raise ValueError(f"n_steps must be an integer or a (low, high) pair, got {n_steps!r}")
    if not 1 <= lo <= hi:
        raise ValueError(f"n_steps must satisfy 1 <= low <= high, got {n_steps!r}")
    return lo, hi


def _to_int(s: str) -> int:
    return int(s.replace(",", "").replace("−", "-"))


def _join_and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
