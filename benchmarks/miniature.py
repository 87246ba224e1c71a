"""The pieces of the paper's comparison in miniature (`benchmarks/paper_miniature.py`).

- A *starting model* for the built-in arithmetic task, built from scratch and cached: a supervised warm
  start (`tapo.models.warmstart`, the `miniature_spec` preset) stopped once its sampled accuracy reaches a
  target (`warm_start`), so DCS fires at any difficulty; then (`cold_start`) the cold start of
  `tapo.coldstart`, the same code as `tapo coldstart run`: the warm model samples answers to training
  problems, each (wrong, right) pair becomes an `aligned` micro-reflective trajectory (the wrong answer
  cut after its first wrong step, a templated reflection, the right steps), and the model is fine-tuned
  with TRL's SFTTrainer (completion-only loss) on those trajectories, synthesis ("IFT-format") examples
  and plain right answers, so that it has seen both the reflection and the synthesis formats.
- A held-out *evaluator*: the same problems, sampling seed and temperature for every checkpoint of
  every arm; Pass@1, mean response length, and the direct solution / effective reflection rates of
  `tapo.evaluation.analysis` with the marker classifier.
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
from typing import Any

import torch

from tapo.models.warmstart import WarmStartSpec


@dataclass(frozen=True)
class TaskSpec:
    """The difficulty of the built-in arithmetic task."""

    n_steps: int = 2
    max_operand: int = 9


@dataclass(frozen=True)
class ColdStartSpec:
    """The miniature's cold start: `tapo coldstart` build + SFT from the warm model (DESIGN 1.7)."""

    n_queries: int = 512  # training problems the warm model answers
    samples: int = 4  # answers per problem (K); a pair needs one right and one wrong answer
    # trajectory : synthesis : plain examples. Plain right answers (no reflection) keep the model from
    # reflecting on every answer, so that direct solving and effective reflection can both be measured.
    # No synthesis examples by default: `aligned` needs none, and the paper's 2 : 1 mix (SELF_COLD_START)
    # measurably breaks this 2-layer model (held-out Pass@1 at 64 tokens 0.57 -> 0.23, loss stuck near 3.2;
    # benchmarks/RESULTS_miniature.md).
    mix: tuple = (("trajectory", 1), ("plain", 1))
    # The reflection phrases are new (English) text to a model trained from scratch on arithmetic: at
    # 5e-4 its trajectory loss stayed near 3.7 after 3 epochs; at 2e-3 it fell to 0.3 in 80 steps.
    learning_rate: float = 2e-3  # a from-scratch 2-layer model, not the paper's 7B (5e-6)
    epochs: float = 10.0
    batch_size: int = 16
    max_new_tokens: int = 64
    seed: int = 0
    # y+: the policy's own right answer (the paper), or `either` (the reference when it has none: the
    # smoke test's barely trained model)
    positive_source: str = "policy"


# The paper's mix (trajectory : synthesis 2 : 1) plus plain answers: the cold start for `self` constructions.
SELF_COLD_START = ColdStartSpec(mix=(("trajectory", 2), ("synthesis", 1), ("plain", 2)), learning_rate=5e-4,
                                epochs=4.0, batch_size=32)


def coldstart_config(model: str | Path, task: TaskSpec, cold: ColdStartSpec, *, output_dir: str | Path):
    """The `tapo.coldstart` config of the miniature's cold start (what `tapo coldstart run` would read)."""
    from tapo.coldstart.config import build_coldstart_config

    raw = {
        "seed": cold.seed,
        "output_dir": str(output_dir),
        "model": {"name": str(model)},
        # Drawn with another data seed than the RL run's (data_seed 0), from the same train split.
        "data": {"source": "builtin:arithmetic", "n": cold.n_queries, "data_seed": 1000 + cold.seed,
                 "n_steps": task.n_steps, "max_operand": task.max_operand},
        "build": {"construction": "aligned", "samples": cold.samples, "max_new_tokens": cold.max_new_tokens,
                  "temperature": 1.0, "batch_size": 64, "backend": "hf", "positive_source": cold.positive_source,
                  "n_pos": 1, "n_neg": 1, "mix": dict(cold.mix)},
        "sft": {"learning_rate": cold.learning_rate, "warmup_steps": 10, "lr_scheduler_type": "cosine",
                "num_train_epochs": cold.epochs, "per_device_train_batch_size": cold.batch_size,
                "max_length": 2048, "save_strategy": "no", "logging_steps": 5},
    }
    return build_coldstart_config(raw, where="paper miniature cold start")


