r"""Locating y-'s first mistake without decoding (`splice_locate: surprise`, DESIGN.md section 3).

One teacher-forced pass scores y- twice: under the plain prompt (the question as the policy saw it
in its rollout) and under a privileged prompt that also shows a correct solution y+
(`SURPRISE_TEMPLATE`). Per token,

    surprise_t = log p_plain(y-_t) - log p_privileged(y-_t)

is large where y- becomes much less likely once y+ is known. y-'s text is split into units (a line,
or a sentence inside a line: `unit_spans`); the first unit whose surprise passes a threshold holds
the first mistake (`first_surprising_unit`), and y- is cut at the end of that unit
(`cut_after_unit`): the kept prefix ENDS WITH the mistaken step, as the `ask` cut ends with the quoted
span, so the reflection the policy writes next follows the mistake.

The privileged prompt shows the question and y+ but not y-: with y- in its context the model would
copy y- and find every token of it likely, mistakes included.

Tokens are mapped to text through `token_ends` (ends[k] = len(decode(ids[:k + 1]))), the same
decoded-prefix convention as `tokens_covering` in `tapo.core.constructors`. Everything here is pure
(lists in, lists out) except `token_ends`, which takes a duck-typed tokenizer's `decode`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tapo.core.synthesis import fill_template

RULES = ("max", "mean", "sum")
DEFAULT_RULE = "max"
DEFAULT_THRESHOLD = 1.0
"""nats: the first unit holding a token that y+ makes at least e times less likely holds the mistake.

Chosen on train-split arithmetic problems (benchmarks/locate_accuracy.py --split train --sweep; the
figures are in docs/DESIGN.md section 3): a unit's mean or sum lets the tokens y+ makes MORE likely
(its format, the steps before the mistake) cancel the spike, and a lower threshold locates a few
more mistakes but cuts more responses too early, while an unlocated pair only falls back."""

SURPRISE_TEMPLATE = r"""Solve the following math problem. A correct solution is given to help you.

### Question
$question

### Correct solution
$positive

Write your own solution step by step, and end with the final answer as \boxed{answer}.
"""


class ScoreFn(Protocol):
    """Teacher-forced log-probs: prompt ids + completion ids -> log p of each completion token.

    Row i of the answer has len(completions[i]) floats: log p(completions[i][t] | prompts[i] +
    completions[i][:t]) under the current policy (natural log). No padding in or out. A constructor
    calls it exactly once per batch, also with no rows, so that every process of a distributed run
    makes the same forward passes (FSDP and ZeRO-3 gather parameters collectively). The trainer can
    implement it with its `_get_per_token_logps_and_entropies` (prompts left-padded, completions
    right-padded, `logits_to_keep` = the longest completion); `tapo.sampling.scoring.hf_score_fn`
    does it offline.
    """

    def __call__(self, prompts: list[list[int]], completions: list[list[int]]) -> list[list[float]]: ...


@dataclass(frozen=True)
class SurpriseCut:
    """Where the surprise rule places y-'s first mistake, and how much of y- to keep."""

    unit: int  # index of the unit (line or sentence) holding the mistake, in `unit_spans` order
    span: tuple[int, int]  # its (start, end) characters in y-'s decoded text
    token: int  # the most surprising token of that unit
    score: float  # the unit's surprise under the rule (nats; per token for mean and max)
    kept_tokens: int  # keep y-'s ids[:kept_tokens]: the prefix ends with that unit


def build_surprise_prompt(*, question: str, positive: str, template: str = SURPRISE_TEMPLATE) -> str:
    """The user-message text of the privileged view: the question and y+, not y-.

    >>> prompt = build_surprise_prompt(question="What is 2 + 2?", positive="2 + 2 = 4")
    >>> "What is 2 + 2?" in prompt and "2 + 2 = 4" in prompt
    True
    """
    return fill_template(template, name="surprise template", question=question, positive=positive)


def surprise_scores(plain_logps: Sequence[float], privileged_logps: Sequence[float]) -> list[float]:
    """Per-token surprise of y-: log p_plain - log p_privileged (positive: y+ makes the token less likely).

    >>> surprise_scores([-0.5, -2.0, -0.25], [-0.25, -0.5, -6.25])
    [-0.25, -1.5, 6.0]
    """
    if len(plain_logps) != len(privileged_logps):
        raise ValueError(
            f"plain and privileged log-probs differ in length: {len(plain_logps)} != {len(privileged_logps)}"
        )
    return [float(p) - float(q) for p, q in zip(plain_logps, privileged_logps)]


