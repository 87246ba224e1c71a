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
    else:  # the evaluation protocol: temperature and top-p only (the processors: the test below)
        assert seen["top_k"] == 0
    for completion in group:
        assert len(completion.token_ids) == completion.n_tokens + int(completion.finished)
        assert tokenizer.decode(completion.token_ids, skip_special_tokens=True) == completion.text


def test_hf_sampler_applies_temperature_and_top_p_whatever_the_generation_config_says():
    from tapo.models import load_policy

    model, tokenizer = load_policy("builtin:tiny", seed=0)
    config = model.generation_config
    model_settings = dict(min_p=0.3, typical_p=0.5, no_repeat_ngram_size=3, epsilon_cutoff=0.01, eta_cutoff=0.01,
                          min_new_tokens=4, repetition_penalty=1.3, top_k=5, suppress_tokens=[7],
                          begin_suppress_tokens=[8], renormalize_logits=True)
    for key, value in model_settings.items():  # as a model's generation_config.json may set them
        setattr(config, key, value)
    processors = []
    build = model._get_logits_processor

    def recording(*args, **kwargs):
        built = build(*args, **kwargs)
        processors.append([type(p).__name__ for p in built])
        return built

    model._get_logits_processor = recording
    ids = [prompt_token_ids(tokenizer, "What is 2 + 3?")]
    HFSampler(model, tokenizer).sample(ids, n=2, seed=1, settings=SamplingSettings(temperature=0.6, top_p=0.9,
                                                                                   max_tokens=3))
    assert processors == [["TemperatureLogitsWarper", "TopPLogitsWarper"]]
    assert model.generation_config is config and config.min_p == 0.3  # the model's own config is left as it was
    HFSampler(model, tokenizer, model_defaults=True).sample(ids, n=1, seed=1, settings=SamplingSettings(max_tokens=6))
    assert "MinPLogitsWarper" in processors[-1] and "TopKLogitsWarper" in processors[-1]  # the model's defaults
