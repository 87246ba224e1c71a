"""`splice_locate: surprise`: the pure locate functions, the constructor's surprise path, the HF score function."""

from __future__ import annotations

import pytest
import torch

from tapo.core.constructors import SpliceConstructor, chat_prompt_ids
from tapo.core.locate import (
    build_surprise_prompt,
    cut_after_unit,
    first_surprise,
    first_surprising_unit,
    locate_by_surprise,
    surprise_scores,
    token_ends,
    token_units,
    unit_spans,
    unit_surprise,
)
from tapo.core.synthesis import build_continue_prompt, seed_reflection
from tapo.core.types import ConstructedTrajectory, ConstructionFailure, ConstructionPair, ConstructionRequest
from tapo.data.arithmetic import make_problem
from tapo.models import build_tiny_tokenizer

PROBLEM = make_problem(12, [("+", 7), ("*", 3), ("-", 5)])
LINE1, LINE2, LINE3 = "Step 1: 12 + 7 = 19", "Step 2: 19 * 3 = 56", "Step 3: 56 - 5 = 51"
WRONG = f"{LINE1}\n{LINE2}\n{LINE3}\nThe answer is \\boxed{{51}}."
CONTINUATION = ": 19 * 3 is 57, not 56.\nStep 2: 19 * 3 = 57\nStep 3: 57 - 5 = 52\nThe answer is \\boxed{52}."


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def spiked(tokenizer, ids, spans, *, base=-0.1, spike=-6.0):
    """Log-probs of `ids`: `base` everywhere, `spike` on every token overlapping a (start, end) character span."""
    ends = token_ends(tokenizer, ids)
    starts = [0] + ends[:-1]
    return [spike if any(start < e and b < end for b, e in spans) else base for start, end in zip(starts, ends)]


def char_span(text, piece, *, after=0):
    start = text.index(piece, after)
    return start, start + len(piece)


# --- pure functions -------------------------------------------------------------------------


def test_the_located_step_is_the_one_with_the_spike_and_the_cut_ends_its_line(tok):
    ids = tok.encode(WRONG, add_special_tokens=False)
    text = tok.decode(ids)
    wrong_result = char_span(text, "56", after=len(LINE1))  # the slip: 19 * 3 is 57
    plain = [-0.1] * len(ids)
    privileged = spiked(tok, ids, [wrong_result])
    cut = locate_by_surprise(plain, privileged, text, token_ends(tok, ids), threshold=1.0, rule="max")

    assert cut is not None and text[cut.span[0] : cut.span[1]] == LINE2 and cut.unit == 1
    kept = tok.decode(ids[: cut.kept_tokens])
    assert kept.rstrip("\n") == f"{LINE1}\n{LINE2}"  # the prefix ends WITH the wrong step
    assert not kept[len(LINE1) + 1 + len(LINE2) :].strip()  # and nothing of the next line
    assert surprise_scores(plain, privileged)[cut.token] == pytest.approx(5.9)


def test_a_spike_on_any_byte_of_a_split_character_places_the_cut(tok):
    """Byte-level BPE writes "−" (3 bytes) as 3 tokens, of which only the first moves the decoded text's
    length; a spike on its last byte still locates the step that holds it."""
    text = "Step 1: 3 × 4 = 12\nStep 2: 12 − 2 = 9"
    ids = tok.encode(text, add_special_tokens=False)
    ends = token_ends(tok, ids)
    minus = [k for k in range(1, len(ids)) if ends[k] == ends[k - 1] and ends[k] > len("Step 1: 3 × 4 = 12\n")]
    assert len(minus) == 2, [(tok.decode([i]), e) for i, e in zip(ids, ends)]  # the 2 tokens that add nothing
    plain = [-0.1] * len(ids)
    privileged = list(plain)
    privileged[minus[-1]] = -9.0
    cut = locate_by_surprise(plain, privileged, tok.decode(ids), ends, threshold=1.0)
    assert cut is not None and cut.unit == 1 and cut.token == minus[-1]


