r"""Construction strategies: turn (y-, y+) pairs into micro-reflective trajectories y_ref.

One interface, several strategies (DESIGN.md section 3):

- `self` (the paper, default): the policy writes <analysis> + <reconstruction> from the synthesis
  prompt; y_ref is the reconstruction, tokenized afresh, plus eos.
- `splice`: the policy only quotes and diagnoses y-'s first mistake; the code keeps y-'s OWN token
  ids up to the end of the quote, and the policy continues that exact prefix (seeded with a
  reflection opener) with y+ in its context. With `locator="surprise"` no quote is decoded: one
  scoring pass finds where y- becomes much less likely once y+ is known (`tapo.core.locate`).
- `aligned`: no model; for the built-in arithmetic task, y- is cut after its first wrong step and
  continued by a templated diagnosis and the reference's remaining steps.

Every constructor takes a batch of `ConstructionRequest`s and returns one result per request, in
order: a `ConstructedTrajectory` or a `ConstructionFailure` (never silently dropped). Model
strategies call `generate(prompts, phase=...)` exactly once per phase for the whole batch -- `self`
once ("synthesis"); `splice` "locate" (with `locator="surprise"` one `score` call instead), then
"continuation", then with fallback "self" a "synthesis" call for the pairs it could not locate;
`aligned` never -- also with an empty
prompt list, so that every process of a distributed run makes the same generation calls whatever its
data. The phase tells the generator which token budget to give the call (the core knows none) and
which strings end its answers (`PHASE_STOPS`: a `self` answer is complete at `</reconstruction>`, a
locate answer at `</analysis>`, a continuation only at eos).

Tokenizers are duck-typed; only these are used: `apply_chat_template(messages, tokenize=False,
add_generation_prompt=True, **chat_template_kwargs)`, `encode(text, add_special_tokens=False)`,
`decode(ids, skip_special_tokens=True)` and `eos_token_id`. No training engine is imported.

Every prompt a constructor templates takes the rollouts' `chat_template_kwargs` (Qwen3's
`enable_thinking: false` must reach synthesis prompts too). A completion ends at any of the
model's eos ids (`eos_token_ids`; Qwen3 declares two); one that did not end within its budget
(`self`: a reconstruction left unclosed; `splice`: a continuation with no eos) is a failure with
reason "truncated" (a `self` synthesis stopped right after `</reconstruction>` is closed, so
complete, with or without an eos), unless `keep_truncated`, which keeps it without an appended eos,
marked `extra["truncated"]`, as TRL keeps a truncated rollout.

Character positions are mapped to token boundaries through decoded prefixes: with L(k) =
len(decode(ids[:k])), `tokens_covering(end)` is the smallest k with L(k) >= end and
`tokens_within(end)` the largest k with L(k) <= end. Both binary-search, assuming L grows with k
(true for byte-level BPE up to partial multi-byte characters: a prefix that ends inside one decodes
to a replacement character, so a splice cut is extended to the character's end, `whole_characters`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

from tapo.core.locate import (
    DEFAULT_RULE,
    DEFAULT_THRESHOLD,
    RULES,
    ScoreFn,
    build_surprise_prompt,
    locate_by_surprise,
    token_ends,
)
from tapo.core.synthesis import (
    LOCATE_STOP,
    LOCATE_TEMPLATE,
    REFLECTION_OPENER,
    SELF_STOP,
    SELF_TEMPLATE,
    build_continue_prompt,
    build_locate_prompt,
    build_self_prompt,
    common_prefix_len,
    find_quote_end,
    parse_locate,
    parse_synthesis_closed,
    seed_reflection,
)
from tapo.core.types import ConstructedTrajectory, ConstructionFailure, ConstructionRequest, PendingConstruction, SpliceCut

PHASES = ("synthesis", "locate", "continuation")

PHASE_STOPS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "synthesis": (SELF_STOP,),  # a `self` synthesis (also splice's self fallback)
    "locate": (LOCATE_STOP,),  # splice's quote and diagnosis
    "continuation": (),  # splice's continuation of y-'s kept prefix: it ends at eos
})
"""The strings after which a phase's answer is complete: generation may stop right after one."""


class GenerateFn(Protocol):
    """Prompt token ids (one list per prompt, no padding) -> generated token ids, one list per prompt.

    `phase` (one of `PHASES`) names what the call is for: "synthesis" (a `self` synthesis, also
    splice's self fallback), "locate" (splice's quote and diagnosis) or "continuation" (splice's
    continuation). The generator gives each phase its own token budget and may stop a completion
    right after one of `PHASE_STOPS[phase]` (keeping the token that completes it, as HF generate and
    vLLM do; see `cut_after_stop`); a completion that ended by itself ends with an eos id. A generator
    that treats every phase alike takes `phase=None` and ignores it.
    """

    def __call__(self, prompts: list[list[int]], *, phase: str) -> list[list[int]]: ...


