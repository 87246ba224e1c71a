"""The `teacher` construction: an OpenAI-compatible endpoint writes the constructions.

The parsing path is tested with a stub client (a teacher that follows the format, one that fails);
the plumbing against the real local server (`chat_server`: a random tiny model, so its answers are
garbage): requests are made, unparsable answers are counted and dropped, and a rerun is served
from the cache with zero new requests.
"""

from __future__ import annotations

import json

import pytest

from tapo.coldstart.build import build_coldstart, format_synthesis
from tapo.coldstart.config import build_coldstart_config
from tapo.coldstart.teacher import TeacherConstructor, teacher_messages
from tapo.core import ConstructedTrajectory, ConstructionFailure, ConstructionPair, ConstructionRequest
from tapo.models import load_tokenizer


class StubClient:
    """Answers with `answer(messages)`; None stands for a request that failed for good."""

    def __init__(self, answer):
        self.answer = answer
        self.seen: list[list[dict]] = []

    def chat_many(self, conversations):
        self.seen.extend(conversations)
        return [self.answer(m) for m in conversations]


def _request(query_id: str = "q0") -> ConstructionRequest:
    tokenizer = load_tokenizer("builtin:tiny")
    negative = "Step 1: 6 - 4 = 3\nThe answer is \\boxed{3}."
    return ConstructionRequest(
        pair=ConstructionPair(query_id, -1, -1),
        question="Start with 6. Subtract 4. What is the result?",
        negative_text=negative,
        negative_ids=tuple(tokenizer.encode(negative, add_special_tokens=False)) + (tokenizer.eos_token_id,),
        positive_text="Step 1: 6 - 4 = 2\nThe answer is \\boxed{2}.",
        answer="2",
    )


def test_teacher_answer_becomes_a_trajectory_in_student_tokens():
    tokenizer = load_tokenizer("builtin:tiny")
    reconstruction = "Step 1: 6 - 4 = 3\nWait, let me double-check step 1: 6 - 4 is 2.\nThe answer is \\boxed{2}."
    client = StubClient(lambda m: "Sure.\n" + format_synthesis("Step 1 subtracts wrong.", reconstruction))
    requests = [_request("q0"), _request("q1")]
    results = TeacherConstructor(tokenizer=tokenizer, client=client).construct(requests)
    assert len(client.seen) == 2 and client.seen[0] == teacher_messages(requests[0])
    assert "Step 1: 6 - 4 = 3" in client.seen[0][0]["content"]  # y- is in the synthesis prompt
    for result in results:
        assert isinstance(result, ConstructedTrajectory) and result.strategy == "teacher"
        assert result.text == reconstruction and result.analysis == "Step 1 subtracts wrong."
        assert list(result.token_ids) == tokenizer.encode(reconstruction, add_special_tokens=False) + [tokenizer.eos_token_id]
        assert result.prefix_tokens > 0  # the copied start of y- is y-'s own tokens


def test_teacher_failures_are_counted_not_raised():
    tokenizer = load_tokenizer("builtin:tiny")
    answers = iter([None, "no tags at all"])
    results = TeacherConstructor(tokenizer=tokenizer, client=StubClient(lambda m: next(answers))).construct(
        [_request("a"), _request("b")]
    )
    assert [type(r) for r in results] == [ConstructionFailure, ConstructionFailure]
    assert [r.reason for r in results] == ["endpoint_error", "unparsed"]
    assert results[1].raw_output == "no tags at all" and results[1].strategy == "teacher"


def test_teacher_build_against_a_real_server_uses_the_cache(chat_server, tmp_path):
    config = build_coldstart_config(
        {
            "model": {"name": "builtin:tiny"},  # the student: only its tokenizer is needed here
            "data": {"source": "builtin:arithmetic", "n": 3, "n_steps": 1, "max_operand": 9},
            "build": {"construction": "teacher", "samples": 0, "synthetic_negative": "always",
                      "positive_source": "reference"},
            "teacher": {"base_url": chat_server.base_url, "model": chat_server.model, "max_tokens": 16,
                        "max_retries": 1, "timeout_s": 60},
        },
        where="test",
    )
    out = tmp_path / "teacher.jsonl"
    first = build_coldstart(config, output=out)
    assert first["eligible"] == 3
    assert first["teacher"]["requests"] >= 3 and first["teacher"]["cache_hits"] == 0
    # a random tiny model does not write <reconstruction>: every answer is counted and dropped, no crash
    assert sum(first["failed"].values()) + first["constructed"] == 3
    assert first["kept"] == len([json.loads(line) for line in open(out) if json.loads(line)["kind"] == "trajectory"])
    cache = tmp_path / "teacher.teacher-cache"
    assert cache.is_dir() and any(cache.rglob("*.json"))
    second = build_coldstart(config, output=out)
    assert second["teacher"]["requests"] == 0 and second["teacher"]["cache_hits"] == 3
    assert second["failed"] == first["failed"] and second["kept"] == first["kept"]


def test_teacher_section_is_validated():
    from tapo.config import ConfigError

    with pytest.raises(ConfigError, match="teacher.*api_key"):
        build_coldstart_config({"teacher": {"api_key": "sk-secret"}}, where="t.yaml")  # keys come from the environment
