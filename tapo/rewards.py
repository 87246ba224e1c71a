r"""Answer checking: is the final answer of a response equal to the gold answer?

Three steps, cheapest first:

1. Extract the final answer: the last non-empty ``\boxed{...}`` / ``\fbox{...}`` /
   ``\boxed 7``, else "Final Answer: X" / "the answer is X" / "#### X".
2. Fast path in this process: normalize both sides (``$``, ``\left``, ``\dfrac``, degrees,
   ``1,000``, ...) and compare plain numbers exactly as rationals.
3. Everything else goes to math-verify for symbolic equivalence (radicals, intervals, sets,
   tuples, equations). math-verify's own timeouts use ``signal.alarm``, which works only in
   the main thread, and sympy can hang for minutes on inputs like ``9^{9^{9^{9}}}``. So it
   runs in a small pool of worker *processes* with its timeouts off, and the parent enforces
   a hard wall-clock limit per item: a late item scores 0, is counted, and its workers are
   killed and replaced. This also works when the caller is not the main thread. As with any
   spawned process, each worker imports the program's main module, so a script that scores
   answers must keep its work under ``if __name__ == "__main__":``.

A gold answer that cannot be parsed is a data error and raises ``ValueError`` naming the row.
"""

from __future__ import annotations

import atexit
import enum
import logging
import multiprocessing
import os
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from fractions import Fraction

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "VerifierStats",
    "extract_answer",
    "is_correct",
    "math_reward",
    "validate_gold",
    "verifier_stats",
]

DEFAULT_TIMEOUT_S = 5.0  # wall-clock limit for one math-verify item, measured in the parent
WORKERS = 2  # math-verify worker processes; each holds one item at a time
_START_TIMEOUT_S = 120.0  # a fresh worker must import sympy + math-verify within this


# ---------------------------------------------------------------------------------------------
# 1. Extracting the final answer
# ---------------------------------------------------------------------------------------------

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# "Final Answer: X", "The final answer is X", "the answer is X", GSM8K-style "#### X".
_ANSWER_PHRASE = re.compile(
    r"(?:final\s+answer(?:\s+is)?|the\s+answer\s+is|####)[\s*:]*", re.IGNORECASE
)
_MATH_SPAN = re.compile(r"\$\$?(.+?)\$\$?|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")  # "42. Because" ends at "42"; "0.5" does not