Result = ConstructedTrajectory | ConstructionFailure

STRATEGIES = ("self", "splice", "aligned")
SPLICE_FALLBACKS = ("self", "drop")
SPLICE_LOCATORS = ("ask", "surprise")

# Phrases that open a reflection; matched case-insensitively at a word start.
REFLECTION_MARKERS = (
    "wait",
    "let me double-check",
    "let me double check",
    "let me re-check",
    "let me recheck",
    "let me check",
    "hmm",
    "i made a mistake",
    "on second thought",
    "hold on",
)


class Constructor(Protocol):
    """What the trainer calls: one result per request, same order, batched generation."""

    strategy: str

    def construct(self, requests: Sequence[ConstructionRequest]) -> list[Result]: ...


# --- tokenizer helpers ----------------------------------------------------------------------


def chat_prompt_ids(tokenizer: Any, user_text: str, chat_template_kwargs: Mapping[str, Any] | None = None) -> list[int]:
    """Token ids of a one-message chat prompt with the assistant turn opened.

    With a ChatML template, `chat_prompt_ids(tok, "hi")` encodes
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n" (the template's own special
    tokens are in the text, so no extra special tokens are added). `chat_template_kwargs` go to
    the template as they go for rollouts (e.g. `{"enable_thinking": False}`, or `chat_template`).
    """
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True,
        **dict(chat_template_kwargs or {}),
    )
    return list(tokenizer.encode(text, add_special_tokens=False))


def strip_eos(ids: Sequence[int], eos_token_id: int | Sequence[int]) -> tuple[list[int], bool]:
    """(ids before the first eos, whether an eos was there); anything after the eos (padding) is dropped.

    `eos_token_id` is one id or all the ids that end a generation (Qwen3 declares two).

    >>> strip_eos([5, 6, 2, 0, 0], 2), strip_eos([5, 6], 2), strip_eos([5, 7, 6], [2, 7])
    (([5, 6], True), ([5, 6], False), ([5], True))
    """
    ids = list(ids)
    ends = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id)
    for position, token in enumerate(ids):
        if token in ends:
            return ids[:position], True
    return ids, False


def tokens_covering(tokenizer: Any, ids: Sequence[int], end: int) -> int:
    """Smallest k with len(decode(ids[:k])) >= end: the fewest leading tokens whose text reaches `end`.

    A token that straddles `end` is included. Returns len(ids) when even all of them fall short.
    With tokens "Step", " 1", ":", " 12" (text lengths 4, 6, 7, 10): end=6 -> 2, end=8 -> 4.
    """
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.decode(list(ids[:mid]), skip_special_tokens=True)) >= end:
            hi = mid
        else:
            lo = mid + 1
    return lo


def tokens_within(tokenizer: Any, ids: Sequence[int], end: int) -> int:
    """Largest k with len(decode(ids[:k])) <= end: the most leading tokens whose text stays inside `end`.

    A token that straddles `end` is excluded. With tokens "Step", " 1", ":", " 12" (text lengths
    4, 6, 7, 10): end=6 -> 2, end=8 -> 3.
    """
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(tokenizer.decode(list(ids[:mid]), skip_special_tokens=True)) <= end:
            lo = mid
        else:
            hi = mid - 1
    return lo


def whole_characters(tokenizer: Any, ids: Sequence[int], k: int) -> int:
    """`k`, or more while ids[:k] ends inside a character: byte-level BPE writes a character such as "−" over
    several tokens, and a prefix that stops after its first byte decodes to a replacement character "\ufffd".

    >>> from tapo.models import build_tiny_tokenizer
    >>> tok = build_tiny_tokenizer()
    >>> ids = tok.encode("5 − 2", add_special_tokens=False)
    >>> k = next(k for k in range(len(ids)) if tok.decode(ids[:k]).endswith("\ufffd"))  # inside "−"
    >>> tok.decode(ids[: whole_characters(tok, ids, k)])
    '5 −'
    """
    while k < len(ids) and tokenizer.decode(list(ids[:k]), skip_special_tokens=True).endswith("\ufffd"):
        k += 1
    return k


def cut_after_stop(tokenizer: Any, ids: Sequence[int], stops: Sequence[str]) -> list[int]:
    """`ids` up to the token that completes the first stop string in their text; all of them without one.

    What HF generate and vLLM do when a stop string ends a completion: the completing token is kept
    even when it runs past the string's end, and nothing after it is (HF pads the finished rows of a
    batch until the last one ends). With tokens "<a>", "x", "</a", ">!", "?" and stops ("</a>",),
    the first four are kept (mirrored in tests/test_constructors.py).
    """
    ids = list(ids)
    text = tokenizer.decode(ids, skip_special_tokens=True)
    ends = [text.find(stop) + len(stop) for stop in stops if stop and stop in text]
    return ids[: tokens_covering(tokenizer, ids, min(ends))] if ends else ids