def cold_start(warm_folder: Path, task: TaskSpec, cold: ColdStartSpec, *, work_dir: Path) -> tuple[Path, dict]:
    """Build the cold-start data from the warm model and fine-tune it: (model folder, build stats)."""
    from tapo.coldstart.build import build_coldstart
    from tapo.engine.sft import run_sft

    shutil.rmtree(work_dir, ignore_errors=True)
    config = coldstart_config(warm_folder, task, cold, output_dir=work_dir / "sft")
    stats = build_coldstart(config, output=work_dir / "data.jsonl")
    if not stats["kept"]:
        raise RuntimeError(f"cold start: no construction was kept from {warm_folder} ({stats})")
    run_dir = run_sft(config, data=work_dir / "data.jsonl")
    return run_dir / "model", stats


# Fields added to ColdStartSpec after models were cached, left out of the key at these defaults.
_LATER_COLD_FIELDS = {"positive_source": "policy"}


def start_model_key(task: TaskSpec, warm: WarmStartSpec, cold: ColdStartSpec | None) -> str:
    cold_fields = None if cold is None else {
        k: v for k, v in asdict(cold).items() if _LATER_COLD_FIELDS.get(k, object()) != v
    }
    payload = {"task": asdict(task), "warm": asdict(warm), "cold": cold_fields}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


def sample_texts(model, tokenizer, questions: list[str], *, max_new_tokens: int, temperature: float, seed: int,
                 batch_size: int = 64) -> tuple[list[str], list[int]]:
    """One sampled response per question: (decoded texts, generated token counts, eos not counted)."""
    from tapo.sampling import SamplingSettings, index_seeds, prompt_token_ids, sample_groups
    from tapo.sampling.hf import HFSampler

    sampler = HFSampler(model, tokenizer, model_defaults=True)  # the figures were measured with the model's top-k
    settings = SamplingSettings(temperature=temperature, top_p=1.0, max_tokens=max_new_tokens)
    ids = [prompt_token_ids(tokenizer, q) for q in questions]
    groups = sample_groups(sampler, ids, n=1, settings=settings, seed=seed, batch_size=batch_size,
                           chunk_seeds=index_seeds(seed))
    outs = [list(completion.token_ids) for (completion,) in groups]
    texts = tokenizer.batch_decode(outs, skip_special_tokens=True)
    lengths = [completion.n_tokens for (completion,) in groups]
    return texts, lengths


def warm_start(task: TaskSpec, warm: WarmStartSpec, *, target: float, check_every: int = 50,
               check_problems: int = 48, check_samples: int = 4, max_new_tokens: int = 48):
    """Supervised warm start from scratch, stopped once sampled accuracy reaches `target`.

    The architecture, learning rate, batch size and training problems come from `warm`
    (`tapo.models.warmstart.miniature_spec`); `warm.steps` is the most steps trained. Accuracy is checked every
    `check_every` steps at temperature 1.0 on train-split problems the model is not trained on (never on
    the held-out split), so the stop adapts to any difficulty. Returns (model, tokenizer, info).
    """
    from tapo.data.arithmetic import generate_problems
    from tapo.models import build_tiny
    from tapo.rewards import math_reward
    from tapo.models.warmstart import sft_batch_loss, sft_examples

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
    folder = warm_folder if cold is None else root / f"miniature-start-v4-{start_model_key(task, warm, cold)}-{tag}"
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
        started = time.perf_counter()
        work = folder.with_name(folder.name + ".work")
        model_dir, stats = cold_start(warm_folder, task, cold, work_dir=work)
        info = json.loads((warm_folder / "start_model.json").read_text())
        info.update(cold=asdict(cold), cold_build=stats, cold_seconds=time.perf_counter() - started)
        (model_dir / "start_model.json").write_text(json.dumps(info, indent=2))
        shutil.copy(work / "data.jsonl", model_dir / "coldstart_data.jsonl")
        model_dir.rename(folder)  # atomic: an interrupted build never leaves a half-written folder
        shutil.rmtree(work, ignore_errors=True)
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
