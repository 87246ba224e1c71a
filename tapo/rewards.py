r"""Answer checking: is the final answer of a response equal to the gold answer?

Three steps, cheapest first:

1. Extract the final answer: the last non-empty ``\boxed{...}`` / ``\fbox{...}`` /
   ``\boxed 7``, else "Final Answer: X" / "the answer is X" / "#### X" (a sentence answer
   ``12 cookies`` is graded as ``\boxed{12 \text{cookies}}`` would be).
2. Fast path in this process: rewrite spellings that math-verify misreads or chokes on (see
   "Equivalences" below), normalize both sides (``$``, ``\left``, ``\dfrac``, degrees,
   ``1,000``, ...) and compare plain numbers exactly as rationals and answer choices by letter.
3. Everything else goes to math-verify for symbolic equivalence (radicals, intervals, sets,
   tuples, equations). sympy can hang for minutes on inputs like ``9^{9^{9^{9}}}``, and
   math-verify's own timeouts (``signal.alarm``) neither work off the main thread nor stop C
   code. So it runs in a checking service of its own, ``python -P -m tapo.verify_worker``: a
   separate interpreter that never imports the caller's main module, so checking works the
   same from an unguarded script, a notebook, a thread, or a Ray / accelerate worker. Each item
   has a hard wall-clock limit; a late item scores 0, is counted, and only the worker holding
   it is killed and replaced. Stuck items run out their limits side by side, not one after
   another, so a batch with several of them costs about one limit, not one per item. The
   service and its workers die with this process (SIGKILL and SIGTERM included).

Settings: ``configure_checking(timeout_s=..., workers=...)`` sets the per-item limit and the
number of items checked at once for the whole process; ``timeout_s=`` on a call overrides the
limit for that call.

Equivalences accepted beyond math-verify's own (each with a rule, not a list of spellings):

- Scientific notation is a plain number: ``1.5e3``, ``2.5E-2``, ``1.5\times10^{3}``,
  ``1.5\cdot 10^{-2}`` (so ``1.5e3`` equals 1500, never 15).
- An inequality in one variable is its interval (or union): ``x>3`` is ``(3,\infty)``,
  ``x \ge -1`` is ``[-1,\infty)``, ``1<x\le 2`` is ``(1,2]``, ``x<0 \text{ or } x>1`` is
  ``(-\infty,0)\cup(1,\infty)``, ``x\ne 2`` is ``(-\infty,2)\cup(2,\infty)``, and
  ``x\in S`` is ``S``. Strictness counts: ``x>3`` is not ``[3,\infty)``.
- A repeating decimal is its fraction: ``0.\overline{3}``, ``0.1\overline{6}``, ``0.\bar{3}``,
  ``0.(3)``, ``0.1\dot{6}``, ``0.\dot{1}4285\dot{7}``.
- An answer choice is its letter: ``(C)``, ``C)``, ``\text{(C)}``, ``\textbf{(C) } 12`` all
  answer ``C`` (and ``(B)`` is not ``C``). A choice with its content (``(C) 12``) against a gold
  that is not a choice is judged by the content. A capital letter A-Z alone is a choice.
- Redundant grouping is dropped: ``((((7))))``, ``{{{{7}}}}`` and ``\left(\left(7\right)\right)``
  are ``7``; ``((x))`` is ``(x)`` and ``({x})`` is ``(x)`` anywhere in an answer.
- Percent: ``50\%`` is accepted as both readings, its value 0.5 and its number 50, against a
  gold without a percent sign (and ``50\%`` gold accepts ``0.5`` and ``50``); two percents
  compare as numbers. Without a sign on either side nothing is rescaled: ``50`` is not ``0.5``.
  Why both: datasets give percent golds with and without the sign (MATH writes ``50\%``, GSM8K
  writes ``50``), and ``50\%`` *is* 0.5; the one answer this accepts that a strict grader might
  not, ``0.5`` for "what percent", states the same quantity.

A gold answer that cannot be parsed is a data error and raises ``ValueError`` naming the row.
"""

from __future__ import annotations

import atexit
import enum
import json
import math
import os
import re
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_WORKERS",
    "CheckingSettings",
    "VerifierStats",
    "checking_settings",
    "configure_checking",
    "extract_answer",
    "is_correct",
    "math_reward",
    "validate_gold",
    "verifier_stats",
]

DEFAULT_TIMEOUT_S = 5.0  # wall-clock limit for one math-verify item
DEFAULT_WORKERS = 2  # math-verify items checked at once (stuck ones are set aside beside them)
_START_TIMEOUT_S = 120.0  # the service must import sympy + math-verify and warm up within this
_SILENCE_S = 60.0  # the service answers every item within its limit; past limit + this it is hung