def extract_answer(text: str) -> str | None:
    r"""The final answer of a response, or None when it gives none.

    The last non-empty ``\boxed{...}`` (nested braces are fine; ``\fbox`` and the
    ``\boxed 7`` form count too) wins; empty boxes are skipped as if absent. Without a box,
    the last "Final Answer: X" / "final answer is X" / "the answer is X" / "#### X".

    >>> extract_answer(r"First \boxed{3}, then \boxed{\frac{1}{\sqrt{2}}}.")
    '\\frac{1}{\\sqrt{2}}'
    >>> extract_answer(r"so the answer is $\boxed 7$.")
    '7'
    >>> extract_answer("Final Answer: The final answer is $12$. I hope it is correct.")
    '12'
    >>> extract_answer(r"\boxed{}") is None
    True
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
        line = text[match.end() :].split("\n", 1)[0]
        math = _MATH_SPAN.search(line)
        if math:
            answer = _strip_answer(next(group for group in math.groups() if group is not None))
        else:
            answer = _strip_answer(_SENTENCE_END.split(line, 1)[0])
        if answer:  # "... write the final answer." says nothing; look further back
            return answer
    return None


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
# 2. Fast path: normalization and exact numbers
# ---------------------------------------------------------------------------------------------

_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![A-Za-z])")
_LATEX_SPACE = re.compile(r"\\[,;:! ]|~")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree(?![A-Za-z])|degrees?$")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")
_LATEX_FRACTION = re.compile(r"([+-]?)\\frac(?:\{([+-]?\d+)\}\{([+-]?\d+)\}|(\d)(\d))")
_SLASH_FRACTION = re.compile(r"([+-]?\d+)/(\d+)")
_MAX_NUMBER_CHARS = 64  # longer "numbers" go to math-verify, never to int() here


def _normalize(answer: str) -> str:
    r"""A canonical spelling for string comparison and number parsing.

    >>> _normalize(r"\$ 1{,}000 \text{ degrees}.")
    '1000'
    >>> _normalize(r"\left( \dfrac{1}{2}, 30^{\circ} \right)")
    '(\\frac{1}{2},30)'
    """
    s = answer.replace("\\$", "").replace("$", "")
    s = _TEXT_WRAPPER.sub(r"\1", s)
    s = _LEFT_RIGHT.sub("", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _LATEX_SPACE.sub("", s)
    s = "".join(s.split()).removesuffix(".")  # whitespace carries no meaning in a final answer
    s = _DEGREES.sub("", s)
    s = s.replace("{,}", ",")
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    return s


def _as_number(normalized: str) -> Fraction | None:
    r"""The exact value of a plain integer, decimal or ``\frac{p}{q}`` / ``p/q``, else None.

    >>> _as_number(r"-\frac{3}{6}"), _as_number("0.50"), _as_number("x=4")
    (Fraction(-1, 2), Fraction(1, 2), None)
    """
    if len(normalized) > _MAX_NUMBER_CHARS:
        return None
    if _DECIMAL.fullmatch(normalized):
        return Fraction(normalized)
    latex = _LATEX_FRACTION.fullmatch(normalized)
    if latex:
        value = _ratio(latex.group(2) or latex.group(4), latex.group(3) or latex.group(5))
        return -value if value is not None and latex.group(1) == "-" else value
    slash = _SLASH_FRACTION.fullmatch(normalized)
    if slash:
        return _ratio(slash.group(1), slash.group(2))
    return None


def _ratio(numerator: str, denominator: str) -> Fraction | None:
    return None if int(denominator) == 0 else Fraction(int(numerator), int(denominator))


def _latex_number(value: Fraction) -> str:
    """How a fast-path number is spelled for math-verify (no thousands separators to misread)."""
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


# ---------------------------------------------------------------------------------------------
# 3. math-verify in worker processes
# ---------------------------------------------------------------------------------------------


class _Outcome(enum.Enum):
    CORRECT = "correct"
    WRONG = "wrong"
    GOLD_UNPARSED = "gold-unparsed"  # math-verify found nothing in the gold: a data error
    TIMEOUT = "timeout"  # past the wall-clock limit; the worker was killed
    CRASH = "crash"  # raised, or killed its worker even when run alone


@dataclass(frozen=True)
class VerifierStats:
    """Counters of the math-verify pool since the process started (see ``verifier_stats()``)."""

    calls: int = 0  # items sent to math-verify (the fast path settles the rest)
    timeouts: int = 0  # items past the wall-clock limit, scored 0
    crashes: int = 0  # items that raised or killed their worker, scored 0
    restarts: int = 0  # worker pools killed and replaced (after a timeout or a crash)


_lock = threading.Lock()  # one batch at a time owns the pool; also guards the counters
_stats = VerifierStats()
_pool: ProcessPoolExecutor | None = None
_pool_pid: int | None = None  # the process that created _pool (a forked child must not reuse it)
_atexit_registered = False


def verifier_stats() -> VerifierStats:
    """A snapshot of the math-verify counters; diff two snapshots to see what a batch did."""
    with _lock:
        return _stats


def _count(**deltas: int) -> None:
    """Add to the counters. Callers hold ``_lock``."""
    global _stats
    _stats = replace(_stats, **{name: getattr(_stats, name) + n for name, n in deltas.items()})


def _mv_check(gold: str, pred: str | None) -> _Outcome:
    """Runs in a worker: parse the gold, then (when given) the prediction, and compare.

    Timeouts are off (None) because the parent enforces them; ``pred=None`` only checks that
    the gold parses (the fast path already decided the verdict).
    """
    from math_verify import parse, verify

    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    # math-verify falls back to the raw string when sympy cannot read it; that is not a parse.
    if not any(not isinstance(item, str) for item in gold_parsed):
        return _Outcome.GOLD_UNPARSED
    if pred is None:
        return _Outcome.WRONG
    pred_parsed = parse(f"${pred}$", parsing_timeout=None)
    if pred_parsed and verify(gold_parsed, pred_parsed, timeout_seconds=None):
        return _Outcome.CORRECT
    return _Outcome.WRONG


_worker_barrier = None  # set in each worker by _init_worker


def _init_worker(barrier) -> None:
    """Worker start: pay the imports once, and leave Ctrl-C and timeouts to the parent."""
    global _worker_barrier
    _worker_barrier = barrier
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # math-verify warns once that timeouts are disabled; here that is by design.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import math_verify  # noqa: F401


def _await_siblings() -> None:
    """Warm-up task: blocks until every worker runs one, so all have started and imported."""
    _worker_barrier.wait(timeout=_START_TIMEOUT_S)


def _live_pool() -> ProcessPoolExecutor:
    """The module's pool, created (and warmed up) on first use. Callers hold ``_lock``."""
    global _pool, _pool_pid, _atexit_registered
    if _pool is not None and _pool_pid == os.getpid():
        return _pool
    # spawn, not fork: the parent may hold CUDA, threads and locks that a fork would copy.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        WORKERS, mp_context=context, initializer=_init_worker, initargs=(context.Barrier(WORKERS),)
    )
    # Warm up before any deadline runs, so an item's limit never pays for process start-up.
    pings = [pool.submit(_await_siblings) for _ in range(WORKERS)]
    done, late = wait(pings, timeout=_START_TIMEOUT_S)
    errors = [ping.exception() for ping in done if ping.exception() is not None]
    if late or errors:
        _terminate(pool)
        reason = repr(errors[0]) if errors else f"not ready within {_START_TIMEOUT_S:.0f} s"
        raise RuntimeError(
            f"math-verify worker processes failed to start ({reason}). They are spawned, so the "
            "program's main module must be safe to import: guard its work with "
            "`if __name__ == '__main__':`."
        )
    _pool, _pool_pid = pool, os.getpid()
    if not _atexit_registered:
        atexit.register(_shutdown_pool)
        _atexit_registered = True
    return pool


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's workers (a hung sympy call never returns) and drop the pool."""
    # Python < 3.14 has no public way to kill an executor's workers; _processes is the map.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(timeout=2.0)
        if process.is_alive():
            process.kill()
            process.join()


