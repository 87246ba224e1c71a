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


def eval_comparison(results: list[dict]) -> str:
    """Pass@1 of several evaluations side by side: a row per benchmark they share, a column per model (in the
    order given), then the change from the first to the last in points; "" for fewer than two results.

    >>> a = {"model": "before", "benchmarks": {"b": {"n_problems": 4, "pass_at_k": {"1": {"mean": 0.25, "std": 0.0}}}}}
    >>> b = {"model": "after", "benchmarks": {"b": {"n_problems": 4, "pass_at_k": {"1": {"mean": 0.5, "std": 0.1}}}}}
    >>> "<td>b</td><td>4</td><td>25.00 ± 0.00</td><td>50.00 ± 10.00</td><td>+25.00</td>" in eval_comparison([a, b])
    True
    """
    if len(results) < 2:
        return ""
    shared = [name for name in results[0]["benchmarks"] if all(name in r["benchmarks"] for r in results[1:])]
    if not shared:
        return '<p class="note">The evaluations share no benchmark to compare.</p>'
    head = ["Benchmark", "n"] + [f"Pass@1: {r.get('model', 'unknown model')}" for r in results] + ["Δ (points)"]
    rows = []
    for name in shared:
        stats = [r["benchmarks"][name]["pass_at_k"].get("1") for r in results]
        cells = [escape(str(name)), escape(str(results[0]["benchmarks"][name].get("n_problems", "–")))]
        cells += [mean_std(stat) for stat in stats]
        delta = (stats[-1]["mean"] - stats[0]["mean"]) * 100 if stats[0] and stats[-1] else None
        cells.append("–" if delta is None else f"{delta:+.2f}")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    caption = "<caption>Held-out Pass@1, side by side <span>(values in %, mean ± std over runs)</span></caption>"
    thead = "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead>"
    return f'<table class="eval compare">{caption}{thead}<tbody>{"".join(rows)}</tbody></table>'
