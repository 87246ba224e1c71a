"""`tapo report`: one static HTML page for a run directory (curves, constructions, eval tables)."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from tapo.report import write_report

    if args.max_constructions < 0:
        raise ValueError(f"--max-constructions must be >= 0, got {args.max_constructions}")
    path = write_report(args.run_dir, evals=args.eval, output=args.output, max_constructions=args.max_constructions)
    print(f"report: {path}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser("report", help="write a static HTML report of a run directory")
    report.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `tapo train`")
    report.add_argument(
        "--eval", action="append", default=[], metavar="RESULT",
        help="an evaluation result: a `tapo eval` output directory or its result.json (repeatable)",
    )
    report.add_argument("--output", help="where to write the page (default: RUN_DIR/report.html)")
    report.add_argument(
        "--max-constructions", type=int, default=500, metavar="N",
        help="show at most the last N constructed trajectories (default: 500)",
    )
    report.set_defaults(func=_run)
