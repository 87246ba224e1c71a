"""The pieces of the paper's comparison in miniature (`benchmarks/paper_miniature.py`).

- A *starting model* for the built-in arithmetic task, built from scratch and cached: a supervised warm
  start (`tapo.warmstart`, the `miniature_spec` preset) stopped once its sampled accuracy reaches a
  target (`warm_start`), so DCS fires at any difficulty; optionally (`cold_start`, not yet validated)
  a cold start in the paper's sense on rule-based `aligned` constructions: the warm model samples
  answers to training problems, each wrong one is cut after its first wrong step and continued with a
  templated reflection and the right steps, and the model is fine-tuned on those trajectories mixed
  with reference solutions, so that it has seen the reflection format.
- A held-out *evaluator*: the same problems, sampling seed and temperature for every checkpoint of
  every arm; Pass@1, mean response length, and the direct solution / effective reflection rates of
  `tapo.evaluation.analysis` with the marker classifier.

The cold start here is our own small SFT loop (`tapo.warmstart.supervised_train`) on `aligned`
trajectory examples, written before `tapo.coldstart` (build_coldstart + run_sft) landed; the synthesis
("IFT-format") half of the paper's cold start is left out because `aligned` needs no synthesis prompt.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from tapo.warmstart import WarmStartSpec


@dataclass(frozen=True)
class TaskSpec:
    """The difficulty of the built-in arithmetic task."""

    n_steps: int = 2
    max_operand: int = 9


@dataclass(frozen=True)
class ColdStartSpec:
    """Cold start on `aligned` trajectories built from the warm model's own wrong answers."""

    n_queries: int = 256  # training problems the warm model answers
    samples: int = 4  # answers per problem
    max_per_query: int = 2  # trajectories kept per problem
    reference_share: float = 0.5  # share of reference solutions in the SFT mix
    steps: int = 150
    batch_size: int = 32
    learning_rate: float = 5e-4
    temperature: float = 1.0
    max_new_tokens: int = 48
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def start_model_key(task: TaskSpec, warm: WarmStartSpec, cold: ColdStartSpec | None) -> str:
    payload = {"task": asdict(task), "warm": asdict(warm), "cold": asdict(cold) if cold else None}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


