"""The LLM reflection judge: strict-format parsing of hand-written answers, counters, and a real local endpoint."""

from __future__ import annotations

import doctest

import pytest

from tapo.evaluation import judge as judge_module
from tapo.evaluation.analysis import analyze
from tapo.evaluation.judge import ReflectionJudge, judge_messages, make_judge, parse_judgement
from tapo.evaluation.reflection import ReflectionVerdict as V

from conftest import run_tapo
from test_reflection import two_models, write_eval  # noqa: F401  (fixture and helper shared with the marker tests)


@pytest.mark.parametrize(
    "answer, verdict",
    [
        ('{"reflects": true, "locates_error": true, "fixes_error": true}', V(True, True, True)),
        ('Sure.\n```json\n{"reflects": true, "locates_error": false, "fixes_error": false}\n```\nDone.', V(True, False, False)),
        ('{"Reflects": "yes", "Locates Error": "no", "fixes-error": "No"}', V(True, False, False)),
        ('{"reflects": 1, "locates_error": 1, "fixes_error": 0}', V(True, True, False)),
        ('first {"reflects": false, "locates_error": false, "fixes_error": false} then '
         '{"reflects": true, "locates_error": true, "fixes_error": true}', V(True, True, True)),
        ("REFLECTS: yes\nLOCATES_ERROR: yes\nFIXES_ERROR: no", V(True, True, False)),
        ("- **Reflects**: Yes.\n- **Locates error**: yes\n- **Fixes error**: yes", V(True, True, True)),
        ("reflects = no\nlocates_error = yes\nfixes_error = yes", V(False, False, False)),  # no reflection, no fix
        ('{"reflects": false, "locates_error": true, "fixes_error": true}', V(False, False, False)),
    ],
)
def test_parse_judgement_reads_the_strict_format_robustly(answer, verdict):
    assert parse_judgement(answer) == verdict


@pytest.mark.parametrize(
    "answer",
    [None, "", "The solution reflects and fixes its error.", '{"reflects": true, "locates_error": true}',
     '{"reflects": "maybe", "locates_error": true, "fixes_error": true}', "REFLECTS: yes\nLOCATES_ERROR: no",
     '{"reflects": true, "locates_error": true, "fixes_error": tru', "ĠĊ 186 reflectsreflects: :"],
)
def test_unparseable_answers_give_none(answer):
    assert parse_judgement(answer) is None


def test_the_prompt_holds_problem_solution_and_format():
    system, user = judge_messages("What is 2+3?", "2+3=6. Wait, 5.", gold="5")
    assert '{"reflects": true, "locates_error": true, "fixes_error": false}' in system["content"]
    assert "What is 2+3?" in user["content"] and "2+3=6. Wait, 5." in user["content"] and "REFERENCE ANSWER: 5" in user["content"]


class FakeClient:
    class config:  # noqa: N801
        model = "fake-judge"

    def __init__(self, answers):
        self.answers = answers
        self.seen = []

    def chat_many(self, conversations):
        self.seen += conversations
        return self.answers[: len(conversations)]


def test_judge_counts_judged_unparseable_and_failed():
    client = FakeClient(['{"reflects": true, "locates_error": true, "fixes_error": true}', "gibberish", None])
    judge = ReflectionJudge(client)
    verdicts = judge.judge_many([("p", "r1", "1"), ("p", "r2", "1"), ("p", "r3", None)])
    assert verdicts == [V(True, True, True), None, None]
    assert judge.stats == {"judged": 1, "unparseable": 1, "failed": 1}
    assert judge.name == "judge:fake-judge" and "r2" in client.seen[1][1]["content"]


def test_analysis_with_a_judge_requires_a_located_and_fixed_error(two_models):  # noqa: F811
    a, b = two_models
    # model-a's boundary problem p2 has 2 responses: a correct reflecting one and a plain wrong one
    fake = FakeClient(['{"reflects": true, "locates_error": false, "fixes_error": false}',
                       '{"reflects": false, "locates_error": false, "fixes_error": false}'] * 2)
    out = analyze([a, b], judge=ReflectionJudge(fake))
    ra = out["benchmarks"]["toy"]["model-a"]
    assert out["classifier"] == "judge:fake-judge"
    assert ra["n_reflecting"] == 1 and ra["effective_reflection_rate"] == 0.0  # right, but found no error
    assert out["judge_stats"]["judged"] == 4


def test_judge_against_a_real_local_endpoint(chat_server, two_models, tmp_path):  # noqa: F811
    judge = make_judge(chat_server.base_url, chat_server.model, max_tokens=16, cache_dir=str(tmp_path / "cache"))
    items = [("What is 2+3?", "2+3=6. Wait, that is wrong: 5. \\boxed{5}", "5"), ("What is 1+1?", "\\boxed{2}", "2")]
    verdicts = judge.judge_many(items)
    assert len(verdicts) == 2 and all(v is None or isinstance(v, V) for v in verdicts)
    assert judge.stats["failed"] == 0 and sum(judge.stats.values()) == 2  # the server answered; each answer counted once
    assert judge.client.stats["requests"] == 2
    judge.judge_many(items)
    assert judge.client.stats["cache_hits"] == 2  # a rerun is served from the cache
    a, b = two_models
    result = run_tapo("analyze", str(a), str(b), "--judge-url", chat_server.base_url, "--judge-model", chat_server.model)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"classifier: judge:{chat_server.model}" in result.stdout
    assert "judge: " in result.stdout and "failed" in result.stdout
    half = run_tapo("analyze", str(a), "--judge-url", chat_server.base_url)
    assert half.returncode == 2 and "needs both --judge-url and --judge-model" in half.stderr


def test_doctests():
    result = doctest.testmod(judge_module)
    assert result.attempted > 0 and result.failed == 0
