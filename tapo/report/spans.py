"""Split a constructed trajectory into its three parts: kept prefix, reflection, correction."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrajectorySpans:
    """The three consecutive parts of a constructed trajectory y_ref; joined, they give its text back."""

    prefix: str  # y-'s own text, kept verbatim up to the diagnosed mistake: [0, reflection_start_char)
    reflection: str  # the transition that names the mistake: [reflection_start_char, correction_start_char)
    correction: str  # the corrected reasoning to the final answer: [correction_start_char, end)


def fallback_correction_start(text: str, *, reflection_start: int) -> int:
    """Where the correction begins when a record does not say: after the reflection's first line.

    White space right at `reflection_start` (the newline that ends the kept prefix) belongs to the
    reflection; the correction starts after the first newline that follows the reflection's first
    visible character, or at the end of the text when there is none.

    >>> fallback_correction_start("x = 5\\nWait, x = 4.\\nSo 8.", reflection_start=5)
    19
    >>> fallback_correction_start("x = 5 wait", reflection_start=6)
    10
    """
    start = reflection_start
    while start < len(text) and text[start].isspace():
        start += 1
    newline = text.find("\n", start)
    return len(text) if newline < 0 else newline + 1


def split_trajectory(
    text: str, *, reflection_start_char: int | None, correction_start_char: int | None = None
) -> TrajectorySpans:
    """Cut `text` at the two character offsets, clamped to [0, len(text)] and kept in order.

    A missing `correction_start_char` (files written before it existed) falls back to
    `fallback_correction_start`; a missing `reflection_start_char` counts as 0.

    >>> split_trajectory("x = 5\\nWait, x = 4.\\nSo 8.", reflection_start_char=5, correction_start_char=19)
    TrajectorySpans(prefix='x = 5', reflection='\\nWait, x = 4.\\n', correction='So 8.')
    >>> split_trajectory("abc", reflection_start_char=99, correction_start_char=-4)
    TrajectorySpans(prefix='abc', reflection='', correction='')
    """
    reflection = min(max(int(reflection_start_char or 0), 0), len(text))
    if correction_start_char is None:
        correction = fallback_correction_start(text, reflection_start=reflection)
    else:
        correction = min(max(int(correction_start_char), reflection), len(text))
    return TrajectorySpans(text[:reflection], text[reflection:correction], text[correction:])