def prompt_ids(tokenizer, question: str) -> list[int]:
    """Token ids of the chat prompt the trainer builds for a question (default instruction)."""
    from tapo.data.datasets import format_prompt

    text = tokenizer.apply_chat_template(format_prompt(question), tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


def sample_texts(model, tokenizer, questions: list[str], *, max_new_tokens: int, temperature: float, seed: int,
                 batch_size: int = 64) -> tuple[list[str], list[int]]:
    """One sampled response per question: (decoded texts, generated token counts, eos not counted)."""
    from tapo.generation import sample_completions

    ids = [prompt_ids(tokenizer, q) for q in questions]
    outs = sample_completions(
        model, tokenizer, ids, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, batch_size=batch_size
    )
    texts = tokenizer.batch_decode(outs, skip_special_tokens=True)
    lengths = [len(o) - (1 if o and o[-1] == tokenizer.eos_token_id else 0) for o in outs]
    return texts, lengths


def aligned_examples(problems, texts: list[str], *, samples: int, max_per_query: int, rng: random.Random) -> list:
    """(question, trajectory) pairs: each wrong answer cut after its first wrong step and continued right."""
    from tapo.data.arithmetic import aligned_correction

    out = []
    for i, problem in enumerate(problems):
        made = []
        for text in texts[i * samples : (i + 1) * samples]:
            corrected = aligned_correction(problem, text)
            if corrected is not None:
                prefix, _, continuation = corrected
                made.append(SimpleNamespace(question=problem.question, solution=prefix + continuation))
        rng.shuffle(made)
        out.extend(made[:max_per_query])
    return out


def cold_start(model, tokenizer, task: TaskSpec, cold: ColdStartSpec) -> dict:
    """Fine-tune `model` in place on aligned trajectories of its own wrong answers (+ references)."""
    from tapo.data.arithmetic import generate_problems
    from tapo.warmstart import sft_examples, supervised_train

    problems = generate_problems(
        split="train", n=cold.n_queries, seed=cold.seed + 1, n_steps=task.n_steps, max_operand=task.max_operand
    )
    questions = [p.question for p in problems for _ in range(cold.samples)]
    texts, _ = sample_texts(
        model, tokenizer, questions, max_new_tokens=cold.max_new_tokens, temperature=cold.temperature, seed=cold.seed
    )
    rng = random.Random(cold.seed)
    trajectories = aligned_examples(problems, texts, samples=cold.samples, max_per_query=cold.max_per_query, rng=rng)
    if not trajectories:
        raise RuntimeError("cold start: the warm model made no wrong answer that `aligned` could correct")
    n_ref = round(len(trajectories) * cold.reference_share / max(1e-9, 1 - cold.reference_share))
    references = rng.sample(problems, min(n_ref, len(problems)))
    examples = sft_examples(tokenizer, trajectories) + sft_examples(tokenizer, references)
    loss = supervised_train(
        model, tokenizer, examples, steps=cold.steps, batch_size=cold.batch_size,
        learning_rate=cold.learning_rate, seed=cold.seed,
    )
    return {"trajectory_examples": len(trajectories), "reference_examples": len(references), "final_loss": loss}


def warm_start(task: TaskSpec, warm: WarmStartSpec, *, target: float, check_every: int = 50,
               check_problems: int = 48, check_samples: int = 4, max_new_tokens: int = 48):
    """Supervised warm start from scratch, stopped once sampled accuracy reaches `target`.

    The architecture, learning rate, batch size and training problems come from `warm`
    (`tapo.warmstart.miniature_spec`); `warm.steps` is the most steps trained. Accuracy is checked every
    `check_every` steps at temperature 1.0 on train-split problems the model is not trained on (never on
    the held-out split), so the stop adapts to any difficulty. Returns (model, tokenizer, info).
    """
    from tapo.data.arithmetic import generate_problems
    from tapo.models import build_tiny
    from tapo.rewards import math_reward
    from tapo.warmstart import sft_batch_loss, sft_examples

    torch.manual_seed(warm.seed)
    model, tokenizer = build_tiny(seed=warm.seed, hidden_size=warm.hidden_size, num_layers=warm.num_layers)
    problems = generate_problems(split="train", n=warm.n_problems, seed=warm.seed, n_steps=warm.n_steps,
                                 max_operand=warm.max_operand)
    seen = {p.question for p in problems}
    try:
        pool = generate_problems(split="train", n=4 * check_problems + warm.n_problems, seed=warm.seed + 7,
                                 n_steps=warm.n_steps, max_operand=warm.max_operand)
    except ValueError:  # a small problem space: check on training problems
        pool = problems
    checks = [p for p in pool if p.question not in seen][:check_problems] or pool[:check_problems]
    examples = sft_examples(tokenizer, problems)
    rng = random.Random(warm.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=warm.learning_rate, weight_decay=0.0)
    history, accuracy, step = [], 0.0, 0
    while step < warm.steps:
        model.train()
        for _ in range(min(check_every, warm.steps - step)):
            step += 1
            for group in optimizer.param_groups:
                group["lr"] = warm.learning_rate * min(1.0, step / 20)
            loss = sft_batch_loss(model, tokenizer, rng.sample(examples, min(warm.batch_size, len(examples))))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        model.eval()
        questions = [p.question for p in checks for _ in range(check_samples)]
        texts, _ = sample_texts(model, tokenizer, questions, max_new_tokens=max_new_tokens, temperature=1.0, seed=step)
        accuracy = sum(math_reward(texts, [p.answer for p in checks for _ in range(check_samples)])) / len(texts)
        history.append({"step": step, "loss": float(loss.detach()), "accuracy": accuracy})
        print(f"warm start: step {step}, loss {float(loss.detach()):.3f}, sampled accuracy {accuracy:.3f}",
              file=sys.stderr, flush=True)
        if accuracy >= target:
            break
    return model, tokenizer, {"warm_steps": step, "warm_check_accuracy": accuracy, "warm_history": history}


def build_start_model(task: TaskSpec, warm: WarmStartSpec, cold: ColdStartSpec | None, *, target: float = 0.5,
                      check_problems: int = 48, cache: Path | None = None) -> Path:
    """Warm start to `target` sampled accuracy, then cold start; cached by the specs. A Hugging Face folder."""
    from tapo.models import cache_dir

    if (warm.n_steps[0], warm.n_steps[1]) != (task.n_steps, task.n_steps) or warm.max_operand != task.max_operand:
        raise ValueError(f"warm-start spec {warm} does not match the task {task}")
    root = cache or cache_dir()
    tag = f"t{int(round(target * 100))}" + (f"c{check_problems}" if check_problems != 48 else "")
    warm_folder = root / f"miniature-warm-v3-{start_model_key(task, warm, None)}-{tag}"
    folder = warm_folder if cold is None else root / f"miniature-start-v3-{start_model_key(task, warm, cold)}-{tag}"
    if (folder / "config.json").is_file():
        return folder
    with torch.random.fork_rng(devices=[]):
        if not (warm_folder / "config.json").is_file():
            started = time.perf_counter()
            model, tokenizer, info = warm_start(task, warm, target=target, check_problems=check_problems)
            info["build_seconds"] = time.perf_counter() - started
            meta = {"task": asdict(task), "warm": asdict(warm), "cold": None, "target": target, **info}
            _save(model, tokenizer, meta, warm_folder)
        if cold is None:
            return warm_folder
        from tapo.models import load_policy

        started = time.perf_counter()
        model, tokenizer = load_policy(str(warm_folder))
        torch.manual_seed(cold.seed)
        info = json.loads((warm_folder / "start_model.json").read_text())
        info.update(cold_start(model, tokenizer, task, cold), cold=asdict(cold), cold_seconds=time.perf_counter() - started)
        _save(model, tokenizer, info, folder)
    return folder


def _save(model, tokenizer, meta: dict, folder: Path) -> None:
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "start_model.json").write_text(json.dumps(meta, indent=2))
    tmp.rename(folder)  # atomic: an interrupted build never leaves a half-written folder


