"""tapo.sampling: the one layer everything outside a trainer samples through."""

from __future__ import annotations

import pytest

from tapo.sampling import Completion, SamplingSettings, generate_fn, index_seeds, prompt_token_ids, sample_groups
from tapo.sampling.hf import HFSampler


class RecordingSampler:
    """Answers each prompt with its length; records the seed and size of every call."""

    backend = "hf"

    def __init__(self, tokenizer=None):
        self.tokenizer = tokenizer
        self.calls: list[tuple[int, int]] = []

    def sample(self, prompt_ids, *, n, seed, settings):
        self.calls.append((seed, len(prompt_ids)))
        return [[Completion(text=str(len(p)), n_tokens=1, finished=True, token_ids=(len(p), 99))] * n for p in prompt_ids]


def test_chunks_follow_the_seed_schedule_and_keep_prompt_order():
    sampler = RecordingSampler()
    prompts = [[1] * k for k in range(1, 6)]
    groups = sample_groups(sampler, prompts, n=2, settings=SamplingSettings(), seed=7, batch_size=4,
                           chunk_seeds=index_seeds(7))
    assert sampler.calls == [(700_021, 2), (700_022, 2), (700_023, 1)]  # 4 // n = 2 prompts a chunk
    assert [g[0].text for g in groups] == ["1", "2", "3", "4", "5"]
    default = RecordingSampler()
    sample_groups(default, prompts, n=2, settings=SamplingSettings(), seed=7, batch_size=4)
    assert [s for s, _ in default.calls] != [s for s, _ in sampler.calls]  # derive_seed(seed, tag, i) by default
    assert len(set(s for s, _ in default.calls)) == 3


def test_generate_fn_gives_sampled_ids_or_reencoded_text_and_a_new_seed_per_call():
    sampler = RecordingSampler()
    generate = generate_fn(sampler, settings=SamplingSettings(), seed=3, batch_size=8, reencode=False,
                           call_seeds=lambda k: index_seeds(3 * 1_000 + k))
    assert generate([[5, 5], [5]], phase="synthesis") == [[2, 99], [1, 99]]
    generate([[5]])
    assert [seed for seed, _ in sampler.calls] == [3001 * 100_003, 3002 * 100_003]


@pytest.mark.parametrize("model_defaults", [False, True])
def test_hf_sampler_decoding_options(model_defaults):
    from tapo.models import load_policy

    model, tokenizer = load_policy("builtin:tiny", seed=0)
    seen = {}
    generate = model.generate

    def recording(**kwargs):
        seen.update(kwargs)
        return generate(**kwargs)

    model.generate = recording
    sampler = HFSampler(model, tokenizer, model_defaults=model_defaults)
    ids = [prompt_token_ids(tokenizer, "What is 2 + 3?")]
    (group,) = sampler.sample(ids, n=2, seed=1, settings=SamplingSettings(temperature=1.0, top_p=1.0, max_tokens=5))
    if model_defaults:  # the benchmarks' figures: top-k and repetition penalty from the model's generation config
        assert "top_k" not in seen and "repetition_penalty" not in seen
    else:  # the evaluation protocol: temperature and top-p only
        assert seen["top_k"] == 0 and seen["repetition_penalty"] == 1.0
    for completion in group:
        assert len(completion.token_ids) == completion.n_tokens + int(completion.finished)
        assert tokenizer.decode(completion.token_ids, skip_special_tokens=True) == completion.text