# ---------------------------------------------------------------------------------------------
# 1. Extracting the final answer
# ---------------------------------------------------------------------------------------------

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# "Final Answer: X", "The final answer is X", "the answer is X", GSM8K-style "#### X". "####" is
# also a markdown heading ("#### Double-check", "#### 2. Verify"): it counts only before something
# answer-like that is not a numbered title.
_ANSWER_PHRASE = re.compile(
    r"(?:final\s+answer(?:\s+is)?|the\s+answer\s+is"
    r"|(?<!#)####(?!#)(?=[ \t*:]*[-+\d$\\(])(?![ \t*:]*\d+\.[ \t]+[A-Za-z]))[\s*:]*",
    re.IGNORECASE,
)
# An escaped dollar (\$18) is money, not a delimiter.
_MATH_SPAN = re.compile(r"(?<!\\)\$\$?(.+?)(?<!\\)\$\$?|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_DISPLAY_OPENING = re.compile(r"\$\$|\\\[")  # "Final Answer:" then the display on the next lines
_SENTENCE_END = re.compile(r"\.(?:\s|$)")  # "42. Because" ends at "42"; "0.5" does not
# "12 cookies": a number, then words, the first of two letters or more ("5 x" is 5x, not 5).
_NUMBER_THEN_WORDS = re.compile(
    r"([+-]?(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)(?:/\d+)?)\s+([A-Za-z][A-Za-z'-]+(?:\s+[A-Za-z][A-Za-z'-]*)*)"
)


def extract_answer(text: str) -> str | None:
    r"""The final answer of a response, or None when it gives none.

    The last non-empty ``\boxed{...}`` (nested braces are fine; ``\fbox`` and the
    ``\boxed 7`` form count too) wins; empty boxes are skipped as if absent. Without a box,
    the last "Final Answer: X" / "final answer is X" / "the answer is X" / "#### X": the math
    span on its line (or the display that line opens), else its sentence, where words after a
    number are text.

    >>> extract_answer(r"First \boxed{3}, then \boxed{\frac{1}{\sqrt{2}}}.")
    '\\frac{1}{\\sqrt{2}}'
    >>> extract_answer(r"so the answer is $\boxed 7$.")
    '7'
    >>> extract_answer("Final Answer: The final answer is $12$. I hope it is correct.")
    '12'
    >>> extract_answer(r"\boxed{}") is None
    True
    >>> extract_answer("The answer is 12 cookies."), extract_answer("Final Answer:\n$$\n7\n$$")
    ('12 \\text{cookies}', '7')
    """
    boxed = _last_box(text)
    return boxed if boxed is not None else _last_answer_phrase(text)


def _last_box(text: str) -> str | None:
    """Content of the last box that closes and is not empty."""
    for match in reversed(list(_BOX.finditer(text))):
        content = _box_content(text, match.end())
        if content:
            return content
    return None


def _box_content(text: str, start: int) -> str | None:
    r"""What follows ``\boxed`` at ``start``: a balanced ``{...}`` or one ``\boxed 7`` token."""
    rest = text[start:]
    stripped = rest.lstrip(" \t")
    if stripped.startswith("{"):
        return _braced(text, start + len(rest) - len(stripped))
    if len(stripped) == len(rest):  # "\boxed" glued to something else: not an answer
        return None
    token = re.match(r"[^\s$]+", stripped)
    return _strip_answer(token.group(0)) if token else None


def _braced(text: str, open_at: int) -> str | None:
    """Content of the brace group opening at ``open_at``; None if it never closes (truncated)."""
    depth = 0
    i = open_at
    while i < len(text):
        char = text[i]
        if char == "\\":  # \{ and \} are set braces, not grouping
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i].strip()
        i += 1
    return None


def _last_answer_phrase(text: str) -> str | None:
    """The answer after the last "the answer is"-style phrase: its math span or its sentence."""
    for match in reversed(list(_ANSWER_PHRASE.finditer(text))):
        rest = text[match.end() :]
        line = rest.split("\n", 1)[0]
        if _DISPLAY_OPENING.fullmatch(line.strip()):  # its line only opens a display: read the display
            math = _MATH_SPAN.match(rest)
            if not math:  # cut off before it closes
                continue
        else:
            math = _MATH_SPAN.search(line)
        if math:
            answer = _strip_answer(next(group for group in math.groups() if group is not None))
        else:
            answer = _words_as_text(_strip_answer(_SENTENCE_END.split(line, 1)[0]))
        if answer:  # "... write the final answer." says nothing; look further back
            return answer
    return None


def _words_as_text(answer: str | None) -> str | None:
    r"""``12 cookies`` -> ``12 \text{cookies}``: graded as that box would be (math-verify reads
    bare words as variables, and drops ``\text`` units; "percent" and "degrees" keep their rules).
    """
    words = _NUMBER_THEN_WORDS.fullmatch(answer) if answer else None
    return f"{words.group(1)} \\text{{{words.group(2)}}}" if words else answer


def _strip_answer(answer: str) -> str | None:
    """Drop math delimiters, markdown stars and a trailing period; None if nothing is left."""
    answer = answer.strip().strip("*$").strip()
    answer = answer.removesuffix(".").strip()
    return answer or None


def _gold_answer(gold: str) -> str | None:
    r"""The answer inside a gold: after GSM8K's last ``####``, else its last box, else all of it.

    >>> _gold_answer("Natalia sold 48 + 24 = 72 clips.\n#### 72")
    '72'
    """
    gold = gold.strip()
    if "####" in gold:
        return _strip_answer(gold.rsplit("####", 1)[1].strip().split("\n", 1)[0])
    if _BOX.search(gold):
        return _last_box(gold)
    return _strip_answer(gold)


# ---------------------------------------------------------------------------------------------
# 2. Fast path: rewriting, normalization, exact numbers and answer choices
# ---------------------------------------------------------------------------------------------

_SIZED_DELIMITER = re.compile(r"\\(?:left|right|[bB]igg?[lr]?)\s*(?=[()\[\]|]|\\[{}|])")
_INVISIBLE_DELIMITER = re.compile(r"\\(?:left|right)\s*\.")  # "\left\{ ... \right." must keep its pair
_MEMBERSHIP = re.compile(r"\s*[A-Za-z]\s*\\in(?![A-Za-z])\s*(.+)", re.DOTALL)
_RELATION = re.compile(r"(\\(?:leqslant|geqslant|leq|geq|le|ge|lt|gt|neq|ne)(?![A-Za-z])|<=|>=|[<>≤≥≠])")
_RELATIONS = {
    r"\leqslant": "<=", r"\leq": "<=", r"\le": "<=", "<=": "<=", "≤": "<=", r"\lt": "<", "<": "<",
    r"\geqslant": ">=", r"\geq": ">=", r"\ge": ">=", ">=": ">=", "≥": ">=", r"\gt": ">", ">": ">",
    r"\neq": "!=", r"\ne": "!=", "≠": "!=",
}
# "x<0 or x>1": \text{ or }, a bare "or", \lor, \vee, \cup between the inequalities.
_OR = re.compile(r"\\(?:text|textrm|mathrm|mbox)\s*\{\s*or\s*\}|(?<![A-Za-z\\])or(?![A-Za-z])|\\(?:lor|vee|cup)(?![A-Za-z])")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_INFINITY = r"\infty"

_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![A-Za-z])")
_LATEX_SPACE = re.compile(r"\\[,;:! ]|~")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree(?![A-Za-z])|degrees?$")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+")
_LIST_COMMA = re.compile(r",\s")  # a separator has no space after it
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_SCIENTIFIC = re.compile(
    r"([+-]?(?:\d+\.?\d*|\.\d+))(?:[eE]([+-]?\d+)|(?:\\times|\\cdot|\*|×|·)10\^(?:\{([+-]?\d+)\}|(\d)))"
)
# 0.1\overline{6}, 0.\bar{3}, 0.(3), 0.1\dot{6}, 0.\dot{1}4285\dot{7}: (sign, whole, fixed digits, period)
_REPEATING = re.compile(
    r"([+-]?)(\d*)\.(\d*)(?:\\(?:overline|bar)(?:\{(\d+)\}|(\d))|\((\d+)\)|\\dot\{?(\d)\}?(?:(\d*)\\dot\{?(\d)\}?)?)"
)
_PERCENT = re.compile(r"(.+?)(?:\\%|%|percent)")
_LATEX_FRACTION = re.compile(r"([+-]?)\\frac(?:\{([+-]?\d+)\}\{([+-]?\d+)\}|(\d)(\d))")
_SLASH_FRACTION = re.compile(r"([+-]?\d+)/(\d+)")
_MAX_NUMBER_CHARS = 64  # longer "numbers" go to math-verify, never to int() here
_MAX_EXPONENT = 400  # 1e400 is exact here; 1e100000 is math-verify's (in a worker, with a limit)
# (C), C), or C alone, then what the option says; several options ("(A) and (C)") are no choice.
_CHOICE = re.compile(r"\(([A-Z])\)(.*)|([A-Z])\)(.*)|([A-Z])", re.DOTALL)
_CHOICE_MARK = re.compile(r"\s*\(?\s*[A-Z]\s*\)\s*")
_ANOTHER_CHOICE = re.compile(r"\(?[A-Z]\)")


