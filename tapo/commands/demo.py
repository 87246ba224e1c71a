"""`tapo demo`: the whole pipeline (cold start, evaluation, TAPO, evaluation, report) on the built-in model."""

from __future__ import annotations

import argparse
import sys

INTERRUPTED = 130


def _run(args: argparse.Namespace) -> int:
    from tapo.demo import load_demo, run_demo

    plan = load_demo(args.config, args.set)
    try:
        run_demo(plan)
    except KeyboardInterrupt:
        print(f"\ntapo demo: interrupted; what is done in {plan.root} is kept; run the same command again to "
              "continue from the stage that was interrupted", file=sys.stderr, flush=True)
        return INTERRUPTED
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo", help="cold start, evaluate, train with TAPO, evaluate, report: the whole pipeline, resumable",
        description="Run the demo pipeline of a demo config (recipes/demo-pipeline.yaml): each stage is skipped "
        "when its output exists and continues where an interrupted run stopped; ends with a summary.",
    )
    demo.add_argument("--config", default="recipes/demo-pipeline.yaml",
                      help="demo config (default: recipes/demo-pipeline.yaml)")
    demo.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a key: eval.samples=2, or a named config's: coldstart.sft.max_steps=4, "
        "train.trainer.max_steps=2 (repeatable)",
    )
    demo.set_defaults(func=_run)
