"""`tapo eval` end to end on builtin:tiny with a local benchmark: files, reproducibility, resume."""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from pathlib import Path

import pytest

from tapo.evaluation import EvalProtocol, evaluate
from tapo.evaluation.responses import read_responses
from tapo.evaluation.run import plan_chunks, load_benchmarks
from tapo.sampling import Completion
from tapo.sampling.hf import HFSampler

from conftest import run_tapo

ROOT = Path(__file__).resolve().parents[1]
BENCH = str(ROOT / "tests" / "data" / "mini_bench.jsonl")  # 5 problems
PROTOCOL = EvalProtocol(samples=3, runs=2, temperature=1.0, top_p=0.95, max_tokens=12, seed=7)


@pytest.fixture(scope="module")
def sampler():
    from tapo.models import load_policy

    model, tokenizer = load_policy("builtin:tiny", seed=0)
    return HFSampler(model, tokenizer)


def run_eval(out: Path, sampler, **kw) -> dict:
    options = dict(output_dir=out, protocol=PROTOCOL, batch_size=2, progress=False, sampler=sampler)
    return evaluate("builtin:tiny", [BENCH], **{**options, **kw})


def rows_by_key(out: Path) -> dict:
    rows, _ = read_responses(out / "responses.jsonl")
    return {(r["benchmark"], r["problem_id"], r["run"], r["sample"]): r for r in rows}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sampler):
    """An uninterrupted evaluation: (directory, result)."""
    out = tmp_path_factory.mktemp("eval") / "reference"
    return out, run_eval(out, sampler)