def first_surprise(scores: Sequence[float], *, threshold: float, window: int = 1) -> int | None:
    """Index of the first token whose surprise, averaged over the `window` tokens ending at it, reaches `threshold`.

    >>> first_surprise([0.1, 3.0, 0.2, 5.0], threshold=2.0), first_surprise([0.1, 3.0, 0.2], threshold=2.0, window=2)
    (1, None)
    >>> first_surprise([1.5, 1.5, 0.0], threshold=1.5, window=2)
    1
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    for t in range(window - 1, len(scores)):
        if sum(scores[t - window + 1 : t + 1]) / window >= threshold:
            return t
    return None


_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_LIST_MARKER = re.compile(r"\(?(?:\d+|[A-Za-z])[.)]")  # "1.", "a)", "(2)": they open a unit, they end none


def unit_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) characters of each unit of `text`: a line, split further after each sentence end.

    A sentence ends at `.`, `!` or `?` followed by white space or the line end (so 3.5 is no end),
    unless all it would hold is a list marker ("1.", "b)"). Spans carry no outer white space; blank
    units are skipped. For the arithmetic task each step is a line, so each step is a unit.

    >>> text = "Step 1: 2 + 3 = 5\\nSo 5. Then 6.\\n2. Add 3. Done"
    >>> [text[s:e] for s, e in unit_spans(text)]
    ['Step 1: 2 + 3 = 5', 'So 5.', 'Then 6.', '2. Add 3.', 'Done']
    """
    spans: list[tuple[int, int]] = []
    offset = 0
    for line in text.split("\n"):
        start = 0
        cuts = [m.end() for m in _SENTENCE_END.finditer(line)]
        for end in cuts + [len(line)]:
            piece = line[start:end]
            if end < len(line) and _LIST_MARKER.fullmatch(piece.strip()):
                continue  # the marker joins the sentence it opens
            if piece.strip():
                lead = len(piece) - len(piece.lstrip())
                spans.append((offset + start + lead, offset + start + len(piece.rstrip())))
            start = end
        offset += len(line) + 1
    return spans