# ---- held-out evaluation ------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSpec:
    n_problems: int = 64
    samples: int = 4
    temperature: float = 1.0  # the training temperature
    max_new_tokens: int = 64  # the training max_completion_length
    seed: int = 1234
    problem_seed: int = 0


def heldout_problems(task: TaskSpec, spec: EvalSpec) -> list:
    from tapo.data.arithmetic import generate_problems

    return generate_problems(
        split="test", n=spec.n_problems, seed=spec.problem_seed, n_steps=task.n_steps, max_operand=task.max_operand
    )


def evaluate_folder(folder: str | Path, problems: list, spec: EvalSpec, *, keep_responses: bool = False) -> dict:
    """Held-out metrics of the model in `folder`: Pass@1, response length, reflection rates (markers).

    Every problem is sampled `spec.samples` times with one fixed seed, so two models see the same
    prompts in the same order and the same random stream.
    """
    from tapo.evaluation.analysis import reflection_rates
    from tapo.evaluation.reflection import marker_verdict
    from tapo.models import load_policy
    from tapo.rewards import math_reward

    model, tokenizer = load_policy(str(folder))
    model.eval()
    questions = [p.question for p in problems for _ in range(spec.samples)]
    golds = [p.answer for p in problems for _ in range(spec.samples)]
    texts, lengths = sample_texts(
        model, tokenizer, questions, max_new_tokens=spec.max_new_tokens, temperature=spec.temperature, seed=spec.seed
    )
    correct = [r > 0 for r in math_reward(texts, golds)]
    verdicts = [marker_verdict(t) for t in texts]
    per_problem = {
        p.id: sum(correct[i * spec.samples : (i + 1) * spec.samples]) / spec.samples for i, p in enumerate(problems)
    }
    result = {
        "pass_at_1": sum(correct) / len(correct),
        "mean_length": sum(lengths) / len(lengths),
        "n_responses": len(texts),
        "problem_ids": [p.id for p in problems],
        "per_problem_pass_rate": per_problem,
        **reflection_rates(list(zip(correct, verdicts))),
    }
    if keep_responses:
        result["responses"] = [
            {"problem_id": problems[i // spec.samples].id, "sample": i % spec.samples, "response": t,
             "correct": c, "reflects": v.reflects, "n_tokens": n}
            for i, (t, c, v, n) in enumerate(zip(texts, correct, verdicts, lengths))
        ]
    return result


def boundary_rates(responses_by_arm: dict[str, list[dict]]) -> tuple[list[str], dict[str, dict]]:
    """Direct solution / effective reflection rates on the problems every arm solves sometimes but not always."""
    from tapo.evaluation.analysis import boundary_problems, reflection_rates
    from tapo.evaluation.reflection import ReflectionVerdict

    rates = []
    for rows in responses_by_arm.values():
        by_problem: dict[str, list[bool]] = {}
        for r in rows:
            by_problem.setdefault(r["problem_id"], []).append(r["correct"])
        rates.append({pid: sum(v) / len(v) for pid, v in by_problem.items()})
    boundary = boundary_problems(rates)
    chosen = set(boundary)
    out = {
        arm: reflection_rates([(r["correct"], ReflectionVerdict(r["reflects"])) for r in rows if r["problem_id"] in chosen])
        for arm, rows in responses_by_arm.items()
    }
    return boundary, out


def jsonable(value: Any) -> Any:
    """Round floats for compact JSON files."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
