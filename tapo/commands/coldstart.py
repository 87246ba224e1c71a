"""`tapo coldstart build | train | run`: cold-start data from constructed trajectories, then SFT on it.

`--config` is required (a `--dry-run` may go without). A build that keeps no example says why on
stderr and exits 1; `run` then stops before the fine-tuning.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _config(args: argparse.Namespace):
    """The config of `--config` with `--set` applied; `--config` is required unless this is a dry run.

    The defaults alone would build from (and fine-tune) `builtin:tiny`, an untrained model that is
    never right: a full job that keeps nothing. A dry run without a file shows those defaults.
    """
    from tapo.coldstart.config import load_coldstart_config

    if args.config is None and not getattr(args, "dry_run", False):
        raise ValueError(
            f"{args.step}: --config is required: the defaults alone use builtin:tiny, an untrained model that is never "
            "right, so a build keeps nothing; start from recipes/coldstart-demo.yaml or recipes/paper/coldstart.yaml, "
            f"e.g. `tapo coldstart {args.step} --config recipes/coldstart-demo.yaml` (--dry-run shows the defaults)"
        )
    return load_coldstart_config(args.config, args.set)


def _default_data(config) -> Path:
    return Path(config.output_dir) / "data.jsonl"


def _build(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.dry_run:
        from tapo.validate import describe_coldstart

        print("\n".join(describe_coldstart(config, where=args.config)))
        return 0
    from tapo.coldstart.build import build_coldstart

    output = Path(args.output) if args.output else _default_data(config)
    if output.is_dir():  # found now, not after the sampling
        raise ValueError(f"--output {output} is a folder; name the JSONL file to write, e.g. {output / 'data.jsonl'}")
    stats = build_coldstart(config, output=output, progress=True)
    _print_build(stats)
    return 1 if _say_nothing_kept(stats) else 0


def _say_nothing_kept(stats: dict) -> bool:
    """Print, loudly, why a build wrote an empty data set; True when it did."""
    from tapo.coldstart.build import nothing_kept

    why = nothing_kept(stats)
    if why:
        print(f"tapo coldstart: nothing was kept, {stats['output']} is empty: {why}", file=sys.stderr)
    return why is not None


def _print_build(stats: dict) -> None:
    examples = stats["examples"]
    print(
        f"queries {stats['queries']}, eligible {stats['eligible']}, constructed {stats['constructed']}, "
        f"kept {stats['kept']} -> {examples['trajectory']} trajectory + {examples['synthesis']} synthesis + "
        f"{examples['plain']} plain" + (f" + {examples['locate']} locate" if examples.get("locate") else "") + " examples"
    )
    if stats["failed"]:
        print(f"failed constructions: {json.dumps(stats['failed'])}")
    if "teacher" in stats:
        print(f"teacher endpoint: {json.dumps(stats['teacher'])}")
    print(f"data: {stats['output']} (stats: {Path(stats['output']).with_suffix('.stats.json')})")


def _train(args: argparse.Namespace) -> int:
    config = _config(args)
    from tapo.engine.sft import run_sft

    data = Path(args.data) if args.data else _default_data(config)
    run_dir = run_sft(config, data=data, output_dir=args.output_dir, resume=args.resume)
    print(f"cold-start model: {run_dir / 'model'} (use it with: tapo train --set model.name={run_dir / 'model'})")
    return 0


def _run(args: argparse.Namespace) -> int:
    """Build DIR/data.jsonl, then fine-tune on it. With --resume, built data is reused when the settings that
    built it are the config's (the fine-tuning's may differ), and the fine-tuning continues from its last
    checkpoint, or starts again when it was cut off before one."""
    config = _config(args)
    from tapo.coldstart.build import build_coldstart, data_settings_changes
    from tapo.engine.sft import CONFIG_FILE, refuse_existing_run, run_sft

    run_dir = Path(args.output_dir or config.output_dir)
    data = run_dir / "data.jsonl"
    if not args.resume:
        refuse_existing_run(run_dir)  # before the build, which would replace the data that run trained on
    if args.resume and data.is_file():
        changes = data_settings_changes(data, config)
        if changes:
            raise ValueError(f"--resume: {data} was built with other settings ({'; '.join(changes)}); resume with the "
                             "config and --set values that built it, or build anew into another --output-dir")
        print(f"data: {data} (built before; reused)")
    else:
        stats = build_coldstart(config, output=data, progress=True)
        _print_build(stats)
        if _say_nothing_kept(stats):
            return 1  # no fine-tuning on nothing
    # a run cut off before the fine-tuning began (during the build) has nothing to resume: it starts fresh
    resume = args.resume and (run_dir / CONFIG_FILE).is_file()
    run_sft(config, data=data, output_dir=run_dir, resume=resume)
    print(f"cold-start model: {run_dir / 'model'} (use it with: tapo train --set model.name={run_dir / 'model'})")
    return 0


AFTER_INTERRUPT = {
    "build": "the data file is only ever written whole, so any earlier one is untouched; run the command again",
    "train": "run the same command with --resume to continue from the last checkpoint",
    "run": "run the same command with --resume: built data is reused, the fine-tuning continues from its last "
           "checkpoint",
}


def _interruptible(step):
    """Ctrl-C: one line saying what is kept and how to go on, exit code 130, instead of a traceback."""
    from tapo.commands.train import INTERRUPTED

    def run(args: argparse.Namespace) -> int:
        try:
            return step(args)
        except KeyboardInterrupt:
            print(f"\ntapo coldstart {args.step}: interrupted; {AFTER_INTERRUPT[args.step]}", file=sys.stderr, flush=True)
            return INTERRUPTED

    return run


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML cold-start config, required (see recipes/coldstart-demo.yaml)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set build.samples=4 --set sft.num_train_epochs=1 (repeatable)",
    )


def register(commands: argparse._SubParsersAction) -> None:
    coldstart = commands.add_parser(
        "coldstart", help="build cold-start SFT data from constructed trajectories and fine-tune on it"
    )
    steps = coldstart.add_subparsers(dest="step", required=True, metavar="STEP")

    build = steps.add_parser("build", help="sample, pair, construct: write a JSONL of SFT examples")
    _common(build)
    build.add_argument("--output", help="the JSONL to write (default: OUTPUT_DIR/data.jsonl of the config)")
    build.add_argument("--dry-run", action="store_true", help="validate the config (no model, data or endpoint is fetched)")
    build.set_defaults(func=_interruptible(_build))

    train = steps.add_parser("train", help="supervised fine-tuning (TRL SFTTrainer) on cold-start data")
    _common(train)
    train.add_argument("--data", help="the JSONL of `tapo coldstart build` (default: OUTPUT_DIR/data.jsonl)")
    train.add_argument("--output-dir", help="run directory; the model lands in DIR/model (default: output_dir)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the run directory")
    train.set_defaults(func=_interruptible(_train))

    run = steps.add_parser("run", help="build, then train, into one run directory")
    _common(run)
    run.add_argument("--output-dir", help="run directory: DIR/data.jsonl and DIR/model (default: output_dir)")
    run.add_argument("--resume", action="store_true", help="reuse DIR/data.jsonl and continue the training")
    run.set_defaults(func=_interruptible(_run))
