"""The transformers backend: batched `generate`, one call per `sample` call, seeded per call."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from transformers import GenerationConfig

from tapo.sampling.types import Completion, SamplingSettings
from tapo.tensors import stack_rows


def eos_ids(model, tokenizer) -> list[int]:
    """End-of-sequence ids: the tokenizer's and the model's generation config's (Qwen has two)."""
    ids: list[int] = []
    for source in (getattr(getattr(model, "generation_config", None), "eos_token_id", None), tokenizer.eos_token_id):
        for i in [source] if isinstance(source, int) else list(source or []):
            if i not in ids:
                ids.append(i)
    return ids


class HFSampler:
    """Batched sampling with transformers `generate`.

    Sampling is the evaluation protocol's by default: temperature and top-p, nothing else (no top-k,
    min-p, typical-p, repetition penalty, n-gram ban, minimum length, ..., whatever the model's
    `generation_config.json` says), so numbers compare across models. `model_defaults=True` leaves
    all of those to the model's generation config instead (transformers' top-k 50 when it sets
    none): the benchmarks' figures were measured that way. Temperature 0 is greedy decoding.
    torch's generator is seeded with the call's seed inside `fork_rng`, so sampling leaves the
    caller's random state as it found it.
    """

    backend = "hf"

    def __init__(self, model, tokenizer, *, model_defaults: bool = False) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.eos = eos_ids(model, tokenizer)
        self.model_defaults = model_defaults

    def sample(
        self, prompt_ids: Sequence[Sequence[int]], *, n: int, seed: int, settings: SamplingSettings
    ) -> list[list[Completion]]:
        pad = self.tokenizer.pad_token_id
        ids, mask = stack_rows(prompt_ids, pad_id=pad, side="left")  # [P, L], [P, L]
        device = self.model.device
        greedy = settings.temperature == 0
        options = dict(
            max_new_tokens=settings.max_tokens,
            do_sample=not greedy,
            num_return_sequences=1 if greedy else n,  # greedy samples are all alike: decode once
            eos_token_id=self.eos,
            pad_token_id=pad,
        )
        if not self.model_defaults:
            options.update(top_k=0)  # off: transformers' own default is 50
        if not greedy:
            options.update(temperature=settings.temperature, top_p=settings.top_p)
        devices = [device.index or 0] if device.type == "cuda" else []
        blank = None if self.model_defaults else GenerationConfig()  # nothing of generation_config.json
        with _generation_config(self.model, blank), torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            out = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **options)  # [P*n, L+T]
        generated = out[:, ids.size(1) :].tolist()  # [P * n, T], or [P, T] when greedy
        completions = [self._completion(row) for row in generated]
        if greedy:
            return [[c] * n for c in completions]
        return [completions[i * n : (i + 1) * n] for i in range(len(prompt_ids))]

    def _completion(self, row: list[int]) -> Completion:
        cut = next((i for i, t in enumerate(row) if t in self.eos), None)
        tokens = row if cut is None else row[:cut]
        return Completion(
            text=self.tokenizer.decode(tokens, skip_special_tokens=True), n_tokens=len(tokens),
            finished=cut is not None, token_ids=tuple(row if cut is None else row[: cut + 1]),
        )


@contextmanager
def _generation_config(model, config: GenerationConfig | None) -> Iterator[None]:
    """`model.generation_config` is `config` inside (None: left as it is), the model's own again after.

    `generate` fills every option a call leaves unset from `model.generation_config`, a passed
    `generation_config` included, so the model's min_p, typical_p, no_repeat_ngram_size, ... are
    kept out only by giving it a blank one.
    """
    if config is None:
        yield
        return
    own = model.generation_config
    model.generation_config = config
    try:
        yield
    finally:
        model.generation_config = own