def _rewrite(answer: str) -> str:
    r"""The answer in spellings math-verify reads right: redundant groups, inequalities, ``x \in``.

    >>> _rewrite(r"\left( \left( 7 \right) \right)"), _rewrite("{{{{7}}}}")
    ('7', '7')
    >>> _rewrite(r"x \ge -1"), _rewrite(r"-1 < x \leq 2"), _rewrite(r"x \in [0, 1)")
    ('[-1,\\infty)', '(-1,2]', '[0, 1)')
    """
    s = answer if _INVISIBLE_DELIMITER.search(answer) else _SIZED_DELIMITER.sub("", answer)
    s = _collapse_groups(s)
    membership = _MEMBERSHIP.fullmatch(s)
    if membership:
        s = membership.group(1).strip()
    return _as_interval(s) or s


def _collapse_groups(s: str) -> str:
    r"""Redundant grouping dropped, in one pass: ``((x))`` -> ``(x)``, ``{{x}}`` -> ``{x}``,
    ``({x})`` -> ``(x)``; then parentheses or braces around the whole answer, unless they hold a
    list (a top-level comma: ``(1,2)`` stays a tuple). ``{(x)}`` keeps its parentheses
    (``f^{(2)}`` is a derivative). Unbalanced input is returned as it is.

    math-verify's parser slows down exponentially with nesting depth: ``{{{{{{{{{{{{{{{{7}}}}}}}}}}}}}}}}``
    takes it half a minute.

    >>> _collapse_groups(r"\frac{{1}}{((2))}"), _collapse_groups("((1, 2))"), _collapse_groups("{(7)}")
    ('\\frac{1}{(2)}', '(1, 2)', '7')
    """
    # A group is [opening, closing, children]; children are text or groups. Built with a stack,
    # simplified as each group closes (its children already are), so depth costs no recursion.
    root: list = ["", "", []]
    stack = [root]
    text: list[str] = []
    i = 0
    while i < len(s):
        char = s[i]
        if char == "\\":  # \{ \} \( \) are text (sets, math delimiters), and so is any command
            text.append(s[i : i + 2])
            i += 2
            continue
        if char in "({[":
            stack[-1][2].append("".join(text))
            text = []
            stack.append([char, "", []])
        elif char in ")}]":
            if len(stack) == 1 or (stack[-1][0] == "{") != (char == "}"):
                return s  # unbalanced; ( and [ may close each other, as intervals do
            stack[-1][2].append("".join(text))
            text = []
            group = stack.pop()
            group[1] = char
            stack[-1][2].append(_simplified(group))
        else:
            text.append(char)
        i += 1
    if len(stack) != 1:
        return s
    root[2].append("".join(text))
    children = root[2]
    while True:  # unwrap the whole answer
        only = _only_group(children)
        if only is None or (only[0], only[1]) not in (("(", ")"), ("{", "}")):
            break
        if not any(piece.strip() for piece in only[2] if isinstance(piece, str)) and not any(
            isinstance(piece, list) for piece in only[2]
        ):
            break  # "()" is no answer to unwrap
        if any(isinstance(piece, str) and "," in piece for piece in only[2]):
            break  # a tuple, interval or list
        children = only[2]
    return _render(children).strip()


def _only_group(children: list) -> list | None:
    """The one group among ``children`` when everything else is whitespace."""
    groups = [piece for piece in children if isinstance(piece, list)]
    if len(groups) != 1 or any(piece.strip() for piece in children if isinstance(piece, str)):
        return None
    return groups[0]


def _simplified(group: list) -> list:
    """``((x))`` -> ``(x)``, ``{{x}}`` -> ``{x}``, ``({x})`` -> ``(x)``, repeatedly."""
    while True:
        inner = _only_group(group[2])
        if inner is None:
            return group
        outer_kind, inner_kind = group[0] + group[1], inner[0] + inner[1]
        if outer_kind == inner_kind and outer_kind in ("()", "{}"):
            group = inner
        elif outer_kind == "()" and inner_kind == "{}":
            group = [group[0], group[1], inner[2]]
        else:
            return group


