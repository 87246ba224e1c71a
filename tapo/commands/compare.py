"""`tapo compare`: evaluations side by side as Markdown tables."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from tapo.evaluation.analysis import analyze, common_benchmarks, model_labels
    from tapo.evaluation.run import load_result
    from tapo.evaluation.tables import compare_markdown

    results = [load_result(d) for d in args.result_dirs]
    labels = model_labels(results, args.result_dirs)
    if args.analysis:
        path = Path(args.analysis)
        if not path.is_file():
            raise FileNotFoundError(f"analysis file not found: {path} (write one with `tapo analyze ... --output FILE`)")
        analysis = json.loads(path.read_text(encoding="utf-8"))
    elif args.no_analysis:
        analysis = None
    elif not common_benchmarks(results):
        print("tapo compare: no benchmark was evaluated in every directory, so the reflection analysis is left out",
              file=sys.stderr)
        analysis = None
    else:
        analysis = analyze(args.result_dirs)
    print(compare_markdown(dict(zip(labels, results)), analysis=analysis))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("compare", help="compare evaluations side by side (Markdown tables)")
    p.add_argument("result_dirs", nargs="+", metavar="RESULT_DIR", help="directories written by `tapo eval --output`")
    p.add_argument("--analysis", help="a `tapo analyze --output` JSON to show (e.g. with the LLM judge)")
    p.add_argument("--no-analysis", action="store_true", help="leave out the marker-based reflection analysis")
    p.set_defaults(func=_run)
