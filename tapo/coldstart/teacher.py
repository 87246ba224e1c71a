"""The `teacher` construction strategy: a stronger model behind an OpenAI-compatible endpoint writes y_ref.

The teacher gets the same synthesis prompt as `self` (`build_self_prompt`, one user message), and
its answer is read with `parse_synthesis`; the reconstruction, tokenized with the STUDENT's
tokenizer plus eos, is the trajectory (the same rules as `SelfConstructor.finish`: prefix kept,
reflection marker, "unparsed" / "too_long" failures). A request the endpoint fails for good
(after its retries) becomes a failure with reason "endpoint_error"; nothing crashes the build.
Answers are cached on disk by `tapo.endpoint.ChatClient`, so a rerun pays nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from tapo.core.constructors import Result, SelfConstructor
from tapo.core.synthesis import SELF_TEMPLATE, build_self_prompt
from tapo.core.types import ConstructionFailure, ConstructionRequest


def teacher_messages(request: ConstructionRequest, *, template: str = SELF_TEMPLATE) -> list[dict]:
    """The chat the teacher answers: one user message holding the `self` synthesis prompt.

    >>> from tapo.core.types import ConstructionPair
    >>> r = ConstructionRequest(ConstructionPair("q", 0, 1), "What is 2 + 2?", "2 + 2 = 5", (), "2 + 2 = 4", "4")
    >>> m = teacher_messages(r)
    >>> [x["role"] for x in m], "2 + 2 = 5" in m[0]["content"]
    (['user'], True)
    """
    prompt = build_self_prompt(
        question=request.question, negative=request.negative_text, positive=request.positive_text, template=template
    )
    return [{"role": "user", "content": prompt}]


@dataclass(frozen=True, kw_only=True)
class TeacherConstructor:
    """Constructions written by an external model; `client` is a `tapo.endpoint.ChatClient` (or the same shape)."""

    strategy: ClassVar[str] = "teacher"
    tokenizer: Any  # the student's tokenizer: y_ref token ids are the student's
    client: Any  # .chat_many(list of message lists) -> list[str | None]
    template: str = SELF_TEMPLATE
    max_reflection_chars: int | None = None

    def construct(self, requests: Sequence[ConstructionRequest]) -> list[Result]:
        """One `chat_many` for the batch (bounded concurrency, order kept), then parse each answer."""
        answers = self.client.chat_many([teacher_messages(r, template=self.template) for r in requests])
        parser = SelfConstructor(
            tokenizer=self.tokenizer, generate=_no_generate, template=self.template,
            max_reflection_chars=self.max_reflection_chars,
        )
        results: list[Result] = []
        for request, answer in zip(requests, answers, strict=True):
            if answer is None:
                results.append(ConstructionFailure(pair=request.pair, strategy=self.strategy, reason="endpoint_error"))
                continue
            ids = list(self.tokenizer.encode(answer, add_special_tokens=False))
            result = parser.finish(request, ids)
            results.append(replace(result, strategy=self.strategy, raw_output=answer)
                           if isinstance(result, ConstructionFailure) else replace(result, strategy=self.strategy))
        return results


def _no_generate(prompts: list[list[int]]) -> list[list[int]]:
    raise RuntimeError("the teacher constructor generates through its endpoint, not the policy")


def make_teacher(teacher_section: Any, *, tokenizer: Any, cache_dir: str, template: str = SELF_TEMPLATE,
                 max_reflection_chars: int | None = None) -> TeacherConstructor:
    """A TeacherConstructor from a config's `teacher` section (`cache_dir` fills in when the section has none)."""
    from dataclasses import asdict

    from tapo.endpoint import ChatClient, EndpointConfig

    settings = asdict(teacher_section)
    settings["cache_dir"] = settings.get("cache_dir") or cache_dir
    return TeacherConstructor(
        tokenizer=tokenizer, client=ChatClient(EndpointConfig(**settings)), template=template,
        max_reflection_chars=max_reflection_chars,
    )