def find_reflection(text: str, *, start: int = 0, markers: Sequence[str] = REFLECTION_MARKERS) -> re.Match | None:
    """The first reflection marker in `text` that begins at or after the word containing `start`.

    Backing up to the word start matters when the copied prefix ends inside the marker's word
    (y- "... = 7. What", reconstruction "... = 7. Wait": the common prefix ends after "W").

    >>> find_reflection("3 + 4 = 7. Wait, no. Hmm.", start=11).group(0)
    'Wait'
    >>> find_reflection("Wait: 3 + 4 = 7. Then 14.", start=5) is None
    True
    """
    start = max(0, min(start, len(text)))
    while start > 0 and text[start - 1].isalnum():
        start -= 1
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(m) for m in markers) + r")(?!\w)", re.IGNORECASE)
    return pattern.search(text, start)


def has_no_marker(trajectory: ConstructedTrajectory) -> bool:
    """Whether a `self` reconstruction has no reflection marker after its copied prefix."""
    return trajectory.strategy == "self" and "marker" in trajectory.extra and trajectory.extra["marker"] is None


def prefix_fidelity(trajectory: ConstructedTrajectory) -> float | None:
    """Share of y_ref's pre-reflection tokens that are y-'s own: prefix_tokens / reflection_start.

    Clipped to [0, 1]; the denominator is at least 1, so a trajectory that keeps nothing of y- and
    reflects at once scores 0. `splice` and `aligned` keep y-'s ids up to the reflection by
    construction (prefix_tokens == reflection_start), so they score 1.0 whenever they keep any
    token. For `self` it measures how faithfully the model copied y- before reflecting. A `self`
    reconstruction with no reflection marker has no known mistake position, so its fidelity is
    unknown: None (the trainer excludes it and logs the share without a marker instead).

    >>> from tapo.core.types import ConstructionPair
    >>> t = ConstructedTrajectory(pair=ConstructionPair("q", 0, 1), strategy="self", text="", token_ids=(),
    ...     analysis="", prefix_tokens=6, reflection_start=8, generated_tokens=0)
    >>> prefix_fidelity(t)
    0.75
    """
    if trajectory.strategy in ("splice", "aligned"):
        return 1.0  # the kept prefix is y-'s own ids by construction, even when it is empty
    if has_no_marker(trajectory):
        return None
    return min(1.0, max(0.0, trajectory.prefix_tokens / max(trajectory.reflection_start, 1)))


# --- strategies -----------------------------------------------------------------------------


def _eos_of(tokenizer: Any) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id; constructed trajectories must end with eos like rollouts")
    return int(eos)


def _ends_of(tokenizer: Any, eos_token_ids: Sequence[int] | None) -> tuple[int, ...]:
    """Every id that ends a generation: the given ones (the model's), else the tokenizer's eos."""
    return tuple(eos_token_ids) if eos_token_ids else (_eos_of(tokenizer),)


def _over_budget(ids: Sequence[int], limit: int | None) -> bool:
    return limit is not None and len(ids) > limit


def _call(generate: GenerateFn, prompts: list[list[int]], *, phase: str) -> list[list[int]]:
    """One batched generate call for `phase`, checked: one completion per prompt.

    Made even when `prompts` is empty: with distributed generation (vLLM) every process must make
    the same calls, so the number of calls depends only on the strategy, never on the data.
    """
    completions = generate(prompts, phase=phase)
    if len(completions) != len(prompts):
        raise ValueError(f"generate returned {len(completions)} completions for {len(prompts)} {phase} prompts")
    return [list(c) for c in completions]


def run_pending(
    generate: GenerateFn, items: Sequence[PendingConstruction | ConstructionFailure], *, phases: Sequence[str]
) -> list[list[int] | None]:
    """The completions `complete` needs: one `generate` call per phase, in order, also with no prompt.

    Returns one entry per item, aligned: the completion of a pending item, None for a failure.
    """
    completions: list[list[int] | None] = [None] * len(items)
    for phase in phases:
        waiting = [i for i, x in enumerate(items) if isinstance(x, PendingConstruction) and x.phase == phase]
        for i, completion in zip(waiting, _call(generate, [list(items[i].prompt_ids) for i in waiting], phase=phase)):
            completions[i] = completion
    return completions


def _too_long(new_text: str, limit: int | None) -> bool:
    return limit is not None and len(new_text) > limit


