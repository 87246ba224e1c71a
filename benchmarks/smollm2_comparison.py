"""GRPO vs TAPO (`self` synthesis) on the built-in SmolLM2-135M-Instruct after the demo cold start.

    .venv/bin/tapo coldstart run --config recipes/coldstart-demo.yaml            # -> runs/coldstart-demo/model
    .venv/bin/python benchmarks/smollm2_comparison.py --steps 16 --output runs/smollm2-comparison
    .venv/bin/python benchmarks/smollm2_comparison.py --smoke --output /tmp/s   # builtin:tiny-arith, seconds (the suite)

Protocol (one seed; the issue's "real-model" run):
1. Both arms start from the same cold-started model and train with `benchmarks/demo_before_pipeline.yaml` (1-step
   arithmetic, 2 queries x 8 rollouts per step, 128-token completions, temperature 1.0) for the same
   number of steps with the same data order and trainer seed. GRPO: `algorithm: grpo`. TAPO:
   `construction: self` (the policy writes its own corrections from the synthesis prompt),
   `ref_baseline: reflection`, DAE and OTS on (the paper's defaults).
2. The starting model and each arm's final model are evaluated on the same held-out test problems
   with the same sampling seed at the training temperature: Pass@1, response length, reflection rate,
   direct solution / effective reflection rates (marker classifier).
3. From TAPO's `constructions.jsonl` and metrics: synthesis attempts (pairs sent to the constructor),
   parse rate (constructions built / attempts), constructed-answer accuracy (built constructions whose
   final answer is right), generated synthesis tokens, and five example constructions quoted whole.
4. Writes results.md, results.json and the run directories to --output; a finished arm is not retrained.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from paper_miniature import evaluate_run, read_metrics, train_arm  # noqa: E402

ARMS = ("grpo", "tapo")


def arm_raw(recipe: dict, arm: str, *, model: str, steps: int, seed: int, overrides: dict) -> dict:
    """The run config of one arm: the demo recipe, the cold-started model, equal steps."""
    raw = json.loads(json.dumps(recipe))
    raw.pop("output_dir", None)
    raw["seed"] = seed
    raw["model"] = {**raw.get("model", {}), "name": model}
    raw["trainer"] = {**raw.get("trainer", {}), "max_steps": steps, "save_strategy": "steps", "save_steps": steps,
                      **overrides.get("trainer", {})}
    raw["data"] = {**raw.get("data", {}), **overrides.get("data", {})}
    if arm == "grpo":
        raw["algorithm"] = "grpo"
        raw.pop("tapo", None)
    else:
        raw["algorithm"] = "tapo"
        raw["tapo"] = {**raw.get("tapo", {}), "construction": "self", "ref_baseline": "reflection",
                       **overrides.get("tapo", {})}
    return raw


def construction_stats(run_dir: Path, rows: list[dict]) -> dict:
    """Attempts, parse rate, constructed-answer accuracy and synthesis tokens of a TAPO run."""
    from tapo.report.data import CONSTRUCTIONS_FILE, iter_jsonl

    path = run_dir / CONSTRUCTIONS_FILE
    records = [row for _, row in iter_jsonl(path)] if path.is_file() else []
    attempts = sum(row.get("tapo/pairs", 0.0) for row in rows)
    right = sum(r["reward"] > 0 for r in records)
    tokens = sum(row.get("tapo/synthesis_tokens", 0.0) for row in rows)
    return {
        "attempts": int(attempts),
        "built": len(records),
        "parse_rate": len(records) / attempts if attempts else None,
        "right": right,
        "constructed_answer_accuracy": right / len(records) if records else None,
        "synthesis_tokens": int(tokens),
        "synthesis_tokens_per_attempt": tokens / attempts if attempts else None,
        "synthesis_seconds": sum(row.get("tapo/synthesis_seconds", 0.0) for row in rows),
        "eligible_share": statistics.mean(r["tapo/eligible_frac"] for r in rows if "tapo/eligible_frac" in r)
        if any("tapo/eligible_frac" in r for r in rows) else None,
        "examples": records[:5],
    }


def quote(record: dict) -> str:
    """One construction as a Markdown block: kept prefix | reflection | correction."""
    text = record["text"]
    r, c = record.get("reflection_start_char", 0), record.get("correction_start_char", len(text))
    fidelity = record.get("prefix_fidelity")
    fidelity = "unknown (no reflection marker)" if fidelity is None else f"{fidelity:.2f}"
    parts = [
        f"Training step {record['step']}, {record['query_id']}: {record['question']} (answer {record['answer']}); "
        f"reward {record['reward']:.0f}, A_ref {record['advantage']:+.2f}, prefix fidelity {fidelity}",
        "",
        "```text",
        "[y-]  " + record["negative"].replace("\n", "\n      "),
        "[kept prefix]  " + text[:r].replace("\n", "\n      "),
        "[reflection]   " + text[r:c].replace("\n", "\n      "),
        "[correction]   " + text[c:].replace("\n", "\n      "),
        "```",
    ]
    return "\n".join(parts)


def fmt(value, pct: bool = True) -> str:
    if value is None:
        return "n/a"
    return f"{value * 100:.1f}" if pct else f"{value:.1f}"


def markdown(results: dict) -> str:
    lines = [
        "# GRPO vs TAPO (`self`) on SmolLM2-135M-Instruct after the demo cold start",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Start model: `{results['start_model']}`. {results['steps']} steps per arm (2 queries x 8 rollouts), "
        f"seed {results['seed']}. Held-out: {results['eval']['n_problems']} test problems x "
        f"{results['eval']['samples']} samples at temperature {results['eval']['temperature']}, "
        f"{results['eval']['max_new_tokens']} tokens, the same problems and sampling seed for every model.",
        "",
        "| model | held-out Pass@1 % | direct solution rate % | effective reflection rate % | reflection rate % | "
        "response length | train acc. % | s / step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results["models"].items():
        e = row["eval"]
        lines.append(
            f"| {name} | {fmt(e['pass_at_1'])} | {fmt(e.get('direct_solution_rate'))} | "
            f"{fmt(e.get('effective_reflection_rate'))} | {fmt(e.get('reflection_rate'))} | "
            f"{fmt(e['mean_length'], pct=False)} | {fmt(row.get('train_accuracy'))} | {fmt(row.get('seconds_per_step'), pct=False)} |"
        )
    c = results["models"].get("tapo", {}).get("constructions")
    if c:
        lines += [
            "",
            f"TAPO constructions: {c['attempts']} synthesis attempts, {c['built']} built (parse rate "
            f"{fmt(c['parse_rate'])}%), {c['right']} with the right final answer (constructed-answer accuracy "
            f"{fmt(c['constructed_answer_accuracy'])}% of built), {c['synthesis_tokens']} synthesis tokens "
            f"({fmt(c['synthesis_tokens_per_attempt'], pct=False)} per attempt); eligible share "
            f"{fmt(c['eligible_share'])}%.",
            "",
            "## Five example constructions (the first five built, quoted whole)",
            "",
        ]
        for record in c["examples"]:
            lines += [quote(record), ""]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start-model", default="runs/coldstart-demo/model")
    parser.add_argument("--recipe", default=str(ROOT / "benchmarks" / "demo_before_pipeline.yaml"))
    parser.add_argument("--output", default="runs/smollm2-comparison")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--eval-problems", type=int, default=40)
    parser.add_argument("--eval-samples", type=int, default=4)
    parser.add_argument("--smoke", action="store_true",
                        help="builtin:tiny-arith, 1 step, 4 problems (the test suite; its syntheses do not parse)")
    args = parser.parse_args(argv)
    args.overrides = {}
    if args.smoke:
        args.start_model = "builtin:tiny-arith"
        args.steps, args.eval_problems, args.eval_samples = 1, 4, 2
        args.overrides = {"trainer": {"max_completion_length": 24, "per_device_train_batch_size": 32},
                          "tapo": {"synthesis_extra_tokens": 16, "n_pos": 1, "n_neg": 2}, "data": {"n": 32}}
    return args


def main(argv=None) -> dict:
    from miniature import EvalSpec, TaskSpec, evaluate_folder, heldout_problems, jsonable

    args = parse_args(argv)
    command = "python benchmarks/smollm2_comparison.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    recipe = yaml.safe_load(Path(args.recipe).read_text())
    if not args.smoke and not Path(args.start_model, "config.json").is_file():
        raise SystemExit(f"no model at {args.start_model}: run `tapo coldstart run --config recipes/coldstart-demo.yaml` first")
    raws = {arm: arm_raw(recipe, arm, model=args.start_model, steps=args.steps, seed=args.seed,
                         overrides=args.overrides) for arm in args.arms.split(",")}
    data = recipe.get("data", {})
    task = TaskSpec(n_steps=data.get("n_steps", 1), max_operand=data.get("max_operand", 9))
    completion = raws[next(iter(raws))]["trainer"]["max_completion_length"]
    spec = EvalSpec(n_problems=args.eval_problems, samples=args.eval_samples, temperature=1.0,
                    max_new_tokens=completion, seed=1234 + args.seed)
    problems = heldout_problems(task, spec)
    results = {"command": command, "start_model": args.start_model, "steps": args.steps, "seed": args.seed,
               "eval": asdict(spec), "configs": raws, "models": {}}
    started = time.perf_counter()
    cache = out / "start_eval.json"  # a rerun (other steps, an interrupted arm) does not pay for it twice
    key = {"model": args.start_model, "spec": asdict(spec)}
    cached = json.loads(cache.read_text()) if cache.is_file() else {}
    start_eval = cached["eval"] if cached.get("key") == key else evaluate_folder(args.start_model, problems, spec)
    cache.write_text(json.dumps({"key": key, "eval": start_eval}))
    results["models"]["start"] = {"eval": {k: v for k, v in start_eval.items() if k != "per_problem_pass_rate"}}
    print(f"start model: held-out Pass@1 {start_eval['pass_at_1']:.3f}", flush=True)
    for arm, raw in raws.items():
        run_dir = out / "runs" / arm
        seconds = train_arm(raw, run_dir)
        rows = read_metrics(run_dir)
        evals = evaluate_run(run_dir, problems, spec, cache_file=run_dir / "heldout_eval.json")
        final = evals[max(evals)]
        final.pop("responses", None)
        row = {
            "eval": {k: v for k, v in final.items() if k != "per_problem_pass_rate"},
            "steps_trained": len(rows),
            "train_accuracy": statistics.mean(r.get("accuracy", 0.0) for r in rows),
            "train_seconds": seconds or None,
            "seconds_per_step": statistics.mean(r["step_time"] for r in rows) if all("step_time" in r for r in rows)
            else (seconds / len(rows) if seconds else None),
        }
        if arm == "tapo":
            row["constructions"] = construction_stats(run_dir, rows)
        results["models"][arm] = row
        print(f"{arm}: held-out Pass@1 {final['pass_at_1']:.3f}", flush=True)
        (out / "results.json").write_text(json.dumps(jsonable(results), indent=1))
    results["seconds"] = time.perf_counter() - started
    (out / "results.json").write_text(json.dumps(jsonable(results), indent=1))
    text = markdown(results)
    (out / "results.md").write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
