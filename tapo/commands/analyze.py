"""`tapo analyze`: direct solution rate and effective reflection rate on boundary problems.

Exit status: 0 with a table; 2 on an error (no benchmark shared by every directory, more
`--runs` than were evaluated, a `--benchmarks` name not evaluated); 1 when the table is empty
because no benchmark has a boundary problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from tapo.evaluation.analysis import analyze
    from tapo.evaluation.tables import analysis_markdown

    judge = None
    if args.judge_url or args.judge_model:
        if not (args.judge_url and args.judge_model):
            raise ValueError("the LLM judge needs both --judge-url and --judge-model")
        from tapo.evaluation.judge import make_judge

        judge = make_judge(
            args.judge_url, args.judge_model, api_key_env=args.judge_api_key_env,
            max_concurrency=args.judge_concurrency, cache_dir=args.judge_cache,
        )
    benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()] if args.benchmarks else None
    result = analyze(args.result_dirs, judge=judge, runs=args.runs, benchmarks=benchmarks)
    print(analysis_markdown(result))
    if judge is not None:
        stats = result["judge_stats"]
        print(f"\njudge: {stats['judged']} judged, {stats['unparseable']} unparseable, {stats['failed']} failed")
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.output}")
    stats = [s for per_model in result["benchmarks"].values() for s in per_model.values()]
    if not any(s["n_boundary_problems"] for s in stats):
        names = result["benchmarks"]
        print(
            f"tapo analyze: nothing was analysed: {', '.join(names)} {'has' if len(names) == 1 else 'have'} no "
            "boundary problem (one that every model given solves sometimes but not always); try more samples or runs, "
            "or one directory at a time",
            file=sys.stderr,
        )
        return 1
    if not any(s["n_responses"] for s in stats):  # the responses were there; the judge's counts above say why
        print("tapo analyze: warning: the judge classified none of the responses, so every rate is empty",
              file=sys.stderr)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "analyze",
        help="first-pass and error-correction analysis of evaluations (direct solution / effective reflection rates)",
        description=(
            "On boundary problems (pass rate strictly between 0 and 1 for every model given), report the share of correct "
            "responses reached without reflection and the share of reflecting responses that end correct. Reflection is "
            "found by regex markers, or by an LLM judge behind an OpenAI-compatible endpoint (--judge-url, --judge-model)."
        ),
    )
    p.add_argument("result_dirs", nargs="+", metavar="RESULT_DIR", help="directories written by `tapo eval --output`")
    p.add_argument("--benchmarks", help="comma-separated benchmark names (default: every one evaluated in all directories)")
    p.add_argument("--runs", type=int, help="analyze only the first N evaluation runs; more than every directory has is an error (default: all)")
    p.add_argument("--judge-url", help="base URL of an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--judge-model", help="the judge model's name at that endpoint")
    p.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable with the API key")
    p.add_argument("--judge-concurrency", type=int, default=4, help="judge requests in flight (default 4)")
    p.add_argument("--judge-cache", help="folder caching judge answers, so a rerun pays only for new responses")
    p.add_argument("--output", help="also write the analysis as JSON to this file (tapo compare --analysis reads it)")
    p.set_defaults(func=_run)