@dataclass(frozen=True, kw_only=True)
class SelfConstructor:
    """The paper's strategy: the policy writes the analysis and the whole reconstruction.

    y_ref ids = encode(reconstruction) + [eos]. prefix_tokens = the longest common token prefix
    with y-'s ids. reflection_start = the token where the first reflection marker (see
    `REFLECTION_MARKERS`) after the copied text begins, i.e. the largest k with
    len(decode(ids[:k])) <= the marker's position, so a token " Wait" that carries the space
    counts as reflection; without a marker, reflection_start = prefix_tokens. With
    `max_reflection_chars`, a reconstruction adding more characters than that after its common
    prefix with y- fails with reason "too_long", as does one of more than `max_tokens` ids. An
    unclosed reconstruction (the synthesis hit its budget) fails with reason "truncated" unless
    `keep_truncated`.
    """

    strategy: ClassVar[str] = "self"
    tokenizer: Any
    generate: GenerateFn
    template: str = SELF_TEMPLATE
    markers: Sequence[str] = REFLECTION_MARKERS
    max_reflection_chars: int | None = None
    eos_token_ids: Sequence[int] = ()
    chat_template_kwargs: Mapping[str, Any] | None = None
    keep_truncated: bool = False
    max_tokens: int | None = None

    def prompts(self, requests: Sequence[ConstructionRequest]) -> list[list[int]]:
        """The synthesis prompt of each request, as chat-templated token ids."""
        return [
            chat_prompt_ids(
                self.tokenizer,
                build_self_prompt(
                    question=r.question, negative=r.negative_text, positive=r.positive_text, template=self.template
                ),
                self.chat_template_kwargs,
            )
            for r in requests
        ]

    def finish(self, request: ConstructionRequest, completion: Sequence[int]) -> Result:
        """Parse one synthesis completion into a trajectory (or a failure)."""
        ends = _ends_of(self.tokenizer, self.eos_token_ids)
        raw = self.tokenizer.decode(list(completion), skip_special_tokens=True)
        fail = dict(pair=request.pair, strategy=self.strategy, generated_tokens=len(completion), raw_output=raw)
        parsed = parse_synthesis_closed(raw)
        if parsed is None:
            return ConstructionFailure(reason="unparsed", **fail)
        analysis, reconstruction, closed = parsed
        if not closed and strip_eos(completion, ends)[1]:
            return ConstructionFailure(reason="unparsed", **fail)  # it ended, at eos, without closing: not cut off
        if not closed and not self.keep_truncated:
            return ConstructionFailure(reason="truncated", **fail)
        negative = request.negative_text
        lead = negative[: len(negative) - len(negative.lstrip())]
        if lead and common_prefix_len(reconstruction, negative.lstrip()):  # parsing stripped y-'s leading space
            reconstruction = lead + reconstruction
        kept_chars = common_prefix_len(reconstruction, negative)
        if _too_long(reconstruction[kept_chars:], self.max_reflection_chars):
            return ConstructionFailure(reason="too_long", **fail)
        # the text was decoded without special tokens, so a special token's string in it was written in plain
        # sub-tokens: it stays text (never an eos in the middle of the row)
        ids = list(self.tokenizer.encode(reconstruction, add_special_tokens=False, split_special_tokens=True))
        ids += [ends[0]] if closed else []
        if _over_budget(ids, self.max_tokens):
            return ConstructionFailure(reason="too_long", **fail)
        prefix_tokens = common_prefix_len(ids, request.negative_ids)
        marker = find_reflection(reconstruction, start=kept_chars, markers=self.markers)
        body = ids[:-1] if closed else ids
        reflection_start = (
            tokens_within(self.tokenizer, body, marker.start()) if marker is not None else prefix_tokens
        )
        return ConstructedTrajectory(
            pair=request.pair,
            strategy=self.strategy,
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            token_ids=tuple(ids),
            analysis=analysis,
            prefix_tokens=prefix_tokens,
            reflection_start=reflection_start,
            generated_tokens=len(completion),
            extra={"marker": marker.group(0) if marker is not None else None, "kept_chars": kept_chars,
                   "truncated": not closed},
        )

    pending_phases: ClassVar[tuple[str, ...]] = ("synthesis",)

    def defer(self, requests: Sequence[ConstructionRequest]) -> list[PendingConstruction]:
        """Everything before the synthesis call (no model call): each request's synthesis prompt."""
        return [
            PendingConstruction(request=r, phase="synthesis", prompt_ids=tuple(p))
            for r, p in zip(requests, self.prompts(requests))
        ]

    def complete(
        self, items: Sequence[PendingConstruction | ConstructionFailure], completions: Sequence[Sequence[int] | None]
    ) -> list[Result]:
        """Parse each pending item's synthesis completion (failures pass through)."""
        return [x if isinstance(x, ConstructionFailure) else self.finish(x.request, c) for x, c in zip(items, completions)]

    def construct(self, requests: Sequence[ConstructionRequest]) -> list[Result]:
        """One generate call for the batch, then parse each completion."""
        items = self.defer(requests)
        return self.complete(items, run_pending(self.generate, items, phases=self.pending_phases))


