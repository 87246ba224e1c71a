"""Training curves as inline SVG line charts (no plotting library, no script): one chart per metric."""

from __future__ import annotations

import math
from html import escape

# What the report draws, in this order, with the title shown above each chart. A metric the run did
# not log (a GRPO run has no tapo/ keys, only an SDPO run has sdpo/ ones; `kl` only with a KL term) is simply
# left out.
CHARTS: tuple[tuple[str, str], ...] = (
    ("reward", "Reward"),
    ("accuracy", "Accuracy"),
    ("completions/mean_length", "Response length (tokens)"),
    ("entropy", "Entropy (rollouts)"),
    ("tapo/entropy", "Entropy (constructed rows)"),
    ("kl", "KL to reference"),
    ("loss", "Loss"),
    ("tapo/eligible_frac", "Eligible-query share"),
    ("tapo/pairs", "Construction pairs"),
    ("tapo/parsed_frac", "Constructions parsed"),
    ("tapo/truncated_frac", "Constructions cut off by their budget"),
    ("tapo/ref_correct_frac", "Constructions correct"),
    ("tapo/ref_groups_degenerate_frac", "Degenerate reflection groups"),
    ("tapo/ots_w_mean", "OTS weight mean"),
    ("tapo/ots_w_low_frac", "OTS weights at w_min"),
    ("tapo/prefix_fidelity", "Prefix fidelity"),
    ("tapo/no_marker_frac", "Constructions without a reflection marker"),
    ("tapo/ref_adv_mean", "Reflection advantage mean"),
    ("tapo/synthesis_tokens", "Synthesis tokens"),
    ("tapo/synthesis_seconds", "Synthesis seconds"),
    # SDPO (TRL's SDPOTrainer)
    ("sdpo/distillation_loss", "Self-distillation loss (SDPO)"),
    ("self_distillation/policy_loss", "Policy-gradient loss (SDPO, distillation_weight < 1)"),
    ("self_distillation/reprompt_sample_fraction", "Rollouts distilled (with a teacher context)"),
    ("self_distillation/success_group_fraction", "Groups with a successful rollout"),
)
MAX_MARKERS = 80  # above this many points a chart draws the line only


def format_number(value: float) -> str:
    """A short label for an axis tick or a tooltip: 3 significant digits, no float noise.

    >>> [format_number(v) for v in (0.30000000000000004, 12500.0, 3.0, -0.000123, 0.0)]
    ['0.3', '1.25e+04', '3', '-0.000123', '0']
    """
    return f"{value:.3g}"


def tick_labels(ticks: list[float]) -> list[str]:
    """Labels for a row of ticks: as few significant digits as keep neighbouring ticks apart.

    >>> tick_labels([0.1805, 0.181, 0.1815])
    ['0.1805', '0.181', '0.1815']
    >>> tick_labels([0.0, 0.5, 1.0])
    ['0', '0.5', '1']
    """
    for digits in range(3, 13):
        labels = [f"{t:.{digits}g}" for t in ticks]
        if len(set(labels)) == len(labels):
            return labels
    return labels


def nice_ticks(low: float, high: float, *, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering [low, high].

    >>> nice_ticks(0.0, 1.0)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    >>> nice_ticks(1, 3, integer=True)
    [1, 2, 3]
    >>> nice_ticks(0.5, 0.5)
    [0.5]
    """
    if not high > low:
        return [int(low) if integer else low]
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1, round(step))
    first = math.ceil(low / step - 1e-9)
    ticks = []
    k = first
    while k * step <= high + step * 1e-9:
        value = k * step
        ticks.append(int(round(value)) if integer else round(value, 12))
        k += 1
    return ticks


def metric_series(rows: list[dict], key: str) -> list[tuple[int, float]]:
    """(step, value) for each row that logged `key` as a finite number, in step order.

    >>> metric_series([{"step": 2, "kl": 0.5}, {"step": 1, "kl": 0.1}, {"step": 3}, {"step": 4, "kl": float("nan")}], "kl")
    [(1, 0.1), (2, 0.5)]
    """
    points = []
    for row in rows:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            points.append((row["step"], float(value)))
    return sorted(points)


def line_chart(points: list[tuple[int, float]], *, title: str, key: str, width: int = 320, height: int = 200) -> str:
    """One SVG line chart: title, both axes with ticks, one polyline point (and marker) per step.

    >>> svg = line_chart([(1, 0.0), (2, 0.5), (3, 1.0)], title="Reward", key="reward")
    >>> svg.count("<polyline"), svg.split('points="')[1].split('"')[0].count(",")
    (1, 3)
    """
    left, right, top, bottom = 52, 12, 28, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    steps = [s for s, _ in points]
    values = [v for _, v in points]
    x_ticks = nice_ticks(min(steps), max(steps), count=5, integer=True)
    y_low, y_high = min(values), max(values)
    if y_high == y_low:  # a flat line sits in the middle of a small band around its value
        pad = abs(y_low) * 0.1 or 1.0
        y_low, y_high = y_low - pad, y_high + pad
    y_ticks = nice_ticks(y_low, y_high, count=4)
    x_low, x_high = min(x_ticks[0], steps[0]), max(x_ticks[-1], steps[-1])
    y_low, y_high = min(y_ticks[0], y_low), max(y_ticks[-1], y_high)

    def x_of(step: float) -> float:
        return left + (plot_w / 2 if x_high == x_low else (step - x_low) / (x_high - x_low) * plot_w)

    def y_of(value: float) -> float:
        return top + plot_h - (value - y_low) / (y_high - y_low) * plot_h

    out = [
        f'<svg class="chart" data-metric="{escape(key)}" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)} ({escape(key)})</title>",
        f'<text class="chart-title" x="{left}" y="17">{escape(title)}</text>',
    ]
    for tick, label in zip(y_ticks, tick_labels(y_ticks)):
        y = y_of(tick)
        out.append(f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{left - 5}" y="{y + 3.5:.1f}" text-anchor="end">{label}</text>')
    for tick in x_ticks:
        x = x_of(tick)
        out.append(f'<line class="axis" x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}"/>')
        out.append(f'<text class="tick" x="{x:.1f}" y="{top + plot_h + 15}" text-anchor="middle">{tick}</text>')
    out.append(f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}"/>')
    out.append(f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}"/>')
    out.append(f'<text class="axis-label" x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">step</text>')
    coords = " ".join(f"{x_of(s):.1f},{y_of(v):.1f}" for s, v in points)
    out.append(f'<polyline class="series" points="{coords}"/>')
    if len(points) <= MAX_MARKERS:
        for s, v in points:
            out.append(
                f'<circle class="marker" cx="{x_of(s):.1f}" cy="{y_of(v):.1f}" r="2.5">'
                f"<title>step {s}: {format_number(v)}</title></circle>"
            )
    out.append("</svg>")
    return "".join(out)


def chart_grid(rows: list[dict], *, charts: tuple[tuple[str, str], ...] = CHARTS) -> str:
    """Small multiples: a chart for each metric in `charts` that the rows logged; a note when none did."""
    svgs = [line_chart(points, title=title, key=key) for key, title in charts if (points := metric_series(rows, key))]
    if not svgs:
        return '<p class="note">No metrics to plot: metrics.jsonl has no rows with the charted keys.</p>'
    return '<div class="charts">' + "".join(f'<figure class="chart-cell">{svg}</figure>' for svg in svgs) + "</div>"
