"""What the cold start buys: build + train time, held-out pass rate and `self` synthesis parse rate, before and after.

    python benchmarks/coldstart_effect.py                      # the demo: recipes/coldstart-demo.yaml (minutes)
    python benchmarks/coldstart_effect.py --smoke              # builtin:tiny, seconds (tests/test_coldstart.py runs it)
    python benchmarks/coldstart_effect.py --config FILE --set build.samples=2 --heldout 64 --samples 4

Before and after use the same prompts and seeds: `--heldout` problems of the arithmetic task's test split
(disjoint from training), `--samples` samples each at the evaluation protocol's temperature 0.6 / top-p 0.9;
the synthesis probe gives the model the `self` synthesis prompt for `--synthesis` held-out problems (y- a
corrupted reference, y+ the reference) and counts outputs that `parse_synthesis` reads, and those whose
reconstruction ends at the right answer. Prints a table and writes DIR/coldstart_effect.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

SMOKE = [
    "model.name=builtin:tiny", "data.n=6", "build.samples=1", "build.max_new_tokens=8",
    "sft.max_steps=1", "sft.max_length=512", "build.mix={trajectory: 1}",
]


def pass_rate(model: str, config, *, heldout: int, samples: int, max_new_tokens: int) -> float:
    """Mean pass rate over `heldout` test-split problems of the config's difficulty, `samples` each."""
    from dataclasses import replace

    from tapo.coldstart.config import FilterConfig, FilterSection
    from tapo.config import ModelSection
    from tapo.filtering import estimate_pass_rates

    data = replace(config.data, split="test", n=heldout)
    probe = FilterConfig(
        seed=1234, model=ModelSection(name=model, dtype=config.model.dtype), data=data,
        filter=FilterSection(samples=samples, max_new_tokens=max_new_tokens, temperature=0.6, top_p=0.9,
                             batch_size=32, backend="hf"),
    )
    _, rates = estimate_pass_rates(probe)
    return sum(rates) / len(rates)


def synthesis_rates(model: str, config, *, n: int, max_new_tokens: int) -> dict:
    """Share of `self` synthesis outputs that parse, and that end at the right answer, on n held-out problems."""
    from tapo.core import ConstructedTrajectory, ConstructionPair, ConstructionRequest
    from tapo.core.constructors import make_constructor
    from tapo.data.arithmetic import corrupt_solution, generate_problems
    from tapo.sampling import SamplingSettings, generate_fn, make_sampler
    from tapo.rewards import is_correct

    steps = tuple(config.data.n_steps) if isinstance(config.data.n_steps, list) else config.data.n_steps
    problems = generate_problems(split="test", n=n, seed=0, n_steps=steps, max_operand=config.data.max_operand)
    sampler = make_sampler(model, backend="hf", dtype=config.model.dtype, seed=0)
    tokenizer = sampler.tokenizer
    requests = []
    for problem in problems:
        negative = corrupt_solution(problem, rng=random.Random(problem.id))[0]
        requests.append(ConstructionRequest(
            pair=ConstructionPair(problem.id, -1, -1), question=problem.question, negative_text=negative,
            negative_ids=tuple(tokenizer.encode(negative, add_special_tokens=False)), positive_text=problem.solution,
            answer=problem.answer,
        ))
    settings = SamplingSettings(temperature=0.7, top_p=0.95, max_tokens=max_new_tokens)
    constructor = make_constructor(
        "self", tokenizer=tokenizer, generate=generate_fn(sampler, settings=settings, seed=1234, batch_size=16)
    )
    results = constructor.construct(requests)
    parsed = [r for r in results if isinstance(r, ConstructedTrajectory)]
    right = [r for r, q in zip(results, requests) if isinstance(r, ConstructedTrajectory) and is_correct(r.text, q.answer)]
    return {"parsed": len(parsed) / n, "right": len(right) / n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="recipes/coldstart-demo.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--smoke", action="store_true", help="builtin:tiny, a handful of examples: seconds")
    parser.add_argument("--heldout", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128, help="cold-started answers run ~70 tokens")
    parser.add_argument("--synthesis", type=int, default=16, help="held-out problems for the synthesis probe (0: skip)")
    parser.add_argument("--synthesis-max-new-tokens", type=int, default=160)
    parser.add_argument("--output-dir", help="default: a temporary folder")
    parser.add_argument("--after", help="compare with this cold-start model folder instead of building and training one")
    args = parser.parse_args(argv)
    if args.smoke:
        args.set = SMOKE + args.set
        args.heldout, args.samples, args.max_new_tokens = 4, 1, 8
        args.synthesis, args.synthesis_max_new_tokens = min(args.synthesis, 2), 8

    from tapo.coldstart.build import build_coldstart
    from tapo.coldstart.config import load_coldstart_config
    from tapo.engine.sft import run_sft

    config = load_coldstart_config(args.config, args.set)
    out = Path(args.output_dir or tempfile.mkdtemp(prefix="coldstart-effect-"))
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    if args.after:  # measure an existing cold start (build/train times then come from its run, not from here)
        stats = {"examples": {"trajectory": None, "synthesis": None}}
        built = trained = started
        after_model = args.after
    else:
        stats = build_coldstart(config, output=out / "data.jsonl")
        built = time.perf_counter()
        run_sft(config, data=out / "data.jsonl", output_dir=out / "run")
        trained = time.perf_counter()
        after_model = str(out / "run" / "model")

    rows = {}
    for label, model in (("before", config.model.name), ("after", after_model)):
        row = {"pass_rate": pass_rate(model, config, heldout=args.heldout, samples=args.samples,
                                      max_new_tokens=args.max_new_tokens)}
        if args.synthesis:
            row.update({f"synthesis_{k}": v for k, v in synthesis_rates(
                model, config, n=args.synthesis, max_new_tokens=args.synthesis_max_new_tokens).items()})
        rows[label] = row
    result = {
        "config": args.config, "overrides": args.set, "model": config.model.name,
        "build_s": round(built - started, 1), "train_s": round(trained - built, 1),
        "examples": stats["examples"], "build_stats": stats,
        "heldout": args.heldout, "samples": args.samples, "synthesis_probe": args.synthesis, **rows,
    }
    (out / "coldstart_effect.json").write_text(json.dumps(result, indent=2) + "\n")

    if args.after:
        print(f"{config.model.name} before and after the cold start {args.after}")
    else:
        print(f"cold start of {config.model.name}: build {result['build_s']} s + train {result['train_s']} s "
              f"on {stats['examples']['trajectory']} trajectory + {stats['examples']['synthesis']} synthesis examples")
    keys = list(rows["before"])
    print(f"{'':8}" + "".join(f"{k:>20}" for k in keys))
    for label, row in rows.items():
        print(f"{label:8}" + "".join(f"{row[k]:>20.3f}" for k in keys))
    print(f"(held-out: {args.heldout} problems x {args.samples} samples; synthesis: {args.synthesis} problems)")
    print(f"results: {out / 'coldstart_effect.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