@dataclass(frozen=True, kw_only=True)
class SpliceConstructor:
    """Locate y-'s first mistake, keep y-'s own ids up to there, and let the policy continue.

    Phase "locate" (one generate call): the LOCATE prompt -> `parse_locate` -> (quote, analysis);
    `find_quote_end` finds where the quote ends in decode(y- ids), and the cut is the smallest k
    with len(decode(ids[:k])) >= that end (`tokens_covering`), so the kept prefix is exactly
    y-'s ids[:k] and covers the whole quote. Phase "continuation" (one call): chat(CONTINUE
    prompt) + ids[:k] + encode(opener), where opener = `seed_reflection(prefix)` (" Wait, let me
    double-check"); y_ref = ids[:k] + opener ids + completion up to its eos, then one eos. A
    completion that stopped without any eos id hit its budget: a failure "truncated", or with
    `keep_truncated` kept without an eos, extra["truncated"] = True. prefix_tokens =
    reflection_start = k; generated_tokens = locate + continuation tokens.

    With locator="surprise" the locate phase decodes nothing: `locate_by_surprise` makes one
    `score` call and cuts after the first surprising line or sentence of y- (failure reason
    "no_surprise" when none is).

    Requests whose locate output does not parse ("unparsed") or whose quote is not in y-
    ("quote_not_found") go to the `self` strategy when fallback="self": their synthesis prompts go
    in a third call, phase "synthesis" (so they get the `self` budget and stop; made whenever
    fallback="self", with no prompt if need be), and they come back with strategy "self",
    extra["fallback"] = "self", extra["locate_failure"] = the reason, and the locate tokens added to
    generated_tokens. With fallback="drop" they are failures with that reason, and there is no
    third call.
    """

    strategy: ClassVar[str] = "splice"
    tokenizer: Any
    generate: GenerateFn
    fallback: str = "self"
    self_template: str = SELF_TEMPLATE
    locate_template: str = LOCATE_TEMPLATE  # the "ask" locate prompt ($question, $negative, $positive)
    opener: str = REFLECTION_OPENER
    max_reflection_chars: int | None = None
    eos_token_ids: Sequence[int] = ()
    chat_template_kwargs: Mapping[str, Any] | None = None
    keep_truncated: bool = False
    max_tokens: int | None = None
    locator: str = "ask"  # "ask" (one decode) or "surprise" (one scoring pass, `locate_by_surprise`; needs `score`)
    score: ScoreFn | None = None
    surprise_threshold: float = DEFAULT_THRESHOLD
    surprise_rule: str = DEFAULT_RULE

    def __post_init__(self) -> None:
        if self.fallback not in SPLICE_FALLBACKS:
            raise ValueError(f"unknown splice fallback {self.fallback!r}; choose from {', '.join(SPLICE_FALLBACKS)}")
        if self.locator not in SPLICE_LOCATORS:
            raise ValueError(f"unknown splice locator {self.locator!r}; choose from {', '.join(SPLICE_LOCATORS)}")
        if self.locator == "surprise" and self.score is None:
            raise ValueError("splice locator 'surprise' needs a score function (the policy's teacher-forced log-probs)")
        if self.surprise_rule not in RULES:
            raise ValueError(f"unknown surprise rule {self.surprise_rule!r}; choose from {', '.join(RULES)}")

    def locate(self, request: ConstructionRequest, completion: Sequence[int]) -> SpliceCut | str:
        """Phase-1 result of one request: where to cut, or the failure reason."""
        raw = self.tokenizer.decode(list(completion), skip_special_tokens=True)
        parsed = parse_locate(raw)
        if parsed is None:
            return "unparsed"
        quote, analysis = parsed
        kept_all, _ = strip_eos(request.negative_ids, _ends_of(self.tokenizer, self.eos_token_ids))
        negative = self.tokenizer.decode(kept_all, skip_special_tokens=True)
        end = find_quote_end(quote, negative)
        if end is None:
            return "quote_not_found"
        cut = whole_characters(self.tokenizer, kept_all, tokens_covering(self.tokenizer, kept_all, end))
        kept = kept_all[:cut]
        opener = seed_reflection(self.tokenizer.decode(kept, skip_special_tokens=True), opener=self.opener)
        return SpliceCut(
            kept_ids=tuple(kept),
            opener_ids=tuple(self.tokenizer.encode(opener, add_special_tokens=False)),
            analysis=analysis,
            quote=quote,
            locate_tokens=len(completion),
        )

    def locate_by_surprise(self, requests: Sequence[ConstructionRequest]) -> list[SpliceCut | str]:
        """The locate phase of locator="surprise": no decode, one `score` call, then each y-'s cut or "no_surprise".

        The call scores every y- (eos stripped) under its own prompt (`request.prompt_ids`, else the
        chat-templated question) and under `SURPRISE_TEMPLATE` (question + y+): all plain rows, then
        all privileged rows. `locate_by_surprise` finds the first line or sentence of y- whose
        surprise reaches `surprise_threshold` (`surprise_rule`); the kept prefix is y-'s own ids up to
        the end of that unit (and its line break), the note the continuation prompt gets names the
        unit, and locate_tokens = 0. A y- with no such unit fails locating with reason "no_surprise"
        and takes the fallback like an unfound quote ("unparsed", "quote_not_found").
        """
        ends_at = _ends_of(self.tokenizer, self.eos_token_ids)
        negatives = [strip_eos(r.negative_ids, ends_at)[0] for r in requests]
        plain = [  # the rollout's own prompt, else the chat-templated question
            list(r.prompt_ids) or chat_prompt_ids(self.tokenizer, r.question, self.chat_template_kwargs)
            for r in requests
        ]
        privileged = [
            chat_prompt_ids(
                self.tokenizer, build_surprise_prompt(question=r.question, positive=r.positive_text),
                self.chat_template_kwargs,
            )
            for r in requests
        ]
        logps = self.score(plain + privileged, negatives + negatives)  # type: ignore[misc]  # checked in __post_init__
        if len(logps) != 2 * len(requests):
            raise ValueError(f"score returned {len(logps)} rows for {2 * len(requests)} splice surprise rows")
        located: list[SpliceCut | str] = []
        for i, ids in enumerate(negatives):
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            cut = locate_by_surprise(
                logps[i], logps[len(requests) + i], text, token_ends(self.tokenizer, ids),
                threshold=self.surprise_threshold, rule=self.surprise_rule,
            )
            if cut is None:
                located.append("no_surprise")
                continue
            kept = ids[: cut.kept_tokens]
            unit = text[cut.span[0] : cut.span[1]]
            opener = seed_reflection(self.tokenizer.decode(kept, skip_special_tokens=True), opener=self.opener)
            located.append(SpliceCut(
                kept_ids=tuple(kept),
                opener_ids=tuple(self.tokenizer.encode(opener, add_special_tokens=False)),
                analysis=f'The attempt first goes wrong at "{unit}".',
                quote=unit,
                locate_tokens=0,
                notes={"locator": "surprise", "surprise": cut.score, "surprise_token": cut.token},
            ))
        return located

    def continue_prompt(self, request: ConstructionRequest, located: SpliceCut) -> list[int]:
        """chat(CONTINUE prompt) + y-'s kept ids + the opener ids: the model writes what follows."""
        text = build_continue_prompt(
            question=request.question, positive=request.positive_text, analysis=located.analysis
        )
        prompt = chat_prompt_ids(self.tokenizer, text, self.chat_template_kwargs)
        return prompt + list(located.kept_ids) + list(located.opener_ids)

    def finish(self, request: ConstructionRequest, located: SpliceCut, completion: Sequence[int]) -> Result:
        """Assemble y_ref from the kept prefix, the opener and the continuation."""
        ends = _ends_of(self.tokenizer, self.eos_token_ids)
        generated = located.locate_tokens + len(completion)
        body, stopped = strip_eos(completion, ends)
        new_text = self.tokenizer.decode(list(located.opener_ids) + body, skip_special_tokens=True)
        fail = dict(pair=request.pair, strategy=self.strategy, generated_tokens=generated, raw_output=new_text)
        if not self.tokenizer.decode(body, skip_special_tokens=True).strip():
            return ConstructionFailure(reason="empty", **fail)
        if not stopped and not self.keep_truncated:
            return ConstructionFailure(reason="truncated", **fail)
        if _too_long(new_text, self.max_reflection_chars):
            return ConstructionFailure(reason="too_long", **fail)
        eos = [completion[len(body)]] if stopped else []  # the eos id the policy wrote (Qwen3 declares two)
        ids = list(located.kept_ids) + list(located.opener_ids) + body + eos
        if _over_budget(ids, self.max_tokens):
            return ConstructionFailure(reason="too_long", **fail)
        k = len(located.kept_ids)
        return ConstructedTrajectory(
            pair=request.pair,
            strategy=self.strategy,
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            token_ids=tuple(ids),
            analysis=located.analysis,
            prefix_tokens=k,
            reflection_start=k,
            generated_tokens=generated,
            extra={"quote": located.quote, "truncated": not stopped, **(located.notes or {})},
        )

    @property
    def pending_phases(self) -> tuple[str, ...]:
        """The calls `complete` waits on, in order: the continuations, then (fallback "self") the fallbacks."""
        return ("continuation", "synthesis") if self.fallback == "self" else ("continuation",)

    def _fallback(self) -> SelfConstructor:
        return SelfConstructor(
            tokenizer=self.tokenizer,
            generate=self.generate,
            template=self.self_template,
            max_reflection_chars=self.max_reflection_chars,
            eos_token_ids=self.eos_token_ids,
            chat_template_kwargs=self.chat_template_kwargs,
            keep_truncated=self.keep_truncated,
            max_tokens=self.max_tokens,
        )

    def defer(self, requests: Sequence[ConstructionRequest]) -> list[PendingConstruction | ConstructionFailure]:
        """The locate phase now (one decode, or one scoring pass), then per request what is left to generate.

        A located request waits on its continuation ("continuation"); one that could not be located
        waits on its `self` synthesis ("synthesis", fallback "self") or fails with the locate
        reason (fallback "drop").
        """
        requests = list(requests)
        if self.locator == "surprise":  # no decode: one scoring pass places every cut
            located = self.locate_by_surprise(requests)
            locate_completions: list[list[int]] = [[] for _ in requests]
        else:
            prompts = [
                chat_prompt_ids(
                    self.tokenizer,
                    build_locate_prompt(question=r.question, negative=r.negative_text, positive=r.positive_text,
                                        template=self.locate_template),
                    self.chat_template_kwargs,
                )
                for r in requests
            ]
            locate_completions = _call(self.generate, prompts, phase="locate")
            located = [self.locate(r, c) for r, c in zip(requests, locate_completions)]
        fallback = self._fallback() if self.fallback == "self" else None
        items: list[PendingConstruction | ConstructionFailure] = []
        for r, cut, spent in zip(requests, located, locate_completions):
            if isinstance(cut, SpliceCut):
                items.append(PendingConstruction(
                    request=r, phase="continuation", prompt_ids=tuple(self.continue_prompt(r, cut)), cut=cut,
                    spent_tokens=cut.locate_tokens,
                ))
            elif fallback is not None:
                items.append(PendingConstruction(
                    request=r, phase="synthesis", prompt_ids=tuple(fallback.prompts([r])[0]), locate_failure=cut,
                    spent_tokens=len(spent),
                ))
            else:
                items.append(ConstructionFailure(
                    pair=r.pair, strategy=self.strategy, reason=cut, generated_tokens=len(spent),
                    raw_output=self.tokenizer.decode(spent, skip_special_tokens=True),
                ))
        return items

    def complete(
        self, items: Sequence[PendingConstruction | ConstructionFailure], completions: Sequence[Sequence[int] | None]
    ) -> list[Result]:
        """Finish each pending item with its completion: a splice, or a `self` fallback marked as one."""
        fallback = self._fallback()
        results: list[Result] = []
        for x, completion in zip(items, completions):
            if isinstance(x, ConstructionFailure):
                results.append(x)
            elif x.phase == "continuation":
                results.append(self.finish(x.request, x.cut, completion))
            else:
                result = fallback.finish(x.request, completion)
                spent = x.spent_tokens + result.generated_tokens
                if isinstance(result, ConstructedTrajectory):
                    extra = {**result.extra, "fallback": "self", "locate_failure": x.locate_failure}
                    result = replace(result, generated_tokens=spent, extra=extra)
                else:
                    result = replace(result, generated_tokens=spent)
                results.append(result)
        return results

    def construct(self, requests: Sequence[ConstructionRequest]) -> list[Result]:
        """Locate, continuation, then (fallback "self") the fallbacks' synthesis: one call each."""
        items = self.defer(requests)
        return self.complete(items, run_pending(self.generate, items, phases=self.pending_phases))


