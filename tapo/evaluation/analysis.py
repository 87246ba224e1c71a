"""First-pass and error-correction analysis (the paper's Section on reflection behaviour), on boundary problems.

Given the evaluation directories of several models (`tapo eval --output DIR`):

- *Boundary problems* of a benchmark: those every compared model solves sometimes but not
  always (pass rate strictly between 0 and 1 for each model).
- *Direct solution rate*: among correct responses to boundary problems, the share that
  contains no reflection (solved on the first pass).
- *Effective reflection rate*: among responses that reflect, the share that ends correct;
  with the LLM judge, the reflection must also locate a real error and fix it.
- *Reflection rate* (context): the share of all responses that reflect.

Two classifiers: the regex markers of `tapo.evaluation.reflection` (default, free), or an LLM
judge (`tapo.evaluation.judge`). Responses the judge could not classify (failed or unparseable
answers) are left out of the rates and counted as `n_unjudged`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from tapo.evaluation.reflection import ReflectionVerdict, marker_verdict


def boundary_problems(pass_rates: Sequence[Mapping[str, float]]) -> list[str]:
    """Ids of problems present for every model with a pass rate strictly between 0 and 1 for each.

    >>> boundary_problems([{"a": 0.5, "b": 1.0, "c": 0.2}, {"a": 0.1, "b": 0.5, "c": 0.0}])
    ['a']
    """
    if not pass_rates:
        return []
    return [pid for pid in pass_rates[0] if all(0.0 < rates.get(pid, 0.0) < 1.0 for rates in pass_rates)]


def reflection_rates(items: Sequence[tuple[bool, ReflectionVerdict | None]]) -> dict[str, float | int | None]:
    """Counts and rates of (correct, verdict) pairs; a rate with an empty denominator is None.

    >>> r = reflection_rates([(True, ReflectionVerdict(False)), (True, ReflectionVerdict(True)),
    ...                       (False, ReflectionVerdict(True)), (False, None)])
    >>> r["direct_solution_rate"], r["effective_reflection_rate"], r["reflection_rate"], r["n_unjudged"]
    (0.5, 0.5, 0.6666666666666666, 1)
    """
    judged = [(bool(ok), v) for ok, v in items if v is not None]
    correct = [v for ok, v in judged if ok]
    reflecting = [(ok, v) for ok, v in judged if v.reflects]
    direct = sum(not v.reflects for v in correct)
    effective = sum(ok and v.locates_error is not False and v.fixes_error is not False for ok, v in reflecting)
    return {
        "n_responses": len(judged),
        "n_unjudged": len(items) - len(judged),
        "n_correct": len(correct),
        "n_reflecting": len(reflecting),
        "n_direct_correct": direct,
        "n_effective_reflections": effective,
        "direct_solution_rate": direct / len(correct) if correct else None,
        "reflection_rate": len(reflecting) / len(judged) if judged else None,
        "effective_reflection_rate": effective / len(reflecting) if reflecting else None,
    }


def model_labels(results: Sequence[Mapping], dirs: Sequence[str | Path]) -> list[str]:
    """A label per result: its model name, or its directory where model names repeat.

    >>> model_labels([{"model": "a"}, {"model": "b"}], ["x", "y"]), model_labels([{"model": "a"}] * 2, ["x/r1", "x/r2"])
    (['a', 'b'], ['r1', 'r2'])
    """
    names = [r["model"] for r in results]
    if len(set(names)) == len(names):
        return names
    stems = [Path(d).name for d in dirs]
    return stems if len(set(stems)) == len(stems) else [str(d) for d in dirs]


def analyze(
    result_dirs: Sequence[str | Path],
    *,
    judge=None,
    runs: int | None = None,
    benchmarks: Sequence[str] | None = None,
) -> dict:
    """The analysis of several evaluation directories (one per model), per benchmark and model.

    `judge`: a `tapo.evaluation.judge.ReflectionJudge`, else the marker classifier. `runs`: only
    the first `runs` evaluation runs (a judge is paid per response). `benchmarks`: only these.
    Returns {"classifier", "models": {label: dir}, "benchmarks": {name: {label: rates}}, "judge_stats"}.
    """
    from tapo.evaluation.responses import read_responses
    from tapo.evaluation.run import PROBLEMS, RESPONSES, load_result, read_problems

    if not result_dirs:
        raise ValueError("analyze: no result directories given")
    if runs is not None and runs < 1:
        raise ValueError(f"analyze: runs must be at least 1, got {runs}")
    results = [load_result(d) for d in result_dirs]
    labels = model_labels(results, result_dirs)
    names = common_benchmarks(results)
    if not names:
        listing = "; ".join(f"{d}: {', '.join(r['benchmarks']) or 'none'}" for d, r in zip(result_dirs, results))
        raise ValueError(
            f"analyze: no benchmark was evaluated in every directory ({listing}); "
            "give directories that share a benchmark"
        )
    if benchmarks is not None:
        names = _chosen_benchmarks(benchmarks, common=names)
    if runs is not None:
        _check_runs(runs, results, result_dirs)
    out: dict = {
        "classifier": judge.name if judge is not None else "markers",
        "models": {label: str(d) for label, d in zip(labels, result_dirs)},
        "benchmarks": {name: {} for name in names},
    }
    for label, directory, result in zip(labels, result_dirs, results):
        path = Path(directory) / RESPONSES
        rows, _ = read_responses(path)
        if not rows:
            raise FileNotFoundError(f"no response rows in {path}; the analysis needs the responses of `tapo eval`")
        problems = read_problems(Path(directory) / PROBLEMS)
        max_runs = result["protocol"]["runs"] if runs is None else runs  # _check_runs: every directory has them
        samples = result["protocol"]["samples"]
        for name in names:
            boundary = set(boundary_problems([r["benchmarks"][name]["per_problem_pass_rate"] for r in results]))
            chosen = [
                r for r in rows
                if r["benchmark"] == name and r["problem_id"] in boundary and r["run"] < max_runs and r["sample"] < samples
            ]
            if judge is None:
                verdicts = [marker_verdict(r["response"]) for r in chosen]
            else:
                unknown = "(problem text not recorded)"
                verdicts = judge.judge_many(
                    [(problems.get((name, r["problem_id"]), unknown), r["response"], r["gold"]) for r in chosen]
                )
            stats = reflection_rates([(r["correct"], v) for r, v in zip(chosen, verdicts)])
            out["benchmarks"][name][label] = {"n_boundary_problems": len(boundary), **stats}
    if judge is not None:
        out["judge_stats"] = dict(judge.stats)
    return out


def common_benchmarks(results: Sequence[Mapping]) -> list[str]:
    """Benchmarks evaluated in every result, in the first result's order.

    >>> common_benchmarks([{"benchmarks": {"a": 1, "b": 2}}, {"benchmarks": {"b": 3}}])
    ['b']
    """
    return [b for b in results[0]["benchmarks"] if all(b in r["benchmarks"] for r in results)] if results else []


def _chosen_benchmarks(requested: Sequence[str], *, common: Sequence[str]) -> list[str]:
    """The requested benchmarks by the names `tapo eval` files them under (registry name, or a file's stem).

    One that is not in every directory is an error that says how to evaluate it, offline included.
    """
    from tapo.data.benchmarks import BENCHMARKS, has_offline_copy
    from tapo.evaluation.run import benchmark_key

    chosen = [b if b in common else benchmark_key(b) for b in requested]
    missing = [b for b in chosen if b not in common]
    if not missing:
        return chosen
    hub_only = [b for b in missing if b in BENCHMARKS and not has_offline_copy(b)]
    how = f"evaluate {'it' if len(missing) == 1 else 'them'} first into each directory with `tapo eval --benchmarks " \
          f"{','.join(missing)} --output DIR`"
    if hub_only:
        how += (
            f"; {' and '.join(hub_only)} {'needs' if len(hub_only) == 1 else 'need'} the Hugging Face Hub, so without "
            f"network access save {'it' if len(hub_only) == 1 else 'each'} as a JSONL file and pass its path: "
            f"`tapo eval --benchmarks {','.join(f'path/to/{b}.jsonl' if b in hub_only else b for b in missing)}`"
        )
    raise ValueError(
        f"analyze: benchmark {', '.join(missing)} not evaluated in every directory "
        f"(evaluated in all: {', '.join(common)}); {how}"
    )


def _check_runs(runs: int, results: Sequence[Mapping], dirs: Sequence[str | Path]) -> None:
    """Refuse more runs than a directory has, rather than quietly analysing fewer than were asked for."""
    short = [(str(d), r["protocol"]["runs"]) for d, r in zip(dirs, results) if r["protocol"]["runs"] < runs]
    if short:
        have = ", ".join(f"{d} has {n}" for d, n in short)
        fewest = min(n for _, n in short)
        raise ValueError(
            f"analyze: runs {runs} is more than the evaluation runs there are ({have}); "
            f"ask for at most {fewest} (--runs {fewest}), or leave --runs out to analyse every run"
        )