def test_cli_eval_writes_result_table_and_responses(tmp_path):
    out = tmp_path / "cli"
    result = run_tapo(
        "eval", "--model", "builtin:tiny", "--benchmarks", BENCH, "--samples", "2", "--runs", "2",
        "--max-tokens", "8", "--batch-size", "4", "--seed", "3", "--output", str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "chunk" in result.stderr  # the tqdm progress bar
    data = json.loads((out / "result.json").read_text())
    assert data["model"] == "builtin:tiny"
    assert data["protocol"] == {"samples": 2, "runs": 2, "temperature": 0.6, "top_p": 0.9, "max_tokens": 8, "seed": 3}
    bench = data["benchmarks"]["mini_bench"]
    assert bench["n_problems"] == 5
    assert set(bench["pass_at_k"]) == set(bench["maj_at_k"]) == {"1", "2"}
    assert set(bench["pass_at_k"]["1"]) == {"mean", "std"} and set(bench["avg_at_n"]) == {"mean", "std"}
    assert list(bench["per_problem_pass_rate"]) == [f"mini-{i}" for i in range(1, 6)]
    rows = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert len(rows) == 5 * 2 * 2
    assert {(r["problem_id"], r["run"], r["sample"]) for r in rows} == {
        (f"mini-{i}", run, s) for i in range(1, 6) for run in range(2) for s in range(2)
    }
    assert all(0 <= r["n_tokens"] <= 8 and isinstance(r["correct"], bool) and "answer" in r for r in rows)
    assert all(r["finished"] or r["n_tokens"] == 8 for r in rows)  # cut only at max tokens
    assert bench["mean_response_tokens"] == pytest.approx(sum(r["n_tokens"] for r in rows) / len(rows))
    md = (out / "result.md").read_text()
    assert "| mini_bench | 5 |" in md and "Pass@2" in md and "maj@2" in md
    assert "| mini_bench | 5 |" in result.stdout


def test_cli_eval_reports_bad_input_clearly(tmp_path):
    missing = run_tapo("eval", "--model", "builtin:tiny", "--benchmarks", "nope.jsonl", "--output", str(tmp_path / "x"))
    assert missing.returncode == 2 and "benchmark file not found: nope.jsonl" in missing.stderr
    bad = run_tapo("eval", "--model", "builtin:tiny", "--benchmarks", BENCH, "--samples", "0", "--output", str(tmp_path / "y"))
    assert bad.returncode == 2 and "samples" in bad.stderr


def test_same_seed_same_results_other_seed_other_samples(tmp_path, sampler, reference):
    ref_dir, ref = reference
    again = run_eval(tmp_path / "again", sampler)
    assert again == ref
    assert rows_by_key(tmp_path / "again") == rows_by_key(ref_dir)
    other = run_eval(tmp_path / "other", sampler, limit=2, protocol=EvalProtocol(**{**PROTOCOL.__dict__, "seed": 8}))
    assert other["protocol"]["seed"] == 8
    theirs, ours = rows_by_key(tmp_path / "other"), rows_by_key(ref_dir)
    assert [r["response"] for r in theirs.values()] != [ours[key]["response"] for key in theirs]


def test_interrupted_evaluation_resumes_to_the_same_numbers(tmp_path, sampler, reference):
    ref_dir, ref = reference
    out = tmp_path / "interrupted"
    seen = []

    def stop_after_two(chunk, rows):
        seen.append((chunk.run, chunk.index))
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_eval(out, sampler, on_chunk=stop_after_two)
    assert len(read_responses(out / "responses.jsonl")[0]) == 2 * 2 * PROTOCOL.samples  # two chunks of 2 problems
    redone = []
    resumed = run_eval(out, sampler, on_chunk=lambda chunk, rows: redone.append((chunk.run, chunk.index)))
    assert set(redone).isdisjoint(seen) and len(redone) == 2 * 3 - 2  # 2 runs x 3 blocks, minus the 2 done
    assert resumed == ref
    assert rows_by_key(out) == rows_by_key(ref_dir)


def test_partial_chunk_and_cut_line_are_redone(tmp_path, sampler, reference):
    ref_dir, ref = reference
    out = tmp_path / "cut"
    out.mkdir()
    for name in ("eval_config.json",):
        (out / name).write_text((ref_dir / name).read_text())
    lines = (ref_dir / "responses.jsonl").read_text().splitlines(keepends=True)
    per_chunk = 2 * PROTOCOL.samples
    # the first chunk whole, 4 of the 6 rows of the second, then half of a line
    (out / "responses.jsonl").write_text("".join(lines[: per_chunk + 4]) + lines[per_chunk + 4][:30])
    redone = []
    resumed = run_eval(out, sampler, on_chunk=lambda chunk, rows: redone.append((chunk.run, chunk.index)))
    assert (0, 0) not in redone and (0, 1) in redone
    assert resumed == ref
    assert rows_by_key(out) == rows_by_key(ref_dir)
    assert len((out / "responses.jsonl").read_text().splitlines()) == len(lines)  # nothing counted twice


def test_a_quick_look_with_limit_is_reused_by_the_full_run(tmp_path, sampler, reference):
    ref_dir, ref = reference
    out = tmp_path / "limit"
    small = run_eval(out, sampler, limit=3)
    assert small["benchmarks"]["mini_bench"]["n_problems"] == 3
    redone = []
    full = run_eval(out, sampler, on_chunk=lambda chunk, rows: redone.append((chunk.run, chunk.index)))
    # blocks of 2: block 0 (problems 1-2) is kept; block 1 held only problem 3, so it is redone with 3-4
    assert sorted(redone) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert full == ref
    assert rows_by_key(out) == rows_by_key(ref_dir)


def test_resuming_with_other_settings_is_refused(tmp_path, sampler, reference):
    out = tmp_path / "mismatch"
    run_eval(out, sampler, limit=1)
    with pytest.raises(ValueError, match=r"protocol.max_tokens: 12 -> 13.*--overwrite"):
        run_eval(out, sampler, limit=1, protocol=EvalProtocol(**{**PROTOCOL.__dict__, "max_tokens": 13}))
    with pytest.raises(ValueError, match=r"engine.batch_size: 2 -> 3"):
        run_eval(out, sampler, limit=1, batch_size=3)
    fresh = run_eval(out, sampler, limit=1, batch_size=3, overwrite=True)
    assert fresh["benchmarks"]["mini_bench"]["n_problems"] == 1


class ScriptedSampler:
    """Answers right or wrong by a seeded coin per sample, so the numbers are not all zero."""

    backend = "hf"

    def __init__(self, tokenizer, golds):
        self.tokenizer = tokenizer
        self.golds = golds

    def sample(self, prompt_ids, *, n, seed, settings):
        rng = random.Random(seed)
        out = []
        for ids in prompt_ids:
            text = self.tokenizer.decode(ids)
            gold = next(g for q, g in self.golds.items() if q in text)
            group = []
            for _ in range(n):
                r = rng.random()
                answer = gold if r < 0.5 else "999" if r < 0.8 else None
                body = f"so \\boxed{{{answer}}}" if answer else "no idea"
                group.append(Completion(body, n_tokens=len(body), finished=True))
            out.append(group)
        return out


def test_numbers_match_an_independent_computation_from_the_responses(tmp_path):
    from tapo.models import load_tokenizer

    bench = load_benchmarks([BENCH])[0]
    sampler = ScriptedSampler(load_tokenizer("builtin:tiny"), {r.problem: r.answer for r in bench.records})
    protocol = EvalProtocol(samples=4, runs=3, max_tokens=16, seed=1)
    result = evaluate("scripted", [BENCH], output_dir=tmp_path / "s", protocol=protocol, batch_size=2,
                      progress=False, sampler=sampler)
    rows, _ = read_responses(tmp_path / "s" / "responses.jsonl")
    assert rows and all(r["correct"] == (r["answer"] == r["gold"]) for r in rows)  # scored by tapo.rewards
    assert any(r["correct"] for r in rows) and not all(r["correct"] for r in rows)
    b = result["benchmarks"]["mini_bench"]
    for k in range(1, 5):
        per_run = []
        for run in range(3):
            values = []
            for pid in b["per_problem_pass_rate"]:
                flags = [r["correct"] for r in rows if r["problem_id"] == pid and r["run"] == run]
                subsets = list(itertools.combinations(flags, k))
                values.append(sum(any(s) for s in subsets) / len(subsets))
            per_run.append(sum(values) / len(values))
        mean = sum(per_run) / 3
        assert b["pass_at_k"][str(k)]["mean"] == pytest.approx(mean)
        assert b["pass_at_k"][str(k)]["std"] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in per_run) / 3))
    assert b["avg_at_n"]["mean"] == pytest.approx(b["pass_at_k"]["1"]["mean"])
    for pid, rate in b["per_problem_pass_rate"].items():
        flags = [r["correct"] for r in rows if r["problem_id"] == pid]
        assert rate == pytest.approx(sum(flags) / 12)
    # maj@4 by hand: the gold wins when it has the most votes ("999" is the only wrong answer; ties -> first seen)
    per_run = []
    for run in range(3):
        wins = []
        for pid in b["per_problem_pass_rate"]:
            answers = [r["answer"] for r in sorted(rows, key=lambda r: r["sample"]) if r["problem_id"] == pid and r["run"] == run]
            right, wrong = sum(a is not None and a != "999" for a in answers), answers.count("999")
            first_right = next((i for i, a in enumerate(answers) if a is not None and a != "999"), 99)
            first_wrong = answers.index("999") if "999" in answers else 99
            wins.append(right > wrong or (right == wrong > 0 and first_right < first_wrong))
        per_run.append(sum(wins) / len(wins))
    assert b["maj_at_k"]["4"]["mean"] == pytest.approx(sum(per_run) / 3)


