"""Sampling outside a trainer: evaluation, the cold-start build, the query filter, the benchmarks.

One interface, two backends. A `Sampler` turns prompt token ids into `n` `Completion`s each under
one seed per call; `make_sampler` loads one for a model name (`sampling.hf.HFSampler`, transformers
`generate`; `sampling.vllm.VLLMSampler`, vLLM's offline engine on a CUDA GPU). `sample_groups`
feeds many prompts through a sampler in seeded chunks; `generate_fn` makes a constructors'
GenerateFn of one. Inside training, TAPO samples through the trainer's own generation path instead.

    types.py     Completion, SamplingSettings, the Sampler protocol, seeds, chat prompt ids
    hf.py        the transformers backend
    vllm.py      the vLLM backend
    backends.py  choosing a backend and loading a model for it
    batched.py   chunked, seeded sampling of many prompts; the GenerateFn
    scoring.py   teacher-forced log-probs of given completions; the ScoreFn (splice's surprise locator)
"""

from tapo.sampling.backends import BACKENDS, check_dtype, make_sampler, resolve_backend
from tapo.sampling.batched import generate_fn, index_seeds, sample_groups, sample_query_groups
from tapo.sampling.scoring import hf_score_fn, score_completions
from tapo.sampling.types import (
    Completion,
    Sampler,
    SamplingSettings,
    derive_seed,
    messages_prompt_ids,
    prompt_token_ids,
)

__all__ = [
    "BACKENDS", "Completion", "Sampler", "SamplingSettings", "check_dtype", "derive_seed", "generate_fn",
    "hf_score_fn", "index_seeds", "make_sampler", "messages_prompt_ids", "prompt_token_ids", "resolve_backend",
    "sample_groups", "sample_query_groups", "score_completions",
]
