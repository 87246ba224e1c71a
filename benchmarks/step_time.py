"""TAPO step time over GRPO step time on the same config, measured side by side in one process.

    .venv/bin/python benchmarks/step_time.py --config recipes/tiny-tapo.yaml --steps 6
    .venv/bin/python benchmarks/step_time.py --smoke          # 2 steps each, what the test suite runs

Both arms use the same model, data, seed and trainer settings; the GRPO arm drops the `tapo:` section.
The first step of each arm (warm-up) is excluded from the mean. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path


def measure(config_path: str, *, steps: int, overrides: list[str]) -> dict:
    from tapo.config import load_config
    from tapo.engine.run import run_training

    base = load_config(config_path, [*overrides, f"trainer.max_steps={steps}", 'trainer.save_strategy="no"'])
    arms = {"grpo": replace(base, algorithm="grpo", tapo={}), "tapo": replace(base, algorithm="tapo")}
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, config in arms.items():
            run_dir = run_training(config, output_dir=str(Path(scratch) / name))
            rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            times = [row["step_time"] for row in rows[1:]] or [rows[0]["step_time"]]
            results[name] = {
                "mean_step_s": statistics.mean(times),
                "steps_timed": len(times),
                "constructions_per_step": statistics.mean(row.get("tapo/pairs", 0.0) for row in rows),
            }
    results["ratio_tapo_over_grpo"] = results["tapo"]["mean_step_s"] / results["grpo"]["mean_step_s"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="recipes/tiny-tapo.yaml")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--smoke", action="store_true", help="2 steps per arm")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", default=None, help="where to write the results")
    args = parser.parse_args()
    results = measure(args.config, steps=2 if args.smoke else args.steps, overrides=args.set)
    print("| arm | mean step (s) | constructions/step |\n|---|---|---|")
    for arm in ("grpo", "tapo"):
        print(f"| {arm} | {results[arm]['mean_step_s']:.3f} | {results[arm]['constructions_per_step']:.1f} |")
    print(f"TAPO / GRPO step time: {results['ratio_tapo_over_grpo']:.2f}x  ({args.config})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
