"""Read what a run directory holds (config.yaml, metrics.jsonl, constructions.jsonl) for the report."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import yaml

METRICS_FILE = "metrics.jsonl"
CONSTRUCTIONS_FILE = "constructions.jsonl"
CONFIG_FILE = "config.yaml"
# Where a TAPO step's time goes (metrics.jsonl, each step): TRL's `step_time` is the optimizer step's
# `training_step` calls summed (generation, scoring, the loss's forward and backward; `optimizer.step()`
# runs after them, outside it). TAPO logs the seconds of each measured phase inside it, 0 for a phase
# that did not run, and `update`, the rest of `step_time` (mostly the forward and backward passes).
STEP_TIME_KEY = "step_time"
TIME_PREFIX = "tapo/time/"
MEASURED_PHASES = ("rollouts", "synthesis", "score", "ots")
PHASES = (*MEASURED_PHASES, "update")


@dataclass(frozen=True)
class RunData:
    """What the report shows of one run directory."""

    path: Path
    config: dict  # config.yaml as written by `tapo train` ({} when the file is absent)
    metrics: list[dict]  # one row per step, each with an int "step"
    constructions: list[dict]  # the last `max_constructions` records of constructions.jsonl
    constructions_total: int  # how many records the file holds (more than shown when capped)


def _row(path: Path, number: int, line: str) -> dict:
    """One JSONL line as a JSON object, or a ValueError naming the file and line."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {number}: invalid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(row, dict):
        raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
    return row


def iter_jsonl(path: str | Path):
    """Yield (line number, object) for each non-blank line of a JSONL file; bad lines name file and line.

    >>> import tempfile, os
    >>> f = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False); _ = f.write('{"a": 1}\\n\\n[2]\\n'); f.close()
    >>> list(iter_jsonl(f.name))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...jsonl, line 3: expected a JSON object, got list
    """
    path = Path(path)
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield number, _row(path, number, line)


def read_jsonl(path: str | Path) -> tuple[list[dict], bool]:
    """(rows, whether a cut-off last line was dropped) of a JSONL file a run appends to; no file, no rows.

    An interruption can cut the last line short, so an unparseable last line is dropped; a broken
    line anywhere else is an error naming the file and line (as `iter_jsonl`).
    """
    path = Path(path)
    if not path.is_file():
        return [], False
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last complete row
    rows, cut = [], False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if number == len(lines):
            try:
                json.loads(line)
            except json.JSONDecodeError:
                cut = True
                continue
        rows.append(_row(path, number, line))
    return rows, cut


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of metrics.jsonl, each checked to carry an integer "step"."""
    rows = []
    for number, row in iter_jsonl(path):
        step = row.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            raise ValueError(f"{path}, line {number}: key 'step' must be an integer, got {step!r}")
        rows.append(row)
    return rows


def generation_rows(rows: list[dict]) -> list[dict]:
    """The metrics rows of steps that generated: a step that reuses a generation (num_iterations > 1,
    steps_per_generation > accumulation) logs that generation's tapo/* counts again, with 0 s of rollouts.

    >>> [r["step"] for r in generation_rows([{"step": 1, "tapo/time/rollouts": 2.0}, {"step": 2, "tapo/time/rollouts": 0.0}, {"step": 3}])]
    [1, 3]
    """
    return [row for row in rows if row.get(f"{TIME_PREFIX}rollouts") is None or row[f"{TIME_PREFIX}rollouts"] > 0]


def construction_counts(rows: list[dict]) -> tuple[int, int]:
    """(built, tried) constructions over metrics rows: `tapo/built` and `tapo/tried` of each generation, the
    pairs whose construction ran (a deferred run's pairs ride to the next generation; the last one's are
    dropped, `tapo/deferred_dropped`, never tried).

    >>> construction_counts([{"tapo/tried": 4.0, "tapo/built": 3.0}, {"tapo/tried": 4.0, "tapo/built": 3.0,
    ...                       "tapo/time/rollouts": 0.0}, {"loss": 1.0}])
    (3, 4)
    """
    generated = generation_rows(rows)
    return (round(sum(row.get("tapo/built", 0.0) for row in generated)),
            round(sum(row.get("tapo/tried", 0.0) for row in generated)))


def read_constructions(path: str | Path, *, keep_last: int) -> tuple[list[dict], int]:
    """The last `keep_last` records of constructions.jsonl and the total count; each needs a string "text"."""
    kept: deque[dict] = deque(maxlen=max(keep_last, 0))
    total = 0
    for number, row in iter_jsonl(path):
        if not isinstance(row.get("text"), str):
            raise ValueError(f"{path}, line {number}: key 'text' must be a string, got {row.get('text')!r}")
        for key in ("reflection_start_char", "correction_start_char"):
            value = row.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"{path}, line {number}: key {key!r} must be an integer, got {value!r}")
        kept.append(row)
        total += 1
    return list(kept), total


def read_config(path: str | Path) -> dict:
    """config.yaml as a dict; {} when absent (the report still renders without it)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: invalid YAML ({error})") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(config).__name__}")
    return config


def load_run(run_dir: str | Path, *, max_constructions: int = 500) -> RunData:
    """Everything the report needs from a run directory; metrics.jsonl is required, the rest optional."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    metrics_path = run_dir / METRICS_FILE
    if not metrics_path.is_file():
        raise FileNotFoundError(f"no {METRICS_FILE} in the run directory: {metrics_path}")
    metrics = read_metrics(metrics_path)
    constructions_path = run_dir / CONSTRUCTIONS_FILE
    constructions, total = (
        read_constructions(constructions_path, keep_last=max_constructions) if constructions_path.is_file() else ([], 0)
    )
    return RunData(
        path=run_dir,
        config=read_config(run_dir / CONFIG_FILE),
        metrics=metrics,
        constructions=constructions,
        constructions_total=total,
    )