def test_chunks_are_fixed_blocks_with_their_own_seeds():
    bench = load_benchmarks([BENCH])[0]
    chunks = plan_chunks(bench, runs=2, batch_size=2, seed=0)
    assert [c.problem_ids for c in chunks[:3]] == [("mini-1", "mini-2"), ("mini-3", "mini-4"), ("mini-5",)]
    assert len({c.seed for c in chunks}) == len(chunks)
    assert [c.seed for c in plan_chunks(bench, runs=2, batch_size=2, seed=0)] == [c.seed for c in chunks]


def test_a_broken_line_inside_the_file_is_an_error(tmp_path):
    path = tmp_path / "responses.jsonl"
    path.write_text('{"a": 1\n{}\n')
    with pytest.raises(ValueError, match=re.escape(f"line 1 of {path} is not valid JSON")):
        read_responses(path)


def test_greedy_decoding_gives_n_equal_samples_whatever_the_seed(sampler):
    from tapo.sampling import SamplingSettings, prompt_token_ids

    ids = [prompt_token_ids(sampler.tokenizer, "What is 2 + 3?")]
    greedy = SamplingSettings(temperature=0.0, top_p=1.0, max_tokens=6)
    first = sampler.sample(ids, n=3, seed=0, settings=greedy)
    assert len(first) == 1 and len(first[0]) == 3 and len(set(first[0])) == 1
    assert sampler.sample(ids, n=3, seed=99, settings=greedy) == first


