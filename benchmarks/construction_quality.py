"""How well a model constructs micro-reflective trajectories: parse rate, constructed-answer accuracy,
and generated tokens per construction, for several strategies on the same wrong responses.

    .venv/bin/python benchmarks/construction_quality.py --model builtin:smollm2-135m-instruct --n 40
    .venv/bin/python benchmarks/construction_quality.py --smoke     # builtin:tiny, seconds (the test suite runs it)

Protocol (the same prompts and seeds for every strategy and every model):
1. held-out arithmetic problems; one response per problem sampled from the model with the training
   prompt (temperature 1.0, the demo's rollout budget);
2. each wrong response is y-; y+ is the task's reference solution (a small model before its cold start
   rarely has a right rollout of its own, and we need the same pairs for every model we compare);
3. each strategy constructs from the same (y-, y+) pairs with synthesis sampling (temperature 0.7,
   top-p 0.95, budget = rollout budget + 512 as in DESIGN section 2);
4. parse rate = constructions built / pairs; correct = built constructions whose final answer is right,
   over pairs and over built; tokens = generated tokens per built construction (and per attempt).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def run(
    *, model_name: str, n: int, strategies: list[str], seed: int, n_steps: int, max_operand: int,
    rollout_tokens: int, extra_tokens: int, batch_size: int,
) -> dict:
    from tapo.core import ConstructedTrajectory, ConstructionPair, ConstructionRequest
    from tapo.core.constructors import make_constructor
    from tapo.data.arithmetic import final_line, generate_problems
    from tapo.models import load_policy
    from tapo.rewards import is_correct
    from tapo.sampling import SamplingSettings, generate_fn, index_seeds, prompt_token_ids, sample_groups
    from tapo.sampling.hf import HFSampler

    model, tokenizer = load_policy(model_name, seed=seed)
    sampler = HFSampler(model, tokenizer, model_defaults=True)  # the figures were measured with the model's top-k
    problems = generate_problems(split="test", n=n, seed=seed, n_steps=n_steps, max_operand=max_operand)
    prompts = [prompt_token_ids(tokenizer, p.question) for p in problems]
    started = time.perf_counter()
    rollout_settings = SamplingSettings(temperature=1.0, top_p=1.0, max_tokens=rollout_tokens)
    groups = sample_groups(sampler, prompts, n=1, settings=rollout_settings, seed=seed, batch_size=batch_size,
                           chunk_seeds=index_seeds(seed))
    responses = [list(completion.token_ids) for (completion,) in groups]
    rollout_seconds = time.perf_counter() - started
    requests = []
    right = 0
    for problem, ids in zip(problems, responses, strict=True):
        text = tokenizer.decode(ids, skip_special_tokens=True)
        if is_correct(text, problem.answer):
            right += 1
            continue
        reference = "\n".join(problem.steps) + "\n" + final_line(problem.answer)
        eos = tokenizer.eos_token_id
        own_ids = tuple(i for i in ids if i != eos)
        requests.append(ConstructionRequest(
            pair=ConstructionPair(query_id=problem.id, negative_index=0, positive_index=1),
            question=problem.question, negative_text=text, negative_ids=own_ids,
            positive_text=reference, answer=problem.answer,
        ))
    results: dict = {
        "model": model_name, "problems": n, "rollout_accuracy": right / max(n, 1), "pairs": len(requests),
        "rollout_seconds": rollout_seconds, "strategies": {}, "examples": {},
    }
    for strategy in strategies:
        synthesis_settings = SamplingSettings(temperature=0.7, top_p=0.95, max_tokens=rollout_tokens + extra_tokens)
        generate = generate_fn(  # call k's chunk i: seed (seed * 1000 + k) * 100_003 + i, as measured
            sampler, settings=synthesis_settings, seed=seed, batch_size=batch_size, reencode=False,
            call_seeds=lambda k: index_seeds(seed * 1_000 + k),
        )
        constructor = make_constructor(strategy, tokenizer=tokenizer, generate=generate)
        started = time.perf_counter()
        outcomes = constructor.construct(requests)
        seconds = time.perf_counter() - started
        built = [o for o in outcomes if isinstance(o, ConstructedTrajectory)]
        correct = [t for t, r in zip(outcomes, requests) if isinstance(t, ConstructedTrajectory) and is_correct(t.text, r.answer)]
        generated = sum(o.generated_tokens for o in outcomes)
        failures: dict[str, int] = {}
        for o in outcomes:
            if not isinstance(o, ConstructedTrajectory):
                failures[o.reason] = failures.get(o.reason, 0) + 1
        results["strategies"][strategy] = {
            "parse_rate": len(built) / max(len(requests), 1),
            "correct_over_pairs": len(correct) / max(len(requests), 1),
            "correct_over_built": len(correct) / max(len(built), 1),
            "generated_tokens_per_attempt": generated / max(len(requests), 1),
            "generated_tokens_per_construction": (sum(t.generated_tokens for t in built) / len(built)) if built else None,
            "seconds": seconds,
            "failures": failures,
        }
        results["examples"][strategy] = [
            {"question": r.question, "negative": r.negative_text, "construction": t.text, "analysis": t.analysis}
            for t, r in list(zip(outcomes, requests))[:20] if isinstance(t, ConstructedTrajectory)
        ][:3]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=40, help="held-out problems")
    parser.add_argument("--strategies", default="self,splice")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-steps", type=int, default=1)
    parser.add_argument("--max-operand", type=int, default=9)
    parser.add_argument("--rollout-tokens", type=int, default=64, help="rollout budget (the demo's max_completion_length)")
    parser.add_argument("--extra-tokens", type=int, default=512, help="synthesis budget beyond the rollout budget")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--smoke", action="store_true", help="builtin:tiny, 6 problems, short budgets")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.n, args.rollout_tokens, args.extra_tokens = "builtin:tiny", 6, 12, 12
    results = run(
        model_name=args.model, n=args.n, strategies=args.strategies.split(","), seed=args.seed, n_steps=args.n_steps,
        max_operand=args.max_operand, rollout_tokens=args.rollout_tokens, extra_tokens=args.extra_tokens,
        batch_size=args.batch_size,
    )
    print(f"{results['model']}: {results['pairs']} wrong responses of {results['problems']} "
          f"(rollout accuracy {results['rollout_accuracy']:.3f})")
    print("| strategy | parse rate | correct / pairs | correct / built | tokens / construction | tokens / attempt | s |")
    print("|---|---|---|---|---|---|---|")
    for name, s in results["strategies"].items():
        per = "-" if s["generated_tokens_per_construction"] is None else f"{s['generated_tokens_per_construction']:.1f}"
        print(f"| {name} | {s['parse_rate']:.3f} | {s['correct_over_pairs']:.3f} | {s['correct_over_built']:.3f} "
              f"| {per} | {s['generated_tokens_per_attempt']:.1f} | {s['seconds']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
