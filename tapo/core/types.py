"""Typed records that travel between TAPO's stages: selection -> construction -> training rows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ConstructionPair:
    """One (y-, y+) pair chosen by difficulty-aware candidate selection.

    Indices are positions inside the query's rollout group (0..K-1), not the batch.
    """

    query_id: str  # stable id of the query (the group), e.g. the dataset row id or the trainer's uid
    negative_index: int  # which rollout of the group is y-
    positive_index: int  # which rollout of the group is the reference y+


@dataclass(frozen=True)
class ConstructionRequest:
    """Everything a constructor needs to build one micro-reflective trajectory."""

    pair: ConstructionPair
    question: str  # the bare problem text (no chat template, no instruction)
    negative_text: str  # y-: a wrong rollout
    negative_ids: tuple[int, ...]  # y-'s own completion token ids (no padding)
    positive_text: str  # y+: a right rollout of the same query
    answer: str  # the gold answer, for scoring the construction
    prompt_ids: tuple[int, ...] = ()  # y-'s own prompt ids as rolled out (splice surprise's plain view); () -> chat(question)


@dataclass(frozen=True)
class ConstructedTrajectory:
    """A constructed trajectory y_ref with its provenance.

    `token_ids` is what the trainer appends as the response to the original prompt x; the
    analysis and the synthesis prompt are not part of it.
    """

    pair: ConstructionPair
    strategy: str  # "self" | "splice" | "aligned" | "teacher"
    text: str  # y_ref, decoded
    token_ids: tuple[int, ...]  # y_ref, the ids that get trained
    analysis: str  # the diagnosis of the first critical mistake ("" when none was written)
    prefix_tokens: int  # leading tokens of y_ref equal to y-'s own ids (longest common prefix)
    reflection_start: int  # token index in y_ref where the reflection begins (== prefix_tokens for splice)
    generated_tokens: int  # tokens the model generated to make this construction (0 for aligned)
    reward: float | None = None  # r_ref, set once scored by the rollout reward
    extra: dict = field(default_factory=dict, compare=False)  # strategy-specific notes (e.g. the quoted span)


@dataclass(frozen=True)
class ConstructionFailure:
    """A pair that produced no trajectory, and why (counted in the metrics, never silently lost)."""

    pair: ConstructionPair
    strategy: str
    reason: str  # "unparsed" | "quote_not_found" | "empty" | ...
    generated_tokens: int = 0
    raw_output: str = ""


@dataclass(frozen=True)
class SpliceCut:
    """Where `splice` cuts y- and what the policy continues from (the result of its locate phase)."""

    kept_ids: tuple[int, ...]  # y-'s own ids up to the end of the located span
    opener_ids: tuple[int, ...]  # the seeded start of the reflection
    analysis: str  # what the continuation prompt says of the mistake
    quote: str  # the located span of y-
    locate_tokens: int  # tokens decoded to locate it (0 for the surprise locator)
    notes: dict = field(default_factory=dict)  # locator-specific provenance, merged into the trajectory's extra


@dataclass(frozen=True)
class PendingConstruction:
    """A construction whose last generation has not run yet: the prompt it waits on and how to finish it.

    A constructor's `defer` makes these and its `complete` finishes them with their completions;
    `construct` is the two with the generation in between. Under `synthesis_schedule: deferred`
    the trainer keeps them for the next step's rollout call and saves them in checkpoints
    (`to_dict` / `from_dict` round-trip through JSON).
    """

    request: ConstructionRequest
    phase: str  # the phase of the generation still to run: "synthesis" or "continuation"
    prompt_ids: tuple[int, ...]
    cut: SpliceCut | None = None  # splice: where y- is cut (phase "continuation")
    locate_failure: str | None = None  # splice's self fallback: why locating failed
    spent_tokens: int = 0  # tokens already decoded for it (splice's locate answer)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingConstruction:
        request = dict(data["request"])
        request["pair"] = ConstructionPair(**request["pair"])
        for key in ("negative_ids", "prompt_ids"):
            request[key] = tuple(request[key])
        cut = data.get("cut")
        if cut is not None:
            cut = SpliceCut(**{**cut, "kept_ids": tuple(cut["kept_ids"]), "opener_ids": tuple(cut["opener_ids"])})
        return cls(
            request=ConstructionRequest(**request), phase=data["phase"], prompt_ids=tuple(data["prompt_ids"]),
            cut=cut, locate_failure=data.get("locate_failure"), spent_tokens=int(data.get("spent_tokens", 0)),
        )