def _render(children: list) -> str:
    """The text of a group tree, without recursion (nesting can be deep)."""
    out: list[str] = []
    work: list = list(reversed(children))
    while work:
        piece = work.pop()
        if isinstance(piece, str):
            out.append(piece)
        else:
            work.append(piece[1])
            work.extend(reversed(piece[2]))
            out.append(piece[0])
    return "".join(out)


def _as_interval(s: str) -> str | None:
    r"""An inequality in one variable (a chain, or a union of them joined by "or") in interval
    notation, else None.

    >>> _as_interval(r"x > 3"), _as_interval(r"5 \geq t > 1"), _as_interval(r"x<-1 \text{ or } x>2")
    ('(3,\\infty)', '(1,5]', '(-\\infty,-1)\\cup(2,\\infty)')
    >>> _as_interval("a < b") is None, _as_interval("x < 2x + 1") is None  # which one varies?
    (True, True)
    """
    if not _RELATION.search(s):
        return None
    variable = None
    intervals = []
    for part in _OR.split(s):
        pieces = _RELATION.split(part)  # term, relation, term[, relation, term]
        terms = [term.strip() for term in pieces[::2]]
        relations = [_RELATIONS[relation] for relation in pieces[1::2]]
        is_letter = [re.fullmatch(r"[A-Za-z]", term) is not None for term in terms]
        # spans: (lower, upper) per interval; a bound is (text, strict), None is infinite.
        if len(relations) == 1 and is_letter.count(True) == 1:
            name, bound = (terms[0], terms[1]) if is_letter[0] else (terms[1], terms[0])
            relation = relations[0] if is_letter[0] else _FLIPPED[relations[0]]
            bounds = [bound]
            if relation == "!=":
                spans = [(None, (bound, True)), ((bound, True), None)]
            elif relation in ("<", "<="):
                spans = [(None, (bound, relation == "<"))]
            else:
                spans = [((bound, relation == ">"), None)]
        elif len(relations) == 2 and is_letter == [False, True, False]:
            name, bounds = terms[1], [terms[0], terms[2]]
            if set(relations) <= {"<", "<="}:
                spans = [((terms[0], relations[0] == "<"), (terms[2], relations[1] == "<"))]
            elif set(relations) <= {">", ">="}:
                spans = [((terms[2], relations[1] == ">"), (terms[0], relations[0] == ">"))]
            else:
                return None  # "1 < x > 0", "1 < x != 2": not one interval
        else:
            return None
        if variable not in (None, name) or any(not b or name in _LATEX_COMMAND.sub("", b) for b in bounds):
            return None
        variable = name
        for low, high in spans:
            opening = "(" if low is None or low[1] else "["
            closing = ")" if high is None or high[1] else "]"
            low_text = f"-{_INFINITY}" if low is None else _plain_bound(low[0])
            high_text = _INFINITY if high is None else _plain_bound(high[0])
            intervals.append(f"{opening}{low_text},{high_text}{closing}")
    return r"\cup".join(intervals)


_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "!=": "!="}


def _plain_bound(bound: str) -> str:
    """``1,000`` -> ``1000``: a thousands comma inside an interval would split it."""
    return bound.replace(",", "") if _THOUSANDS.fullmatch(bound) else bound


