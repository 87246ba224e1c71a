"""`tapo filter`: keep the queries whose estimated pass rate lies in [low, high] (DESIGN 1.7).

The paper filters the RL queries to those the cold-start model solves with pass rate in
[0.125, 0.875], so that difficulty-aware selection actually fires. Each query's pass rate is
estimated from n samples of the ordinary training prompt (seeded, batched), scored with the
rollout reward.

DIR/
  kept.jsonl        the kept queries: id, problem, answer, pass_rate (`tapo train` reads it as data.source)
  pass_rates.json   every query's pass rate, and the settings
  histogram.txt     a text histogram of the pass rates (also printed)
  histogram.png     the same as a picture
  config.yaml       the resolved filter config
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from tapo.coldstart.config import FilterConfig, keep
from tapo.config import save_config

KEPT_FILE = "kept.jsonl"


def pass_rate_counts(pass_rates: Sequence[float], *, samples: int) -> list[int]:
    """How many queries solved k of `samples` samples, for k = 0..samples.

    >>> pass_rate_counts([0.0, 0.25, 0.25, 1.0], samples=4)
    [1, 2, 0, 0, 1]
    """
    counts = [0] * (samples + 1)
    for rate in pass_rates:
        counts[round(rate * samples)] += 1
    return counts


def text_histogram(pass_rates: Sequence[float], *, samples: int, low: float, high: float, width: int = 40) -> str:
    """One line per possible pass rate k/n: the count, a bar, and '*' on the rates that are kept.

    >>> print(text_histogram([0.0, 0.5, 0.5, 1.0], samples=2, low=0.25, high=0.75, width=4))
    pass rate  queries  (n = 2 samples; * = kept, 0.25..0.75)
      0/2 0.00       1  ##
    * 1/2 0.50       2  ####
      2/2 1.00       1  ##
    kept 2 of 4 queries
    """
    counts = pass_rate_counts(pass_rates, samples=samples)
    top = max(counts) or 1
    lines = [f"pass rate  queries  (n = {samples} samples; * = kept, {low:g}..{high:g})"]
    for k, count in enumerate(counts):
        mark = "*" if keep(k / samples, low=low, high=high) else " "
        bar = "#" * round(width * count / top)
        lines.append(f"{mark} {k}/{samples} {k / samples:.2f} {count:7d}  {bar}".rstrip())
    kept = sum(keep(p, low=low, high=high) for p in pass_rates)
    lines.append(f"kept {kept} of {len(pass_rates)} queries")
    return "\n".join(lines)


def plot_histogram(pass_rates: Sequence[float], path: Path, *, samples: int, low: float, high: float) -> None:
    """The histogram as a PNG (matplotlib, Agg backend): kept bars dark, the others light."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = pass_rate_counts(pass_rates, samples=samples)
    xs = [k / samples for k in range(samples + 1)]
    colors = ["#1f77b4" if keep(x, low=low, high=high) else "#c7c7c7" for x in xs]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(xs, counts, width=0.8 / samples, color=colors)
    ax.set_xlabel(f"pass rate ({samples} samples per query)")
    ax.set_ylabel("queries")
    kept = sum(keep(p, low=low, high=high) for p in pass_rates)
    ax.set_title(f"kept {kept} of {len(pass_rates)} queries with pass rate in [{low:g}, {high:g}]")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def estimate_pass_rates(config: FilterConfig, *, progress: bool = False) -> tuple[list, list[float]]:
    """(records, pass rate of each): `filter.samples` samples per query from `config.model`, scored."""
    from tapo.coldstart.build import load_queries
    from tapo.sampling import make_sampler, sample_query_groups
    from tapo.rewards import math_reward

    section = config.filter
    queries = load_queries(config)
    sampler = make_sampler(config.model.name, backend=section.backend, dtype=config.model.dtype, seed=config.seed)
    groups = sample_query_groups(sampler, queries, section, seed=config.seed, tag="filter samples", progress=progress)
    texts = [c.text for group in groups for c in group]
    answers = [q.answer for q in queries for _ in range(section.samples)]
    scores = math_reward(texts, answers) if texts else []
    n = section.samples
    rates = [sum(scores[i * n : (i + 1) * n]) / n for i in range(len(queries))]
    return queries, rates


