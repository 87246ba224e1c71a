"""Where a step's time goes: GRPO and each TAPO construction setting side by side, in one process.

    .venv/bin/python benchmarks/step_time.py --config recipes/tiny-tapo.yaml --steps 8 --rounds 3
    .venv/bin/python benchmarks/step_time.py --config benchmarks/demo_before_pipeline.yaml --steps 6 \\
        --set model.name=runs/coldstart-demo/model --set tapo.ref_baseline=reflection
    .venv/bin/python benchmarks/step_time.py --smoke          # every arm, 2 steps, tiny model: what the suite runs

Protocol: every arm (`--arms`, names from ARMS below) trains `--steps` steps from the config, one arm
after the other in this process, with the same start model, data, data order and seed (per round). The GRPO arm is
TRL's GRPOTrainer (`algorithm: grpo`, the `tapo:` section dropped); a TAPO arm sets `tapo.construction`
its options (ARMS) over the config's `tapo:` section. `--set` applies to every arm.
Step 1 (warm-up) is left out of the time means. On a shared, busy machine one pass is noisy: `--rounds N`
trains every arm N times, in rounds whose order is reversed every other round, and pools the timed steps
(the JSON keeps each round's total and the 1-minute load average after each run). `--vary-seed` gives
round r the seed + r (every arm of a round shares it): a rollout call lasts as long as its longest
rollout, which moves with the samples, so rounds on one seed pool timings but not samples. On a shared CPU,
`OMP_NUM_THREADS=1` keeps torch's threads from waiting on each other when other jobs take a core (on 2
busy cores, tiny-model step times varied 6x between rounds with 2 threads, about ±25% with 1).

Columns, per arm:
- seconds per step by phase: the means of metrics.jsonl's `tapo/time/{rollouts,synthesis,score,ots,update}`
  (`tapo.report.timing`). total is TRL's `step_time` (generation, scoring, the loss's forward and backward;
  the optimizer's own step is outside it); the phases add up to it. GRPO logs no phases: its rollouts are
  timed here around the call TAPO times for its own (`GRPOTrainer._generate`), and its update is the rest.
- x GRPO: total over the GRPO arm's total.
- longest: the step's longest rollout in tokens (TRL's `completions/max_length`), mean over the timed steps.
  An HF generate call runs until its longest row ends, so the rollout phase's seconds follow it: once
  an arm's policy has moved, its rollouts (sampled from it) differ from GRPO's.
- built/step: constructions built (records in constructions.jsonl) per step, over all steps.
- built/try: built over the pairs sent to the constructor (`tapo/tried` summed): `tapo/parsed_frac` over
  the run. For splice, "(x spliced)" is the share of tries kept as true splices (the quote was found in
  y-); the other built ones came from the `self` fallback.
- tok/built: generated synthesis tokens (`tapo/synthesis_tokens`: every try, failed ones included; locate
  plus continuation for splice) summed, over constructions built: the decoding cost of one usable y_ref.
- right: built constructions whose final answer is right (`reward` > 0 in constructions.jsonl).
- failed: the tries not built, by reason (`tapo/failed/<reason>` summed), e.g. "truncated 2".
Prints one Markdown table; `--json FILE` writes the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tapo.report.data import PHASES, construction_counts, generation_rows  # noqa: E402  (PHASES: rollouts, synthesis, score, ots, update)

# Arm name -> what it sets in the `tapo:` section; None is the GRPO baseline.
ARMS: dict[str, dict | None] = {
    "grpo": None,
    "self": {"construction": "self"},  # the paper: the policy writes analysis + reconstruction
    "self+one_pass": {"construction": "self", "update_buckets": 1},  # the update as TRL pads it: one pass
    "splice": {"construction": "splice"},  # the policy locates the mistake; y-'s own ids kept, then continued
    "splice+surprise": {"construction": "splice", "splice_locate": "surprise"},  # located by one scoring pass
    # ... and its continuations ride in the next step's rollout call (HF generate)
    "splice+surprise+deferred": {"construction": "splice", "splice_locate": "surprise",
                                 "synthesis_schedule": "deferred"},
    # ... with no self fallback for the pairs the scoring pass cannot locate: no rider with a synthesis budget
    "splice+surprise+deferred+drop": {"construction": "splice", "splice_locate": "surprise",
                                      "synthesis_schedule": "deferred", "splice_fallback": "drop"},
    "aligned": {"construction": "aligned"},  # rule-based, no model call (the built-in arithmetic task)
}
ROLLOUT_MAX_KEY = "completions/max_length"  # TRL's longest rollout of the step, in tokens
SMOKE_STEPS = 2  # the warm-up step and one timed step
SMOKE_SETTINGS = ["tapo.m_max=2"]  # few tries per eligible query: seconds on the tiny model


def arm_config(base, name: str):
    """The run config of one arm: the base config with the arm's algorithm and `tapo:` settings."""
    if name not in ARMS:
        raise SystemExit(f"unknown arm {name!r}; choose from {', '.join(ARMS)}")
    settings = ARMS[name]
    if settings is None:
        return replace(base, algorithm="grpo", tapo={})
    return replace(base, algorithm="tapo", tapo={**base.tapo, **settings})


