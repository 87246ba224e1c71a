"""Construction strategies (self, splice, aligned) driven by a scripted GenerateFn; no model needed."""

from __future__ import annotations

import random
import re

import pytest

from tapo.core.constructors import (
    AlignedConstructor,
    SelfConstructor,
    SpliceConstructor,
    PHASE_STOPS,
    chat_prompt_ids,
    cut_after_stop,
    find_reflection,
    has_no_marker,
    make_constructor,
    prefix_fidelity,
    strip_eos,
    tokens_covering,
    tokens_within,
)
from tapo.core.synthesis import build_continue_prompt, common_prefix_len
from tapo.core.types import ConstructedTrajectory, ConstructionFailure, ConstructionPair, ConstructionRequest
from tapo.data.arithmetic import aligned_correction, corrupt_solution, generate_problems, make_problem
from tapo.models import build_tiny_tokenizer

PROBLEM = make_problem(12, [("+", 7), ("*", 3), ("-", 5)])
LINE1, LINE2 = "Step 1: 12 + 7 = 19", "Step 2: 19 * 3 = 56"
WRONG = f"{LINE1}\n{LINE2}\nStep 3: 56 - 5 = 51\nThe answer is \\boxed{{51}}."
BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


class ScriptedGenerate:
    """A GenerateFn that records each call's prompts and phase and answers from a script, one list per call.

    A scripted completion is a string (encoded, then eos appended) or a list of ids (used as is). A
    call past the end of the script must have no prompt (it gets no answer).
    """

    def __init__(self, tokenizer, *script):
        self.tokenizer = tokenizer
        self.script = list(script)
        self.calls: list[list[list[int]]] = []
        self.phases: list[str | None] = []

    def __call__(self, prompts, phase=None):
        self.calls.append([list(p) for p in prompts])
        self.phases.append(phase)
        answers = self.script[len(self.calls) - 1] if len(self.calls) <= len(self.script) else []
        assert len(answers) == len(prompts), f"call {len(self.calls)}: scripted {len(answers)}, got {len(prompts)}"
        return [self.ids(a) for a in answers]

    def ids(self, answer):
        if isinstance(answer, str):
            return self.tokenizer.encode(answer, add_special_tokens=False) + [self.tokenizer.eos_token_id]
        return list(answer)

    def prompt_text(self, call, i):
        return self.tokenizer.decode(self.calls[call][i], skip_special_tokens=False)


def request(tok, *, query="q0", negative=WRONG, question=PROBLEM.question, positive=PROBLEM.solution, ids=None):
    if ids is None:
        ids = tok.encode(negative, add_special_tokens=False) + [tok.eos_token_id]
    return ConstructionRequest(
        pair=ConstructionPair(query, 0, 1),
        question=question,
        negative_text=negative,
        negative_ids=tuple(ids),
        positive_text=positive,
        answer=PROBLEM.answer,
    )


def synthesis(reconstruction, analysis="Step 2 is an arithmetic slip: 19 * 3 is 57."):
    return f"<analysis>{analysis}</analysis>\n<reconstruction>{reconstruction}</reconstruction>"


FIX = (
    "Wait, let me double-check step 2: 19 * 3 is 57, not 56.\n"
    "Step 2: 19 * 3 = 57\nStep 3: 57 - 5 = 52\nThe answer is \\boxed{52}."
)


