"""Marker-based reflection detection, and the first-pass / error-correction analysis with `tapo analyze` / `tapo compare`."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import pytest

from tapo.evaluation import analysis, reflection
from tapo.evaluation.analysis import analyze, boundary_problems, reflection_rates
from tapo.evaluation.reflection import REFLECTION_MARKERS, ReflectionVerdict, find_reflection, reflects

from conftest import run_tapo

POSITIVE = {
    "wait": ["Wait, that is not right.", "so 12. wait. 13", "WAIT a second", "Wait let me see", "wait, no"],
    "hold_on": ["Hold on, the sign flips.", "hang on"],
    "double_check": ["Let me double-check this.", "let's double check", "Double-checking: 3*4=12", "let me check again", "I'll recheck"],
    "verify": ["Let me verify: 2+3=5", "To verify, plug in x=2."],
    "mistake": ["I made a mistake in step 2.", "There was an error above.", "My mistake:", "That's wrong.",
                "This can't be right.", "that doesn't seem right", "oops"],
    "re_examine": ["Let me re-examine the second step.", "Reconsidering the case n=0", "I will recalculate", "let's redo it"],
    "second_thought": ["On second thought, use 7.", "Thinking about it again"],
    "actually": ["Actually, the product is 12."],
    "correction": ["Let me correct that.", "Correction: 14 should be 12."],
    "going_back": ["Going back to step 1,", "let's go back"],
}
NEGATIVE = [
    "We await the result.",
    "They wait in line for 10 minutes.",
    "The waiting time is 5.",
    "The answer is actually 5.",
    "Factually, 3 + 4 = 7.",
    "A checkered board has 64 squares.",
    "We verify nothing here; check the units. So the answer is 12.",
    "Therefore the answer is \\boxed{12}.",
]


def test_every_marker_is_in_the_documented_list():
    names = [m.name for m in REFLECTION_MARKERS]
    assert sorted(names) == sorted(POSITIVE)
    for name in names:
        assert f"`{name}`" in reflection.__doc__, f"marker {name} is not documented"


@pytest.mark.parametrize("marker, texts", POSITIVE.items())
def test_markers_find_their_phrases(marker, texts):
    for text in texts:
        assert marker in {h.marker for h in find_reflection(text)}, text
        assert reflects(text), text


@pytest.mark.parametrize("text", NEGATIVE)
def test_ordinary_sentences_do_not_count(text):
    assert find_reflection(text) == [] and not reflects(text)


def test_hits_come_in_order_of_position():
    hits = find_reflection("x=3. Hmm, oops. Let me re-examine: actually, x=4. Wait, yes.")
    assert [h.marker for h in hits] == ["mistake", "re_examine", "actually", "wait"]
    assert [h.start for h in hits] == sorted(h.start for h in hits)


def test_boundary_problems_need_every_model_strictly_between_0_and_1():
    rates = [{"a": 0.5, "b": 0.2, "c": 0.9, "d": 0.0}, {"a": 0.1, "b": 1.0, "c": 0.3, "d": 0.5}]
    assert boundary_problems(rates) == ["a", "c"]
    assert boundary_problems([{"a": 0.5}, {}]) == []


def test_rates_with_judge_verdicts_need_error_found_and_fixed():
    V = ReflectionVerdict
    items = [
        (True, V(True, True, True)),    # effective
        (True, V(True, True, False)),   # right, but the reflection fixed nothing
        (False, V(True, True, True)),   # wrong in the end
        (True, V(False, False, False)),  # direct
        (True, None),                   # the judge could not tell
    ]
    r = reflection_rates(items)
    assert (r["n_responses"], r["n_unjudged"], r["n_correct"], r["n_reflecting"]) == (4, 1, 3, 3)
    assert r["direct_solution_rate"] == pytest.approx(1 / 3)
    assert r["effective_reflection_rate"] == pytest.approx(1 / 3)
    assert reflection_rates([])["direct_solution_rate"] is None


def write_eval(directory: Path, model: str, rows: list[tuple[str, int, str, bool]]) -> Path:
    """A hand-made evaluation directory: rows are (problem id, sample, response, correct), one run."""
    directory.mkdir(parents=True)
    pids = sorted({r[0] for r in rows})
    rates = {p: sum(ok for q, _, _, ok in rows if q == p) / sum(q == p for q, *_ in rows) for p in pids}
    stat = {"mean": 0.5, "std": 0.0}
    result = {
        "model": model,
        "protocol": {"samples": 2, "runs": 1, "temperature": 0.6, "top_p": 0.9, "max_tokens": 64, "seed": 0},
        "benchmarks": {"toy": {"n_problems": len(pids), "pass_at_k": {"1": stat, "2": stat}, "maj_at_k": {"1": stat, "2": stat},
                               "avg_at_n": stat, "mean_response_tokens": 10.0, "per_problem_pass_rate": rates}},
    }
    (directory / "result.json").write_text(json.dumps(result))
    lines = [
        json.dumps({"benchmark": "toy", "problem_id": p, "run": 0, "sample": s, "chunk": 0, "response": text,
                    "answer": "1" if ok else "2", "gold": "1", "correct": ok, "n_tokens": 10, "finished": True})
        for p, s, text, ok in rows
    ]
    (directory / "responses.jsonl").write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture
def two_models(tmp_path):
    plain = "x = 1, so \\boxed{1}"
    wait_right = "x = 2. Wait, that is wrong: x = 1, \\boxed{1}"
    wait_wrong = "x = 1. Let me double-check: x = 2, \\boxed{2}"
    a = write_eval(tmp_path / "a", "model-a", [
        ("p1", 0, plain, True), ("p1", 1, wait_wrong, False),        # boundary
        ("p2", 0, wait_right, True), ("p2", 1, "\\boxed{2}", False),  # boundary
        ("p3", 0, plain, True), ("p3", 1, plain, True),              # solved always by a: not boundary
    ])
    b = write_eval(tmp_path / "b", "model-b", [
        ("p1", 0, wait_right, True), ("p1", 1, wait_right, True),    # b always right: p1 not boundary
        ("p2", 0, wait_right, True), ("p2", 1, wait_wrong, False),
        ("p3", 0, plain, True), ("p3", 1, "no", False),
    ])
    return a, b


def test_analyze_counts_on_boundary_problems_only(two_models):
    a, b = two_models
    out = analyze([a, b])
    assert out["classifier"] == "markers" and list(out["models"]) == ["model-a", "model-b"]
    ra, rb = out["benchmarks"]["toy"]["model-a"], out["benchmarks"]["toy"]["model-b"]
    assert ra["n_boundary_problems"] == rb["n_boundary_problems"] == 1  # only p2
    assert (ra["n_responses"], ra["n_correct"], ra["n_reflecting"]) == (2, 1, 1)
    assert ra["direct_solution_rate"] == 0.0 and ra["effective_reflection_rate"] == 1.0
    assert rb["effective_reflection_rate"] == 0.5 and rb["reflection_rate"] == 1.0
    alone = analyze([a])["benchmarks"]["toy"]["model-a"]  # p1 and p2 are a's boundary
    assert alone["n_boundary_problems"] == 2 and alone["n_correct"] == 2 and alone["direct_solution_rate"] == 0.5
    assert alone["effective_reflection_rate"] == 0.5


def test_cli_analyze_and_compare(two_models, tmp_path):
    a, b = two_models
    out_json = tmp_path / "analysis.json"
    result = run_tapo("analyze", str(a), str(b), "--output", str(out_json))
    assert result.returncode == 0, result.stderr
    assert "| toy | model-a | 1 | 2 | 0.00 | 50.00 | 100.00 |" in result.stdout
    assert json.loads(out_json.read_text())["benchmarks"]["toy"]["model-b"]["effective_reflection_rate"] == 0.5
    compared = run_tapo("compare", str(a), str(b), "--analysis", str(out_json))
    assert compared.returncode == 0, compared.stderr
    assert "| model-a | 3 | 50.00 ± 0.00 | 50.00 ± 0.00 |" in compared.stdout
    assert "| toy | model-b | 1 | 2 | 0.00 | 100.00 | 50.00 |" in compared.stdout
    missing = run_tapo("compare", str(a), str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no result.json in" in missing.stderr


def rename_benchmark(directory: Path, name: str) -> Path:
    """The hand-made evaluation with its benchmark 'toy' filed under another name."""
    result = json.loads((directory / "result.json").read_text())
    result["benchmarks"] = {name: result["benchmarks"]["toy"]}
    (directory / "result.json").write_text(json.dumps(result))
    rows = [json.loads(line) for line in (directory / "responses.jsonl").read_text().splitlines()]
    (directory / "responses.jsonl").write_text("".join(json.dumps({**r, "benchmark": name}) + "\n" for r in rows))
    return directory


def cli(*args: str, capsys) -> tuple[int, str, str]:
    """`tapo ARGS` in-process (the worktree's package); (exit code, stdout, stderr)."""
    from tapo.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_analyze_without_a_shared_benchmark_is_an_error(two_models, capsys):
    a, b = two_models
    rename_benchmark(b, "other")
    with pytest.raises(ValueError, match=r"no benchmark was evaluated in every directory \(.*a: toy; .*b: other\)"):
        analyze([a, b])
    code, out, err = cli("analyze", str(a), str(b), capsys=capsys)
    assert code == 2 and "| benchmark |" not in out and "no benchmark was evaluated in every directory" in err
    code, out, err = cli("compare", str(a), str(b), capsys=capsys)  # side by side still works, without the analysis
    assert code == 0 and "## toy" in out and "## other" in out and "analysis is left out" in err


@pytest.mark.parametrize("runs", [2, 99])
def test_analyze_with_more_runs_than_evaluated_is_an_error(two_models, capsys, runs):
    a, b = two_models
    with pytest.raises(ValueError, match=rf"runs {runs} is more than the evaluation runs there are \(.*a has 1, .*b has 1\).*--runs 1"):
        analyze([a, b], runs=runs)
    code, _, err = cli("analyze", str(a), str(b), "--runs", str(runs), capsys=capsys)
    assert code == 2 and f"runs {runs} is more than" in err
    assert analyze([a, b], runs=1) == analyze([a, b])


@pytest.mark.parametrize("name", ["aime24", "hmmt25", "math500"])
def test_analyze_of_a_hub_only_benchmark_not_evaluated_names_the_offline_fix(two_models, capsys, name):
    a, b = two_models
    code, _, err = cli("analyze", str(a), str(b), "--benchmarks", name, capsys=capsys)
    assert code == 2 and f"benchmark {name} not evaluated in every directory (evaluated in all: toy)" in err
    assert f"`tapo eval --benchmarks path/to/{name}.jsonl`" in err and "Traceback" not in err


def test_analyze_finds_a_benchmark_by_registry_name_or_file_path(two_models, capsys):
    a, b = two_models
    for d in (a, b):
        rename_benchmark(d, "aime24")  # what `tapo eval --benchmarks path/to/aime24.jsonl` files it under
    expected = analyze([a, b])
    assert analyze([a, b], benchmarks=["path/to/aime24.jsonl"]) == analyze([a, b], benchmarks=["AIME24"]) == expected
    assert list(expected["benchmarks"]) == ["aime24"]


def test_analyze_with_no_boundary_problem_says_nothing_was_analysed(tmp_path, capsys):
    always = write_eval(tmp_path / "always", "model-a", [("p1", 0, "\\boxed{1}", True), ("p1", 1, "\\boxed{1}", True)])
    code, out, err = cli("analyze", str(always), capsys=capsys)
    assert code == 1 and "| toy | model-a | 0 | 0 |" in out
    assert "nothing was analysed: toy has no boundary problem" in err


@pytest.mark.parametrize("module", [reflection, analysis])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