def test_the_first_spike_wins_over_a_larger_later_one(tok):
    ids = tok.encode(WRONG, add_special_tokens=False)
    text = tok.decode(ids)
    ends = token_ends(tok, ids)
    plain = [-0.1] * len(ids)
    privileged = spiked(tok, ids, [char_span(text, "56", after=len(LINE1))], spike=-2.0)
    later = spiked(tok, ids, [char_span(text, "51")], spike=-12.0)
    privileged = [min(a, b) for a, b in zip(privileged, later)]
    cut = locate_by_surprise(plain, privileged, text, ends, threshold=1.0, rule="max")
    assert text[slice(*cut.span)] == LINE2


def test_no_spike_no_cut_and_negative_surprise_never_locates(tok):
    ids = tok.encode(WRONG, add_special_tokens=False)
    text, ends = tok.decode(ids), token_ends(tok, ids)
    assert locate_by_surprise([-0.5] * len(ids), [-0.5] * len(ids), text, ends) is None
    # y+ making tokens MORE likely (privileged above plain) is agreement, not a mistake
    assert locate_by_surprise([-5.0] * len(ids), [-0.1] * len(ids), text, ends, rule="max", threshold=0.5) is None


def test_unit_rules_and_thresholds():
    scores = [-2.0, 0.0, 3.0, 0.0, 0.5, 0.5]
    units = [0, 0, 0, None, 1, 1]
    assert unit_surprise(scores, units, n_units=2, rule="mean") == [pytest.approx(1 / 3), 0.5]
    assert unit_surprise(scores, units, n_units=2, rule="max") == [3.0, 0.5]
    assert unit_surprise(scores, units, n_units=2, rule="sum") == [1.0, 1.0]
    assert first_surprising_unit(scores, units, n_units=2, threshold=0.4, rule="mean") == 1  # the spike is averaged away
    assert first_surprising_unit(scores, units, n_units=2, threshold=0.4, rule="max") == 0
    assert first_surprise(scores, threshold=2.0) == 2 and first_surprise(scores, threshold=4.0) is None
    with pytest.raises(ValueError, match="unknown surprise rule"):
        unit_surprise(scores, units, n_units=2, rule="median")
    with pytest.raises(ValueError, match="differ in length"):
        surprise_scores([0.0], [0.0, 1.0])


def test_units_are_lines_and_sentences():
    text = "First, 3 + 4 = 7. Then 7 * 2 = 14.\n\n  The answer is 14.  \nDone"
    assert [text[s:e] for s, e in unit_spans(text)] == [
        "First, 3 + 4 = 7.", "Then 7 * 2 = 14.", "The answer is 14.", "Done"
    ]
    assert unit_spans("x = 3.5 so y = 2.5") == [(0, 18)]  # a decimal point ends no sentence


def test_cut_keeps_a_straddling_token_and_a_line_break_only_when_it_is_its_own_token():
    text = "ab\ncd"
    assert cut_after_unit(text, [2, 3, 5], 2) == 2  # "ab" + "\n"
    assert cut_after_unit(text, [2, 4, 5], 2) == 1  # "\nc" is no line break alone: stop after "ab"
    assert cut_after_unit(text, [1, 3, 5], 2) == 2  # "b\n" straddles the unit end: kept
    assert token_units(text, [2, 3, 5], unit_spans(text)) == [0, None, 1]


# --- the constructor's surprise path ---------------------------------------------------------


class FakeScore:
    """A ScoreFn: the plain rows get -0.1 everywhere; privileged rows a spike on the given text pieces."""

    def __init__(self, tokenizer, pieces):
        self.tokenizer, self.pieces, self.calls = tokenizer, pieces, []

    def __call__(self, prompts, completions):
        self.calls.append(([list(p) for p in prompts], [list(c) for c in completions]))
        half = len(prompts) // 2
        out = []
        for row, ids in enumerate(completions):
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            spans = [char_span(text, piece) for piece in self.pieces if piece in text] if row >= half else []
            out.append(spiked(self.tokenizer, ids, spans))
        return out


