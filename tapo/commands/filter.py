"""`tapo filter`: keep the queries whose pass rate under a model lies in [low, high].

Exit status: 0 when queries are kept; 2 on an error (empty data included, before a model
loads); 1 when none is kept, with the reason (where the pass rates lie instead) on stderr.
"""

from __future__ import annotations

import argparse
import sys

# Flag -> config key; a flag that is given overrides the config file.
FLAG_KEYS = {
    "model": "model.name",
    "data": "data.source",
    "samples": "filter.samples",
    "low": "filter.low",
    "high": "filter.high",
    "max_new_tokens": "filter.max_new_tokens",
    "temperature": "filter.temperature",
    "batch_size": "filter.batch_size",
    "seed": "seed",
}


def _run(args: argparse.Namespace) -> int:
    from tapo.coldstart.config import load_filter_config

    overrides = [f"{key}={getattr(args, flag)}" for flag, key in FLAG_KEYS.items() if getattr(args, flag) is not None]
    config = load_filter_config(args.config, overrides + args.set)
    if args.dry_run:
        from tapo.validate import describe_filter

        print("\n".join(describe_filter(config, where=args.config)))
        return 0
    from tapo.filtering import run_filter

    try:
        summary = run_filter(config, output_dir=args.output, progress=True)
    except KeyboardInterrupt:
        from tapo.commands.train import INTERRUPTED

        print("\ntapo filter: interrupted; kept.jsonl is written only once every query is sampled, so nothing "
              "new was written; run the command again", file=sys.stderr, flush=True)
        return INTERRUPTED
    print(summary["histogram"])
    if summary["why_none_kept"]:
        print(f"tapo filter: kept no query, {summary['output_dir']}/kept.jsonl is empty: {summary['why_none_kept']}",
              file=sys.stderr)
        return 1
    print(f"kept queries: {summary['output_dir']}/kept.jsonl (train on them with --set data.source=...)")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("filter", help="keep queries whose pass rate under a model lies in [low, high]")
    parser.add_argument("--config", help="YAML filter config (see recipes/paper/filter.yaml); flags override it")
    parser.add_argument("--model", help="model: builtin:..., a local folder, or a hub id")
    parser.add_argument("--data", help="queries: builtin:arithmetic, a .jsonl/.json/.parquet file, or a hub data set")
    parser.add_argument("--samples", type=int, help="samples per query (default 8)")
    parser.add_argument("--low", type=float, help="lowest pass rate kept, inclusive (default 0.125)")
    parser.add_argument("--high", type=float, help="highest pass rate kept, inclusive (default 0.875)")
    parser.add_argument("--max-new-tokens", type=int, help="token limit of each sample (default 1024)")
    parser.add_argument("--temperature", type=float, help="sampling temperature (default 1.0)")
    parser.add_argument("--batch-size", type=int, help="sequences per generate call (default 32)")
    parser.add_argument("--seed", type=int, help="sampling seed (default 0)")
    parser.add_argument("--output", help="output directory (default: output_dir of the config, else runs/filter)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override any config key, e.g. --set data.n=64 --set data.n_steps=1 (repeatable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="validate the config, then stop (nothing is fetched)")
    parser.set_defaults(func=_run)