def token_ends(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """ends[k] = len(decode(ids[:k + 1])): where each token's text ends in the decoded text.

    Special tokens are skipped in the decode, as everywhere in the constructors.
    """
    ids = list(ids)
    return [len(tokenizer.decode(ids[: k + 1], skip_special_tokens=True)) for k in range(len(ids))]


def token_units(text: str, ends: Sequence[int], spans: Sequence[tuple[int, int]]) -> list[int | None]:
    """The unit of each token: the first span its characters text[ends[k-1]:ends[k]] overlap; None for none.

    A token of white space only (a line break, a space that is its own token) belongs to no unit
    and so never places a mistake. A token that adds no character (byte-level BPE splits a character
    such as "−" over several tokens; only the first moves `ends`) belongs to the unit of the character
    it helps complete, so a surprise on any of its bytes counts.

    >>> # "ab cd\\nef" in tokens "ab", " ", "cd", "\\n", "ef"; units "ab cd" (0, 5) and "ef" (6, 8)
    >>> token_units("ab cd\\nef", [2, 3, 5, 6, 8], [(0, 5), (6, 8)])
    [0, None, 0, None, 1]
    >>> token_units("a\\n−b", [1, 2, 3, 3, 4], [(0, 1), (2, 4)])  # "−" in two tokens
    [0, None, 1, 1, 1]
    """
    units: list[int | None] = []
    u, start = 0, 0
    for end in ends:
        if end <= start and end > 0:  # no new character: the one at end - 1 is (part) this token's
            units.append(next((i for i, (a, b) in enumerate(spans) if a < end <= b and text[end - 1].strip()), None))
            continue
        while u < len(spans) and spans[u][1] <= start:
            u += 1
        inside = u < len(spans) and spans[u][0] < end and start < spans[u][1] and text[start:end].strip() != ""
        units.append(u if inside else None)
        start = max(start, end)
    return units


def unit_surprise(
    scores: Sequence[float], units: Sequence[int | None], *, n_units: int, rule: str = DEFAULT_RULE
) -> list[float | None]:
    """Each unit's surprise under `rule` ("mean", "max" or "sum" of its tokens'); None for a unit without tokens.

    >>> unit_surprise([0.5, 9.0, 1.0, 3.0, 4.0], [0, None, 0, 1, 1], n_units=3, rule="mean")
    [0.75, 3.5, None]
    >>> unit_surprise([0.5, 9.0, 1.0, 3.0, 4.0], [0, None, 0, 1, 1], n_units=3)  # max
    [1.0, 4.0, None]
    """
    if rule not in RULES:
        raise ValueError(f"unknown surprise rule {rule!r}; choose from {', '.join(RULES)}")
    per_unit: list[list[float]] = [[] for _ in range(n_units)]
    for score, unit in zip(scores, units, strict=True):
        if unit is not None:
            per_unit[unit].append(float(score))
    reduce = {"mean": lambda xs: sum(xs) / len(xs), "max": max, "sum": sum}[rule]
    return [reduce(xs) if xs else None for xs in per_unit]


def first_surprising_unit(
    scores: Sequence[float], units: Sequence[int | None], *, n_units: int, threshold: float = DEFAULT_THRESHOLD,
    rule: str = DEFAULT_RULE,
) -> int | None:
    """The first unit whose surprise under `rule` reaches `threshold`, or None when none does.

    Later units are often surprising too (a solution that goes on from a wrong value differs from y+
    everywhere after it), so the FIRST unit over the threshold is the mistake, not the largest.

    >>> # step 1 agrees with y+ (negative surprise), step 2 holds the slip, step 3 carries it on
    >>> first_surprising_unit([-0.2, 0.1, 0.3, 4.2, 2.5, 3.0], [0, 0, 1, 1, 2, 2], n_units=3, threshold=1.0)
    1
    """
    for unit, value in enumerate(unit_surprise(scores, units, n_units=n_units, rule=rule)):
        if value is not None and value >= threshold:
            return unit
    return None


def cut_after_unit(text: str, ends: Sequence[int], span_end: int) -> int:
    """Tokens to keep so that y-'s kept prefix ends with the unit that ends at character `span_end`.

    The fewest tokens whose text reaches `span_end` (a token straddling it is kept, as the `ask` cut
    keeps the whole quote), plus the next token when it is a line break alone, so that a line-step's
    reflection starts on a line of its own.

    >>> text = "Step 1: 2 + 3 = 5\\nStep 2: 5 * 2 = 11\\nStep 3"
    >>> ends = [4, 6, 7, 9, 11, 13, 15, 17, 18, 22, 24, 25, 27, 29, 31, 33, 36, 37, 41, 43]
    >>> k = cut_after_unit(text, ends, text.index("11") + 2)  # the unit "Step 2: 5 * 2 = 11" ends there
    >>> k, text[: ends[k - 1]].endswith("= 11\\n")
    (18, True)
    >>> cut_after_unit("a 90°\\nb", [1, 4, 5, 5, 6, 7], 5)  # "°" in two tokens (the second adds nothing)
    5
    """
    k = next((i + 1 for i, end in enumerate(ends) if end >= span_end), len(ends))
    while 0 < k < len(ends) and ends[k] <= ends[k - 1]:  # the rest of a character split over byte tokens
        k += 1
    if k < len(ends) and k > 0 and ends[k - 1] == span_end:
        piece = text[ends[k - 1] : ends[k]]
        if piece and piece.strip() == "" and "\n" in piece:
            k += 1
    return k


def locate_by_surprise(
    plain_logps: Sequence[float], privileged_logps: Sequence[float], text: str, ends: Sequence[int], *,
    threshold: float = DEFAULT_THRESHOLD, rule: str = DEFAULT_RULE,
) -> SurpriseCut | None:
    """Where y- (decoded `text`, token ends `ends`) first goes wrong by surprise, and the cut; None when nowhere.

    Worked example: y- "Step 1: 2 + 3 = 5\\nStep 2: 5 * 2 = 11" against y+ "... 5 * 2 = 10": only
    the tokens of the wrong result "11" are much less likely with y+ in view, so the second line is
    located and the prefix keeps it whole.

    >>> text = "Step 1: 2 + 3 = 5\\nStep 2: 5 * 2 = 11"
    >>> ends = [4, 6, 7, 9, 11, 13, 15, 17, 18, 22, 24, 25, 27, 29, 31, 33, 36]
    >>> plain = [-0.1] * 16 + [-2.0]
    >>> privileged = [-0.05] * 16 + [-7.0]
    >>> cut = locate_by_surprise(plain, privileged, text, ends, threshold=0.5)
    >>> cut.unit, text[slice(*cut.span)], cut.kept_tokens, cut.token
    (1, 'Step 2: 5 * 2 = 11', 17, 16)
    >>> locate_by_surprise(plain, plain, text, ends) is None
    True
    """
    scores = surprise_scores(plain_logps, privileged_logps)
    if len(scores) != len(ends):
        raise ValueError(f"{len(scores)} log-probs for {len(ends)} tokens")
    spans = unit_spans(text)
    units = token_units(text, ends, spans)
    unit = first_surprising_unit(scores, units, n_units=len(spans), threshold=threshold, rule=rule)
    if unit is None:
        return None
    value = unit_surprise(scores, units, n_units=len(spans), rule=rule)[unit]
    inside = [t for t, u in enumerate(units) if u == unit]
    token = max(inside, key=lambda t: scores[t])
    return SurpriseCut(
        unit=unit, span=spans[unit], token=token, score=float(value) if value is not None else math.nan,
        kept_tokens=cut_after_unit(text, ends, spans[unit][1]),
    )
