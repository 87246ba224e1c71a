"""Sampling responses for evaluation: vLLM on a CUDA GPU when it is installed, else transformers `generate`.

A sampler turns chat prompts into `n` sampled responses each, under one seed per call. The same
(prompts, seed, settings) give the same responses on the same machine and backend: the
transformers sampler seeds torch's generator before each `generate`, the vLLM sampler gives
every request its own seed derived from the call's seed.

Sampling is exactly the protocol's: temperature and top-p, nothing else (top-k off, no
repetition penalty, whatever the model's `generation_config.json` says), so numbers are
comparable across models. Temperature 0 is greedy decoding. Both backends see the same prompt
token ids: the tokenizer's chat template applied to `tapo.data.format_prompt`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

BACKENDS = ("auto", "hf", "vllm")


@dataclass(frozen=True)
class Completion:
    """One sampled response."""

    text: str  # decoded without special tokens
    n_tokens: int  # generated tokens, the end-of-sequence token not counted
    finished: bool  # ended with an end-of-sequence token (False: cut at max_tokens)


@dataclass(frozen=True)
class SamplingSettings:
    """The evaluation protocol's sampling settings."""

    temperature: float = 0.6
    top_p: float = 0.9
    max_tokens: int = 32768

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")


class Sampler(Protocol):
    backend: str  # "hf" or "vllm"
    tokenizer: object  # applies the chat template to prompts

    def sample(
        self, prompt_ids: Sequence[Sequence[int]], *, n: int, seed: int, settings: SamplingSettings
    ) -> list[list[Completion]]:
        """`n` responses per prompt, in prompt order."""
        ...


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts, stable across processes and Python versions (no `hash()`).

    >>> derive_seed(0, "aime25", 3, 1) == derive_seed(0, "aime25", 3, 1) != derive_seed(0, "aime25", 3, 2)
    True
    """
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def prompt_token_ids(tokenizer, problem: str, *, instruction: str | None = None, system_prompt: str | None = None) -> list[int]:
    """Token ids of the training prompt for `problem` (`format_prompt` + chat template, assistant turn open)."""
    from tapo.data import DEFAULT_INSTRUCTION, format_prompt

    messages = format_prompt(
        problem, instruction=DEFAULT_INSTRUCTION if instruction is None else instruction, system_prompt=system_prompt
    )
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer.encode(text, add_special_tokens=False))


def resolve_backend(backend: str = "auto") -> str:
    """"hf" or "vllm": `auto` picks vLLM when it is importable and a CUDA GPU is present.

    An explicit `vllm` without vLLM installed is refused here, before a model is loaded or an
    output directory is touched, rather than as an ImportError deep inside the sampler.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "hf":
        return backend
    if backend == "vllm":
        if not _vllm_installed():
            raise ValueError("backend vllm: vLLM is not installed (pip install vllm, on a CUDA GPU); use backend hf")
        return backend
    import torch

    return "vllm" if _vllm_installed() and torch.cuda.is_available() else "hf"


def _vllm_installed() -> bool:
    import importlib.util
    import sys

    if "vllm" in sys.modules:  # imported already (or a stand-in a test put there)
        return True
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


DTYPES = ("bfloat16", "float16", "float32")  # the usual --dtype values (any floating torch dtype name works)


def check_dtype(dtype: str | None, *, backend: str) -> None:
    """Refuse a dtype name that is no floating-point torch dtype, before any model is loaded.

    `load_policy` looks the name up on `torch`, so a typo ("float33") used to surface as an
    AttributeError from inside torch, and a name that is no dtype ("Size", "int8") got further.
    """
    import torch

    if dtype is None or (backend == "vllm" and dtype == "auto"):
        return
    value = getattr(torch, dtype, None) if isinstance(dtype, str) else None
    if isinstance(value, torch.dtype) and value.is_floating_point:
        return
    usual = ", ".join(DTYPES + (("auto",) if backend == "vllm" else ()))
    raise ValueError(f"unknown dtype {dtype!r}: not a floating-point torch dtype; use one of {usual}")