def test_sampling_leaves_the_global_random_state_alone(sampler):
    import torch

    from tapo.sampling import SamplingSettings, prompt_token_ids

    ids = [prompt_token_ids(sampler.tokenizer, "What is 2 + 3?")]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = sampler.sample(ids, n=2, seed=5, settings=SamplingSettings(temperature=1.0, top_p=1.0, max_tokens=6))
    assert torch.equal(torch.rand(3), expected)
    assert sampler.sample(ids, n=2, seed=5, settings=SamplingSettings(temperature=1.0, top_p=1.0, max_tokens=6)) == a


def test_doctests():
    import doctest

    from tapo.evaluation import run
    from tapo.sampling import batched, types

    for module in (run, batched, types):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


# --- a failed start leaves nothing behind; a changed benchmark file is noticed (issue 16, items 12-14) ---------

TINY_PROTOCOL = EvalProtocol(samples=1, runs=1, temperature=1.0, top_p=1.0, max_tokens=4, seed=0)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"model": "builtin:nope"}, "unknown built-in model 'builtin:nope'"),
        ({"model": "MISSING"}, "model folder not found"),  # a local folder that is not there
        ({"dtype": "float33"}, "unknown dtype 'float33'"),
        ({"dtype": "Size"}, "unknown dtype 'Size'"),  # torch.Size exists, but is no dtype
        ({"dtype": "int8"}, "unknown dtype 'int8': not a floating-point torch dtype"),
        ({"backend": "vllm"}, "vllm"),  # not installed here; with vLLM, builtin:tiny has no folder for it
    ],
)
def test_a_failed_start_records_nothing_and_the_corrected_retry_runs(tmp_path, bad, message):
    out = tmp_path / "eval"
    model = str(tmp_path / "no-such-model") if bad.get("model") == "MISSING" else bad.get("model", "builtin:tiny")
    options = dict(output_dir=out, protocol=TINY_PROTOCOL, limit=2, progress=False)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        evaluate(model, [BENCH], **options, backend=bad.get("backend", "hf"), dtype=bad.get("dtype"))
    assert not out.exists()  # no eval_config.json that would refuse the corrected command
    result = evaluate("builtin:tiny", [BENCH], **options, backend="hf")
    assert result["benchmarks"]["mini_bench"]["n_problems"] == 2