@contextlib.contextmanager
def timed_generation(seconds: dict[int, float]):
    """Time GRPOTrainer._generate (the rollouts) per training step while inside: step -> seconds."""
    from trl import GRPOTrainer

    original = GRPOTrainer._generate

    def _generate(self, prompts):
        started = time.perf_counter()
        out = original(self, prompts)
        if self.model.training:
            step = self.state.global_step + 1  # the metrics row this generation belongs to
            seconds[step] = seconds.get(step, 0.0) + time.perf_counter() - started
        return out

    GRPOTrainer._generate = _generate
    try:
        yield
    finally:
        GRPOTrainer._generate = original


def arm_numbers(runs: list[tuple[list[dict], list[dict]]], *, strategy: str | None) -> dict:
    """Seconds per phase (timed steps) and construction figures (all steps) of one arm, over its runs.

    `runs` holds (metrics rows, construction records) of each round; seconds are the means over every
    timed step of every round, construction figures are pooled.
    """
    from tapo.report.timing import time_breakdown

    breakdowns = [time_breakdown(rows) for rows, _ in runs]
    if any(b is None for b in breakdowns):
        raise RuntimeError("metrics.jsonl has no step_time: TRL's GRPOTrainer no longer logs it")
    weights = [len(b.steps) for b in breakdowns]

    def mean(values: list[float]) -> float:
        return sum(w * v for w, v in zip(weights, values, strict=True)) / sum(weights)

    if all(b.phases for b in breakdowns):
        seconds = {phase: mean([b.phases[phase] for b in breakdowns]) for phase in PHASES}
    else:
        seconds = {phase: None for phase in PHASES}
    seconds["total"] = mean([b.total for b in breakdowns])
    steps = sum(len(rows) for rows, _ in runs)
    # HF generate runs a call until its longest row ends: the rollout phase's time follows the longest rollout
    longest = [row[ROLLOUT_MAX_KEY] for (rows, _), b in zip(runs, breakdowns) for row in rows
               if row.get("step") in b.steps and row.get(ROLLOUT_MAX_KEY) is not None]
    out = {"seconds": seconds, "timed_steps": list(breakdowns[0].steps), "rounds": len(runs),
           "round_totals": [b.total for b in breakdowns],
           "longest_rollout_tokens": sum(longest) / len(longest) if longest else None}
    if strategy is None:
        return out
    # a step that reuses a generation logs that generation's counters again; the last generation of a deferred
    # run drops the pairs it chose (never tried)
    generations = generation_rows([row for rows, _ in runs for row in rows])
    records = [record for _, round_records in runs for record in round_records]
    _, tries = construction_counts(generations)
    tokens = sum(row.get("tapo/synthesis_tokens", 0.0) for row in generations)
    built, right = len(records), sum(r["reward"] > 0 for r in records)
    out["constructions"] = {
        "tries": int(tries),
        "built": built,
        "built_per_step": built / steps if steps else 0.0,
        "built_per_try": built / tries if tries else None,
        "synthesis_tokens": int(tokens),
        "synthesis_tokens_per_built": tokens / built if built else None,
        "right": right,
        "right_frac": right / built if built else None,
        "failed": _failure_counts(generations),
    }
    if strategy == "splice":
        spliced = sum(r.get("strategy") == "splice" for r in records)
        out["constructions"]["spliced_per_try"] = spliced / tries if tries else None
    return out


