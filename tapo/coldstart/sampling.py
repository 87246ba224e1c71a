"""Sampling for the data tools (cold-start build, query filter): chunked, seeded, on the evaluation sampler.

The sampler is `tapo.evaluation.sample`'s (vLLM on a CUDA GPU when installed, else transformers
`generate`). Prompts go in chunks of about `batch_size` sequences, each chunk seeded from (seed,
tag, chunk index), so the same call gives the same samples on the same machine and backend.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

from tapo.evaluation.sample import Completion, Sampler, SamplingSettings, derive_seed


def sample_groups(
    sampler: Sampler,
    prompt_ids: Sequence[Sequence[int]],
    *,
    n: int,
    settings: SamplingSettings,
    seed: int,
    batch_size: int,
    tag: str = "samples",
    progress: bool = False,
) -> list[list[Completion]]:
    """`n` completions per prompt, in prompt order; generate sees at most max(1, batch_size // n) prompts.

    >>> class Echo:  # a stand-in sampler: returns each prompt's length n times
    ...     def sample(self, ids, *, n, seed, settings):
    ...         return [[Completion(text=str(len(p)), n_tokens=1, finished=True)] * n for p in ids]
    >>> [[c.text for c in g] for g in sample_groups(Echo(), [[1], [1, 2]], n=2, settings=SamplingSettings(),
    ...                                            seed=0, batch_size=2)]
    [['1', '1'], ['2', '2']]
    """
    if n <= 0 or not prompt_ids:
        return [[] for _ in prompt_ids]
    per_call = max(1, batch_size // n)
    groups: list[list[Completion]] = []
    started = time.perf_counter()
    for index, start in enumerate(range(0, len(prompt_ids), per_call)):
        chunk = [list(p) for p in prompt_ids[start : start + per_call]]
        groups.extend(sampler.sample(chunk, n=n, seed=derive_seed(seed, tag, index), settings=settings))
        if progress:
            done = len(groups)
            elapsed = time.perf_counter() - started
            print(f"\r{tag}: {done}/{len(prompt_ids)} prompts x {n}, {elapsed:.0f} s", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    return groups


def generate_fn(
    sampler: Sampler, *, settings: SamplingSettings, seed: int, batch_size: int
) -> Callable[[list[list[int]]], list[list[int]]]:
    """A constructors' GenerateFn (prompt ids -> completion ids, eos kept when it ended) over a sampler.

    The sampler returns text; it is encoded back with the sampler's tokenizer, which is what a
    cold-start example needs (the SFT data is text). Each call gets a fresh seed.
    """
    tokenizer = sampler.tokenizer
    calls = [0]

    def generate(prompts: list[list[int]]) -> list[list[int]]:
        calls[0] += 1
        groups = sample_groups(
            sampler, prompts, n=1, settings=settings, seed=seed, batch_size=batch_size, tag=f"synthesis-{calls[0]}"
        )
        out = []
        for (completion,) in groups:
            ids = list(tokenizer.encode(completion.text, add_special_tokens=False))
            out.append(ids + [tokenizer.eos_token_id] if completion.finished else ids)
        return out

    return generate


def sample_query_groups(sampler: Sampler, queries: Sequence, section, *, seed: int, tag: str,
                        progress: bool = False) -> list[list[Completion]]:
    """`section.samples` completions of each query's ordinary training prompt (`query.prompt`, chat messages).

    `section` is a `tapo.coldstart.config.SamplingSection` (the `build` or `filter` section): its
    temperature, top-p, token budget, batch size and chat-template arguments apply.
    """
    tokenizer = sampler.tokenizer
    prompt_ids = [chat_prompt_ids(tokenizer, q.prompt, **section.chat_template_kwargs) for q in queries]
    settings = SamplingSettings(temperature=section.temperature, top_p=section.top_p, max_tokens=section.max_new_tokens)
    return sample_groups(sampler, prompt_ids, n=section.samples, settings=settings, seed=seed,
                         batch_size=section.batch_size, tag=tag, progress=progress)


def chat_prompt_ids(tokenizer, messages: list[dict], **template_kwargs) -> list[int]:
    """Token ids of a chat prompt with the assistant turn open (`template_kwargs`, e.g. enable_thinking)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **template_kwargs)
    return list(tokenizer.encode(text, add_special_tokens=False))
