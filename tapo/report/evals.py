"""Evaluation results (the result.json that `tapo eval` writes) as tables: benchmarks by Pass@k."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

RESULT_FILE = "result.json"


def _stat(value, *, where: str) -> dict:
    if not isinstance(value, dict) or not all(isinstance(value.get(k), (int, float)) for k in ("mean", "std")):
        raise ValueError(f"{where}: expected {{'mean': number, 'std': number}}, got {value!r}")
    return value


def load_eval_result(path: str | Path) -> dict:
    """A result JSON (a file, or a directory holding result.json), checked for the keys the table reads.

    Each benchmark needs `pass_at_k` ({k: {"mean", "std"}}); maj_at_k, avg_at_n, n_problems and
    mean_response_tokens are shown when present. The returned dict gains "source": the file read.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RESULT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"evaluation result not found: {path}")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {error.lineno}: invalid JSON ({error.msg})") from None
    if not isinstance(result, dict) or not isinstance(result.get("benchmarks"), dict) or not result["benchmarks"]:
        raise ValueError(f"{path}: key 'benchmarks' must be a non-empty object of benchmark results")
    for name, bench in result["benchmarks"].items():
        where = f"{path}: benchmarks.{name}"
        if not isinstance(bench, dict) or not isinstance(bench.get("pass_at_k"), dict) or not bench["pass_at_k"]:
            raise ValueError(f"{where}: key 'pass_at_k' must be a non-empty object {{k: {{mean, std}}}}")
        for table in ("pass_at_k", "maj_at_k"):
            for k, stat in (bench.get(table) or {}).items():
                if not str(k).isdigit():
                    raise ValueError(f"{where}.{table}: key {k!r} is not a k (a positive integer)")
                _stat(stat, where=f"{where}.{table}.{k}")
        if bench.get("avg_at_n") is not None:
            _stat(bench["avg_at_n"], where=f"{where}.avg_at_n")
    return {**result, "source": str(path)}


def mean_std(stat: dict | None, *, percent: bool = True) -> str:
    """"mean ± std", as percentages by default (the estimators give probabilities).

    >>> mean_std({"mean": 0.625, "std": 0.0312})
    '62.50 ± 3.12'
    >>> mean_std(None)
    '–'
    """
    if stat is None:
        return "–"
    scale = 100.0 if percent else 1.0
    return f"{stat['mean'] * scale:.2f} ± {stat['std'] * scale:.2f}"


def _protocol_line(protocol: dict) -> str:
    labels = (("samples", "samples"), ("runs", "runs"), ("temperature", "T"), ("top_p", "top-p"),
              ("max_tokens", "max tokens"), ("seed", "seed"))
    return ", ".join(f"{label} {protocol[key]}" for key, label in labels if protocol.get(key) is not None)


def eval_table(result: dict) -> str:
    """One table: a row per benchmark, a Pass@k column per k (mean ± std over runs, in %), then the
    largest Maj@k, Avg@n and the mean response length when the result has them."""
    benches = result["benchmarks"]
    ks = sorted({int(k) for b in benches.values() for k in b["pass_at_k"]})
    maj_ks = sorted({int(k) for b in benches.values() for k in (b.get("maj_at_k") or {})})
    has_avg = any(b.get("avg_at_n") is not None for b in benches.values())
    has_tokens = any(isinstance(b.get("mean_response_tokens"), (int, float)) for b in benches.values())
    head = ["Benchmark", "n"] + [f"Pass@{k}" for k in ks]
    head += [f"Maj@{maj_ks[-1]}"] if maj_ks else []
    head += ["Avg@n"] if has_avg else []
    head += ["Mean tokens"] if has_tokens else []
    rows = []
    for name, b in benches.items():
        cells = [escape(str(name)), escape(str(b.get("n_problems", "–")))]
        cells += [mean_std(b["pass_at_k"].get(str(k))) for k in ks]
        cells += [mean_std((b.get("maj_at_k") or {}).get(str(maj_ks[-1])))] if maj_ks else []
        cells += [mean_std(b.get("avg_at_n"))] if has_avg else []
        if has_tokens:
            tokens = b.get("mean_response_tokens")
            cells.append(f"{tokens:.0f}" if isinstance(tokens, (int, float)) else "–")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    caption = (
        f'<caption>{escape(str(result.get("model", "unknown model")))} '
        f'<span>({escape(_protocol_line(result.get("protocol") or {}))}; {escape(result["source"])}; '
        "values in %, mean ± std over runs)</span></caption>"
    )
    thead = "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead>"
    return f'<table class="eval">{caption}{thead}<tbody>{"".join(rows)}</tbody></table>'