class CharTokenizer:
    """A duck-typed tokenizer: one id per character, plus multi-character tokens given by hand."""

    eos_token_id = 2

    def __init__(self, *multi):
        self.multi = {100 + i: text for i, text in enumerate(multi)}

    def apply_chat_template(self, messages, *, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def encode(self, text, *, add_special_tokens):
        return [1000 + ord(c) for c in text]

    def decode(self, ids, *, skip_special_tokens=False):
        return "".join(self.piece(i, skip_special_tokens) for i in ids)

    def piece(self, i, skip_special_tokens):
        if i == self.eos_token_id:
            return "" if skip_special_tokens else "<eos>"
        return self.multi[i] if i in self.multi else chr(i - 1000)


# --- helpers --------------------------------------------------------------------------------


def test_chat_prompt_ids_is_the_templated_user_turn(tok):
    ids = chat_prompt_ids(tok, "What is 2 + 2?")
    assert tok.decode(ids) == "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n"
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")  # the template's specials, no extra ones


def test_token_boundaries_cover_or_stay_within_a_char_position(tok):
    ids = tok.encode("Step 1: 12", add_special_tokens=False)  # "Step", " 1", ":", " 12" -> lengths 4, 6, 7, 10
    assert [len(tok.decode(ids[:k])) for k in range(len(ids) + 1)] == [0, 4, 6, 7, 10]
    assert (tokens_covering(tok, ids, 6), tokens_within(tok, ids, 6)) == (2, 2)
    assert (tokens_covering(tok, ids, 8), tokens_within(tok, ids, 8)) == (4, 3)
    assert (tokens_covering(tok, ids, 0), tokens_within(tok, ids, 0)) == (0, 0)
    assert (tokens_covering(tok, ids, 99), tokens_within(tok, ids, 99)) == (4, 4)


def test_strip_eos_drops_the_eos_and_what_follows():
    assert strip_eos([5, 6, 2, 0, 0], 2) == ([5, 6], True)
    assert strip_eos((5, 6), 2) == ([5, 6], False)


def test_find_reflection_starts_at_the_word_holding_the_copy_end():
    assert find_reflection("= 7. Wait, no", start=6).start() == 5  # copy ended after the "W" of "What"
    assert find_reflection("HMM ok. On second thought, 9.", start=4).group(0) == "On second thought"
    assert find_reflection("Wait: 3 + 4 = 7.", start=5) is None  # a marker inside the copied text is not it
    assert find_reflection("awaiting the result", start=0) is None  # whole words only


def test_prefix_fidelity_is_kept_share_before_the_reflection():
    def traj(prefix, start):
        return ConstructedTrajectory(
            pair=ConstructionPair("q", 0, 1), strategy="self", text="", token_ids=(), analysis="",
            prefix_tokens=prefix, reflection_start=start, generated_tokens=0,
        )

    assert prefix_fidelity(traj(6, 8)) == 0.75
    assert prefix_fidelity(traj(9, 9)) == 1.0
    assert prefix_fidelity(traj(12, 9)) == 1.0  # clipped
    assert prefix_fidelity(traj(0, 0)) == 0.0


# --- self -----------------------------------------------------------------------------------


def test_self_reconstruction_becomes_y_ref_with_eos(tok):
    reconstruction = f"{LINE1}\n{LINE2}\n{FIX}"
    generate = ScriptedGenerate(tok, [synthesis(reconstruction)])
    [result] = SelfConstructor(tokenizer=tok, generate=generate).construct([request(tok)])

    expected = tok.encode(reconstruction, add_special_tokens=False) + [tok.eos_token_id]
    assert isinstance(result, ConstructedTrajectory)
    assert result.strategy == "self"
    assert list(result.token_ids) == expected and result.token_ids[-1] == tok.eos_token_id
    assert result.text == reconstruction
    kept = len(tok.encode(f"{LINE1}\n{LINE2}\n", add_special_tokens=False))  # y- and y_ref part at "Step 3" / "Wait"
    assert result.prefix_tokens == kept == common_prefix_len(expected, request(tok).negative_ids)
    assert result.reflection_start == kept and prefix_fidelity(result) == 1.0
    assert result.analysis == "Step 2 is an arithmetic slip: 19 * 3 is 57."
    assert result.generated_tokens == len(generate.ids(synthesis(reconstruction)))
    assert result.reward is None and result.extra["marker"] == "Wait"


@pytest.mark.parametrize("lead", [" ", "\n"])
def test_self_keeps_the_leading_white_space_of_y_minus(tok, lead):
    """A y- that starts with white space, copied verbatim inside <reconstruction> (which parsing strips): the
    trained prefix is y-'s own, whole, not one that misses its first character."""
    negative = lead + WRONG
    reconstruction = f"{LINE1}\n{LINE2}\n{FIX}"
    generate = ScriptedGenerate(tok, [synthesis(reconstruction)])
    [result] = SelfConstructor(tokenizer=tok, generate=generate).construct([request(tok, negative=negative)])
    assert result.text == lead + reconstruction and result.extra["kept_chars"] == len(lead + f"{LINE1}\n{LINE2}\n")
    kept = len(tok.encode(lead + f"{LINE1}\n{LINE2}\n", add_special_tokens=False))
    assert result.prefix_tokens == kept and prefix_fidelity(result) == 1.0


def test_self_keeps_a_special_tokens_string_as_text(tok):
    """A reconstruction that spells out "<|im_end|>" (in plain sub-tokens: the decode drops real special
    tokens) is trained as that text, not with an eos in the middle of the row."""
    reconstruction = f"{LINE1}\n{LINE2}\n{FIX} <|im_end|> done"
    written = tok.encode(synthesis(reconstruction), add_special_tokens=False, split_special_tokens=True)
    generate = ScriptedGenerate(tok, [written + [tok.eos_token_id]])
    [result] = SelfConstructor(tokenizer=tok, generate=generate).construct([request(tok)])
    assert tok.eos_token_id not in result.token_ids[:-1] and result.token_ids[-1] == tok.eos_token_id
    assert result.text == reconstruction


def test_self_reflection_start_counts_a_straddling_space_token_as_prefix(tok):
    reconstruction = f"{LINE1}\n{LINE2} Hmm, 19 * 3 is 57.\nStep 3: 57 - 5 = 52\nThe answer is \\boxed{{52}}."
    generate = ScriptedGenerate(tok, [synthesis(reconstruction)])
    [result] = SelfConstructor(tokenizer=tok, generate=generate).construct([request(tok)])

    assert result.prefix_tokens == len(tok.encode(f"{LINE1}\n{LINE2}", add_special_tokens=False))
    # the tiny vocabulary splits " Hmm" into " ", "H", ...: the reflection begins at "H"
    assert result.reflection_start == len(tok.encode(f"{LINE1}\n{LINE2} ", add_special_tokens=False))
    assert result.reflection_start == result.prefix_tokens + 1


def test_self_without_marker_reflects_where_the_copy_ends(tok):
    reconstruction = f"{LINE1}\nStep 2: 19 * 3 = 57\nStep 3: 57 - 5 = 52\nThe answer is \\boxed{{52}}."
    [result] = SelfConstructor(tokenizer=tok, generate=ScriptedGenerate(tok, [synthesis(reconstruction)])).construct(
        [request(tok)]
    )
    assert result.extra["marker"] is None
    copied = common_prefix_len(result.token_ids, request(tok).negative_ids)
    assert result.reflection_start == result.prefix_tokens == copied


def test_self_prompt_holds_question_and_both_responses(tok):
    generate = ScriptedGenerate(tok, [synthesis("x")])
    SelfConstructor(tokenizer=tok, generate=generate).construct([request(tok)])
    prompt = generate.prompt_text(0, 0)
    assert prompt.startswith("<|im_start|>user\n") and prompt.endswith("<|im_start|>assistant\n")
    assert PROBLEM.question in prompt and WRONG in prompt and PROBLEM.solution in prompt
    assert "<reconstruction>" in prompt


def test_self_batch_is_one_call_in_order_with_unparsed_failures(tok):
    requests = [request(tok, query=f"q{i}") for i in range(3)]
    junk = "I think the answer is 52."
    generate = ScriptedGenerate(tok, [synthesis(f"{LINE1}\n{FIX}"), junk, synthesis(f"{LINE1}\n{LINE2}\n{FIX}")])
    results = SelfConstructor(tokenizer=tok, generate=generate).construct(requests)

    assert len(generate.calls) == 1 and len(generate.calls[0]) == 3
    assert [r.pair.query_id for r in results] == ["q0", "q1", "q2"]
    assert [type(r) for r in results] == [ConstructedTrajectory, ConstructionFailure, ConstructedTrajectory]
    failure = results[1]
    assert failure.reason == "unparsed" and failure.strategy == "self"
    assert failure.generated_tokens == len(tok.encode(junk, add_special_tokens=False)) + 1
    assert failure.raw_output == junk
    assert results[0].prefix_tokens < results[2].prefix_tokens  # the first copied one line, the third two


def test_call_count_does_not_depend_on_the_data(tok):
    # distributed generation needs every process to make the same calls, even one with no pairs
    generate = ScriptedGenerate(tok)
    assert SelfConstructor(tokenizer=tok, generate=generate).construct([]) == [] and generate.calls == [[]]
    assert SpliceConstructor(tokenizer=tok, generate=generate).construct([]) == [] and generate.calls == [[]] * 4
    assert generate.phases == ["synthesis", "locate", "continuation", "synthesis"]
    dropping = ScriptedGenerate(tok)
    assert SpliceConstructor(tokenizer=tok, generate=dropping, fallback="drop").construct([]) == []
    assert dropping.calls == [[], []] and dropping.phases == ["locate", "continuation"]


def test_each_call_names_its_phase(tok):
    """The generator gives each phase its budget and stop: self asks "synthesis"; splice asks "locate" for
    every pair, "continuation" for those it located, and "synthesis" for its self fallbacks."""
    generate = ScriptedGenerate(tok, [synthesis(f"{LINE1}\n{FIX}")] * 2)
    SelfConstructor(tokenizer=tok, generate=generate).construct([request(tok), request(tok, query="q1")])
    assert generate.phases == ["synthesis"] and [len(c) for c in generate.calls] == [2]

    absent = "<quote>Step 2: 19 * 3 = 60</quote><analysis>?</analysis>"
    generate = ScriptedGenerate(tok, [LOCATE, absent, LOCATE], [CONTINUATION] * 2, [synthesis(f"{LINE1}\n{FIX}")])
    results = SpliceConstructor(tokenizer=tok, generate=generate).construct(
        [request(tok, query=q) for q in ("found", "missing", "found too")])
    assert generate.phases == ["locate", "continuation", "synthesis"]
    assert [len(c) for c in generate.calls] == [3, 2, 1]
    assert [r.strategy for r in results] == ["splice", "self", "splice"]
    assert "<reconstruction>" in generate.prompt_text(2, 0)  # the fallback's prompt is the self synthesis prompt
    assert set(PHASE_STOPS) == {"synthesis", "locate", "continuation"}
    assert (PHASE_STOPS["synthesis"], PHASE_STOPS["locate"], PHASE_STOPS["continuation"]) == (
        ("</reconstruction>",), ("</analysis>",), ())


def test_cut_after_stop_keeps_the_token_that_completes_the_string():
    """As HF generate and vLLM stop: the token completing the stop string is kept even when it runs past
    the string's end; what follows it (HF pads finished rows) is dropped. (Mirrors the docstring.)"""
    tok = CharTokenizer("<a>", "</a", ">!", "?")
    ids = [100, tok.encode("x", add_special_tokens=False)[0], 101, 102, 103]  # "<a>", "x", "</a", ">!", "?"
    assert cut_after_stop(tok, ids, ("</a>",)) == ids[:4]
    assert cut_after_stop(tok, ids + [tok.eos_token_id, tok.eos_token_id], ("</a>",)) == ids[:4]
    assert cut_after_stop(tok, ids, ("</b>",)) == ids  # no stop string: untouched
    assert cut_after_stop(tok, ids, ("?", "</a>")) == ids[:4]  # the earliest stop string ends it
    assert cut_after_stop(tok, ids, ()) == ids


def test_a_synthesis_stopped_at_its_closing_tag_is_complete(tok):
    """Generation stopped right after </reconstruction> (no eos) is a closed reconstruction, not a truncated one."""
    stopped = tok.encode(synthesis(f"{LINE1}\n{FIX}"), add_special_tokens=False)  # ends with </reconstruction>
    assert tok.decode(stopped).endswith(PHASE_STOPS["synthesis"][0])
    [result] = SelfConstructor(tokenizer=tok, generate=ScriptedGenerate(tok, [stopped])).construct([request(tok)])
    assert isinstance(result, ConstructedTrajectory) and result.extra["truncated"] is False
    assert result.token_ids[-1] == tok.eos_token_id and result.generated_tokens == len(stopped)


def test_a_locate_stopped_after_its_analysis_is_read(tok):
    stopped = tok.encode(LOCATE, add_special_tokens=False)  # ends with </analysis>, no eos
    generate = ScriptedGenerate(tok, [stopped], [CONTINUATION])
    [result] = SpliceConstructor(tokenizer=tok, generate=generate).construct([request(tok)])
    assert result.strategy == "splice" and result.analysis == "19 * 3 is 57, not 56."


def test_generate_returning_the_wrong_count_is_an_error(tok):
    constructor = SelfConstructor(tokenizer=tok, generate=lambda prompts, phase=None: [])
    with pytest.raises(ValueError, match="0 completions for 1 synthesis prompts"):
        constructor.construct([request(tok)])


def test_max_reflection_chars_rejects_long_rewrites(tok):
    generate = ScriptedGenerate(tok, [synthesis(f"{LINE1}\n{LINE2}\n{FIX}")])
    [result] = SelfConstructor(tokenizer=tok, generate=generate, max_reflection_chars=20).construct([request(tok)])
    assert isinstance(result, ConstructionFailure) and result.reason == "too_long"


# --- splice ---------------------------------------------------------------------------------

LOCATE = f"<quote>{LINE2}</quote>\n<analysis>19 * 3 is 57, not 56.</analysis>"
CONTINUATION = ": 19 * 3 is 57, not 56.\nStep 2: 19 * 3 = 57\nStep 3: 57 - 5 = 52\nThe answer is \\boxed{52}."


def test_splice_keeps_exactly_the_negative_ids_up_to_the_quote(tok):
    req = request(tok)
    generate = ScriptedGenerate(tok, [LOCATE], [CONTINUATION])
    [result] = SpliceConstructor(tokenizer=tok, generate=generate).construct([req])

    k = len(tok.encode(f"{LINE1}\n{LINE2}", add_special_tokens=False))  # the quote ends on a token boundary
    kept = list(req.negative_ids[:k])
    assert tok.decode(kept) == f"{LINE1}\n{LINE2}"
    opener = tok.encode(" Wait, let me double-check", add_special_tokens=False)
    body = tok.encode(CONTINUATION, add_special_tokens=False)
    assert list(result.token_ids) == kept + opener + body + [tok.eos_token_id]
    assert result.prefix_tokens == result.reflection_start == k and prefix_fidelity(result) == 1.0
    assert result.text == f"{LINE1}\n{LINE2} Wait, let me double-check{CONTINUATION}"
    assert result.analysis == "19 * 3 is 57, not 56."
    assert result.extra == {"quote": LINE2, "truncated": False}
    # locate, continuation, and the (empty) self-fallback call; generated tokens are locate + continuation
    assert generate.phases == ["locate", "continuation", "synthesis"] and generate.calls[2] == []
    assert result.generated_tokens == len(generate.ids(LOCATE)) + len(body) + 1
    # phase 2 continues the chat-templated CONTINUE prompt from y-'s own ids and the opener
    cont_text = build_continue_prompt(question=req.question, positive=req.positive_text, analysis=result.analysis)
    cont = chat_prompt_ids(tok, cont_text)
    assert generate.calls[1][0] == cont + kept + opener
    assert PROBLEM.question in generate.prompt_text(0, 0) and WRONG in generate.prompt_text(0, 0)


def test_splice_cut_covers_a_quote_that_ends_inside_a_token():
    tok = CharTokenizer("56\nS")  # one token straddles the end of "... = 56"
    head, tail = f"{LINE1}\n{LINE2[:-2]}", WRONG[len(LINE1) + 1 + len(LINE2) + 2 :]
    ids = tok.encode(head, add_special_tokens=False) + [100] + tok.encode(tail, add_special_tokens=False) + [2]
    req = request(tok, ids=ids)
    assert tok.decode(ids, skip_special_tokens=True) == WRONG
    generate = ScriptedGenerate(tok, [LOCATE], [CONTINUATION])
    [result] = SpliceConstructor(tokenizer=tok, generate=generate).construct([req])

    k = len(head) + 1  # the smallest cut whose text reaches the quote end keeps the straddling token
    assert result.prefix_tokens == k and list(result.token_ids[:k]) == ids[:k]
    assert result.text.startswith(f"{LINE1}\n{LINE2}\nS Wait, let me double-check")


def test_splice_cut_never_splits_a_character_or_a_number(tok):
    """The quote ends inside a byte-split character ("−") or is found only inside numbers ("7-4=7" in
    "17 - 4 = 71"): the kept prefix ends with the whole character, the whole number."""
    negative = "Step 1: 9 − 2 = 7\nStep 2: 17 - 4 = 71\nThe answer is \\boxed{71}."
    for quote, kept in (("Step 1: 9 −", "Step 1: 9 −"), ("7-4=7", "Step 1: 9 − 2 = 7\nStep 2: 17 - 4 = 71")):
        generate = ScriptedGenerate(tok, [f"<quote>{quote}</quote>\n<analysis>x</analysis>"], [CONTINUATION])
        [result] = SpliceConstructor(tokenizer=tok, generate=generate).construct([request(tok, negative=negative)])
        assert result.strategy == "splice", result
        assert tok.decode(list(result.token_ids[: result.prefix_tokens])) == kept, quote


def test_splice_drops_a_truncated_continuation(tok):
    cut_short = tok.encode(": 19 * 3 is 57", add_special_tokens=False)  # no eos: the token limit stopped it
    generate = ScriptedGenerate(tok, [LOCATE], [cut_short])
    [result] = SpliceConstructor(tokenizer=tok, generate=generate).construct([request(tok)])
    assert isinstance(result, ConstructionFailure) and result.reason == "truncated"
    assert result.generated_tokens == len(generate.ids(LOCATE)) + len(cut_short)


def test_splice_keeps_a_truncated_continuation_without_eos_when_asked(tok):
    cut_short = tok.encode(": 19 * 3 is 57", add_special_tokens=False)
    generate = ScriptedGenerate(tok, [LOCATE], [cut_short])
    [result] = SpliceConstructor(tokenizer=tok, generate=generate, keep_truncated=True).construct([request(tok)])
    assert result.token_ids[-len(cut_short):] == tuple(cut_short)  # no eos appended: it did not end
    assert tok.eos_token_id not in result.token_ids
    assert result.extra["truncated"] is True


def test_splice_ends_at_any_declared_eos(tok):
    """A second end id (as Qwen3 declares <|endoftext|> beside <|im_end|>) ends the continuation too."""
    other_end = tok.convert_tokens_to_ids("<|endoftext|>")
    assert other_end != tok.eos_token_id
    body = tok.encode(": 19 * 3 is 57", add_special_tokens=False)
    generate = ScriptedGenerate(tok, [LOCATE], [body + [other_end] + body])
    constructor = SpliceConstructor(tokenizer=tok, generate=generate, eos_token_ids=(tok.eos_token_id, other_end))
    [result] = constructor.construct([request(tok)])
    # cut at the other end id, which the trained row keeps: the row is the policy's own output
    assert result.token_ids[-len(body) - 1:] == tuple(body) + (other_end,)
    assert result.extra["truncated"] is False


def test_splice_empty_continuation_is_a_failure(tok):
    generate = ScriptedGenerate(tok, [LOCATE], [[tok.eos_token_id]])
    [result] = SpliceConstructor(tokenizer=tok, generate=generate).construct([request(tok)])
    assert isinstance(result, ConstructionFailure) and result.reason == "empty"
    assert result.generated_tokens == len(generate.ids(LOCATE)) + 1


def test_splice_falls_back_to_self_in_a_synthesis_call(tok):
    requests = [request(tok, query="found"), request(tok, query="missing"), request(tok, query="garbled")]
    absent = "<quote>Step 2: 19 * 3 = 60</quote><analysis>?</analysis>"
    reconstruction = f"{LINE1}\n{FIX}"
    generate = ScriptedGenerate(
        tok, [LOCATE, absent, "no tags at all"], [CONTINUATION], [synthesis(reconstruction), "still no tags"]
    )
    results = SpliceConstructor(tokenizer=tok, generate=generate).construct(requests)

    assert generate.phases == ["locate", "continuation", "synthesis"] and len(generate.calls[2]) == 2
    assert "<reconstruction>" in generate.prompt_text(2, 0) and "<reconstruction>" in generate.prompt_text(2, 1)
    assert [r.pair.query_id for r in results] == ["found", "missing", "garbled"]
    found, missing, garbled = results
    assert found.strategy == "splice" and "fallback" not in found.extra
    assert missing.strategy == "self" and missing.extra["fallback"] == "self"
    assert missing.extra["locate_failure"] == "quote_not_found"
    assert list(missing.token_ids) == tok.encode(reconstruction, add_special_tokens=False) + [tok.eos_token_id]
    assert missing.generated_tokens == len(generate.ids(absent)) + len(generate.ids(synthesis(reconstruction)))
    assert isinstance(garbled, ConstructionFailure) and garbled.reason == "unparsed" and garbled.strategy == "self"
    assert garbled.generated_tokens == len(generate.ids("no tags at all")) + len(generate.ids("still no tags"))


def test_splice_drop_fails_without_fallback_prompts(tok):
    absent = "<quote>Step 2: 19 * 3 = 60</quote>"
    generate = ScriptedGenerate(tok, [absent, "no tags"], [])
    results = SpliceConstructor(tokenizer=tok, generate=generate, fallback="drop").construct(
        [request(tok, query="a"), request(tok, query="b")]
    )
    assert len(generate.calls) == 2 and generate.calls[1] == []  # phase 2 still runs, with nothing to continue
    assert generate.phases == ["locate", "continuation"]  # no fallback, so no synthesis call
    assert [(r.pair.query_id, r.reason, r.strategy) for r in results] == [
        ("a", "quote_not_found", "splice"),
        ("b", "unparsed", "splice"),
    ]
    assert results[0].generated_tokens == len(generate.ids(absent)) and results[1].raw_output == "no tags"


# --- aligned --------------------------------------------------------------------------------


def test_aligned_cuts_wrong_responses_on_their_own_ids_and_ends_at_gold(tok):
    problems = generate_problems(split="train", n=24, seed=5, n_steps=(2, 4))
    rng = random.Random(0)
    requests, wrong_steps = [], []
    for i, p in enumerate(problems):
        text, at = corrupt_solution(p, rng=rng)
        requests.append(request(tok, query=p.id, negative=text, question=p.question, positive=p.solution))
        wrong_steps.append(at)
    results = AlignedConstructor(tokenizer=tok).construct(requests)

    assert [r.pair.query_id for r in results] == [p.id for p in problems]
    for p, req, at, result in zip(problems, requests, wrong_steps, results):
        assert isinstance(result, ConstructedTrajectory), (p.id, result)
        k = result.prefix_tokens
        prefix, _, continuation = aligned_correction(p, req.negative_text)
        assert list(result.token_ids[:k]) == list(req.negative_ids[:k])
        assert tok.decode(list(req.negative_ids[:k])) == prefix  # the tiny tokenizer cuts lines on token boundaries
        assert result.text == prefix + continuation and result.token_ids[-1] == tok.eos_token_id
        assert BOXED.findall(result.text)[-1] == p.answer
        assert result.generated_tokens == 0 and result.reflection_start == k
        assert result.extra["wrong_step"] == at
        assert result.analysis and result.analysis in continuation


def test_aligned_cut_excludes_a_token_straddling_the_wrong_step():
    tok = CharTokenizer("56\nS")
    head, tail = f"{LINE1}\n{LINE2[:-2]}", WRONG[len(LINE1) + 1 + len(LINE2) + 2 :]
    ids = tok.encode(head, add_special_tokens=False) + [100] + tok.encode(tail, add_special_tokens=False) + [2]
    [result] = AlignedConstructor(tokenizer=tok).construct([request(tok, ids=ids)])

    prefix, _, continuation = aligned_correction(PROBLEM, WRONG)
    assert prefix == f"{LINE1}\n{LINE2}"
    k = len(head)  # the largest cut that stays inside the prefix: "56" is re-encoded with the continuation
    assert result.prefix_tokens == k and list(result.token_ids[:k]) == ids[:k]
    assert result.extra["leftover_chars"] == 2
    assert list(result.token_ids[k:]) == tok.encode("56" + continuation, add_special_tokens=False) + [2]
    assert result.text == prefix + continuation  # no character repeated or lost at the cut


def test_aligned_failures(tok):
    right = request(tok, query="right", negative=PROBLEM.solution)
    other = request(tok, query="other", question="What is the capital of France?")
    results = AlignedConstructor(tokenizer=tok).construct([right, other])
    assert [(r.pair.query_id, r.reason) for r in results] == [("right", "no_wrong_step"), ("other", "not_arithmetic")]
    assert all(isinstance(r, ConstructionFailure) and r.generated_tokens == 0 for r in results)


# --- make_constructor -----------------------------------------------------------------------


def test_make_constructor_builds_each_strategy(tok):
    generate = ScriptedGenerate(tok)
    assert isinstance(make_constructor("self", tokenizer=tok, generate=generate), SelfConstructor)
    template = "$question $negative $positive"
    splice = make_constructor(
        "splice", tokenizer=tok, generate=generate, splice_fallback="drop", self_template=template
    )
    assert isinstance(splice, SpliceConstructor) and splice.fallback == "drop" and splice.self_template == template
    assert make_constructor("aligned", tokenizer=tok).strategy == "aligned"


def test_make_constructor_custom_self_template_reaches_the_prompt(tok):
    generate = ScriptedGenerate(tok, [synthesis("x")])
    template = "Q=$question N=$negative P=$positive"
    constructor = make_constructor("self", tokenizer=tok, generate=generate, self_template=template)
    constructor.construct([request(tok, negative="n1", positive="p1", question="q1")])
    assert generate.prompt_text(0, 0) == "<|im_start|>user\nQ=q1 N=n1 P=p1<|im_end|>\n<|im_start|>assistant\n"


def test_make_constructor_custom_locate_template_reaches_the_locate_prompt(tok):
    generate = ScriptedGenerate(tok, ["no tags here"])  # unparsed, and with fallback drop there is no other call
    template = "L=$question N=$negative P=$positive"
    constructor = make_constructor("splice", tokenizer=tok, generate=generate, splice_fallback="drop",
                                   locate_template=template)
    [result] = constructor.construct([request(tok, negative="n1", positive="p1", question="q1")])
    assert generate.prompt_text(0, 0) == "<|im_start|>user\nL=q1 N=n1 P=p1<|im_end|>\n<|im_start|>assistant\n"
    assert result.reason == "unparsed"
    with pytest.raises(ValueError, match=r"locate template lacks the placeholder\(s\) \$positive"):
        make_constructor("splice", tokenizer=tok, generate=ScriptedGenerate(tok, ["x"]), splice_fallback="drop",
                         locate_template="$question $negative").construct([request(tok)])


def test_make_constructor_rejects_bad_options(tok):
    with pytest.raises(ValueError, match=r"unknown construction strategy 'teacher'; choose from self, splice, aligned"):
        make_constructor("teacher", tokenizer=tok)
    with pytest.raises(ValueError, match="'splice' needs a generate function"):
        make_constructor("splice", tokenizer=tok)
    with pytest.raises(ValueError, match="unknown splice fallback 'skip'; choose from self, drop"):
        make_constructor("splice", tokenizer=tok, generate=ScriptedGenerate(tok), splice_fallback="skip")
    with pytest.raises(ValueError, match="max_reflection_chars must be positive"):
        make_constructor("self", tokenizer=tok, generate=ScriptedGenerate(tok), max_reflection_chars=0)


# ---- budgets, end ids, template arguments (issue: TAPO correct on every path) ----

def test_self_drops_an_unclosed_reconstruction(tok):
    """A synthesis cut off by its budget leaves the reconstruction open: no final answer, so no trajectory."""
    cut = f"<analysis>slip</analysis>\n<reconstruction>{LINE1}\nWait, let me double-check"
    generate = ScriptedGenerate(tok, [tok.encode(cut, add_special_tokens=False)])  # no eos: the budget ran out
    [result] = SelfConstructor(tokenizer=tok, generate=generate).construct([request(tok)])
    assert isinstance(result, ConstructionFailure) and result.reason == "truncated"


@pytest.mark.parametrize("keep_truncated", [False, True])
def test_self_an_unclosed_reconstruction_that_ended_at_eos_is_unparsed(tok, keep_truncated):
    """The model ended (eos) without closing the reconstruction: it was not cut off by its budget, so it is
    an unparsed answer, never kept as a truncated one."""
    ended = f"<analysis>slip</analysis>\n<reconstruction>{LINE1}\nWait, let me double-check"
    generate = ScriptedGenerate(tok, [tok.encode(ended, add_special_tokens=False) + [tok.eos_token_id]])
    constructor = SelfConstructor(tokenizer=tok, generate=generate, keep_truncated=keep_truncated)
    [result] = constructor.construct([request(tok)])
    assert isinstance(result, ConstructionFailure) and result.reason == "unparsed"


def test_self_keeps_an_unclosed_reconstruction_without_eos_when_asked(tok):
    cut = f"<analysis>slip</analysis>\n<reconstruction>{LINE1}\nWait, let me double-check"
    generate = ScriptedGenerate(tok, [tok.encode(cut, add_special_tokens=False)])
    [result] = SelfConstructor(tokenizer=tok, generate=generate, keep_truncated=True).construct([request(tok)])
    assert isinstance(result, ConstructedTrajectory) and result.extra["truncated"] is True
    assert tok.eos_token_id not in result.token_ids
    closed = ScriptedGenerate(tok, [synthesis(f"{LINE1}\n{FIX}")])
    [done] = SelfConstructor(tokenizer=tok, generate=closed, keep_truncated=True).construct([request(tok)])
    assert done.token_ids[-1] == tok.eos_token_id and done.extra["truncated"] is False


def test_max_tokens_drops_long_constructions(tok):
    text = synthesis(f"{LINE1}\n{FIX}")
    n_ids = len(tok.encode(f"{LINE1}\n{FIX}", add_special_tokens=False)) + 1
    for limit, built in ((n_ids, True), (n_ids - 1, False)):
        generate = ScriptedGenerate(tok, [text])
        [result] = make_constructor("self", tokenizer=tok, generate=generate, max_tokens=limit).construct([request(tok)])
        assert isinstance(result, ConstructedTrajectory) is built
        if not built:
            assert result.reason == "too_long"


def test_self_without_a_marker_has_unknown_prefix_fidelity(tok):
    """Sharing a few tokens with y- and never reflecting says nothing about copying up to the mistake."""
    generate = ScriptedGenerate(tok, [synthesis("Step 1: 12 + 7 is 19, so the answer is \\boxed{52}.")])
    [result] = SelfConstructor(tokenizer=tok, generate=generate).construct([request(tok)])
    assert result.extra["marker"] is None and result.prefix_tokens > 0
    assert has_no_marker(result) and prefix_fidelity(result) is None


# A Qwen3-style switch: without enable_thinking=False the assistant turn opens in thinking mode.
THINKING_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{% endif %}"
)


@pytest.mark.parametrize("strategy", ["self", "splice"])
def test_every_templated_prompt_takes_the_chat_template_arguments(tok, strategy):
    """Synthesis, locate and continue prompts are templated with the rollouts' chat_template_kwargs."""
    kwargs = {"chat_template": THINKING_TEMPLATE, "enable_thinking": False}
    script = [[synthesis(f"{LINE1}\n{FIX}")]] if strategy == "self" else [[LOCATE], [CONTINUATION]]
    generate = ScriptedGenerate(tok, *script)
    make_constructor(strategy, tokenizer=tok, generate=generate, chat_template_kwargs=kwargs).construct([request(tok)])
    assert [len(call) for call in generate.calls[: len(script)]] == [1] * len(script)
    for call in generate.calls[: len(script)]:
        text = tok.decode(call[0], skip_special_tokens=False)
        assert "<|im_start|>assistant\n<think>\n\n</think>\n\n" in text  # the thinking switch was honoured