def _discard_pool() -> None:
    """Kill the current pool; the next batch starts a fresh one. Callers hold ``_lock``."""
    global _pool
    if _pool is not None and _pool_pid == os.getpid():
        _terminate(_pool)
    _pool = None


def _shutdown_pool() -> None:
    with _lock:
        _discard_pool()


def _run_checks(
    jobs: Sequence[tuple[str, str | None]],
    *,
    timeout_s: float,
    task: Callable[[str, str | None], _Outcome] = _mv_check,
) -> list[_Outcome]:
    """Run ``task(gold, pred)`` for every job on the worker pool, each within ``timeout_s``.

    All jobs are handed over at once and every worker is kept busy, but a job is submitted
    only when a worker is free: then it starts at once, and its deadline (submission + limit)
    is its own running time, not time spent queued behind a slow neighbour. A late job scores
    TIMEOUT and its pool is killed; jobs that were running beside it are innocent and rerun
    on the fresh pool. A dead worker breaks the whole pool and hides which job killed it, so
    the jobs in flight become suspects and rerun one at a time; a suspect that kills a
    worker alone is a CRASH. ``task`` is replaceable for tests.
    """
    outcomes: list[_Outcome | None] = [None] * len(jobs)
    waiting = deque(range(len(jobs)))
    suspects: set[int] = set()
    in_flight: dict[Future, tuple[int, float]] = {}  # future -> (job index, deadline)
    with _lock:
        _count(calls=len(jobs))
        try:
            while waiting or in_flight:
                pool = _live_pool()
                while waiting and len(in_flight) < WORKERS:
                    if waiting[0] in suspects and in_flight:
                        break  # a suspect runs alone
                    index = waiting.popleft()
                    future = pool.submit(task, *jobs[index])
                    in_flight[future] = (index, time.monotonic() + timeout_s)
                    if index in suspects:
                        break
                next_deadline = min(deadline for _, deadline in in_flight.values())
                done, _ = wait(
                    in_flight, timeout=max(0.0, next_deadline - time.monotonic()), return_when=FIRST_COMPLETED
                )
                broken = []
                for future in done:
                    index, _ = in_flight.pop(future)
                    try:
                        outcomes[index] = future.result()
                    except BrokenProcessPool:
                        broken.append(index)
                    except Exception:  # noqa: BLE001 - a failing check scores 0, it must not stop training
                        outcomes[index] = _Outcome.CRASH
                        _count(crashes=1)
                now = time.monotonic()
                late = [f for f, (_, deadline) in in_flight.items() if deadline <= now and not f.done()]
                for future in late:
                    index, _ = in_flight.pop(future)
                    outcomes[index] = _Outcome.TIMEOUT
                    _count(timeouts=1)
                if broken:
                    beside = [index for index, _ in in_flight.values()]
                    if broken[0] in suspects and len(broken) == 1 and not beside:
                        outcomes[broken[0]] = _Outcome.CRASH  # it ran alone: it killed the worker
                        _count(crashes=1)
                    else:
                        suspects.update(broken + beside)
                        waiting.extendleft(reversed(broken))
                if late or broken:
                    waiting.extendleft(index for index, _ in in_flight.values())
                    in_flight.clear()
                    _discard_pool()
                    _count(restarts=1)
        finally:
            if in_flight:  # interrupted (e.g. KeyboardInterrupt): leave no work running
                _discard_pool()
    return outcomes  # type: ignore[return-value]  # every index was filled above


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def is_correct(response: str, gold: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    r"""Whether the final answer of ``response`` equals ``gold`` (see the module docstring).

    >>> is_correct(r"... so $x = \boxed{0.5}$", r"\frac{1}{2}")
    True
    >>> is_correct(r"The answer is 91.", "19")
    False
    """
    return _score([response], [gold], labels=["gold answer"], timeout_s=timeout_s)[0] == 1.0


def math_reward(completions, answer, *, timeout_s: float = DEFAULT_TIMEOUT_S, **kw) -> list[float]:
    r"""TRL reward function: 1.0 where a completion's final answer equals the row's gold, else 0.0.

    ``completions`` are strings or conversations (the last message's content is scored);
    ``answer`` is the dataset column, aligned with them. TRL's other keyword arguments
    (prompts, completion_ids, trainer_state, ...) are ignored.

    >>> math_reward([r"\boxed{1000}", [{"role": "assistant", "content": "The answer is 7."}]],
    ...             ["#### 1,000", "8"])
    [1.0, 0.0]
    """
    if isinstance(answer, str) or len(answer) != len(completions):
        raise ValueError(
            f"math_reward needs one answer per completion; got {len(completions)} completions "
            f"and answer={answer!r:.80}"
        )
    responses = [_completion_text(completion) for completion in completions]
    labels = [f"answer of row {i}" for i in range(len(responses))]
    return _score(responses, list(answer), labels=labels, timeout_s=timeout_s)


def validate_gold(gold: str, *, where: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    r"""Raise ``ValueError`` unless ``gold`` holds an answer that can be checked.

    For data loaders, to reject a bad row up front; ``where`` names it in the message.

    >>> validate_gold("#### 72", where="row 3 of train.jsonl")
    >>> validate_gold("", where="row 4 of train.jsonl")
    Traceback (most recent call last):
    ...
    ValueError: answer of row 4 of train.jsonl cannot be parsed: ''
    """
    label = f"answer of {where}"
    gold_answer = _gold_text(gold, label=label)
    normalized = _normalize(gold_answer)
    if _as_number(normalized) is not None:
        return
    [outcome] = _run_checks([(gold_answer, None)], timeout_s=timeout_s)
    if outcome is _Outcome.GOLD_UNPARSED:
        raise ValueError(f"{label} cannot be parsed: {gold!r}")
    if outcome in (_Outcome.TIMEOUT, _Outcome.CRASH):
        raise ValueError(f"{label} cannot be parsed within {timeout_s:g} s ({outcome.value}): {gold!r}")


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


def _score(
    responses: Sequence[str], golds: Sequence[str], *, labels: Sequence[str], timeout_s: float
) -> list[float]:
    """1.0/0.0 per (response, gold): fast path here, the rest in one math-verify batch.

    A gold that is not a plain number always goes to math-verify, even when the fast path
    decided the verdict (pred=None then), so an unparseable gold raises whatever the
    response says.
    """
    verdicts: list[bool | None] = []
    jobs: list[tuple[str, str | None]] = []
    job_rows: list[int] = []
    for row, (response, gold, label) in enumerate(zip(responses, golds, labels, strict=True)):
        gold_answer = _gold_text(gold, label=label)
        pred_answer = extract_answer(response)
        verdict, gold_mv, pred_mv = _fast_verdict(pred_answer, gold_answer)
        verdicts.append(verdict)
        if gold_mv is not None:
            jobs.append((gold_mv, pred_mv if verdict is None else None))
            job_rows.append(row)
    for row, outcome in zip(job_rows, _run_checks(jobs, timeout_s=timeout_s) if jobs else [], strict=True):
        if outcome is _Outcome.GOLD_UNPARSED:
            raise ValueError(f"{labels[row]} cannot be parsed: {golds[row]!r}")
        if outcome in (_Outcome.TIMEOUT, _Outcome.CRASH):
            verdicts[row] = False
        elif verdicts[row] is None:
            verdicts[row] = outcome is _Outcome.CORRECT
    return [1.0 if verdict else 0.0 for verdict in verdicts]


def _fast_verdict(pred: str | None, gold: str) -> tuple[bool | None, str | None, str | None]:
    r"""(verdict or None if undecided, gold for math-verify or None, prediction for math-verify).

    Plain numbers on both sides are compared exactly here; equal spellings are equal. The gold
    goes to math-verify unless it is a plain number (which needs no parse check).

    >>> _fast_verdict("0.25", "0.5")
    (False, None, None)
    >>> _fast_verdict(r"2\sqrt{2}", r"\sqrt{8}")
    (None, '\\sqrt{8}', '2\\sqrt{2}')
    """
    gold_norm = _normalize(gold)
    gold_value = _as_number(gold_norm)
    gold_mv = None if gold_value is not None else gold
    if pred is None:
        return False, gold_mv, None
    pred_norm = _normalize(pred)
    pred_value = _as_number(pred_norm)
    if gold_value is not None and pred_value is not None:
        return gold_value == pred_value, None, None
    if pred_norm == gold_norm:
        return True, gold_mv, None
    pred_mv = pred if pred_value is None else _latex_number(pred_value)
    return None, gold if gold_value is None else _latex_number(gold_value), pred_mv