def _normalize(answer: str) -> str:
    r"""A canonical spelling for string comparison and number parsing.

    >>> _normalize(r"\$ 1{,}000 \text{ degrees}."), _normalize("2, 100"), _normalize(r"10,\!000")
    ('1000', '2,100', '10000')
    >>> _normalize(r"\left( \dfrac{1}{2}, 30^{\circ} \right)")
    '(\\frac{1}{2},30)'
    """
    s = answer.replace("\\$", "").replace("$", "")
    s = _TEXT_WRAPPER.sub(r"\1", s)
    s = _LEFT_RIGHT.sub("", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _LATEX_SPACE.sub(lambda space: "" if space.group() == "\\!" else " ", s)  # 10,\!000 is one number
    s = s.replace("{,}", ",")
    listed = _LIST_COMMA.search(s) is not None  # "2, 100" is two answers, "2,100" one number
    s = "".join(s.split()).removesuffix(".")  # whitespace carries no other meaning in a final answer
    s = _DEGREES.sub("", s)
    if not listed and _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    return s


def _as_number(normalized: str) -> Fraction | None:
    r"""The exact value of a plain integer, decimal, scientific number, repeating decimal or
    ``\frac{p}{q}`` / ``p/q``, else None.

    >>> _as_number(r"-\frac{3}{6}"), _as_number("0.50"), _as_number("x=4")
    (Fraction(-1, 2), Fraction(1, 2), None)
    >>> _as_number("2.5E-2"), _as_number(r"1.5\times10^{3}"), _as_number(r"0.1\overline{6}")
    (Fraction(1, 40), Fraction(1500, 1), Fraction(1, 6))
    """
    if len(normalized) > _MAX_NUMBER_CHARS:
        return None
    if _DECIMAL.fullmatch(normalized):
        return Fraction(normalized)
    scientific = _SCIENTIFIC.fullmatch(normalized)
    if scientific:
        mantissa, *exponents = scientific.groups()
        exponent = int(next(e for e in exponents if e is not None))
        return Fraction(mantissa) * Fraction(10) ** exponent if abs(exponent) <= _MAX_EXPONENT else None
    repeating = _REPEATING.fullmatch(normalized)
    if repeating:
        return _repeating_value(repeating)
    latex = _LATEX_FRACTION.fullmatch(normalized)
    if latex:
        value = _ratio(latex.group(2) or latex.group(4), latex.group(3) or latex.group(5))
        return -value if value is not None and latex.group(1) == "-" else value
    slash = _SLASH_FRACTION.fullmatch(normalized)
    if slash:
        return _ratio(slash.group(1), slash.group(2))
    return None


def _repeating_value(match: re.Match) -> Fraction:
    """whole.fixed(period)(period)... as a fraction: period / (10^len(fixed) * (10^len(period) - 1))."""
    sign, whole, fixed, *periods = match.groups()
    first_dot, middle, last_dot = periods[3:]
    period = first_dot + (middle or "") + last_dot if last_dot else next(p for p in periods if p)
    value = Fraction(int(whole or "0")) + Fraction(int(fixed or "0"), 10 ** len(fixed))
    value += Fraction(int(period), 10 ** len(fixed) * (10 ** len(period) - 1))
    return -value if sign == "-" else value


def _as_number_or_percent(normalized: str) -> tuple[Fraction, bool] | None:
    """(value, written with a percent sign) of a plain number or ``N\\%``, else None."""
    value = _as_number(normalized)
    if value is not None:
        return value, False
    percent = _PERCENT.fullmatch(normalized)
    if percent and (value := _as_number(percent.group(1))) is not None:
        return value, True
    return None


def _same_number(a: tuple[Fraction, bool], b: tuple[Fraction, bool]) -> bool:
    r"""Equal numbers; ``N\%`` against a number without the sign equals N/100 or N.

    >>> _same_number((Fraction(50), True), (Fraction(1, 2), False))
    True
    >>> _same_number((Fraction(50), False), (Fraction(1, 2), False))
    False
    """
    (x, x_percent), (y, y_percent) = a, b
    if x_percent == y_percent:
        return x == y
    percent, plain = (x, y) if x_percent else (y, x)
    return plain in (percent, percent / 100)


def _choice(normalized: str) -> tuple[str, str] | None:
    r"""(letter, what the option says) of an answer choice, else None.

    >>> _choice("(B)5"), _choice("C)"), _choice("C"), _choice("(A)and(C)"), _choice("x")
    (('B', '5'), ('C', ''), ('C', ''), None, None)
    """
    match = _CHOICE.fullmatch(normalized)
    if not match:
        return None
    letter = match.group(1) or match.group(3) or match.group(5)
    content = match.group(2) or match.group(4) or ""
    return None if _ANOTHER_CHOICE.search(content) else (letter, content)


def _choice_content(answer: str) -> str:
    r"""What an answer choice says, as written: ``\textbf{(B) } 5`` -> ``5``."""
    return _CHOICE_MARK.sub("", _TEXT_WRAPPER.sub(r"\1", answer), count=1).strip()


def _ratio(numerator: str, denominator: str) -> Fraction | None:
    return None if int(denominator) == 0 else Fraction(int(numerator), int(denominator))


def _latex_number(value: Fraction) -> str:
    """How a fast-path number is spelled for math-verify (no thousands separators to misread)."""
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


# ---------------------------------------------------------------------------------------------
# 3. math-verify in the checking service (tapo/verify_worker.py)
# ---------------------------------------------------------------------------------------------


class _Outcome(enum.Enum):
    CORRECT = "correct"
    WRONG = "wrong"
    GOLD_UNPARSED = "gold-unparsed"  # math-verify found nothing in the gold: a data error
    TIMEOUT = "timeout"  # past the wall-clock limit; its worker was killed
    CRASH = "crash"  # raised, or killed its worker


@dataclass(frozen=True)
class VerifierStats:
    """Counters of math-verify checking since the process started (see ``verifier_stats()``)."""

    calls: int = 0  # items sent to math-verify (the fast path settles the rest)
    timeouts: int = 0  # items past the wall-clock limit, scored 0
    crashes: int = 0  # items that raised or killed their worker, scored 0
    restarts: int = 0  # workers (or the whole service) killed or lost, and replaced


@dataclass(frozen=True)
class CheckingSettings:
    """Process-wide checking settings (see ``configure_checking``)."""

    timeout_s: float = DEFAULT_TIMEOUT_S  # wall-clock limit for one math-verify item
    workers: int = DEFAULT_WORKERS  # items checked at once; stuck ones are set aside beside them


_lock = threading.Lock()  # one batch at a time owns the service; also guards counters and settings
_stats = VerifierStats()
_settings = CheckingSettings()
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)  # where this tapo is imported from


def verifier_stats() -> VerifierStats:
    """A snapshot of the math-verify counters; diff two snapshots to see what a batch did."""
    with _lock:
        return _stats


def checking_settings() -> CheckingSettings:
    """The settings in force."""
    with _lock:
        return _settings


def configure_checking(*, timeout_s: float | None = None, workers: int | None = None) -> CheckingSettings:
    """Set how math-verify checks run in this process; None keeps a setting. Returns the new settings.

    ``timeout_s`` is the wall-clock limit of one item (a late item scores 0 and is counted);
    ``workers`` is how many items are checked at once. Items stuck past a quarter second of CPU
    are set aside and run out their limits beside the workers, so a batch with stuck items costs
    about one limit, not one per item. A call's own ``timeout_s=`` overrides the limit for it.

    >>> configure_checking(timeout_s=10)
    CheckingSettings(timeout_s=10.0, workers=2)
    >>> configure_checking(workers=0)
    Traceback (most recent call last):
    ...
    ValueError: configure_checking: workers must be a whole number >= 1, got 0
    >>> configure_checking(timeout_s=DEFAULT_TIMEOUT_S, workers=DEFAULT_WORKERS)
    CheckingSettings(timeout_s=5.0, workers=2)
    """
    global _settings
    changes: dict = {}
    if timeout_s is not None:
        changes["timeout_s"] = _checked_timeout(timeout_s, where="configure_checking")
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"configure_checking: workers must be a whole number >= 1, got {workers!r}")
        changes["workers"] = workers
    with _lock:
        _settings = replace(_settings, **changes)
        return _settings


def _checked_timeout(timeout_s, *, where: str) -> float:
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not (
        math.isfinite(timeout_s) and timeout_s > 0
    ):
        raise ValueError(f"{where}: timeout_s must be a positive number of seconds, got {timeout_s!r}")
    return float(timeout_s)


def _count(**deltas: int) -> None:
    """Add to the counters. Callers hold ``_lock``."""
    global _stats
    _stats = replace(_stats, **{name: getattr(_stats, name) + n for name, n in deltas.items()})


