"""TAPO against its rivals under one protocol, on the built-in SmolLM2-135M after the demo cold start.

    .venv/bin/tapo coldstart run --config recipes/coldstart-demo.yaml        # -> runs/coldstart-demo/model
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rivals.py                   # 4 arms x 3 seeds x 16 steps
    .venv/bin/python benchmarks/rivals.py --seeds 3,4,5 --eval-seed 99 --problem-seed 7   # a re-check elsewhere
    .venv/bin/python benchmarks/rivals.py --report-only                        # tables from the files so far
    .venv/bin/python benchmarks/rivals.py --smoke --results /tmp/r             # builtin:tiny-arith (the suite)

Arms (`ARMS`): grpo (TRL's GRPOTrainer); sdpo (TRL's SDPOTrainer, SDPOConfig's defaults: the implicit
rival, self-distillation toward the policy re-prompted with a successful rollout); tapo (the paper: `self`
construction, reflection-group baseline, DAE, OTS, inline); tapo_fast (the cheapest faithful setting of
the synthesis-cost work: `splice` with the `surprise` locate pass and the `deferred` schedule).

One protocol for every arm: the same start model, training data and order, seed, reward, token budgets,
learning rate and number of steps (recipes/demo.yaml, the `make demo` TAPO stage, with only
`algorithm` and the arm's options changed); the same held-out evaluation (the arithmetic task's test
split, which training never draws from; every model of a seed with the same problems and sampling seed at
the training temperature and budget): Pass@1, response length, direct solution rate and effective
reflection rate (marker classifier) overall and on the seed's boundary problems (every arm solves them
sometimes but not always), what reflections do (an exact step check), and seconds per step.

Each finished arm writes `<results>/seed<S>-<arm>.json` (and each seed's start model `seed<S>-start.json`);
a rerun skips what exists, so the comparison can be completed over several sittings, and an arm cut off
mid-training resumes from its last checkpoint. `--commit` commits each file as it is written.
results.md and results.json are rebuilt from every file present, after each arm.

Verdict rule (paper_miniature's, stated before any run): an arm beats a rival when the mean over seeds of
its final Pass@1 minus the rival's (paired by seed) exceeds the larger seed standard deviation of the two;
loses when it is that much lower; otherwise they tie.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from paper_miniature import counters, fmt, read_metrics, step_seconds, summarize, train_arm  # noqa: E402

ARMS = {  # arm -> (algorithm, its section's options over the recipe's)
    "grpo": ("grpo", {}),
    "sdpo": ("sdpo", {}),
    "tapo": ("tapo", {"construction": "self", "ref_baseline": "reflection", "synthesis_schedule": "inline"}),
    "tapo_fast": ("tapo", {"construction": "splice", "splice_locate": "surprise", "ref_baseline": "reflection",
                           "synthesis_schedule": "deferred"}),
}
SMOKE = {  # builtin:tiny-arith: its syntheses do not parse, but every arm runs every phase
    "trainer": {"max_completion_length": 24, "save_steps": 1},
    "tapo": {"synthesis_extra_tokens": 16, "m_max": 2},
    "data": {"n": 16},
}


def arm_raw(recipe: dict, arm: str, *, model: str, steps: int, seed: int, smoke: bool = False) -> dict:
    """The run config of one arm: the recipe with the arm's algorithm and options, the start model, equal steps."""
    raw = json.loads(json.dumps(recipe))
    raw.pop("output_dir", None)
    raw["seed"] = seed
    raw["model"] = {**raw.get("model", {}), "name": model}
    # Checkpoints every 4 steps: an interrupted arm loses at most 3 (a SmolLM2 checkpoint is 1.6 GB to write).
    raw["trainer"] = {**raw.get("trainer", {}), "max_steps": steps, "save_strategy": "steps",
                      "save_steps": min(4, steps), "save_total_limit": 1}
    extra = SMOKE if smoke else {}
    raw["trainer"].update(extra.get("trainer", {}))
    raw["data"] = {**raw.get("data", {}), **extra.get("data", {})}
    algorithm, options = ARMS[arm]
    raw["algorithm"] = algorithm
    tapo = {**raw.pop("tapo", {}), **options, **extra.get("tapo", {})}
    if algorithm == "tapo":
        raw["tapo"] = tapo
    elif options:
        raw[algorithm] = dict(options)
    return raw


