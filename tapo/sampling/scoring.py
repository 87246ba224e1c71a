"""Teacher-forced scoring outside a trainer: the log-prob of each completion token under a model.

`score_completions` is one batched forward pass per chunk of rows in TRL's layout -- prompts padded
on the left, completions on the right, so every completion starts at the same column -- with
position ids counted from each row's first real token (so padding changes no position) and logits
kept only for the completion columns (`logits_to_keep`), then log-softmax in float32 (`token_logps`). `hf_score_fn`
wraps it as the constructors' `ScoreFn` (`tapo.core.locate`), which `splice` with
`locator="surprise"` calls once per batch. Inside training the trainer scores with its own forward
pass instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tapo.core.locate import ScoreFn
from tapo.tensors import stack_rows, token_logps


@torch.no_grad()
def score_completions(
    model, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *, pad_id: int, batch_size: int = 8,
) -> list[list[float]]:
    """log p(completion[t] | prompt + completion[:t]) for every row and token, one list per row, in row order.

    Rows are scored in chunks of `batch_size`, longest first (similar lengths pad less); every prompt
    needs at least one token (something must predict the first completion token).
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
    for i, prompt in enumerate(prompts):
        if not prompt:
            raise ValueError(f"row {i}: the prompt is empty; nothing predicts the completion's first token")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(prompts)), key=lambda i: -(len(prompts[i]) + len(completions[i])))
    out: list[list[float]] = [[] for _ in prompts]
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        if all(not completions[i] for i in rows):
            continue
        prompt_ids, prompt_mask = stack_rows([prompts[i] for i in rows], pad_id=pad_id, side="left")  # [B, P]
        completion_ids, completion_mask = stack_rows(
            [completions[i] for i in rows], pad_id=pad_id, side="right"
        )  # [B, T]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1).to(device)  # [B, P+T]
        attention = torch.cat([prompt_mask, completion_mask], dim=1).to(device)  # [B, P+T]
        positions = (attention.cumsum(dim=1) - 1).clamp(min=0)  # [B, P+T]
        width = completion_ids.size(1)
        logits = model(
            input_ids=input_ids, attention_mask=attention, position_ids=positions, logits_to_keep=width + 1
        ).logits[:, :-1]  # [B, T, V]: column t predicts completion token t
        taken = token_logps(logits, completion_ids.to(device))  # [B, T]
        for row, i in enumerate(rows):
            out[i] = taken[row, : len(completions[i])].tolist()
    return out


def hf_score_fn(model, tokenizer, *, batch_size: int = 8) -> ScoreFn:
    """A constructors' `ScoreFn` over a transformers causal LM (eval mode, no gradients).

    The tokenizer's pad id pads (its eos when it has none); padded positions are masked, so the
    choice changes no score.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.eval()

    def score(prompts: list[list[int]], completions: list[list[int]]) -> list[list[float]]:
        return score_completions(model, prompts, completions, pad_id=pad_id, batch_size=batch_size)

    return score
