"""The vLLM backend: the offline engine, every request seeded on its own."""

from __future__ import annotations

from collections.abc import Sequence

from tapo.sampling.types import Completion, SamplingSettings, derive_seed


class VLLMSampler:
    """Sampling with vLLM's offline engine; each request carries its own seed, so a request's samples do not
    depend on what else is in the batch. Sampling is the protocol's: temperature and top-p (top-k off)."""

    backend = "vllm"

    def __init__(self, model_path: str, tokenizer, *, dtype: str = "auto", seed: int = 0, **engine_kwargs) -> None:
        from vllm import LLM

        self.tokenizer = tokenizer
        self.llm = LLM(model=model_path, tokenizer=model_path, dtype=dtype, seed=seed, **engine_kwargs)

    def sample(
        self, prompt_ids: Sequence[Sequence[int]], *, n: int, seed: int, settings: SamplingSettings
    ) -> list[list[Completion]]:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                n=n,
                temperature=settings.temperature,
                top_p=settings.top_p if settings.temperature > 0 else 1.0,
                top_k=-1 if settings.temperature > 0 else 1,
                max_tokens=settings.max_tokens,
                seed=derive_seed(seed, i),
                skip_special_tokens=True,
            )
            for i in range(len(prompt_ids))
        ]
        prompts = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [[_completion(o) for o in sorted(request.outputs, key=lambda o: o.index)] for request in outputs]


def _completion(output) -> Completion:
    """vLLM keeps the end-of-sequence id in `token_ids` when it ended the output (stop_reason None)."""
    finished = output.finish_reason == "stop"
    eos_kept = finished and output.stop_reason is None
    return Completion(text=output.text, n_tokens=len(output.token_ids) - int(eos_kept), finished=finished,
                      token_ids=tuple(output.token_ids))