def construction_stats(run_dir: Path, rows: list[dict]) -> dict:
    """Tries, built constructions, how many end right, synthesis tokens (a TAPO run's constructions.jsonl)."""
    from tapo.report.data import CONSTRUCTIONS_FILE, construction_counts, generation_rows, iter_jsonl

    path = run_dir / CONSTRUCTIONS_FILE
    records = [row for _, row in iter_jsonl(path)] if path.is_file() else []
    _, tries = construction_counts(rows)
    right = sum(r["reward"] > 0 for r in records)
    tokens = sum(row.get("tapo/synthesis_tokens", 0.0) for row in generation_rows(rows))
    return {
        "tries": int(tries), "built": len(records), "right": right,
        "built_per_try": len(records) / tries if tries else None,
        "right_per_built": right / len(records) if records else None,
        "synthesis_tokens": int(tokens),
        "tokens_per_built": tokens / len(records) if records else None,
        "steps_with_constructions": len({r["step"] for r in records}),
    }


def compact(responses: list[dict]) -> list[list]:
    """[problem_id, correct, reflects, n_tokens] per held-out response: what the boundary analysis needs."""
    return [[r["problem_id"], bool(r["correct"]), bool(r["reflects"]), r["n_tokens"]] for r in responses]


def evaluate(folder: str | Path, problems, spec) -> dict:
    from miniature import evaluate_folder

    from tapo.evaluation.reflection import reflection_outcomes

    result = evaluate_folder(folder, problems, spec, keep_responses=True)
    responses = result.pop("responses")
    result["reflection_outcomes"] = reflection_outcomes(problems, responses)
    result["responses"] = compact(responses)
    result["examples"] = [r["response"] for r in responses[:4]]
    result.pop("problem_ids", None)
    return result


def write_json(path: Path, value: dict) -> None:
    from miniature import jsonable

    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(jsonable(value), indent=1))
    tmp.rename(path)  # atomic: a file present is a finished part


def commit(path: Path, message: str) -> None:
    """git commit of this one file (other staged or unstaged changes stay as they are)."""
    for attempt in range(5):  # another git command may hold the index lock for a moment
        add = subprocess.run(["git", "add", "--", str(path)], cwd=ROOT, capture_output=True, text=True)
        if add.returncode == 0 and subprocess.run(["git", "diff", "--cached", "--quiet", "--", str(path)],
                                                  cwd=ROOT).returncode == 0:
            return  # committed already (another process wrote the same part)
        done = add.returncode == 0 and subprocess.run(
            ["git", "commit", "-q", "-m", message, "--", str(path)], cwd=ROOT, capture_output=True, text=True
        ).returncode == 0
        if done:
            return
        time.sleep(2 + attempt)
    print(f"warning: could not commit {path}", file=sys.stderr)


def load_part(path: Path, key: dict) -> dict | None:
    """A finished part made with these settings, or None; one made with others is an error, not overwritten."""
    if not path.is_file():
        return None
    part = json.loads(path.read_text())
    if part.get("key") != key:
        changed = sorted(k for k in set(key) | set(part.get("key", {})) if key.get(k) != part.get("key", {}).get(k))
        raise SystemExit(f"{path} was made with other settings ({', '.join(changed)}); delete it or pass "
                         "another --results folder")
    return part


def run_arm(arm: str, raw: dict, *, run_dir: Path, problems, spec) -> dict:
    """Train one arm (resuming a cut-off run), evaluate its final model, free its checkpoints."""
    seconds = train_arm(raw, run_dir)
    rows = read_metrics(run_dir)
    part = {
        "steps_trained": len(rows),
        "eval": evaluate(run_dir / "model", problems, spec),
        "train_accuracy": statistics.mean(r.get("accuracy", 0.0) for r in rows) if rows else None,
        "train_seconds": seconds or None,
        "step_seconds": step_seconds(rows),
        "counters": counters(rows),
    }
    if ARMS[arm][0] == "tapo":
        part["constructions"] = construction_stats(run_dir, rows)
    for checkpoint in run_dir.glob("checkpoint-*"):  # 1.6 GB each; the result and model/ stay
        shutil.rmtree(checkpoint)
    return part


