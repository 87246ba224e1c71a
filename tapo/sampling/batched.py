"""Many prompts through one sampler: chunked, each chunk seeded, in prompt order; and a constructors' GenerateFn.

Prompts go in chunks of about `batch_size` sequences. Chunk i's seed comes from a seed schedule: by
default `derive_seed(seed, tag, i)` (evaluation's data tools: the cold-start build, the query filter),
so the same call gives the same samples on the same machine and backend; `index_seeds(seed)` gives
chunk i the seed `seed * 100_003 + i`, the schedule the benchmarks' figures were measured with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tqdm.auto import tqdm

from tapo.sampling.types import Completion, Sampler, SamplingSettings, derive_seed, messages_prompt_ids

ChunkSeeds = Callable[[int], int]
"""Chunk index -> that chunk's seed."""


def index_seeds(seed: int) -> ChunkSeeds:
    """Chunk i gets `seed * 100_003 + i` (the benchmarks' schedule).

    >>> [index_seeds(2)(i) for i in range(2)]
    [200006, 200007]
    """
    return lambda index: seed * 100_003 + index


def sample_groups(
    sampler: Sampler,
    prompt_ids: Sequence[Sequence[int]],
    *,
    n: int,
    settings: SamplingSettings,
    seed: int,
    batch_size: int,
    tag: str = "samples",
    chunk_seeds: ChunkSeeds | None = None,
    progress: bool = False,
) -> list[list[Completion]]:
    """`n` completions per prompt, in prompt order; generate sees at most max(1, batch_size // n) prompts.

    Chunk i is sampled with seed `chunk_seeds(i)`, by default `derive_seed(seed, tag, i)`.

    >>> class Echo:  # a stand-in sampler: returns each prompt's length n times
    ...     def sample(self, ids, *, n, seed, settings):
    ...         return [[Completion(text=str(len(p)), n_tokens=1, finished=True)] * n for p in ids]
    >>> [[c.text for c in g] for g in sample_groups(Echo(), [[1], [1, 2]], n=2, settings=SamplingSettings(),
    ...                                            seed=0, batch_size=2)]
    [['1', '1'], ['2', '2']]
    """
    if n <= 0 or not prompt_ids:
        return [[] for _ in prompt_ids]
    seed_of = chunk_seeds or (lambda index: derive_seed(seed, tag, index))
    per_call = max(1, batch_size // n)
    groups: list[list[Completion]] = []
    with tqdm(total=len(prompt_ids), desc=f"{tag} (x{n})", unit="prompt", disable=not progress,
              dynamic_ncols=True) as bar:
        for index, start in enumerate(range(0, len(prompt_ids), per_call)):
            chunk = [list(p) for p in prompt_ids[start : start + per_call]]
            groups.extend(sampler.sample(chunk, n=n, seed=seed_of(index), settings=settings))
            bar.update(len(chunk))
    return groups


def generate_fn(
    sampler: Sampler, *, settings: SamplingSettings, seed: int, batch_size: int, reencode: bool = True,
    call_seeds: Callable[[int], ChunkSeeds] | None = None,
) -> Callable[..., list[list[int]]]:
    """A constructors' GenerateFn (prompt ids -> completion ids, eos kept when it ended) over a sampler.

    Call k (from 1) samples its chunks with `call_seeds(k)`, by default `derive_seed(seed, f"synthesis-{k}", i)`
    for chunk i, so every call differs and the same sequence of calls repeats. With `reencode` the
    sampled text is encoded back with the sampler's tokenizer, which is what a cold-start example
    needs (the SFT data is text); without it the generated ids come back as sampled. The constructors'
    `phase` keyword is accepted; every phase gets `settings`.
    """
    tokenizer = sampler.tokenizer
    calls = [0]

    def generate(prompts: list[list[int]], *, phase: str | None = None) -> list[list[int]]:
        calls[0] += 1
        groups = sample_groups(
            sampler, prompts, n=1, settings=settings, seed=seed, batch_size=batch_size, tag=f"synthesis-{calls[0]}",
            chunk_seeds=call_seeds(calls[0]) if call_seeds else None,
        )
        out = []
        for (completion,) in groups:
            if not reencode:
                out.append(list(completion.token_ids))
                continue
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
    prompt_ids = [messages_prompt_ids(tokenizer, q.prompt, **section.chat_template_kwargs) for q in queries]
    settings = SamplingSettings(temperature=section.temperature, top_p=section.top_p, max_tokens=section.max_new_tokens)
    return sample_groups(sampler, prompt_ids, n=section.samples, settings=settings, seed=seed,
                         batch_size=section.batch_size, tag=tag, progress=progress)
