"""`tapo train`: GRPO, TAPO or SDPO from a YAML run config."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


def _run(args: argparse.Namespace) -> int:
    from tapo.config import load_config

    if args.allow_config_change and not args.resume:
        raise ValueError("--allow-config-change applies only with --resume")
    config = None
    try:
        config = load_config(args.config, args.set)
        if args.dry_run:  # validate without fetching: hub models and data sets are named, not downloaded
            from tapo.validate import describe_run

            print("\n".join(describe_run(config, where=args.config, overrides=args.set, output_dir=args.output_dir)))
            return 0
        from tapo.engine.run import run_training
        from tapo.validate import check_run

        check_run(config, where=args.config, overrides=args.set, output_dir=args.output_dir)  # files, before any load

        run_dir = run_training(config, output_dir=args.output_dir, resume=args.resume,
                               allow_config_change=args.allow_config_change)
    except KeyboardInterrupt:
        return _interrupted(config, args)
    print(f"run directory: {run_dir}")
    return 0


def _interrupted(config, args: argparse.Namespace) -> int:
    """Ctrl-C: one line (what was saved, the command that resumes) instead of a traceback; exit code 130."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    # A second Ctrl-C while this runs must not turn into a traceback after all.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main_thread else None
    try:
        _forget_caught_interrupt()
        from tapo.engine.run import interruption_message, is_main_process

        if is_main_process():
            command = ["tapo", "train", "--config", args.config]
            for override in args.set:
                command += ["--set", override]
            line = interruption_message(config, output_dir=args.output_dir, command=command)
            print(line, file=sys.stderr, flush=True)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)
    return INTERRUPTED


def _forget_caught_interrupt() -> None:
    """Let the exit code be ours: CPython marks an interrupt that crossed an exec()/eval() of a string as
    unhandled even once caught (dataclass and namedtuple creation exec strings, so a Ctrl-C during an
    import does it), and `python -m tapo.cli` then ends by SIGINT (-2) instead of 130. A successful string
    exec clears the mark."""
    exec("pass")


def register(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train", help="train with GRPO, TAPO or SDPO from a YAML config",
        description="Train with GRPO, TAPO or SDPO (algorithm: grpo | tapo | sdpo) from a YAML config. Ctrl-C stops "
        "with exit code 130 and prints the command that resumes from the last checkpoint.",
    )
    train.add_argument("--config", required=True, help="YAML run config (see recipes/)")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set trainer.max_steps=10 --set tapo.m_max=2 "
        "--set sdpo.teacher_model_kind=live (repeatable)",
    )
    train.add_argument("--output-dir", help="run directory (default: output_dir of the config)")
    train.add_argument(
        "--resume", action="store_true",
        help="continue from the last checkpoint in the run directory, with the same config and --set values; "
        "a finished run only gets what is missing (model/, model cards), one stopped before its first "
        "checkpoint starts again",
    )
    train.add_argument(
        "--allow-config-change", action="store_true",
        help="with --resume: continue although settings differ from the run's (e.g. a larger trainer.max_steps); "
        "config.yaml keeps the earlier settings and config.resume-STEP.yaml records the new ones",
    )
    train.add_argument("--dry-run", action="store_true", help="validate the config (engine arguments, local data) without fetching or training, then stop")
    train.set_defaults(func=_run)