class _ServiceGone(Exception):
    """The checking service exited, or stopped answering."""


class _Service:
    """A running ``python -P -m tapo.verify_worker`` and the pipes to it.

    ``-P`` keeps the working directory off its ``sys.path``, and ``PYTHONPATH`` leads with the
    folder this ``tapo`` was imported from, so the service runs this very package (not another
    checkout in the working directory, nor an installed copy). ``task`` (``module:function``) and
    ``path`` replace the check, for tests.
    """

    def __init__(self, *, workers: int, task: str = "tapo.verify_worker:check", path: Sequence[str] = ()):
        if not sys.executable:
            raise RuntimeError("cannot start the math-verify checking service: sys.executable is empty")
        self.command = [sys.executable, "-P", "-m", "tapo.verify_worker", "--parent", str(os.getpid()),
                        "--task", task, "--workers", str(workers)]
        # PR_SET_PDEATHSIG fires when the *thread* that started a process ends; only the main
        # thread lives as long as this process. From other threads the service polls instead.
        if threading.current_thread() is threading.main_thread():
            self.command.append("--death-signal")
        inherited = os.environ.get("PYTHONPATH", "")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, *_package_root(), *filter(None, [inherited])])}
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, env=env, close_fds=True
        )
        # A selector, not select.select: a training process easily holds file descriptors past 1024.
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.process.stdout.fileno(), selectors.EVENT_READ)
        self._buffer = b""
        try:
            first = self._read(deadline=time.monotonic() + _START_TIMEOUT_S)
        except _ServiceGone as gone:
            first = {"error": str(gone)}
        if "ready" not in first:
            self.close()
            reason = first.get("error", f"not ready within {_START_TIMEOUT_S:.0f} s")
            raise RuntimeError(f"math-verify checking service `{' '.join(self.command[:4])}` failed to start: {reason}")

    def check(self, jobs: list, *, timeout_s: float, workers: int, into: dict[int, _Outcome]) -> int:
        """Outcomes of ``jobs`` into ``into`` (by index) as they come; returns workers replaced."""
        self._write({"jobs": jobs, "timeout_s": timeout_s, "workers": workers})
        while True:
            message = self._read(deadline=time.monotonic() + timeout_s + _SILENCE_S)
            if message.get("done"):
                return int(message["replaced"])
            into[int(message["i"])] = _Outcome(message["outcome"])

    def _write(self, message: dict) -> None:
        data = json.dumps(message).encode() + b"\n"
        try:
            while data:
                data = data[os.write(self.process.stdin.fileno(), data) :]
        except (BrokenPipeError, OSError) as error:
            raise _ServiceGone(f"it exited ({error})") from None

    def _read(self, *, deadline: float) -> dict:
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _ServiceGone("it stopped answering")
            if self._selector.select(remaining):
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    raise _ServiceGone(f"it exited (code {self.process.poll()})")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            raise _ServiceGone(f"it wrote {line[:120]!r}, which is not its protocol") from None

    def close(self) -> None:
        """Close its stdin (it kills its workers and exits); kill it if it lingers."""
        self._close_pipes()
        try:
            self.process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def forget(self) -> None:
        """In a forked child: drop this process's copies of the pipes; the parent keeps it."""
        self._close_pipes()
        self.process.returncode = 0  # not this process's child: never wait for it

    def _close_pipes(self) -> None:
        self._selector.close()
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def _package_root() -> list[str]:
    """The folder this ``tapo`` comes from, for the service's ``PYTHONPATH``, unless it is a
    site-packages folder (the service finds that itself, and ahead of the standard library it
    could shadow a module with an old backport)."""
    import site

    site_dirs = [*getattr(site, "getsitepackages", list)(), site.getusersitepackages()]
    return [] if _PACKAGE_ROOT in {str(Path(d).resolve()) for d in site_dirs} else [_PACKAGE_ROOT]


_service: _Service | None = None
_forgotten: list[_Service] = []  # services inherited through fork; kept so nothing waits on them
_atexit_registered = False


def _live_service(workers: int) -> _Service:
    """The module's service, started on first use. Callers hold ``_lock``."""
    global _service, _atexit_registered
    if _service is None or _service.process.poll() is not None:
        _service = _Service(workers=workers)
        if not _atexit_registered:
            atexit.register(_shutdown_service)
            _atexit_registered = True
    return _service


def _discard_service() -> None:
    """Stop the module's service; the next batch starts a fresh one. Callers hold ``_lock``."""
    global _service
    if _service is not None:
        _service.close()
    _service = None


def _shutdown_service() -> None:
    with _lock:
        _discard_service()


def _after_fork_in_child() -> None:
    """A forked child starts its own service on first use, and must not hold the parent's pipes
    (the service notices its parent's death by its stdin closing). A lock held by another thread
    at the fork would never be released here, so the child gets a fresh one."""
    global _lock, _service
    _lock = threading.Lock()
    if _service is not None:
        _service.forget()
        _forgotten.append(_service)
        _service = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _run_checks(
    jobs: Sequence[tuple[str, str | None]],
    *,
    timeout_s: float,
    workers: int | None = None,
    task: Callable[[str, str | None], object] | None = None,
) -> list[_Outcome]:
    """Run math-verify's check for every ``(gold, pred)`` job in the service, each within ``timeout_s``.

    The service schedules (see tapo/verify_worker.py): ``workers`` at once, stuck items set
    aside beside them, a late item TIMEOUT and only its worker killed, an item whose check
    raised or killed its worker CRASH. Should the service itself die or hang, it is replaced
    and the unanswered jobs run once more; after a second loss they are CRASH. ``task`` (a
    module-level function) replaces the check, for tests: it runs in a service of its own.
    """
    workers = workers or checking_settings().workers
    outcomes: dict[int, _Outcome] = {}
    with _lock:
        _count(calls=len(jobs))
        for _attempt in range(2):
            pending = [index for index in range(len(jobs)) if index not in outcomes]
            if not pending:
                break
            service = _live_service(workers) if task is None else _Service(workers=workers, **_task_spec(task))
            answers: dict[int, _Outcome] = {}
            try:
                replaced = service.check([list(jobs[i]) for i in pending], timeout_s=timeout_s, workers=workers,
                                         into=answers)
                _count(restarts=replaced)
            except _ServiceGone:
                _count(restarts=1)
                if task is None:
                    _discard_service()
            except BaseException:  # interrupted (e.g. KeyboardInterrupt): its answers are out of step now
                if task is None:
                    _discard_service()
                raise
            finally:
                outcomes.update((pending[i], outcome) for i, outcome in answers.items())
                if task is not None:
                    service.close()
        result = [outcomes.get(index, _Outcome.CRASH) for index in range(len(jobs))]
        _count(timeouts=result.count(_Outcome.TIMEOUT), crashes=result.count(_Outcome.CRASH))
    return result


