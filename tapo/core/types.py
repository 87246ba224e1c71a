"""Typed records that travel between TAPO's stages: selection -> construction -> training rows."""

from __future__ import annotations

from dataclasses import dataclass, field


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