def test_overwrite_with_a_model_that_does_not_load_keeps_the_old_evaluation(tmp_path, sampler):
    out = tmp_path / "kept"
    run_eval(out, sampler, limit=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match="unknown built-in model"):
        evaluate("builtin:nope", [BENCH], output_dir=out, protocol=PROTOCOL, batch_size=2, limit=1, progress=False,
                 backend="hf", overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


class CoinSampler:
    """Answers one of a few numbers by a seeded coin per sample, whatever the gold: like a model, it never sees it."""

    backend = "hf"

    def __init__(self):
        from tapo.models import load_tokenizer

        self.tokenizer = load_tokenizer("builtin:tiny")
        self.prompts = 0

    def sample(self, prompt_ids, *, n, seed, settings):
        self.prompts += len(prompt_ids)
        rng = random.Random(seed)
        out = []
        for ids in prompt_ids:
            texts = [f"so \\boxed{{{rng.choice(['5', '3', '6', '12', '17'])}}}" for _ in range(n)]
            out.append([Completion(t, n_tokens=len(t), finished=True) for t in texts])
        return out


def write_bench(path: Path, answers: dict[str, str] | None = None, problems: dict[str, str] | None = None) -> Path:
    rows = [json.loads(line) for line in Path(BENCH).read_text().splitlines()]
    for row in rows:
        row["answer"] = (answers or {}).get(row["id"], row["answer"])
        row["problem"] = (problems or {}).get(row["id"], row["problem"])
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def coin_eval(out: Path, bench: Path, **kw) -> tuple[dict, CoinSampler]:
    sampler = CoinSampler()
    protocol = EvalProtocol(samples=4, runs=2, max_tokens=8, seed=3)
    result = evaluate("coin", [str(bench)], output_dir=out, protocol=protocol, batch_size=2, progress=False,
                      sampler=sampler, **kw)
    return result, sampler


@pytest.mark.parametrize("answers", [{"mini-1": "6"}, {"mini-2": "5", "mini-4": "12"}, {"mini-5": "17"}])
def test_a_changed_gold_answer_regrades_the_stored_responses(tmp_path, capsys, answers):
    bench = write_bench(tmp_path / "bench.jsonl")
    out = tmp_path / "eval"
    before, _ = coin_eval(out, bench)
    write_bench(bench, answers=answers)
    after, sampler = coin_eval(out, bench)
    fresh, _ = coin_eval(tmp_path / "fresh", bench)
    assert sampler.prompts == 0  # nothing sampled again: the responses do not depend on the gold answer
    assert after == fresh != before  # the new answers count, exactly as in a fresh evaluation
    rows, _ = read_responses(out / "responses.jsonl")
    assert all(r["gold"] == answers[r["problem_id"]] for r in rows if r["problem_id"] in answers)
    assert rows_by_key(out) == rows_by_key(tmp_path / "fresh")
    stored = {json.loads(line)["problem_id"]: json.loads(line)["answer"] for line in open(out / "problems.jsonl")}
    assert all(stored[pid] == answer for pid, answer in answers.items())
    err = capsys.readouterr().err
    for pid, answer in answers.items():
        assert re.search(rf"gold answer of problem {pid} changed \('[^']+' -> '{re.escape(answer)}'\); its 8 stored", err)


def test_a_changed_problem_text_samples_its_chunks_again(tmp_path, capsys):
    bench = write_bench(tmp_path / "bench.jsonl")
    out = tmp_path / "eval"
    coin_eval(out, bench)
    write_bench(bench, problems={"mini-3": "What is 6 * 3?"}, answers={"mini-3": "18"})
    redone = []
    after, sampler = coin_eval(out, bench, on_chunk=lambda chunk, rows: redone.append((chunk.run, chunk.index)))
    fresh, _ = coin_eval(tmp_path / "fresh", bench)
    assert sorted(redone) == [(0, 1), (1, 1)]  # the block of mini-3 and mini-4, in both runs; the rest is kept
    assert after == fresh and rows_by_key(out) == rows_by_key(tmp_path / "fresh")
    assert "the text of problem mini-3 changed since its responses were sampled; 2 chunk(s)" in capsys.readouterr().err


def test_rows_without_a_problem_hash_are_checked_against_problems_jsonl(tmp_path):
    """Directories of earlier versions have no problem_sha on their rows; problems.jsonl says what they answered."""
    bench = write_bench(tmp_path / "bench.jsonl")
    out = tmp_path / "eval"
    coin_eval(out, bench)
    rows, _ = read_responses(out / "responses.jsonl")
    (out / "responses.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "problem_sha"}) + "\n"
                                                 for r in rows))
    write_bench(bench, problems={"mini-1": "What is 2 + 4?"}, answers={"mini-1": "6"})
    redone = []
    coin_eval(out, bench, on_chunk=lambda chunk, rows: redone.append((chunk.run, chunk.index)))
    assert sorted(redone) == [(0, 0), (1, 0)]