def _task_spec(task: Callable) -> dict:
    """A module-level function as the service's ``--task module:function`` and the folder to import it from."""
    module = sys.modules[task.__module__]
    root = Path(module.__file__).resolve().parent
    for _ in range(task.__module__.count(".") + (Path(module.__file__).name == "__init__.py")):
        root = root.parent
    return {"task": f"{task.__module__}:{task.__qualname__}", "path": [str(root)]}


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def is_correct(response: str, gold: str, *, timeout_s: float | None = None) -> bool:
    r"""Whether the final answer of ``response`` equals ``gold`` (see the module docstring).

    ``timeout_s`` limits each math-verify item (default: ``configure_checking``'s, 5 s).

    >>> is_correct(r"... so $x = \boxed{0.5}$", r"\frac{1}{2}")
    True
    >>> is_correct(r"The answer is 91.", "19")
    False
    >>> is_correct(r"\boxed{1.5e3}", "1500"), is_correct(r"\boxed{\textbf{(B) } 5}", "B")
    (True, True)
    """
    return _score([response], [gold], labels=["gold answer"], timeout_s=timeout_s).rewards[0] == 1.0


def math_reward(
    completions,
    answer,
    *,
    timeout_s: float | None = None,
    query_id: Sequence | None = None,
    log_metric: Callable[[str, float], None] | None = None,
    **kw,
) -> list[float]:
    r"""TRL reward function: 1.0 where a completion's final answer equals the row's gold, else 0.0.

    ``completions`` are strings or conversations (the last message's content is scored);
    ``answer`` is the dataset column, aligned with them; so is ``query_id``, when the dataset
    has one, which then names a bad row in errors. TRL's other keyword arguments (prompts,
    completion_ids, trainer_state, ...) are ignored. ``timeout_s`` limits each math-verify item
    (default: ``configure_checking``'s); a late or crashed item scores 0. ``log_metric`` (TRL's)
    gets this call's ``verifier/timeouts`` and ``verifier/crashes``, zeros included: TRL
    averages what was logged, so logging only the nonzero ones would report the mean of the bad
    calls, and a healthy run would show nothing rather than a flat 0.

    >>> math_reward([r"\boxed{1000}", [{"role": "assistant", "content": "The answer is 7."}]],
    ...             ["#### 1,000", "8"])
    [1.0, 0.0]
    """
    if isinstance(answer, str) or not isinstance(answer, Sequence) or len(answer) != len(completions):
        raise ValueError(
            f"math_reward needs one answer per completion; got {len(completions)} completions "
            f"and answer={answer!r:.80}"
        )
    responses = [_completion_text(completion) for completion in completions]
    labels = [f"answer of row {i}" for i in range(len(responses))]
    if isinstance(query_id, Sequence) and not isinstance(query_id, str) and len(query_id) == len(labels):
        labels = [f"{label} (query_id {query!r})" for label, query in zip(labels, query_id)]
    scores = _score(responses, list(answer), labels=labels, timeout_s=timeout_s)
    if log_metric is not None:
        log_metric("verifier/timeouts", float(scores.timeouts))
        log_metric("verifier/crashes", float(scores.crashes))
    return scores.rewards


def validate_gold(gold: str, *, where: str, timeout_s: float | None = None) -> None:
    r"""Raise ``ValueError`` unless ``gold`` holds an answer that can be checked.

    For data loaders, to reject a bad row up front; ``where`` names it in the message.

    >>> validate_gold("#### 72", where="row 3 of train.jsonl")
    >>> validate_gold("", where="row 4 of train.jsonl")
    Traceback (most recent call last):
    ...
    ValueError: answer of row 4 of train.jsonl cannot be parsed: ''
    """
    label = f"answer of {where}"
    timeout_s = _resolved_timeout(timeout_s, where="validate_gold")
    gold_answer = _rewrite(_gold_text(gold, label=label))
    normalized = _normalize(gold_answer)
    if _as_number_or_percent(normalized) is not None or _choice(normalized) is not None:
        return  # a choice is valid by its letter, and scoring never raises for one (see _score)
    [outcome] = _run_checks([(gold_answer, None)], timeout_s=timeout_s)
    if outcome is _Outcome.GOLD_UNPARSED:
        raise ValueError(f"{label} cannot be parsed: {gold!r}")
    if outcome in (_Outcome.TIMEOUT, _Outcome.CRASH):
        raise ValueError(f"{label} cannot be parsed within {timeout_s:g} s ({outcome.value}): {gold!r}")


def _resolved_timeout(timeout_s, *, where: str) -> float:
    return checking_settings().timeout_s if timeout_s is None else _checked_timeout(timeout_s, where=where)