class ByPromptGenerate:
    """A GenerateFn (takes `phase`) answering continuation and self-synthesis prompts; a locate prompt is an error."""

    def __init__(self, tokenizer, *, continuation=CONTINUATION, synthesis=None):
        self.tokenizer, self.continuation, self.synthesis = tokenizer, continuation, synthesis
        self.calls: list[tuple[str | None, list[list[int]]]] = []

    def __call__(self, prompts, *, phase=None):
        self.calls.append((phase, [list(p) for p in prompts]))
        out = []
        for prompt in prompts:
            text = self.tokenizer.decode(prompt)
            assert "<quote>" not in text, "surprise must not decode a locate answer"
            answer = self.synthesis if "<reconstruction>" in text else self.continuation
            out.append(self.tokenizer.encode(answer, add_special_tokens=False) + [self.tokenizer.eos_token_id])
        return out

    def prompts(self):
        return [p for _, call in self.calls for p in call]


def make_request(tok, *, query="q0", negative=WRONG, prompt_ids=()):
    return ConstructionRequest(
        pair=ConstructionPair(query, 0, 1), question=PROBLEM.question, negative_text=negative,
        negative_ids=tuple(tok.encode(negative, add_special_tokens=False) + [tok.eos_token_id]),
        positive_text=PROBLEM.solution, answer=PROBLEM.answer, prompt_ids=tuple(prompt_ids),
    )


def test_surprise_keeps_y_minus_up_to_the_located_step_and_continues_from_it(tok):
    rollout_prompt = chat_prompt_ids(tok, f"Please solve. {PROBLEM.question}")
    req = make_request(tok, prompt_ids=rollout_prompt)
    score = FakeScore(tok, [" 56\n"])  # the first " 56" of y- is step 2's wrong result
    generate = ByPromptGenerate(tok)
    constructor = SpliceConstructor(tokenizer=tok, generate=generate, locator="surprise", score=score,
                                    surprise_rule="max", surprise_threshold=1.0)
    [result] = constructor.construct([req])

    assert isinstance(result, ConstructedTrajectory) and result.strategy == "splice"
    negative = list(req.negative_ids[:-1])
    k = result.prefix_tokens
    kept_text = tok.decode(negative[:k])
    assert kept_text.rstrip("\n") == f"{LINE1}\n{LINE2}" and result.reflection_start == k
    assert list(result.token_ids[:k]) == negative[:k]  # y-'s own ids
    # one scoring pass: the rollout's own prompt, then the privileged prompt (question + y+, not y-)
    [(prompts, completions)] = score.calls
    assert prompts[0] == rollout_prompt and completions == [negative, negative]
    privileged = tok.decode(prompts[1])
    assert PROBLEM.solution in privileged and LINE3 not in privileged
    assert prompts[1] == chat_prompt_ids(tok, build_surprise_prompt(question=PROBLEM.question, positive=PROBLEM.solution))
    # no locate decode: the only prompt generated from is the continuation of the kept prefix
    [prompt] = generate.prompts()
    opener = seed_reflection(kept_text)
    assert result.analysis == f'The attempt first goes wrong at "{LINE2}".'
    continue_text = build_continue_prompt(question=req.question, positive=req.positive_text, analysis=result.analysis)
    assert prompt == chat_prompt_ids(tok, continue_text) + negative[:k] + tok.encode(opener, add_special_tokens=False)
    body = tok.encode(CONTINUATION, add_special_tokens=False)
    assert result.generated_tokens == len(body) + 1  # the continuation only: surprise decodes nothing to locate
    assert result.extra["locator"] == "surprise" and result.extra["quote"] == LINE2 and result.extra["surprise"] > 1.0


def test_surprise_plain_view_defaults_to_the_chat_templated_question(tok):
    score = FakeScore(tok, [" 56\n"])
    SpliceConstructor(tokenizer=tok, generate=ByPromptGenerate(tok), locator="surprise", score=score,
                      surprise_rule="max").construct([make_request(tok)])
    assert score.calls[0][0][0] == chat_prompt_ids(tok, PROBLEM.question)


