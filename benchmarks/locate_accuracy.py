"""How well `splice` finds y-'s first mistake: `ask` (the policy quotes it, one short decode) against
`surprise` (no decode: where y- becomes much less likely once y+ is in view), on the arithmetic task,
whose first wrong step is known exactly.

    .venv/bin/python benchmarks/locate_accuracy.py --model builtin:smollm2-135m-instruct --n 100 --json out.json
    .venv/bin/python benchmarks/locate_accuracy.py --smoke      # builtin:tiny-arith, seconds (the test suite runs it)

Protocol (the same pairs, prompts and seeds for both methods):
1. held-out arithmetic problems (`--split test`); y+ is the task's reference solution;
2. y- comes from one or both sources (`--sources`): `corrupted`, the reference with one injected
   mistake (`corrupt_solution`, a random kind and step); `own`, the model's own wrong answer to the
   training prompt (temperature 1.0) when it writes at least one checkable step; the first wrong
   step is `diagnose_steps`'s. Own answers are reported apart as `own-steps` (every line a step or
   the boxed answer: the first wrong step is certain) and `own-prose` (prose or a reflection of the
   model's own beside the steps: an earlier mistake in words is invisible to `diagnose_steps`, so
   a cut there counts as early);
3. each method locates through `SpliceConstructor` itself (`locator="ask"` with a generate function
   from tapo.sampling, synthesis sampling: temperature 0.7, top-p 0.95, `--locate-tokens`;
   `locator="surprise"` with the HF score function), with fallback "drop"; the continuation phase
   is answered by a stub (this measures the cut, not the reflection);
4. the kept prefix of y- is then classified: `right` when it ends inside the line of the first
   wrong step (for a missing step: at or after the end of the last right step), `early` when it
   keeps nothing of that line, `late` when it runs into a later line, `none` when nothing was
   located (ask: unparsed or quote not found; surprise: no unit over the threshold).
With `--sweep`, the surprise scores of the same pairs are re-read under every rule and threshold of
a grid (no extra forward pass), which is how the default rule and threshold were chosen (on
`--split train` problems, reported in docs/DESIGN.md section 3).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

CATEGORIES = ("right", "early", "late", "none")
SWEEP = {"max": (0.5, 0.75, 1.0, 1.5, 2.0, 3.0), "mean": (0.25, 0.5, 1.0), "sum": (1.0, 2.0, 4.0)}
STUB = " The answer is \\boxed{0}."  # the continuation every constructed pair gets: the cut is what is measured


def classify(problem, text: str, kept_chars: int | None) -> str:
    """right / early / late / none for a kept prefix of `kept_chars` characters of y- (`text`).

    >>> from tapo.data.arithmetic import make_problem
    >>> p = make_problem(12, [("+", 7), ("*", 3)])
    >>> y = "Step 1: 12 + 7 = 19\\nStep 2: 19 * 3 = 56\\nThe answer is \\\\boxed{56}."
    >>> [classify(p, y, c) for c in (20, 39, 40, 41, None)]
    ['early', 'right', 'right', 'late', 'none']
    """
    from tapo.data.arithmetic import diagnose_steps, parse_steps

    if kept_chars is None:
        return "none"
    steps = parse_steps(text)
    diagnosis = diagnose_steps(problem, text)
    if diagnosis is None:
        raise ValueError(f"y- has no wrong step: {text!r}")
    if diagnosis.kind == "missing":
        last_right_end = steps[diagnosis.index - 1].span[1] if diagnosis.index > 0 else 0
        return "right" if kept_chars >= last_right_end else "early"
    start, end = steps[diagnosis.index].span
    end += 1 if text[end : end + 1] == "\n" else 0
    if kept_chars <= start:
        return "early"
    return "right" if kept_chars <= end else "late"


def shares(labels: list[str]) -> dict:
    n = len(labels)
    return {c: (labels.count(c) / n if n else 0.0) for c in CATEGORIES} | {"pairs": n}


def make_pairs(*, tokenizer, sampler, problems, sources, seed, rollout_tokens, batch_size):
    """(request, problem, source, kind) for every pair, y- ids without eos."""
    from tapo.core import ConstructionPair, ConstructionRequest
    from tapo.data.arithmetic import corrupt_solution, diagnose_steps, parse_steps
    from tapo.rewards import is_correct
    from tapo.sampling import SamplingSettings, index_seeds, prompt_token_ids, sample_groups

    prompts = [prompt_token_ids(tokenizer, p.question) for p in problems]
    eos = set(getattr(sampler, "eos", [tokenizer.eos_token_id]))
    found: list[tuple] = []

    def add(problem, prompt, text, ids, source):
        diagnosis = diagnose_steps(problem, text)
        if diagnosis is None:
            return
        request = ConstructionRequest(
            pair=ConstructionPair(query_id=f"{problem.id}-{source}", negative_index=0, positive_index=1),
            question=problem.question, negative_text=text, negative_ids=tuple(ids), positive_text=problem.solution,
            answer=problem.answer, prompt_ids=tuple(prompt),
        )
        found.append((request, problem, source, diagnosis.kind))

    if "corrupted" in sources:
        rng = random.Random(seed)
        for problem, prompt in zip(problems, prompts, strict=True):
            text, _ = corrupt_solution(problem, rng=rng)
            add(problem, prompt, text, tokenizer.encode(text, add_special_tokens=False), "corrupted")
    rollout_seconds = 0.0
    if "own" in sources:
        started = time.perf_counter()
        settings = SamplingSettings(temperature=1.0, top_p=1.0, max_tokens=rollout_tokens)
        groups = sample_groups(sampler, prompts, n=1, settings=settings, seed=seed, batch_size=batch_size,
                               chunk_seeds=index_seeds(seed))
        rollout_seconds = time.perf_counter() - started
        for problem, prompt, (completion,) in zip(problems, prompts, groups, strict=True):
            ids = [i for i in completion.token_ids if i not in eos]
            text = tokenizer.decode(ids, skip_special_tokens=True)
            if is_correct(text, problem.answer) or not parse_steps(text):
                continue  # a right answer, or nothing checkable to locate
            add(problem, prompt, text, ids, "own-steps" if steps_only(text) else "own-prose")
    return found, rollout_seconds


def steps_only(text: str) -> bool:
    """Whether every non-blank line of a response is a checkable step or its final answer line.

    Only then is `diagnose_steps`'s first wrong step the response's first mistake for certain: in prose
    (or a reflection the model writes by itself) an earlier mistake can hide that no equation shows.

    >>> steps_only("Step 1: 2 + 3 = 5\\nThe answer is \\\\boxed{5}."), steps_only("So 5.\\nStep 1: 2 + 3 = 5")
    (True, False)
    """
    from tapo.data.arithmetic import parse_steps

    step_lines = {step.span[0] for step in parse_steps(text)}
    offset = 0
    for line in text.split("\n"):
        if line.strip() and offset not in step_lines and "\\boxed" not in line:
            return False
        offset += len(line) + 1
    return True


def stub_generate(tokenizer, real=None):
    """A GenerateFn: the locate phase ("locate", else the first call) goes to `real`, every other call gets the stub."""
    calls = [0]
    stub = list(tokenizer.encode(STUB, add_special_tokens=False)) + [tokenizer.eos_token_id]
    spent = []

    def generate(prompts, *, phase=None):
        calls[0] += 1
        locating = phase in ("locate", "splice locate") if phase is not None else calls[0] == 1
        if real is not None and locating:
            out = real(prompts)
            spent.extend(len(c) for c in out)
            return out
        return [list(stub) for _ in prompts]

    return generate, spent


def kept_chars(tokenizer, request, result) -> int | None:
    from tapo.core import ConstructedTrajectory

    if not isinstance(result, ConstructedTrajectory):
        return None
    return len(tokenizer.decode(list(request.negative_ids[: result.prefix_tokens]), skip_special_tokens=True))


def summarize(labels, pairs, reasons):
    by_source: dict[str, list[str]] = {}
    by_kind: dict[str, list[str]] = {}
    for label, (_, _, source, kind) in zip(labels, pairs, strict=True):
        by_source.setdefault(source, []).append(label)
        by_kind.setdefault(f"{source}/{kind}", []).append(label)
    failures: dict[str, int] = {}
    for reason in reasons:
        if reason is not None:
            failures[reason] = failures.get(reason, 0) + 1
    return {
        "shares": shares(labels), "by_source": {k: shares(v) for k, v in by_source.items()},
        "by_kind": {k: shares(v) for k, v in sorted(by_kind.items())}, "failures": failures,
    }


def run(
    *, model_name: str, n: int, split: str, sources: list[str], methods: list[str], seed: int, n_steps: int,
    max_operand: int, rollout_tokens: int, locate_tokens: int, batch_size: int, score_batch_size: int,
    rule: str | None, threshold: float | None, sweep: bool, details: bool = False, locate_template: str | None = None,
) -> dict:
    from tapo.core import ConstructionFailure
    from tapo.core.constructors import SpliceConstructor, strip_eos
    from tapo.core.locate import DEFAULT_RULE, DEFAULT_THRESHOLD, locate_by_surprise, token_ends
    from tapo.core.synthesis import LOCATE_TEMPLATE
    from tapo.data.arithmetic import generate_problems
    from tapo.data.datasets import read_text
    from tapo.models import load_policy
    from tapo.sampling import SamplingSettings, generate_fn, index_seeds
    from tapo.sampling.hf import HFSampler
    from tapo.sampling.scoring import hf_score_fn

    rule = rule or DEFAULT_RULE
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    model, tokenizer = load_policy(model_name, seed=seed)
    sampler = HFSampler(model, tokenizer, model_defaults=True)
    problems = generate_problems(split=split, n=n, seed=seed, n_steps=n_steps, max_operand=max_operand)
    pairs, rollout_seconds = make_pairs(tokenizer=tokenizer, sampler=sampler, problems=problems, sources=sources,
                                        seed=seed, rollout_tokens=rollout_tokens, batch_size=batch_size)
    requests = [p[0] for p in pairs]
    results: dict = {
        "model": model_name, "split": split, "problems": n, "n_steps": n_steps, "max_operand": max_operand,
        "pairs": len(pairs),
        "pairs_by_source": {s: sum(p[2] == s for p in pairs) for s in sorted({p[2] for p in pairs})},
        "rollout_seconds": rollout_seconds, "surprise_rule": rule, "surprise_threshold": threshold,
        "locate_tokens_budget": locate_tokens, "locate_template": locate_template or "LOCATE_TEMPLATE (built in)",
        "methods": {}, "examples": {},
    }
    template = read_text(locate_template) if locate_template else LOCATE_TEMPLATE
    for method in methods:
        started = time.perf_counter()
        recorded: list[list[list[float]]] = []
        if method == "ask":
            settings = SamplingSettings(temperature=0.7, top_p=0.95, max_tokens=locate_tokens)
            real = generate_fn(sampler, settings=settings, seed=seed, batch_size=batch_size, reencode=False,
                               call_seeds=lambda k: index_seeds(seed * 1_000 + k))
            generate, spent = stub_generate(tokenizer, real)
            constructor = SpliceConstructor(tokenizer=tokenizer, generate=generate, fallback="drop",
                                            locate_template=template)
        elif method == "surprise":
            generate, spent = stub_generate(tokenizer)
            score = hf_score_fn(model, tokenizer, batch_size=score_batch_size)

            def recording(prompts, completions, score=score):
                out = score(prompts, completions)
                recorded.append(out)
                return out

            constructor = SpliceConstructor(tokenizer=tokenizer, generate=generate, fallback="drop", locator="surprise",
                                            score=recording, surprise_rule=rule, surprise_threshold=threshold)
        else:
            raise ValueError(f"unknown method {method!r}; choose from ask, surprise")
        outcomes = constructor.construct(requests)
        seconds = time.perf_counter() - started
        labels = [
            classify(p[1], tokenizer.decode(list(r.negative_ids), skip_special_tokens=True), kept_chars(tokenizer, r, o))
            for p, r, o in zip(pairs, requests, outcomes, strict=True)
        ]
        reasons = [o.reason if isinstance(o, ConstructionFailure) else None for o in outcomes]
        results["methods"][method] = summarize(labels, pairs, reasons) | {
            "seconds": seconds, "locate_tokens_per_pair": sum(spent) / max(len(pairs), 1),
        }
        examples = [
            {"question": r.question, "negative": r.negative_text, "kept": r.negative_text[: kept_chars(tokenizer, r, o) or 0],
             "label": label, "kind": p[3], "source": p[2],
             "locate_output": o.raw_output if isinstance(o, ConstructionFailure) else o.analysis}
            for p, r, o, label in zip(pairs, requests, outcomes, labels)
        ]
        if method == "surprise" and details and recorded:
            for i, (example, r) in enumerate(zip(examples, requests)):
                pieces = [tokenizer.decode([t], skip_special_tokens=True) for t in r.negative_ids]
                example["surprise"] = [[piece, round(a - b, 2)] for piece, a, b in
                                       zip(pieces, recorded[0][i], recorded[0][len(requests) + i])]
        results["examples"][method] = examples if details else examples[:4]
        if method == "surprise" and sweep and recorded:
            logps = recorded[0]
            half = len(requests)
            ends_at = [tokenizer.eos_token_id]
            texts, ends = [], []
            for r in requests:
                ids = strip_eos(r.negative_ids, ends_at)[0]
                texts.append(tokenizer.decode(ids, skip_special_tokens=True))
                ends.append(token_ends(tokenizer, ids))
            grid = []
            for sweep_rule, thresholds in SWEEP.items():
                for value in thresholds:
                    swept = []
                    for i, (p, r) in enumerate(zip(pairs, requests, strict=True)):
                        cut = locate_by_surprise(logps[i], logps[half + i], texts[i], ends[i], threshold=value,
                                                 rule=sweep_rule)
                        chars = None if cut is None else (ends[i][cut.kept_tokens - 1] if cut.kept_tokens else 0)
                        swept.append(classify(p[1], texts[i], chars))
                    summary = summarize(swept, pairs, [None] * len(pairs))
                    grid.append({"rule": sweep_rule, "threshold": value, "shares": summary["shares"],
                                 "by_source": summary["by_source"]})
            results["sweep"] = grid
    return results


def print_table(results: dict) -> None:
    print(f"{results['model']}: {results['pairs']} pairs from {results['problems']} {results['split']} problems "
          f"({', '.join(f'{k} {v}' for k, v in results['pairs_by_source'].items())}); surprise rule "
          f"{results['surprise_rule']} >= {results['surprise_threshold']}")
    print("| method | y- | pairs | right | early | late | none | locate tokens / pair | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m in results["methods"].items():
        for source, s in [("all", m["shares"])] + list(m["by_source"].items()):
            tokens = f"{m['locate_tokens_per_pair']:.1f}" if source == "all" else ""
            seconds = f"{m['seconds']:.0f}" if source == "all" else ""
            print(f"| {name} | {source} | {s['pairs']} | {s['right']:.3f} | {s['early']:.3f} | {s['late']:.3f} "
                  f"| {s['none']:.3f} | {tokens} | {seconds} |")
    if "sweep" in results:
        print("\nsurprise sweep (same scores): rule threshold -> right / early / late / none")
        for row in results["sweep"]:
            s = row["shares"]
            print(f"  {row['rule']:>4} {row['threshold']:>5}: "
                  f"{s['right']:.3f} / {s['early']:.3f} / {s['late']:.3f} / {s['none']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=100, help="problems")
    parser.add_argument("--split", default="test", help="test (held out) or train (to tune the surprise rule on)")
    parser.add_argument("--sources", default="corrupted,own", help="where y- comes from: corrupted, own, or both")
    parser.add_argument("--methods", default="ask,surprise")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-steps", type=int, default=3)
    parser.add_argument("--max-operand", type=int, default=9)
    parser.add_argument("--rollout-tokens", type=int, default=96, help="budget of the model's own answers")
    parser.add_argument("--locate-tokens", type=int, default=96, help="budget of ask's quote and diagnosis")
    parser.add_argument("--locate-template", help="ask's locate prompt file, as tapo.splice_locate_template "
                                                  "(default: the built-in LOCATE_TEMPLATE)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--score-batch-size", type=int, default=8)
    parser.add_argument("--rule", help="surprise rule (default: tapo.core.locate.DEFAULT_RULE)")
    parser.add_argument("--threshold", type=float, help="surprise threshold, nats (default: DEFAULT_THRESHOLD)")
    parser.add_argument("--sweep", action="store_true", help="also re-read the surprise scores under a grid of rules")
    parser.add_argument("--details", action="store_true", help="every pair in the JSON (with surprise per token)")
    parser.add_argument("--smoke", action="store_true", help="builtin:tiny-arith, 6 problems, short budgets")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.n, args.rollout_tokens, args.locate_tokens, args.sweep = "builtin:tiny-arith", 6, 48, 16, True
    results = run(
        model_name=args.model, n=args.n, split=args.split, sources=args.sources.split(","),
        methods=args.methods.split(","), seed=args.seed, n_steps=args.n_steps, max_operand=args.max_operand,
        rollout_tokens=args.rollout_tokens, locate_tokens=args.locate_tokens, batch_size=args.batch_size,
        score_batch_size=args.score_batch_size, rule=args.rule, threshold=args.threshold, sweep=args.sweep,
        details=args.details, locate_template=args.locate_template,
    )
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