@dataclass(frozen=True, kw_only=True)
class AlignedConstructor:
    """Rule-based construction for the built-in arithmetic task; no model call.

    The question is parsed back into its problem (`parse_question`); `aligned_correction` cuts
    decode(y- ids) after its first wrong step and writes the continuation (a templated diagnosis,
    then the reference steps from there, then the boxed answer). The cut is on y-'s own token
    boundary: the LARGEST k with len(decode(ids[:k])) <= len(prefix) (`tokens_within`), so no kept
    token runs past the wrong step; prefix characters a straddling token would have carried are
    re-encoded in front of the continuation. Hence y_ref's text is exactly prefix + continuation:
    y_ref = ids[:k] + encode(leftover prefix chars + continuation) + [eos], prefix_tokens =
    reflection_start = k, generated_tokens = 0, analysis = the diagnosis sentence. Failures:
    "not_arithmetic" (the question is not an arithmetic-task question), "no_wrong_step".
    """

    strategy: ClassVar[str] = "aligned"
    tokenizer: Any
    max_reflection_chars: int | None = None
    eos_token_ids: Sequence[int] = ()
    max_tokens: int | None = None

    def construct_one(self, request: ConstructionRequest) -> Result:
        from tapo.data.arithmetic import aligned_correction, diagnose_steps, parse_question, reflection_sentence

        fail = dict(pair=request.pair, strategy=self.strategy)
        problem = parse_question(request.question)
        if problem is None:
            return ConstructionFailure(reason="not_arithmetic", **fail)
        ends = _ends_of(self.tokenizer, self.eos_token_ids)
        eos = ends[0]
        negative_ids, _ = strip_eos(request.negative_ids, ends)
        negative = self.tokenizer.decode(negative_ids, skip_special_tokens=True)
        corrected = aligned_correction(problem, negative)
        if corrected is None:
            return ConstructionFailure(reason="no_wrong_step", **fail)
        prefix, _, continuation = corrected
        if _too_long(continuation, self.max_reflection_chars):
            return ConstructionFailure(reason="too_long", raw_output=continuation, **fail)
        k = tokens_within(self.tokenizer, negative_ids, len(prefix))
        kept = self.tokenizer.decode(negative_ids[:k], skip_special_tokens=True)
        while k > 0 and not prefix.startswith(kept):  # a tokenizer whose prefix decodes differ in form
            k -= 1
            kept = self.tokenizer.decode(negative_ids[:k], skip_special_tokens=True)
        leftover = prefix[len(kept) :]
        ids = negative_ids[:k] + list(self.tokenizer.encode(leftover + continuation, add_special_tokens=False)) + [eos]
        if _over_budget(ids, self.max_tokens):
            return ConstructionFailure(reason="too_long", raw_output=continuation, **fail)
        diagnosis = diagnose_steps(problem, negative)
        return ConstructedTrajectory(
            pair=request.pair,
            strategy=self.strategy,
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            token_ids=tuple(ids),
            analysis=reflection_sentence(problem, diagnosis),
            prefix_tokens=k,
            reflection_start=k,
            generated_tokens=0,
            extra={"kind": diagnosis.kind, "wrong_step": diagnosis.index, "leftover_chars": len(leftover)},
        )

    def construct(self, requests: Sequence[ConstructionRequest]) -> list[Result]:
        return [self.construct_one(r) for r in requests]


