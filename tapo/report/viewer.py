"""The constructed-trajectory viewer: one card per record of constructions.jsonl, filtered by inline JS."""

from __future__ import annotations

from html import escape

from tapo.report.charts import format_number
from tapo.report.spans import split_trajectory

LEGEND = (
    '<p class="legend"><span class="swatch span-prefix">kept prefix of y-</span>'
    '<span class="swatch span-reflection">reflection</span>'
    '<span class="swatch span-correction">correction</span></p>'
)


def outcome(reward) -> str:
    """"right" when the construction's reward is positive (as in DCS), "wrong" otherwise, "unknown" if unscored.

    >>> outcome(1.0), outcome(0.0), outcome(None)
    ('right', 'wrong', 'unknown')
    """
    if not isinstance(reward, (int, float)) or isinstance(reward, bool):
        return "unknown"
    return "right" if reward > 0 else "wrong"


def trajectory_html(record: dict) -> str:
    """The trajectory text as three coloured spans (every character HTML-escaped).

    >>> trajectory_html({"text": "a<b\\nWait.\\nc", "reflection_start_char": 3, "correction_start_char": 10})
    '<pre class="trajectory"><span class="span-prefix">a&lt;b</span><span class="span-reflection">\\nWait.\\n</span><span class="span-correction">c</span></pre>'
    """
    spans = split_trajectory(
        record["text"],
        reflection_start_char=record.get("reflection_start_char"),
        correction_start_char=record.get("correction_start_char"),
    )
    return (
        '<pre class="trajectory">'
        f'<span class="span-prefix">{escape(spans.prefix)}</span>'
        f'<span class="span-reflection">{escape(spans.reflection)}</span>'
        f'<span class="span-correction">{escape(spans.correction)}</span>'
        "</pre>"
    )


def _text(value) -> str:
    if isinstance(value, float):
        return escape(format_number(value))
    return escape("" if value is None else str(value))


def _number_badge(label: str, value, *, css: str) -> str:
    shown = format_number(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"
    return f'<span class="badge {css}">{label} {escape(shown)}</span>'


def construction_card(record: dict) -> str:
    """One record: badges, provenance, question, gold answer, y- and y+ (collapsed), analysis, trajectory."""
    reward, advantage = record.get("reward"), record.get("advantage")
    result = outcome(reward)
    sign = "pos" if isinstance(advantage, (int, float)) and advantage > 0 else "neg"
    meta = " · ".join(
        f"{name} {_text(record[key])}"
        for name, key in (
            ("query", "query_id"), ("y- #", "negative_index"), ("y+ #", "positive_index"), ("strategy", "strategy"),
            ("prefix tokens", "prefix_tokens"), ("prefix fidelity", "prefix_fidelity"), ("tokens", "tokens"),
            ("generated", "generated_tokens"), ("OTS w mean", "ots_w_mean"),
        )
        if record.get(key) is not None
    )
    analysis = record.get("analysis") or ""
    return (
        f'<article class="construction" data-step="{_text(record.get("step"))}" data-outcome="{result}">'
        "<header>"
        f'<span class="badge">step {_text(record.get("step"))}</span>'
        + _number_badge("reward", reward, css=result)
        + _number_badge("advantage", advantage, css=sign)
        + f'<span class="meta">{meta}</span>'
        "</header>"
        f'<div class="pair"><div><h4>Question</h4><pre class="question">{_text(record.get("question"))}</pre></div>'
        f'<div><h4>Gold answer</h4><pre class="answer">{_text(record.get("answer"))}</pre></div></div>'
        '<div class="pair">'
        f'<details><summary>Wrong response (y-)</summary><pre class="negative">{_text(record.get("negative"))}</pre></details>'
        f'<details><summary>Reference response (y+)</summary><pre class="positive">{_text(record.get("positive"))}</pre></details>'
        "</div>"
        + (f'<h4>Analysis</h4><pre class="analysis">{_text(analysis)}</pre>' if analysis else "")
        + "<h4>Constructed trajectory</h4>"
        + trajectory_html(record)
        + "</article>"
    )


def step_options(records: list[dict]) -> str:
    """<option>s for the step filter: "all", then each step present, ascending.

    >>> step_options([{"step": 3}, {"step": 1}, {"step": 3}])
    '<option value="all">all steps</option><option value="1">1</option><option value="3">3</option>'
    """
    steps = sorted({r.get("step") for r in records if r.get("step") is not None}, key=lambda s: (str(type(s)), s))
    return '<option value="all">all steps</option>' + "".join(
        f'<option value="{_text(s)}">{_text(s)}</option>' for s in steps
    )


def viewer_html(records: list[dict], *, total: int) -> str:
    """The viewer section body: a cap note, the legend, the filters and the cards (newest last)."""
    if not records:
        return '<p class="note">No constructed trajectories in this run (a GRPO run makes none).</p>'
    note = (
        f'<p class="note">constructions.jsonl holds {total} records; the last {len(records)} are shown '
        "(change with --max-constructions).</p>"
        if total > len(records)
        else ""
    )
    filters = (
        '<div class="filters">'
        f'<label>Step <select id="filter-step">{step_options(records)}</select></label>'
        '<label>Reward <select id="filter-reward"><option value="all">all</option>'
        '<option value="right">right (reward &gt; 0)</option><option value="wrong">wrong</option></select></label>'
        f'<span id="shown-count" data-shown="">{len(records)} constructions (filters need JavaScript)</span>'
        f"{LEGEND}</div>"
    )
    return note + filters + '<div id="constructions">' + "".join(construction_card(r) for r in records) + "</div>"
