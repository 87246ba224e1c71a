r"""Marker-based detection of reflection in a response: does the model stop and reconsider its own work?

A response *reflects* when it contains one of the markers below. Every pattern is matched
case-insensitively and between word boundaries (so "await", "waiting" or "factually" do not
count). The list, by kind:

| marker | matches (examples) |
|---|---|
| `wait` | "Wait," "wait." "Wait a second/moment/minute" "wait, no" "Wait, let me" "wait, that/this/actually/but/hold/I" — a bare "wait" inside a sentence ("they wait in line") does not count |
| `hold_on` | "hold on", "hang on" |
| `double_check` | "let me double-check", "let's double check", "double-checking", "let me check again", "let me re-check", "recheck" |
| `verify` | "let me verify", "let's verify", "to verify", "verifying" |
| `mistake` | "I made a mistake/an error", "there is/was a mistake", "my mistake", "that's a mistake", "I was wrong", "this is wrong", "that's not right", "that is incorrect", "this can't be right", "doesn't seem right", "oops" |
| `re_examine` | "re-examine", "reexamine", "re-evaluate", "reconsider", "re-read", "recompute", "recalculate", "let me redo" |
| `second_thought` | "on second thought", "on reflection", "thinking again" |
| `actually` | "Actually," (with the comma: the self-correcting use, not "is actually 5") |
| `correction` | "let me correct", "correction:", "to correct this", "I need to correct" |
| `going_back` | "going back to", "let me go back", "let's go back" |

The list is deliberately about *self-correction*; formulaic restatements ("Therefore", "So")
do not count. For a judgement of whether a reflection finds and fixes a real error, use the
LLM judge (`tapo.evaluation.judge`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Marker:
    name: str
    pattern: re.Pattern


@dataclass(frozen=True)
class ReflectionVerdict:
    """Whether a response reflects; the judge also says whether a reflection locates and fixes a real error."""

    reflects: bool
    locates_error: bool | None = None  # None: not judged (the marker classifier)
    fixes_error: bool | None = None


@dataclass(frozen=True)
class ReflectionHit:
    marker: str  # the Marker.name that matched
    start: int  # character offset in the response
    text: str  # the matched text


def _marker(name: str, regex: str) -> Marker:
    return Marker(name, re.compile(rf"\b(?:{regex})\b", re.IGNORECASE))


_WAIT_FOLLOWERS = r"a\s+(?:second|sec|moment|minute|bit)|no|let|let's|that|this|actually|but|hold|i|so|maybe|hmm|is\s+that"

REFLECTION_MARKERS: tuple[Marker, ...] = (
    # "wait" followed by punctuation, or by a word that opens a reconsideration; the lookahead
    # keeps "wait" between word boundaries
    Marker("wait", re.compile(rf"\bwait\b(?=\s*[,.!?:;\u2014\u2013-]|\s+(?:{_WAIT_FOLLOWERS})\b)", re.IGNORECASE)),
    _marker("hold_on", r"hold\s+on|hang\s+on"),
    _marker(
        "double_check",
        r"double[-\s]?check(?:ing|ed)?|(?:let\s+me|let's|let\s+us|i'll|i\s+should)\s+check\s+(?:this\s+|that\s+|it\s+)?again|re-?check(?:ing)?",
    ),
    _marker("verify", r"(?:let\s+me|let's|let\s+us|to|i'll|i\s+should)\s+verify|verifying"),
    _marker(
        "mistake",
        r"i\s+(?:made|make|have\s+made)\s+(?:a|an)\s+(?:mistake|error)|there\s+(?:is|was|'s)\s+(?:a|an)\s+(?:mistake|error)"
        r"|my\s+(?:mistake|error|bad)|(?:that|this)\s+(?:is|was|'s)\s+(?:a\s+)?(?:mistake|wrong|incorrect|not\s+(?:right|correct))"
        r"|that's\s+(?:a\s+mistake|wrong|incorrect|not\s+(?:right|correct))|i\s+was\s+wrong"
        r"|(?:this|that|it)\s+(?:can't|cannot|can\s+not)\s+be\s+(?:right|correct)"
        r"|(?:doesn't|does\s+not|don't|didn't)\s+seem\s+(?:right|correct)|oops",
    ),
    _marker(
        "re_examine",
        r"re-?examin(?:e|ing|ation)|re-?evaluat(?:e|ing)|reconsider(?:ing)?|re-?read(?:ing)?|re-?comput(?:e|ing)"
        r"|re-?calculat(?:e|ing)|(?:let\s+me|let's)\s+redo",
    ),
    _marker("second_thought", r"on\s+second\s+thought|on\s+reflection|thinking\s+(?:about\s+it\s+)?again"),
    Marker("actually", re.compile(r"\bactually\s*,", re.IGNORECASE)),
    _marker("correction", r"(?:let\s+me|i\s+need\s+to|i\s+should|to)\s+correct|correction(?=\s*:)"),
    _marker("going_back", r"going\s+back\s+to|(?:let\s+me|let's|let\s+us)\s+go\s+back"),
)


def find_reflection(text: str, *, markers: tuple[Marker, ...] = REFLECTION_MARKERS) -> list[ReflectionHit]:
    """Every reflection marker in `text`, in order of position.

    >>> [(h.marker, h.text) for h in find_reflection("So x = 4. Wait, let me double-check: x = 5.")]
    [('wait', 'Wait'), ('double_check', 'double-check')]
    >>> find_reflection("We await the result; they wait in line.")
    []
    """
    hits = [ReflectionHit(m.name, match.start(), match.group(0)) for m in markers for match in m.pattern.finditer(text)]
    return sorted(hits, key=lambda h: (h.start, h.marker))


def reflects(text: str, *, markers: tuple[Marker, ...] = REFLECTION_MARKERS) -> bool:
    """Whether `text` contains any reflection marker.

    >>> reflects("Actually, I made a mistake in step 2."), reflects("The answer is actually 5.")
    (True, False)
    """
    return any(m.pattern.search(text) for m in markers)


def marker_verdict(text: str, *, markers: tuple[Marker, ...] = REFLECTION_MARKERS) -> ReflectionVerdict:
    """The marker classifier's verdict: reflects or not; error location and fix are not judged.

    >>> marker_verdict("Hold on, 3 * 4 is 12, not 14.")
    ReflectionVerdict(reflects=True, locates_error=None, fixes_error=None)
    """
    return ReflectionVerdict(reflects=reflects(text, markers=markers))


# ---- the exact outcome of a reflection, on the built-in arithmetic task ----

REFLECTION_OUTCOMES = ("fixed", "not_fixed", "spurious_kept", "spurious_broke")


def reflection_outcome(problem, text: str, correct: bool) -> str | None:
    r"""What a reflection on an arithmetic answer did, judged from the steps before its first marker.

    warranted (a step before the marker is wrong): `fixed` (ends right) or `not_fixed`; spurious
    (every step before the marker is right): `spurious_kept` (still ends right) or `spurious_broke`.
    None when the response does not reflect. An exact check, possible only on the arithmetic task.

    >>> from tapo.data.arithmetic import make_problem
    >>> p = make_problem(4, [("-", 3), ("*", 5)])
    >>> reflection_outcome(p, "Step 1: 4 - 3 = 1\nStep 2: 1 * 5 = 6\nWait, 1 * 5 is 5.\nStep 2: 1 * 5 = 5", True)
    'fixed'
    >>> reflection_outcome(p, "Step 1: 4 - 3 = 1\nStep 2: 1 * 5 = 5\nWait, 1 * 5 is 15.\nStep 2: 1 * 5 = 15", False)
    'spurious_broke'
    """
    from tapo.data.arithmetic import diagnose_steps

    hits = find_reflection(text)
    if not hits:
        return None
    before = text[: hits[0].start]
    diagnosis = diagnose_steps(problem, before)
    # "missing" only means the answer was not finished before the marker: nothing wrong was written yet
    warranted = diagnosis is not None and diagnosis.kind != "missing"
    if warranted:
        return "fixed" if correct else "not_fixed"
    return "spurious_kept" if correct else "spurious_broke"


def reflection_outcomes(problems: list, responses: list[dict]) -> dict[str, float | int]:
    """Shares of REFLECTION_OUTCOMES among reflecting responses (rows with problem_id, response, correct)."""
    by_id = {p.id: p for p in problems}
    outcomes = [reflection_outcome(by_id[r["problem_id"]], r["response"], r["correct"]) for r in responses]
    reflecting = [o for o in outcomes if o is not None]
    out: dict[str, float | int] = {"n_reflecting": len(reflecting)}
    for name in REFLECTION_OUTCOMES:
        out[name] = reflecting.count(name) / len(reflecting) if reflecting else None
    return out