def _completion_text(completion) -> str:
    """TRL gives a string, or a conversation whose last message is the model's."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    content = completion[-1]["content"] if completion else ""
    if isinstance(content, list):  # multimodal parts: [{"type": "text", "text": ...}, ...]
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def _gold_text(gold, *, label: str) -> str:
    """The answer inside a gold (bare, boxed or after ``####``); ValueError when there is none."""
    if isinstance(gold, (int, float)) and not isinstance(gold, bool):
        gold = str(gold)
    answer = _gold_answer(gold) if isinstance(gold, str) else None
    if answer is None:
        raise ValueError(f"{label} cannot be parsed: {gold!r}")
    return answer




@dataclass(frozen=True)
class _Scores:
    """What one scoring call gives: a reward per response, and its math-verify items lost."""

    rewards: list[float]
    timeouts: int = 0  # items past the wall-clock limit
    crashes: int = 0  # items that raised or killed their worker


def _score(
    responses: Sequence[str], golds: Sequence[str], *, labels: Sequence[str], timeout_s: float | None
) -> _Scores:
    """1.0/0.0 per (response, gold): fast path here, the rest in one math-verify batch.

    A gold that is neither a plain number nor an answer choice always goes to math-verify,
    even when the fast path decided the verdict (pred=None then), so an unparseable gold raises
    whatever the response says; should that gold-only check time out or crash, the fast path's
    verdict stands. An answer choice is a valid gold by its letter (``validate_gold`` passes
    it): content math-verify cannot parse only means a response that is no choice scores 0.
    """
    timeout_s = _resolved_timeout(timeout_s, where="answer checking")
    verdicts: list[bool | None] = []
    gold_answers: list[str] = []
    jobs: list[tuple[str, str | None]] = []
    job_rows: list[int] = []
    for row, (response, gold, label) in enumerate(zip(responses, golds, labels, strict=True)):
        gold_answers.append(_gold_text(gold, label=label))
        pred_answer = extract_answer(response)
        verdict, gold_mv, pred_mv = _fast_verdict(pred_answer, gold_answers[-1])
        verdicts.append(verdict)
        if gold_mv is not None:
            jobs.append((gold_mv, pred_mv if verdict is None else None))
            job_rows.append(row)
    outcomes = _run_checks(jobs, timeout_s=timeout_s) if jobs else []
    for row, outcome in zip(job_rows, outcomes, strict=True):
        if outcome is _Outcome.GOLD_UNPARSED and not _is_choice(gold_answers[row]):
            raise ValueError(f"{labels[row]} cannot be parsed: {golds[row]!r}")
        if verdicts[row] is None:  # a late or crashed item scores 0
            verdicts[row] = outcome is _Outcome.CORRECT
    return _Scores(
        [1.0 if verdict else 0.0 for verdict in verdicts],
        timeouts=outcomes.count(_Outcome.TIMEOUT),
        crashes=outcomes.count(_Outcome.CRASH),
    )


def _is_choice(answer: str) -> bool:
    r"""Whether an answer is an answer choice: ``(B)``, ``\textbf{(B) } 5``."""
    return _choice(_normalize(_rewrite(answer))) is not None


def _fast_verdict(pred: str | None, gold: str) -> tuple[bool | None, str | None, str | None]:
    r"""(verdict or None if undecided, gold for math-verify or None, prediction for math-verify).

    Both sides are rewritten first (``_rewrite``). Answer choices on both sides compare by
    letter; a choice with its content against a gold that is not one is judged by the content.
    Plain numbers (percent included) on both sides are compared exactly here; equal spellings
    are equal. The gold goes to math-verify unless it is a plain number or a choice (which need
    no parse check).

    >>> _fast_verdict("0.25", "0.5")
    (False, None, None)
    >>> _fast_verdict(r"2\sqrt{2}", r"\sqrt{8}")
    (None, '\\sqrt{8}', '2\\sqrt{2}')
    >>> _fast_verdict(r"\text{(C)}", "B"), _fast_verdict("x>3", r"(3, \infty)")
    ((False, None, None), (True, '(3, \\infty)', None))
    """
    gold = _rewrite(gold)
    gold_norm = _normalize(gold)
    gold_choice = _choice(gold_norm)
    if pred is None:
        return False, None if gold_choice else _mv_gold(gold, gold_norm), None
    pred = _rewrite(pred)
    pred_norm = _normalize(pred)
    pred_choice = _choice(pred_norm)
    if gold_choice and pred_choice:
        return gold_choice[0] == pred_choice[0], None, None
    if pred_choice and pred_choice[1]:  # "(B) 5" against "5"
        pred = _rewrite(_choice_content(pred))
        pred_norm = _normalize(pred)
    if gold_choice and gold_choice[1]:  # "5" against "(B) 5"
        gold = _rewrite(_choice_content(gold))
        gold_norm = _normalize(gold)
    elif gold_choice:  # a bare choice: nothing to parse, and only a choice matches it
        return False, None, None
    gold_mv = None if gold_choice else _mv_gold(gold, gold_norm)  # a choice is valid by its letter
    gold_number, pred_number = _as_number_or_percent(gold_norm), _as_number_or_percent(pred_norm)
    if gold_number is not None and pred_number is not None:
        return _same_number(pred_number, gold_number), None, None
    if pred_norm == gold_norm:
        return True, gold_mv, None
    return None, gold_mv or _mv_spelling(gold, gold_norm, gold_number), _mv_spelling(pred, pred_norm, pred_number)


def _mv_gold(gold: str, gold_norm: str) -> str | None:
    """The gold for math-verify's parse check: None for a plain number, which needs none."""
    return None if _as_number_or_percent(gold_norm) is not None else gold


def _mv_spelling(answer: str, normalized: str, number: tuple[Fraction, bool] | None) -> str:
    r"""How an answer goes to math-verify: a plain number without thousands separators to misread,
    else as written. A decimal stays a decimal, so math-verify's rounding applies to it as to any
    decimal (``1.414214`` is ``\sqrt{2}``); other numbers (``1.5e3``, ``0.\overline{3}``) in exact LaTeX.

    >>> _mv_spelling("1,414.214", "1414.214", (Fraction("1414.214"), False))
    '1414.214'
    >>> _mv_spelling("1.5e3", "1.5e3", (Fraction(1500), False))
    '1500'
    """
    if number is None or number[1]:
        return answer  # math-verify reads 50\% as 1/2
    if "." in normalized and _DECIMAL.fullmatch(normalized):
        return format(Decimal(normalized), "f")  # ".5" -> "0.5", "3." -> "3"
    return _latex_number(number[0])