def run_filter(config: FilterConfig, *, output_dir: str | Path | None = None, progress: bool = False) -> dict:
    """Estimate pass rates, keep [low, high], write DIR (see the module docstring); returns a summary."""
    section = config.filter
    out = Path(output_dir or config.output_dir)
    queries, rates = estimate_pass_rates(config, progress=progress)  # empty data is an error here, nothing written
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    kept = [(q, r) for q, r in zip(queries, rates) if keep(r, low=section.low, high=section.high)]
    partial = out / (KEPT_FILE + ".partial")
    with partial.open("w", encoding="utf-8") as f:
        for q, rate in kept:
            f.write(json.dumps({"id": q.id, "problem": q.problem, "answer": q.answer, "pass_rate": rate}) + "\n")
    os.replace(partial, out / KEPT_FILE)  # whole or absent: an interrupted filter leaves no half-kept list
    summary = {
        "model": config.model.name,
        "data": config.data.source,
        "samples": section.samples,
        "low": section.low,
        "high": section.high,
        "queries": len(queries),
        "kept": len(kept),
        "mean_pass_rate": sum(rates) / len(rates) if rates else None,
        "counts": pass_rate_counts(rates, samples=section.samples),
    }
    (out / "pass_rates.json").write_text(
        json.dumps({**summary, "pass_rates": {q.id: r for q, r in zip(queries, rates)}}, indent=2) + "\n"
    )
    histogram = text_histogram(rates, samples=section.samples, low=section.low, high=section.high)
    (out / "histogram.txt").write_text(histogram + "\n")
    plot_histogram(rates, out / "histogram.png", samples=section.samples, low=section.low, high=section.high)
    why = None if kept else why_none_kept(rates, low=section.low, high=section.high)
    return {**summary, "output_dir": str(out), "histogram": histogram, "why_none_kept": why}


def why_none_kept(pass_rates: Sequence[float], *, low: float, high: float) -> str:
    """Why no pass rate lies in [low, high]: where the rates are instead, and what to change.

    >>> why_none_kept([0.0, 0.0], low=0.125, high=0.875)  # doctest: +NORMALIZE_WHITESPACE
    'all 2 pass rates are 0 (no sample was right), below the kept range [0.125, 0.875]; lower filter.low (--low),
     or filter with a stronger model or easier data'
    >>> why_none_kept([0.25, 1.0], low=0.4, high=0.6)  # doctest: +NORMALIZE_WHITESPACE
    'the 2 pass rates span 0.25..1 but none lies in the kept range [0.4, 0.6]; widen filter.low..filter.high
     (--low, --high), or raise filter.samples (--samples) for finer pass rates'
    """
    lo, hi, n = min(pass_rates), max(pass_rates), len(pass_rates)
    kept_range = f"the kept range [{low:g}, {high:g}]"
    if hi < low:
        spread = f"all {n} pass rates are " + ("0 (no sample was right)" if hi == 0 else f"{hi:g} or less")
        return f"{spread}, below {kept_range}; lower filter.low (--low), or filter with a stronger model or easier data"
    if lo > high:
        spread = f"all {n} pass rates are " + ("1 (every sample was right)" if lo == 1 else f"{lo:g} or more")
        return f"{spread}, above {kept_range}; raise filter.high (--high), or filter harder data"
    return (
        f"the {n} pass rates span {lo:g}..{hi:g} but none lies in {kept_range}; widen filter.low..filter.high "
        "(--low, --high), or raise filter.samples (--samples) for finer pass rates"
    )
