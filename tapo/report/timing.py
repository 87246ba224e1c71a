"""Where a step's time goes: mean seconds per phase from metrics.jsonl, and the report's table of them.

The phases are those a TAPO step logs (`tapo/time/*`, see `tapo.report.data`): rollouts, synthesis,
score, ots, and update (the rest of TRL's `step_time`). A GRPO run, or a TAPO run from before the
phases were logged, has `step_time` only: the table then shows the total alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from tapo.report.data import MEASURED_PHASES, PHASES, STEP_TIME_KEY, TIME_PREFIX

# What each phase covers, as the report explains it.
PHASE_NOTES = {
    "rollouts": "the policy samples the rollouts",
    "synthesis": "the constructor writes y_ref (synthesis generation; none for aligned)",
    "score": "the reward function scores y_ref",
    "ots": "forward pass for OTS weights (and reference log-probs), rows appended",
    "update": "the rest: rollout rewards and log-probs, selection, the loss's forward and backward",
}

TOTAL_NOTE = "TRL's step_time: the optimizer step's training_step calls (the optimizer's own step is outside it)"


def _number(value) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def phase_seconds(row: dict) -> dict[str, float] | None:
    """Seconds per phase of one metrics row; None when the row logged no phase time (GRPO, older runs).

    A measured phase the row lacks did not run (0); `update` is the rest of `step_time` when the row
    does not carry it (runs from before it was logged).

    >>> phase_seconds({"step_time": 3.0, "tapo/time/rollouts": 2.0, "tapo/time/ots": 0.25})
    {'rollouts': 2.0, 'synthesis': 0.0, 'score': 0.0, 'ots': 0.25, 'update': 0.75}
    >>> phase_seconds({"step_time": 3.0}) is None
    True
    """
    total = _number(row.get(STEP_TIME_KEY))
    values = {phase: _number(row.get(f"{TIME_PREFIX}{phase}")) for phase in PHASES}
    if total is None or all(values[phase] is None for phase in MEASURED_PHASES):
        return None
    seconds = {phase: values[phase] or 0.0 for phase in MEASURED_PHASES}
    update = values["update"]
    seconds["update"] = update if update is not None else total - sum(seconds.values())
    return seconds


@dataclass(frozen=True)
class TimeBreakdown:
    """Mean seconds per step over some steps of a run."""

    steps: tuple[int, ...]  # the steps averaged, in order
    total: float  # mean step_time (s)
    phases: dict[str, float] | None  # mean seconds per phase (PHASES order); None when the run logged none
    warmup_step: int | None  # the run's first timed step, left out of the means (None: kept, the only one)


def time_breakdown(rows: list[dict], *, skip_warmup: bool = True) -> TimeBreakdown | None:
    """Mean seconds per phase over the steps with a `step_time`; None when no row has one.

    The first timed step (warm-up: first calls, allocations) is left out when others remain. Steps
    with phase times are averaged on their own when some steps lack them (a resumed older run), so the
    phases always add up to the total shown.

    >>> rows = [{"step": 1, "step_time": 9.0}, {"step": 2, "step_time": 2.0}, {"step": 3, "step_time": 4.0}]
    >>> time_breakdown(rows)
    TimeBreakdown(steps=(2, 3), total=3.0, phases=None, warmup_step=1)
    """
    timed = sorted((row for row in rows if _number(row.get(STEP_TIME_KEY)) is not None), key=lambda r: r["step"])
    if not timed:
        return None
    warmup = timed[0]["step"] if skip_warmup and len(timed) > 1 else None
    timed = timed[1:] if warmup is not None else timed
    with_phases = [(row, seconds) for row in timed if (seconds := phase_seconds(row)) is not None]
    if with_phases:
        n = len(with_phases)
        return TimeBreakdown(
            steps=tuple(row["step"] for row, _ in with_phases),
            total=sum(row[STEP_TIME_KEY] for row, _ in with_phases) / n,
            phases={phase: sum(seconds[phase] for _, seconds in with_phases) / n for phase in PHASES},
            warmup_step=warmup,
        )
    return TimeBreakdown(
        steps=tuple(row["step"] for row in timed),
        total=sum(row[STEP_TIME_KEY] for row in timed) / len(timed),
        phases=None,
        warmup_step=warmup,
    )


def seconds_text(value: float) -> str:
    """Seconds as the table shows them.

    >>> seconds_text(0.0523), seconds_text(41.25)
    ('0.052', '41.250')
    """
    return f"{value:.3f}"


def _steps_text(steps: tuple[int, ...]) -> str:
    if len(steps) == 1:
        return f"step {steps[0]}"
    return f"{len(steps)} steps ({steps[0]}–{steps[-1]})"


def timing_html(rows: list[dict]) -> str:
    """The report's table: mean seconds per phase, its share of the step and a bar; the total alone when
    the run logged no phases; a note when it logged no step time."""
    breakdown = time_breakdown(rows)
    if breakdown is None:
        return '<p class="note">No step times in metrics.jsonl.</p>'
    over = _steps_text(breakdown.steps)
    if breakdown.warmup_step is not None:
        over += f"; step {breakdown.warmup_step}, the warm-up, left out"
    caption = f"<caption>Mean seconds per step <span>(over {escape(over)})</span></caption>"
    head = "<thead><tr><th>Phase</th><th>Seconds</th><th>Share</th><th></th><th>What</th></tr></thead>"
    body = []
    for phase, seconds in (breakdown.phases or {}).items():
        share = seconds / breakdown.total if breakdown.total > 0 else 0.0
        width = min(max(share, 0.0), 1.0) * 100
        body.append(
            f'<tr data-phase="{phase}"><td>{phase}</td><td>{seconds_text(seconds)}</td><td>{share * 100:.1f}%</td>'
            f'<td class="bar"><span style="width: {width:.1f}%"></span></td><td>{escape(PHASE_NOTES[phase])}</td></tr>'
        )
    body.append(
        f'<tr data-phase="total" class="total"><td>total</td><td>{seconds_text(breakdown.total)}</td>'
        f"<td>{'100.0%' if breakdown.phases else ''}</td><td></td><td>{escape(TOTAL_NOTE)}</td></tr>"
    )
    note = "" if breakdown.phases else (
        '<p class="note">This run logged its total step time only (a GRPO run, or a TAPO run from before the '
        "phases were logged).</p>"
    )
    return f'<table class="times">{caption}{head}<tbody>{"".join(body)}</tbody></table>{note}'
