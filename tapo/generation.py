"""Batched sampling with transformers `generate`, outside any trainer (benchmarks, data building).

Inside training, TAPO generates through the trainer's own path (HF generate or vLLM); this module
serves the offline tools that need the same kind of samples without a trainer.
"""

from __future__ import annotations

from typing import Any

import torch

from tapo.core.constructors import GenerateFn


@torch.no_grad()
def sample_completions(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
) -> list[list[int]]:
    """Sample one completion per prompt (token ids in, token ids out, eos kept, padding dropped).

    Each batch is seeded from (seed, batch index), so the same call gives the same samples.
    `temperature == 0` decodes greedily.
    """
    pad_id = tokenizer.pad_token_id
    eos_id = tokenizer.eos_token_id
    completions: list[list[int]] = []
    for batch_index, start in enumerate(range(0, len(prompts), batch_size)):
        batch = prompts[start : start + batch_size]
        width = max(len(p) for p in batch)
        input_ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in batch])  # [B, P] left-padded
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])  # [B, P]
        torch.manual_seed(seed * 100_003 + batch_index)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
        output = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            max_new_tokens=max_new_tokens,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
            **sampling,
        )  # [B, P + new]
        for row in output[:, width:].tolist():
            ids = []
            for token in row:
                ids.append(token)
                if token == eos_id:
                    break
            while ids and ids[-1] == pad_id and pad_id != eos_id:
                ids.pop()
            completions.append(ids)
    return completions


def make_generate_fn(
    model: Any,
    tokenizer: Any,
    *,
    max_new_tokens: int,
    temperature: float = 0.7,
    top_p: float = 0.95,
    seed: int = 0,
    batch_size: int = 16,
) -> GenerateFn:
    """A constructors' GenerateFn over HF generate; each call advances the seed so calls differ."""
    calls = {"n": 0}

    def generate(prompts: list[list[int]]) -> list[list[int]]:
        if not prompts:
            return []
        calls["n"] += 1
        return sample_completions(
            model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            seed=seed * 1_000 + calls["n"], batch_size=batch_size,
        )

    return generate
