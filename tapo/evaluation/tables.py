"""Markdown tables of evaluation results: one model (`result.md`) or several side by side (`tapo compare`).

Numbers are percentages with two decimals, `mean ± std` over runs, as in the paper's tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def pct(stat: Mapping[str, float] | float | None, *, std: bool = True) -> str:
    """A fraction (or {"mean", "std"}) as a percentage; "–" for a missing value.

    >>> pct({"mean": 0.5292, "std": 0.0113}), pct(0.25), pct(None)
    ('52.92 ± 1.13', '25.00', '–')
    """
    if stat is None:
        return "–"
    if isinstance(stat, Mapping):
        text = f"{100 * stat['mean']:.2f}"
        return f"{text} ± {100 * stat['std']:.2f}" if std else text
    return f"{100 * stat:.2f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, text_columns: int = 1) -> str:
    """A GitHub-flavoured Markdown table: the first `text_columns` left-aligned, the numbers right-aligned.

    >>> print(markdown_table(["model", "Pass@1"], [["a", "1.00"]]))
    | model | Pass@1 |
    |---|---:|
    | a | 1.00 |
    """
    align = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def result_markdown(result: Mapping) -> str:
    """`result.md` of one evaluation: the protocol, then Pass@k and maj@k per benchmark."""
    p = result["protocol"]
    n = p["samples"]
    ks = [str(k) for k in range(1, n + 1)]
    parts = [
        f"# Evaluation of `{result['model']}`",
        "",
        f"{n} samples per problem, {p['runs']} runs, temperature {p['temperature']}, top-p {p['top_p']}, "
        f"max tokens {p['max_tokens']}, seed {p['seed']}. Percentages, mean ± std over runs; "
        "Pass@k is the unbiased estimator.",
        "",
        "## Pass@k",
        "",
        markdown_table(
            ["benchmark", "problems", *[f"Pass@{k}" for k in ks], "mean tokens"],
            [
                [name, str(b["n_problems"]), *[pct(b["pass_at_k"][k]) for k in ks], f"{b['mean_response_tokens']:.1f}"]
                for name, b in result["benchmarks"].items()
            ],
        ),
        "",
        "## Majority vote and average accuracy",
        "",
        markdown_table(
            ["benchmark", *[f"maj@{k}" for k in ks], f"avg@{n}"],
            [
                [name, *[pct(b["maj_at_k"][k]) for k in ks], pct(b["avg_at_n"])]
                for name, b in result["benchmarks"].items()
            ],
        ),
        "",
    ]
    return "\n".join(parts)


def compare_markdown(results: Mapping[str, Mapping], *, analysis: Mapping | None = None) -> str:
    """Side-by-side tables of several evaluations (label -> result dict), one table per benchmark.

    `analysis` (the dict of `tapo.evaluation.analysis.analyze`) adds the first-pass and
    error-correction rates on boundary problems.
    """
    names: list[str] = []
    for result in results.values():
        names += [b for b in result["benchmarks"] if b not in names]
    parts = ["# Comparison", ""]
    for bench in names:
        ks = sorted(
            {k for r in results.values() for k in r["benchmarks"].get(bench, {}).get("pass_at_k", {})}, key=int
        )
        header = ["model", "problems", *[f"Pass@{k}" for k in ks], f"maj@{ks[-1]}" if ks else "maj@k", "avg@n", "mean tokens"]
        rows = []
        for label, result in results.items():
            b = result["benchmarks"].get(bench)
            if b is None:
                rows.append([label, "–", *["–"] * (len(header) - 2)])
                continue
            rows.append(
                [
                    label,
                    str(b["n_problems"]),
                    *[pct(b["pass_at_k"].get(k)) for k in ks],
                    pct(b["maj_at_k"].get(ks[-1])) if ks else "–",
                    pct(b["avg_at_n"]),
                    f"{b['mean_response_tokens']:.1f}",
                ]
            )
        parts += [f"## {bench}", "", markdown_table(header, rows), ""]
    if analysis:
        parts += [analysis_markdown(analysis), ""]
    return "\n".join(parts)


def analysis_markdown(analysis: Mapping) -> str:
    """The first-pass and error-correction table of `tapo.evaluation.analysis.analyze`."""
    header = [
        "benchmark", "model", "boundary problems", "responses",
        "direct solution rate", "reflection rate", "effective reflection rate",
    ]
    rows = []
    for bench, per_model in analysis["benchmarks"].items():
        for label, stats in per_model.items():
            rows.append(
                [
                    bench,
                    label,
                    str(stats["n_boundary_problems"]),
                    str(stats["n_responses"]),
                    pct(stats["direct_solution_rate"]),
                    pct(stats["reflection_rate"]),
                    pct(stats["effective_reflection_rate"]),
                ]
            )
    title = f"## First pass and error correction on boundary problems (classifier: {analysis['classifier']})"
    return "\n".join([title, "", markdown_table(header, rows, text_columns=2)])