# ---- the comparison over every file present -------------------------------------------------------------


def collect(results: Path, *, seeds: list[int], arms: list[str]) -> dict:
    """paper_miniature.summarize's view of the finished parts: seeds whose start model and arms all exist."""
    from miniature import boundary_rates

    runs, done = {}, []
    for seed in seeds:
        start = results / f"seed{seed}-start.json"
        parts = {arm: results / f"seed{seed}-{arm}.json" for arm in arms}
        if not start.is_file() or not all(p.is_file() for p in parts.values()):
            continue
        start_eval = json.loads(start.read_text())["eval"]
        per_seed = {}
        responses = {}
        for arm, path in parts.items():
            part = json.loads(path.read_text())
            final = part["eval"]
            responses[arm] = [{"problem_id": p, "correct": c, "reflects": r} for p, c, r, _ in final["responses"]]
            per_seed[arm] = {
                **part, "final": {k: v for k, v in final.items() if k not in ("responses", "examples")},
                "curve": {"0": start_eval["pass_at_1"], str(part["steps_trained"]): final["pass_at_1"]},
                "reflection_outcomes": final["reflection_outcomes"],
            }
        boundary, rates = boundary_rates(responses)
        per_seed["boundary"] = {"problems": boundary, "rates": rates}
        per_seed["start_eval"] = start_eval
        runs[str(seed)] = per_seed
        done.append(seed)
    return {"seeds": done, "arms": arms, "runs": runs}