def test_surprise_without_a_spike_falls_back_to_self_like_an_unfound_quote(tok):
    reconstruction = f"{LINE1}\nWait, 19 * 3 is 57.\nStep 2: 19 * 3 = 57\nStep 3: 57 - 5 = 52\nThe answer is \\boxed{{52}}."
    synthesis = f"<analysis>slip in step 2</analysis><reconstruction>{reconstruction}</reconstruction>"
    requests = [make_request(tok, query="spike"), make_request(tok, query="flat", negative=WRONG.replace("56", "55"))]
    score = FakeScore(tok, [" 56\n"])  # only the first y- has the spike
    generate = ByPromptGenerate(tok, synthesis=synthesis)
    spike, flat = SpliceConstructor(tokenizer=tok, generate=generate, locator="surprise", score=score,
                                    surprise_rule="max").construct(requests)
    assert spike.strategy == "splice"
    assert flat.strategy == "self" and flat.extra["fallback"] == "self" and flat.extra["locate_failure"] == "no_surprise"
    assert flat.text == reconstruction
    assert flat.generated_tokens == len(tok.encode(synthesis, add_special_tokens=False)) + 1  # no locate tokens
    assert len(score.calls) == 1 and len(score.calls[0][0]) == 4  # one pass for the batch: 2 plain + 2 privileged


def test_surprise_drop_fails_with_no_surprise(tok):
    generate = ByPromptGenerate(tok)
    [result] = SpliceConstructor(tokenizer=tok, generate=generate, locator="surprise", score=FakeScore(tok, []),
                                 fallback="drop").construct([make_request(tok)])
    assert isinstance(result, ConstructionFailure) and result.reason == "no_surprise" and result.generated_tokens == 0
    assert generate.prompts() == []


def test_surprise_scores_once_even_without_requests(tok):
    score, generate = FakeScore(tok, []), ByPromptGenerate(tok)
    assert SpliceConstructor(tokenizer=tok, generate=generate, locator="surprise", score=score).construct([]) == []
    assert score.calls == [([], [])]  # every process makes the same forward passes


def test_surprise_options_are_checked(tok):
    with pytest.raises(ValueError, match="needs a score function"):
        SpliceConstructor(tokenizer=tok, generate=ByPromptGenerate(tok), locator="surprise")
    with pytest.raises(ValueError, match="unknown splice locator"):
        SpliceConstructor(tokenizer=tok, generate=ByPromptGenerate(tok), locator="guess")
    with pytest.raises(ValueError, match="unknown surprise rule"):
        SpliceConstructor(tokenizer=tok, generate=ByPromptGenerate(tok), locator="surprise", score=FakeScore(tok, []),
                          surprise_rule="median")
    bad = SpliceConstructor(tokenizer=tok, generate=ByPromptGenerate(tok), locator="surprise", score=lambda p, c: [])
    with pytest.raises(ValueError, match="score returned 0 rows for 2"):
        bad.construct([make_request(tok)])


# --- the offline HF score function ------------------------------------------------------------


def test_hf_scores_equal_a_direct_single_row_computation():
    from tapo.models import load_policy
    from tapo.sampling.scoring import hf_score_fn, score_completions

    model, tokenizer = load_policy("builtin:tiny", seed=0)
    prompts = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [14, 15]]
    completions = [[20, 21], [22, 23, 24, 25, 26], [27], []]

    def direct(prompt, completion):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + completion])).logits[0]  # [P+T, V]
        logps = torch.log_softmax(logits.float(), dim=-1)  # [P+T, V]
        return [logps[len(prompt) - 1 + t, token].item() for t, token in enumerate(completion)]

    expected = [direct(p, c) for p, c in zip(prompts, completions)]
    for batch_size in (1, 3, 8):  # rows of unequal lengths padded together, or alone
        got = score_completions(model, prompts, completions, pad_id=tokenizer.pad_token_id, batch_size=batch_size)
        assert [len(row) for row in got] == [len(c) for c in completions]
        for row, want in zip(got, expected):
            assert row == pytest.approx(want, abs=1e-4)
    assert hf_score_fn(model, tokenizer, batch_size=2)(prompts, completions)[1] == pytest.approx(expected[1], abs=1e-4)
    assert score_completions(model, [], [], pad_id=0) == []
    with pytest.raises(ValueError, match="row 0: the prompt is empty"):
        score_completions(model, [[]], [[5]], pad_id=0)
