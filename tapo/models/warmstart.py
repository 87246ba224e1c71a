"""A small model trained from scratch on the built-in arithmetic task (supervised warm start).

The random `builtin:tiny` never answers right, so GRPO has no signal and TAPO's selection never fires.
`builtin:tiny-arith` is the same architecture after a short supervised run on reference solutions
(loss on the response only), stopped early on purpose so that it solves some problems and fails others:
the capability boundary where TAPO works (measured: 31% of sampled answers right at temperature 1 on
the recipe's train problems). Built once (under a minute on 2 idle cores) and cached.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tapo.data.arithmetic import generate_problems
from tapo.data.datasets import DEFAULT_INSTRUCTION, format_prompt


@dataclass(frozen=True)
class WarmStartSpec:
    hidden_size: int = 128
    num_layers: int = 2
    steps: int = 160  # measured: 0.31 of answers right (T=1, 100 train problems x 4); 600 steps reach ~1.0
    batch_size: int = 32
    learning_rate: float = 3e-3
    n_problems: int = 120  # nearly all one-step train problems with operands up to 9
    n_steps: tuple[int, int] = (1, 1)
    max_operand: int = 9
    seed: int = 0

    def key(self) -> str:
        import hashlib

        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def sft_examples(tokenizer, problems, *, instruction: str = DEFAULT_INSTRUCTION) -> list[tuple[list[int], int]]:
    """(token ids of prompt + reference solution + eos, prompt length) per problem."""
    examples = []
    for problem in problems:
        prompt = tokenizer.apply_chat_template(
            format_prompt(problem.question, instruction=instruction), tokenize=False, add_generation_prompt=True
        )
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        response_ids = tokenizer.encode(problem.solution, add_special_tokens=False) + [tokenizer.eos_token_id]
        examples.append((prompt_ids + response_ids, len(prompt_ids)))
    return examples


def sft_batch_loss(model, tokenizer, chunk: list[tuple[list[int], int]]):
    """Next-token loss of a batch of (ids, prompt length) examples, on the response tokens only."""
    width = max(len(ids) for ids, _ in chunk)
    input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id)  # [B, W]
    labels = torch.full((len(chunk), width), -100)  # [B, W] -100 = no loss
    attention = torch.zeros((len(chunk), width), dtype=torch.long)  # [B, W]
    for row, (ids, prompt_len) in enumerate(chunk):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
        attention[row, : len(ids)] = 1
    return model(input_ids=input_ids, attention_mask=attention, labels=labels).loss


def supervised_train(model, tokenizer, examples, *, steps: int, batch_size: int, learning_rate: float, seed: int):
    """Plain next-token training with the loss on response tokens only; returns the last loss."""
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20) * max(0.05, 1 - s / steps))
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        loss = sft_batch_loss(model, tokenizer, rng.sample(examples, min(batch_size, len(examples))))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return float(loss)


def build_tiny_arith(spec: WarmStartSpec = WarmStartSpec(), *, folder: Path | None = None) -> Path:
    """Train (or find cached) the warm-started tiny model; returns its Hugging Face folder."""
    from tapo.models.tiny import build_tiny, cache_dir

    folder = folder or cache_dir() / f"tiny-arith-{spec.key()}"
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(spec.seed)
    model, tokenizer = build_tiny(seed=spec.seed, hidden_size=spec.hidden_size, num_layers=spec.num_layers)
    problems = generate_problems(split="train", n=spec.n_problems, seed=spec.seed, n_steps=spec.n_steps, max_operand=spec.max_operand)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        loss = supervised_train(
            model, tokenizer, sft_examples(tokenizer, problems),
            steps=spec.steps, batch_size=spec.batch_size, learning_rate=spec.learning_rate, seed=spec.seed,
        )
    tmp = folder.with_name(folder.name + ".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "warmstart.json").write_text(json.dumps({**asdict(spec), "final_loss": loss}, indent=2))
    tmp.rename(folder)
    return folder


def miniature_spec(*, n_steps: int = 2, max_operand: int = 9, smoke: bool = False) -> WarmStartSpec:
    """The warm start of the paper-in-miniature benchmark (`benchmarks/paper_miniature.py`) at a difficulty.

    A 2-layer Qwen2 (hidden 128) trained from scratch on `n_steps`-step problems; `steps` is an upper
    bound: `miniature.warm_start` (benchmarks/miniature.py) stops once sampled accuracy reaches its target. With `smoke`, a
    far shorter run (hidden 64) that only has to exist, for the test suite. The default spec above and
    `builtin:tiny-arith` are unchanged.

    >>> miniature_spec(n_steps=3, max_operand=6).n_steps
    (3, 3)
    """
    if smoke:
        return WarmStartSpec(hidden_size=64, num_layers=2, steps=60, batch_size=16, n_problems=200,
                             n_steps=(n_steps, n_steps), max_operand=max_operand)
    return WarmStartSpec(hidden_size=128, num_layers=2, steps=3000, batch_size=32, learning_rate=3e-3,
                         n_problems=2000, n_steps=(n_steps, n_steps), max_operand=max_operand)