def markdown(view: dict, summary: dict, *, command: str, protocol: dict) -> str:
    from tapo.evaluation.reflection import REFLECTION_OUTCOMES

    rivals = [r for r in ("grpo", "sdpo") if r in view["arms"]]
    starts = [view["runs"][str(s)]["start_eval"] for s in view["seeds"]]
    lines = [
        "# TAPO against GRPO and SDPO on SmolLM2-135M after the demo cold start",
        "",
        f"Command: `{command}`",
        "",
        f"Start model `{protocol['start_model']}`; recipe `{protocol['recipe']}`; {protocol['steps']} steps per arm; "
        f"seeds {', '.join(map(str, view['seeds']))}. Held-out: {protocol['eval']['n_problems']} test-split problems x "
        f"{protocol['eval']['samples']} samples at temperature {protocol['eval']['temperature']}, "
        f"{protocol['eval']['max_new_tokens']} tokens; the start model's Pass@1 "
        f"{100 * statistics.mean(s['pass_at_1'] for s in starts):.1f}% (mean over the seeds' sampling streams).",
        "",
        "Mean ± population std over seeds, in percent (length in tokens, s / step in seconds).",
        "",
        "| arm | held-out Pass@1 | " + "".join(f"Δ vs {r.upper()} (paired) | verdict | " for r in rivals)
        + "direct solution rate | effective reflection rate | reflection rate | boundary direct | boundary effective | "
        "response length | train acc. | s / step |",
        "|---|---|" + "---|---|" * len(rivals) + "---|---|---|---|---|---|---|---|",
    ]
    for arm, row in summary.items():
        versus = "".join(f"{fmt(row.get(f'diff_vs_{r}')) if r != arm else '—'} | {row.get(f'verdict_vs_{r}', '—')} | "
                         for r in rivals)
        lines.append(
            f"| {arm} | {fmt(row['pass_at_1'])} | {versus}{fmt(row['direct_solution_rate'])} | "
            f"{fmt(row['effective_reflection_rate'])} | {fmt(row['reflection_rate'])} | "
            f"{fmt(row['boundary_direct_solution_rate'])} | {fmt(row['boundary_effective_reflection_rate'])} | "
            f"{fmt(row['mean_length'], pct=False)} | {fmt(row['train_accuracy'])} | "
            f"{fmt(row['step_seconds'], pct=False)} |")
    n_boundary = [len(view["runs"][str(s)]["boundary"]["problems"]) for s in view["seeds"]]
    lines += ["", f"Boundary problems per seed: {', '.join(map(str, n_boundary))}.", "",
              "Per seed, final held-out Pass@1 (%):", "",
              "| arm | " + " | ".join(f"seed {s}" for s in view["seeds"]) + " |",
              "|---|" + "---|" * len(view["seeds"])]
    lines.append("| start | " + " | ".join(f"{100 * s['pass_at_1']:.1f}" for s in starts) + " |")
    for arm in summary:
        lines.append(f"| {arm} | " + " | ".join(
            f"{100 * view['runs'][str(s)][arm]['final']['pass_at_1']:.1f}" for s in view["seeds"]) + " |")
    lines += ["", "TAPO's constructions (summed over seeds) and SDPO's signal (means over steps and seeds):", "",
              "| arm | tries | built | built / try | end right | synthesis tokens / built | steps with constructions |",
              "|---|---|---|---|---|---|---|"]
    for arm in summary:
        parts = [view["runs"][str(s)][arm].get("constructions") for s in view["seeds"]]
        if not all(parts):
            continue
        tries, built, right = (sum(p[k] for p in parts) for k in ("tries", "built", "right"))
        tokens = sum(p["synthesis_tokens"] for p in parts)
        steps = sum(p["steps_with_constructions"] for p in parts)
        lines.append(f"| {arm} | {tries} | {built} | {100 * built / tries if tries else 0:.0f}% | "
                     f"{100 * right / built if built else 0:.0f}% | {tokens / built if built else 0:.0f} | "
                     f"{steps} of {sum(view['runs'][str(s)][arm]['steps_trained'] for s in view['seeds'])} |")
    if "sdpo" in summary:
        c = summary["sdpo"]["counters"]
        lines += ["", f"SDPO: groups with a successful rollout {fmt(c.get('success_group_share'))}%, rollouts "
                  f"distilled {fmt(c.get('distilled_share'))}%, distillation loss "
                  f"{fmt(c.get('distillation_loss'), pct=False, digits=3)}."]
    lines += ["", "What the final models' reflections do (shares of reflecting responses; *warranted* reflections "
              "follow a wrong step, *spurious* ones only right steps):", "",
              "| arm | fixed | not fixed | spurious, kept | spurious, broke |", "|---|---|---|---|---|"]
    for arm, row in summary.items():
        lines.append(f"| {arm} | " + " | ".join(fmt(row["reflection_outcomes"][n]) for n in REFLECTION_OUTCOMES) + " |")
    return "\n".join(lines) + "\n"


def report(results: Path, *, seeds: list[int], arms: list[str], command: str, protocol: dict) -> str | None:
    from miniature import jsonable

    view = collect(results, seeds=seeds, arms=arms)
    if not view["seeds"]:
        return None
    summary = summarize(view)
    text = markdown(view, summary, command=command, protocol=protocol)
    pending = [s for s in seeds if s not in view["seeds"]]
    if pending:
        text += f"\nPartial: seeds {', '.join(map(str, pending))} are not finished.\n"
    (results / "results.md").write_text(text)
    (results / "results.json").write_text(json.dumps(jsonable({"protocol": protocol, "seeds": view["seeds"],
                                                               "summary": summary}), indent=1))
    return text


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start-model", default="runs/coldstart-demo/model")
    parser.add_argument("--recipe", default="recipes/demo.yaml")
    parser.add_argument("--results", default="benchmarks/results/rivals", help="one JSON file per finished part")
    parser.add_argument("--runs", default="runs/rivals", help="the run directories (not committed)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma list of {', '.join(ARMS)}")
    parser.add_argument("--steps", type=int, default=16)
    # The 1-step task's test split holds about 46 problems: 40 of them, 6 samples each.
    parser.add_argument("--eval-problems", type=int, default=40)
    parser.add_argument("--eval-samples", type=int, default=6)
    parser.add_argument("--eval-seed", type=int, default=1234, help="sampling seed of the evaluation (+ the seed)")
    parser.add_argument("--problem-seed", type=int, default=0, help="which held-out problems are drawn")
    parser.add_argument("--commit", action="store_true", help="git commit each result file as it is written")
    parser.add_argument("--report-only", action="store_true", help="rebuild results.md from the files present")
    parser.add_argument("--smoke", action="store_true", help="builtin:tiny-arith, 1 seed, 2 steps, 8 problems")
    args = parser.parse_args(argv)
    if args.smoke:
        args.start_model = "builtin:tiny-arith"
        args.seeds = "0" if args.seeds == "0,1,2" else args.seeds
        args.steps, args.eval_problems, args.eval_samples = 2, 8, 2
    return args