def _failure_counts(rows: list[dict]) -> dict[str, int]:
    """Tries not built, by reason, over metrics rows.

    >>> _failure_counts([{"tapo/failed/truncated": 2.0}, {"tapo/failed/unparsed": 1.0, "tapo/failed/truncated": 1.0}])
    {'truncated': 3, 'unparsed': 1}
    """
    prefix = "tapo/failed/"
    counts: Counter[str] = Counter()
    for row in rows:
        counts.update({key.removeprefix(prefix): round(value) for key, value in row.items() if key.startswith(prefix)})
    return dict(sorted(counts.items()))


def run_arm(config, run_dir: Path) -> tuple[list[dict], list[dict], float]:
    """Train one arm; (metrics rows, construction records, wall seconds). GRPO rows gain timed rollouts."""
    from tapo.engine.run import run_training
    from tapo.report.data import CONSTRUCTIONS_FILE, METRICS_FILE, read_constructions, read_metrics

    generation: dict[int, float] = {}
    started = time.perf_counter()
    with timed_generation(generation) if config.algorithm == "grpo" else contextlib.nullcontext():
        run_training(config, output_dir=str(run_dir))
    wall = time.perf_counter() - started
    rows = read_metrics(run_dir / METRICS_FILE)
    if config.algorithm == "grpo" and generation:
        rows = [{**row, "tapo/time/rollouts": generation.get(row["step"], 0.0)} for row in rows]
    path = run_dir / CONSTRUCTIONS_FILE
    records = read_constructions(path, keep_last=10**9)[0] if path.is_file() else []
    return rows, records, wall


def measure(config_path: str, *, steps: int, overrides: list[str], arms: list[str], rounds: int = 1,
            vary_seed: bool = False) -> dict:
    """Train every arm `rounds` times (in rounds, the order reversed every other round) and sum up; with
    `vary_seed`, round r runs every arm with seed + r (its own data order and samples, shared by the arms)."""
    from tapo.config import load_config

    base = load_config(config_path, [*overrides, f"trainer.max_steps={steps}", 'trainer.save_strategy="no"'])
    configs = {name: arm_config(base, name) for name in arms}  # unknown names fail before any training
    runs: dict[str, list] = {name: [] for name in configs}
    walls: dict[str, list[float]] = {name: [] for name in configs}
    loads: dict[str, list[float]] = {name: [] for name in configs}
    seeds = [base.seed + r for r in range(rounds)] if vary_seed else [base.seed] * rounds
    with tempfile.TemporaryDirectory() as scratch:
        for r in range(rounds):
            for name in (list(configs) if r % 2 == 0 else list(configs)[::-1]):
                config = replace(configs[name], seed=seeds[r])
                rows, records, wall = run_arm(config, Path(scratch) / f"{name.replace('+', '_')}-{r}")
                runs[name].append((rows, records))
                walls[name].append(wall)
                loads[name].append(os.getloadavg()[0])
    import torch

    results: dict = {"config": config_path, "overrides": overrides, "steps": steps, "rounds": rounds,
                     "model": base.model.name, "seed": base.seed, "seeds": seeds,
                     "torch_threads": torch.get_num_threads(), "arms": {}}
    for name, config in configs.items():
        strategy = config.tapo.get("construction", "self") if config.algorithm == "tapo" else None
        results["arms"][name] = {"algorithm": config.algorithm, "construction": strategy,
                                 **arm_numbers(runs[name], strategy=strategy), "wall_s": walls[name],
                                 "load_average_1min_after": loads[name]}
    grpo = results["arms"].get("grpo")
    for numbers in results["arms"].values():
        numbers["ratio_to_grpo"] = numbers["seconds"]["total"] / grpo["seconds"]["total"] if grpo else None
    return results


