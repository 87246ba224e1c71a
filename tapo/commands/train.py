"""`tapo train`: GRPO or TAPO from a YAML run config."""

from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from tapo.config import load_config

    config = load_config(args.config, args.set)
    if args.dry_run:  # validate without fetching: hub models and data sets are named, not downloaded
        from tapo.validate import describe_run

        print("\n".join(describe_run(config, where=args.config)))
        return 0
    from tapo.train import run_training

    run_dir = run_training(config, output_dir=args.output_dir, resume=args.resume)
    print(f"run directory: {run_dir}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train with GRPO or TAPO from a YAML config")
    train.add_argument("--config", required=True, help="YAML run config (see recipes/)")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set trainer.max_steps=10 --set tapo.m_max=2 (repeatable)",
    )
    train.add_argument("--output-dir", help="run directory (default: output_dir of the config)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the run directory")
    train.add_argument("--dry-run", action="store_true", help="validate the config (engine arguments, local data) without fetching or training, then stop")
    train.set_defaults(func=_run)