def main(argv=None) -> str | None:
    from miniature import EvalSpec, TaskSpec, heldout_problems

    args = parse_args(argv)
    command = "python benchmarks/rivals.py " + " ".join(sys.argv[1:] if argv is None else argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    results, runs = Path(args.results), Path(args.runs)
    results.mkdir(parents=True, exist_ok=True)
    recipe = yaml.safe_load((ROOT / args.recipe if not Path(args.recipe).is_file() else Path(args.recipe)).read_text())
    data = recipe.get("data", {})
    task = TaskSpec(n_steps=data.get("n_steps", 1), max_operand=data.get("max_operand", 9))
    budget = SMOKE["trainer"]["max_completion_length"] if args.smoke else recipe["trainer"]["max_completion_length"]
    base_spec = EvalSpec(n_problems=args.eval_problems, samples=args.eval_samples,
                         temperature=recipe["trainer"].get("temperature", 1.0), max_new_tokens=budget,
                         seed=args.eval_seed, problem_seed=args.problem_seed)
    protocol = {"start_model": args.start_model, "recipe": args.recipe, "steps": args.steps, "eval": asdict(base_spec)}
    if args.report_only:
        return report(results, seeds=seeds, arms=arms, command=command, protocol=protocol)
    if not args.smoke and not Path(args.start_model, "config.json").is_file():
        raise SystemExit(f"no model at {args.start_model}: run `tapo coldstart run --config recipes/coldstart-demo.yaml`")
    problems = heldout_problems(task, base_spec)
    for seed in seeds:
        spec = EvalSpec(**{**asdict(base_spec), "seed": args.eval_seed + seed})  # one sampling stream per seed
        key = {"start_model": args.start_model, "eval": asdict(spec)}
        path = results / f"seed{seed}-start.json"
        if load_part(path, key) is None:
            write_json(path, {"key": key, "eval": evaluate(args.start_model, problems, spec)})
            if args.commit:
                commit(path, f"rivals: the start model's held-out evaluation, seed {seed}")
        for arm in arms:
            raw = arm_raw(recipe, arm, model=args.start_model, steps=args.steps, seed=seed, smoke=args.smoke)
            key = {"config": raw, "eval": asdict(spec)}
            path = results / f"seed{seed}-{arm}.json"
            if load_part(path, key) is not None:
                print(f"seed {seed} {arm}: done before, skipped", flush=True)
                continue
            started = time.perf_counter()
            part = run_arm(arm, raw, run_dir=runs / f"seed{seed}" / arm, problems=problems, spec=spec)
            part["wall_seconds"] = time.perf_counter() - started
            write_json(path, {"key": key, "arm": arm, "seed": seed, **part})
            print(f"seed {seed} {arm}: held-out Pass@1 {part['eval']['pass_at_1']:.3f}, "
                  f"{part['step_seconds'] or 0:.1f} s/step", flush=True)
            if args.commit:
                commit(path, f"rivals: seed {seed}, arm {arm}: held-out Pass@1 {part['eval']['pass_at_1']:.3f}")
            report(results, seeds=seeds, arms=arms, command=command, protocol=protocol)
    text = report(results, seeds=seeds, arms=arms, command=command, protocol=protocol)
    if text:
        print(text)
    return text


if __name__ == "__main__":
    main()