def _cell(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(results: dict) -> str:
    """One Markdown table, a row per arm."""
    head = ["arm", *PHASES, "total", "x GRPO", "longest", "built/step", "built/try", "tok/built", "right",
            "failed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, arm in results["arms"].items():
        s, c = arm["seconds"], arm.get("constructions")
        no_phase = arm["algorithm"] == "grpo"  # GRPO has no synthesis, score or ots phase
        cells = [name] + [
            "–" if no_phase and phase in ("synthesis", "score", "ots") else _cell(s[phase]) for phase in PHASES
        ]
        cells += [_cell(s["total"]), _cell(arm["ratio_to_grpo"], 2), _cell(arm.get("longest_rollout_tokens"), 1)]
        if c is None:
            cells += ["–"] * 5
        else:
            per_try = _cell(c["built_per_try"], 2)
            if "spliced_per_try" in c:
                per_try += f" ({_cell(c['spliced_per_try'], 2)} spliced)"
            cells += [_cell(c["built_per_step"], 2), per_try, _cell(c["synthesis_tokens_per_built"], 1),
                      _cell(c["right_frac"], 2),
                      ", ".join(f"{reason} {n}" for reason, n in c.get("failed", {}).items()) or "–"]
        lines.append("| " + " | ".join(cells) + " |")
    steps = results["arms"][next(iter(results["arms"]))]["timed_steps"]
    lines.append(
        f"\nSeconds per step over step{f' {steps[0]}' if len(steps) == 1 else f's {steps[0]}-{steps[-1]}'}"
        " (step 1, warm-up, left out)"
        + (f" of {results['rounds']} rounds" if results["rounds"] > 1 else "")
        + f"; construction figures over all steps. {results['config']}, model {results['model']}, "
        + (f"seeds {', '.join(map(str, results['seeds']))}" if len(set(results["seeds"])) > 1
           else f"seed {results['seed']}")
        + (f", --set {' '.join(results['overrides'])}" if results["overrides"] else "") + "."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="recipes/tiny-tapo.yaml")
    parser.add_argument("--steps", type=int, default=6, help="steps per arm (at least 2: step 1 is not timed)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"{SMOKE_STEPS} steps per arm and {' '.join(SMOKE_SETTINGS)}, for the test suite")
    parser.add_argument("--rounds", type=int, default=1,
                        help="train every arm this many times, in rounds (order reversed every other round); "
                             "means pool every round's timed steps")
    parser.add_argument("--vary-seed", action="store_true",
                        help="round r uses seed + r for every arm: the means pool samples as well as timings "
                             "(a step's rollout time follows its longest rollout, which varies with the samples)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, from: {', '.join(ARMS)}")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", default=None, help="where to write the results")
    args = parser.parse_args()
    steps = SMOKE_STEPS if args.smoke else args.steps
    overrides = [*SMOKE_SETTINGS, *args.set] if args.smoke else args.set
    if steps < 2:
        parser.error("--steps must be at least 2 (step 1 is warm-up, not timed)")
    arms = [name.strip() for name in args.arms.split(",") if name.strip()]
    results = measure(args.config, steps=steps, overrides=overrides, arms=arms, rounds=1 if args.smoke else args.rounds,
                      vary_seed=args.vary_seed)
    results["command"] = shlex.join(["python", "benchmarks/step_time.py", *sys.argv[1:]])
    print(table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
