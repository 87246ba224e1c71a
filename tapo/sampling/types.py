"""What every sampler takes and returns: settings in, `Completion`s out, one seed per call."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Completion:
    """One sampled response."""

    text: str  # decoded without special tokens
    n_tokens: int  # generated tokens, the end-of-sequence token not counted
    finished: bool  # ended with an end-of-sequence token (False: cut at max_tokens)
    token_ids: tuple[int, ...] = ()  # the generated ids, the ending end-of-sequence id kept, no padding


@dataclass(frozen=True)
class SamplingSettings:
    """Temperature, top-p and token budget of a call (the evaluation protocol's defaults)."""

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


def messages_prompt_ids(tokenizer, messages: list[dict], **template_kwargs) -> list[int]:
    """Token ids of a chat prompt with the assistant turn open (`template_kwargs`, e.g. enable_thinking)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **template_kwargs)
    return list(tokenizer.encode(text, add_special_tokens=False))


def prompt_token_ids(
    tokenizer,
    problem: str,
    *,
    instruction: str | None = None,
    system_prompt: str | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
) -> list[int]:
    """Token ids of the training prompt for `problem` (`format_prompt` + chat template, assistant turn open).

    `chat_template_kwargs` go to the chat template as training's `trainer.chat_template_kwargs` do
    (Qwen3's `{"enable_thinking": False}` opens the turn with an empty think block).
    """
    from tapo.data import DEFAULT_INSTRUCTION, format_prompt

    messages = format_prompt(
        problem, instruction=DEFAULT_INSTRUCTION if instruction is None else instruction, system_prompt=system_prompt
    )
    return messages_prompt_ids(tokenizer, messages, **dict(chat_template_kwargs or {}))