@pytest.mark.parametrize("names", ["aime24", "hmmt25", "MATH500", "aime24,aime25,hmmt25"])
def test_cli_offline_hub_benchmark_names_the_local_file_fix(tmp_path, monkeypatch, capsys, names):
    import datasets

    from tapo.cli import main

    def unreachable(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    out = tmp_path / "eval"
    assert main(["eval", "--model", "builtin:tiny", "--benchmarks", names, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    first = names.split(",")[0].lower()
    assert err.startswith(f"tapo eval: error: could not load benchmark '{first}'") and "Traceback" not in err
    from tapo.data.benchmarks import has_offline_copy

    expected = ",".join(n if has_offline_copy(n) else f"path/to/{n.lower()}.jsonl" for n in names.split(","))
    assert f"pass its path: --benchmarks {expected}" in err
    assert not out.exists()


# --- the responses and problems files as an interruption or a problem text leaves them -------------------------


def test_append_rows_starts_a_new_line_after_a_last_row_without_its_newline(tmp_path):
    from tapo.evaluation.responses import append_rows

    path = tmp_path / "responses.jsonl"
    path.write_text('{"a": 1}')
    append_rows(path, [{"b": 2}, {"c": 3}])
    append_rows(path, [{"d": 4}])
    assert path.read_text() == '{"a": 1}\n{"b": 2}\n{"c": 3}\n{"d": 4}\n'
    append_rows(tmp_path / "new.jsonl", [{"a": 1}])
    assert (tmp_path / "new.jsonl").read_text() == '{"a": 1}\n'


def test_a_last_chunk_without_its_final_newline_is_kept_and_every_resume_works(tmp_path):
    bench = write_bench(tmp_path / "bench.jsonl")
    out = tmp_path / "eval"

    def stop(chunk, rows):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        coin_eval(out, bench, on_chunk=stop)
    path = out / "responses.jsonl"
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # the first chunk whole, only its final newline missing
    redone = []
    resumed, _ = coin_eval(out, bench, on_chunk=lambda chunk, rows: redone.append((chunk.run, chunk.index)))
    again, sampler = coin_eval(out, bench)
    fresh, _ = coin_eval(tmp_path / "fresh", bench)
    assert (0, 0) not in redone and len(redone) == 2 * 3 - 1
    assert resumed == again == fresh and sampler.prompts == 0
    assert rows_by_key(out) == rows_by_key(tmp_path / "fresh")


def test_a_write_cut_inside_a_character_drops_that_line_and_redoes_its_chunk(tmp_path):
    bench = write_bench(tmp_path / "bench.jsonl")
    out = tmp_path / "eval"
    fresh, _ = coin_eval(out, bench)
    rows, _ = read_responses(out / "responses.jsonl")
    last = max((r["run"], r["chunk"]) for r in rows)
    kept = [r for r in rows if (r["run"], r["chunk"]) != last]
    line = json.dumps({**rows[-1], "response": "2 × 3 = \\boxed{6}"}, ensure_ascii=False).encode()
    cut = line[: line.index("×".encode()) + 1]  # the first of the two bytes of "×": an interrupted write
    (out / "responses.jsonl").write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in kept) + cut)
    assert read_responses(out / "responses.jsonl") == (kept, 1)
    redone = []
    resumed, _ = coin_eval(out, bench, on_chunk=lambda chunk, rows: redone.append((chunk.run, chunk.index)))
    assert redone == [last] and resumed == fresh


def test_an_undecodable_line_inside_the_file_is_an_error(tmp_path):
    path = tmp_path / "responses.jsonl"
    path.write_bytes(b'{"a": "\xc3"}\n{}\n')
    with pytest.raises(ValueError, match=re.escape(f"line 1 of {path} is not valid UTF-8")):
        read_responses(path)


def test_problem_texts_with_unicode_line_breaks_survive_a_rerun_and_the_analysis(tmp_path):
    from tapo.evaluation import analyze
    from tapo.evaluation.run import read_problems

    texts = {"mini-1": "Line one\u2028line two: what is 2 + 3?", "mini-2": "One\u2029two\x85three: what is 7 - 4?"}
    rows = [json.loads(line) for line in Path(BENCH).read_text().splitlines()]
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({**r, "problem": texts.get(r["id"], r["problem"])}, ensure_ascii=False) + "\n"
                             for r in rows), encoding="utf-8")
    out = tmp_path / "eval"
    first, _ = coin_eval(out, bench)
    assert "\u2028" in (out / "problems.jsonl").read_text(encoding="utf-8")  # json.dumps leaves it unescaped
    again, sampler = coin_eval(out, bench)
    assert again == first and sampler.prompts == 0
    problems = read_problems(out / "problems.jsonl")
    assert {pid: problems[("bench", pid)] for pid in texts} == texts
    assert set(analyze([out])["benchmarks"]) == {"bench"}