def eos_ids(model, tokenizer) -> list[int]:
    """End-of-sequence ids: the tokenizer's and the model's generation config's (Qwen has two)."""
    ids: list[int] = []
    for source in (getattr(getattr(model, "generation_config", None), "eos_token_id", None), tokenizer.eos_token_id):
        for i in [source] if isinstance(source, int) else list(source or []):
            if i not in ids:
                ids.append(i)
    return ids


class HFSampler:
    """Batched sampling with transformers `generate`; one `generate` call per `sample` call."""

    backend = "hf"

    def __init__(self, model, tokenizer) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.eos = eos_ids(model, tokenizer)

    def sample(
        self, prompt_ids: Sequence[Sequence[int]], *, n: int, seed: int, settings: SamplingSettings
    ) -> list[list[Completion]]:
        import torch

        from tapo.engine.batching import stack_rows

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
            top_k=0,  # 0 turns top-k off (None would fall back to the model's generation_config)
            repetition_penalty=1.0,
        )
        if not greedy:
            options.update(temperature=settings.temperature, top_p=settings.top_p)
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            out = self.model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), **options
            )  # [P * n, L + T]
        generated = out[:, ids.size(1) :].tolist()  # [P * n, T], or [P, T] when greedy
        completions = [self._completion(row) for row in generated]
        if greedy:
            return [[c] * n for c in completions]
        return [completions[i * n : (i + 1) * n] for i in range(len(prompt_ids))]

    def _completion(self, row: list[int]) -> Completion:
        cut = next((i for i, t in enumerate(row) if t in self.eos), None)
        tokens = row if cut is None else row[:cut]
        return Completion(
            text=self.tokenizer.decode(tokens, skip_special_tokens=True), n_tokens=len(tokens), finished=cut is not None
        )


class VLLMSampler:
    """Sampling with vLLM's offline engine; each request carries its own seed, so a request's samples do not
    depend on what else is in the batch."""

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
        return [[_vllm_completion(o) for o in sorted(request.outputs, key=lambda o: o.index)] for request in outputs]


def _vllm_completion(output) -> Completion:
    """vLLM keeps the end-of-sequence id in `token_ids` when it ended the output (stop_reason None)."""
    finished = output.finish_reason == "stop"
    eos_kept = finished and output.stop_reason is None
    return Completion(text=output.text, n_tokens=len(output.token_ids) - int(eos_kept), finished=finished)


def make_sampler(
    model_name: str, *, backend: str = "auto", dtype: str | None = None, seed: int = 0, **vllm_kwargs
) -> Sampler:
    """A sampler for a hub id, a local folder, or a built-in name (`tapo.models.load_policy`).

    `dtype` None picks bfloat16 on a GPU and float32 on a CPU (and vLLM's own choice under vLLM).
    """
    import torch

    from tapo.models import BUILTIN_PREFIX, builtin_folder, load_policy, load_tokenizer

    chosen = resolve_backend(backend)
    check_dtype(dtype, backend=chosen)
    try:
        if chosen == "vllm":
            path = model_name
            if model_name.startswith(BUILTIN_PREFIX):
                if model_name == "builtin:tiny":
                    raise ValueError("builtin:tiny has no folder for vLLM; use --backend hf")
                path = str(builtin_folder(model_name))
            return VLLMSampler(path, load_tokenizer(model_name), dtype=dtype or "auto", seed=seed, **vllm_kwargs)
        cuda = torch.cuda.is_available()
        model, tokenizer = load_policy(model_name, dtype=dtype or ("bfloat16" if cuda else "float32"), seed=seed)
    except FileNotFoundError:
        raise  # "model folder not found: PATH" (tapo.models) already says what and where
    except OSError as error:  # not a folder, not on the Hub, or the Hub unreachable: transformers' long story
        raise ValueError(
            f"could not load model {model_name!r} (a local folder, a Hub id, or builtin:...): {error}"
        ) from error
    if cuda:
        model = model.to("cuda")
    return HFSampler(model, tokenizer)
