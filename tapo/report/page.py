"""Assemble the report: one static HTML file with the run header, curves, constructions and eval tables."""

from __future__ import annotations

from html import escape
from pathlib import Path

import yaml

from tapo.report.assets import CSS, JS
from tapo.report.charts import chart_grid
from tapo.report.data import RunData, load_run
from tapo.report.evals import eval_comparison, eval_table, load_eval_result
from tapo.report.timing import timing_html
from tapo.report.viewer import viewer_html

REPORT_FILE = "report.html"


def config_summary(config: dict, *, steps_logged: int, constructions: int) -> list[tuple[str, str]]:
    """The header's (label, value) pairs from a run's config.yaml; keys the config lacks are left out.

    >>> config_summary({"algorithm": "grpo", "model": {"name": "m"}, "trainer": {"max_steps": 5}}, steps_logged=5, constructions=0)
    [('algorithm', 'grpo'), ('model', 'm'), ('steps', '5 logged / 5 planned')]
    """
    model = config.get("model") or {}
    tapo = config.get("tapo") or {}
    sdpo = config.get("sdpo") or {}
    trainer = config.get("trainer") or {}
    data = config.get("data") or {}
    algorithm = config.get("algorithm")
    planned = trainer.get("max_steps")
    pairs = [
        ("algorithm", algorithm),
        ("model", model.get("name") if isinstance(model, dict) else model),
        ("construction", tapo.get("construction") if algorithm == "tapo" and isinstance(tapo, dict) else None),
        ("teacher", sdpo.get("teacher_model_kind") if algorithm == "sdpo" and isinstance(sdpo, dict) else None),
        ("data", data.get("source") if isinstance(data, dict) else None),
        ("seed", config.get("seed")),
        ("steps", f"{steps_logged} logged" + (f" / {planned} planned" if planned is not None else "")),
        ("constructions", constructions if constructions else None),
    ]
    return [(label, str(value)) for label, value in pairs if value is not None]


def header_html(run: RunData) -> str:
    """Title, the run directory's path, the config summary and the full config (collapsed)."""
    summary = config_summary(run.config, steps_logged=len(run.metrics), constructions=run.constructions_total)
    items = "".join(f"<li><b>{escape(label)}</b>{escape(value)}</li>" for label, value in summary)
    full = (
        f"<details><summary>Full config.yaml</summary><pre>{escape(yaml.safe_dump(run.config, sort_keys=False))}</pre></details>"
        if run.config
        else '<p class="note">No config.yaml in the run directory.</p>'
    )
    return (
        f"<header><h1>TAPO run report: {escape(run.path.name)}</h1>"
        f'<div class="path">{escape(str(run.path.resolve()))}</div>'
        f'<ul class="summary">{items}</ul>{full}</header>'
    )


def render_page(run: RunData, *, evals: list[dict] = ()) -> str:
    """The whole page as a string (every value from the run HTML-escaped; script and style inline)."""
    sections = [
        ("curves", "Training curves", chart_grid(run.metrics)),
        ("time", "Where the time goes", timing_html(run.metrics)),
    ]
    if evals:  # before the (long) list of constructions
        tables = "".join(f'<div class="eval-cell">{eval_table(result)}</div>' for result in evals)
        sections.append(("evaluation", "Evaluation", f'{eval_comparison(list(evals))}<div class="evals">{tables}</div>'))
    sections.append(("constructions", "Constructed trajectories", viewer_html(run.constructions, total=run.constructions_total)))
    nav = "<nav>" + "".join(f'<a href="#{anchor}">{title}</a>' for anchor, title, _ in sections) + "</nav>"
    body = "".join(f'<section id="{anchor}"><h2>{title}</h2>{html}</section>' for anchor, title, html in sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>TAPO report: {escape(run.path.name)}</title><style>{CSS}</style></head>"
        f"<body>{header_html(run)}{nav}{body}<script>{JS}</script></body></html>\n"
    )


def write_report(
    run_dir: str | Path,
    *,
    evals: list[str | Path] = (),
    output: str | Path | None = None,
    max_constructions: int = 500,
) -> Path:
    """Read a run directory (and eval results), write the report page, return its path.

    The default output is RUN_DIR/report.html. Missing run directory or metrics.jsonl ->
    FileNotFoundError; a bad JSON line -> ValueError naming the file and line.
    """
    run = load_run(run_dir, max_constructions=max_constructions)
    results = [load_eval_result(path) for path in evals]
    output = Path(output) if output is not None else run.path / REPORT_FILE
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_page(run, evals=results), encoding="utf-8")
    return output