def make_constructor(
    strategy: str,
    *,
    tokenizer: Any,
    generate: GenerateFn | None = None,
    self_template: str | None = None,
    locate_template: str | None = None,
    splice_fallback: str = "self",
    max_reflection_chars: int | None = None,
    eos_token_ids: Sequence[int] = (),
    chat_template_kwargs: Mapping[str, Any] | None = None,
    keep_truncated: bool = False,
    max_tokens: int | None = None,
    splice_locate: str = "ask",
    score: ScoreFn | None = None,
    surprise_threshold: float = DEFAULT_THRESHOLD,
) -> Constructor:
    """The constructor of a strategy name ("self", "splice", "aligned").

    `generate` is required by the model strategies ("self", "splice"); `self_template` replaces
    the `self` synthesis template (also used by splice's self fallback), `locate_template` splice's
    "ask" locate template (default `LOCATE_TEMPLATE`); `splice_fallback` is
    "self" or "drop"; `max_reflection_chars` rejects ("too_long") constructions that add more
    characters than that after the kept prefix of y-, `max_tokens` those of more ids than that.
    `eos_token_ids` are the ids that end a generation (the first one ends y_ref),
    `chat_template_kwargs` go to every prompt's chat template, and `keep_truncated` keeps
    constructions that hit their budget (see the module docstring). `splice_locate` is splice's
    locator: "ask" (one decode) or "surprise" (no decode: one call of `score`, the policy's
    teacher-forced log-probs, cut where y- passes `surprise_threshold` nats; `tapo.core.locate`).

    >>> make_constructor("aligned", tokenizer=None).strategy
    'aligned'
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown construction strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if max_reflection_chars is not None and max_reflection_chars <= 0:
        raise ValueError(f"max_reflection_chars must be positive or None, got {max_reflection_chars!r}")
    if max_tokens is not None and max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive or None, got {max_tokens!r}")
    common = dict(tokenizer=tokenizer, max_reflection_chars=max_reflection_chars,
                  eos_token_ids=tuple(eos_token_ids), max_tokens=max_tokens)
    if strategy == "aligned":
        return AlignedConstructor(**common)
    if generate is None:
        raise ValueError(f"construction strategy {strategy!r} needs a generate function (the policy's generation path)")
    template = self_template if self_template is not None else SELF_TEMPLATE
    model_options = dict(generate=generate, chat_template_kwargs=dict(chat_template_kwargs or {}),
                         keep_truncated=keep_truncated)
    if strategy == "self":
        return SelfConstructor(template=template, **common, **model_options)
    locate = locate_template if locate_template is not None else LOCATE_TEMPLATE
    return SpliceConstructor(fallback=splice_fallback, self_template=template, locate_template=locate,
                             locator=splice_locate, score=score,
                             surprise_threshold=surprise_threshold, **common, **model_options)
