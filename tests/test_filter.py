"""`tapo filter`: inclusive [low, high] bounds, the histogram, and the files a real run leaves."""

from __future__ import annotations

import json
import re

import pytest

from tapo.coldstart.config import build_filter_config, load_filter_config
from tapo.config import ConfigError
from tapo.filtering import keep, pass_rate_counts, run_filter, text_histogram
from tapo.cli import main


def test_bounds_are_inclusive():
    assert [keep(k / 8, low=0.125, high=0.875) for k in range(9)] == [False] + [True] * 7 + [False]
    assert keep(0.1, low=0.1, high=0.1) and not keep(0.1000001, low=0.1, high=0.1)


def test_histogram_counts_and_marks_kept_rates():
    rates = [0.0, 0.0, 0.25, 0.5, 0.5, 0.5, 1.0]
    assert pass_rate_counts(rates, samples=4) == [2, 1, 3, 0, 1]
    text = text_histogram(rates, samples=4, low=0.25, high=0.75)
    lines = text.splitlines()
    assert lines[1].startswith("  0/4") and lines[2].startswith("* 1/4") and lines[5].startswith("  4/4")
    assert lines[3].endswith("#" * 40)  # the largest bar is full width
    assert lines[-1] == "kept 4 of 7 queries"


def test_config_checks_bounds_and_keys():
    with pytest.raises(ConfigError, match="low <= filter.high"):
        build_filter_config({"filter": {"low": 0.9, "high": 0.1}}, where="f.yaml")
    with pytest.raises(ConfigError, match="f.yaml.*filter.*sample"):
        build_filter_config({"filter": {"sample": 8}}, where="f.yaml")
    config = load_filter_config(None, ["model.name=builtin:tiny", "filter.samples=4"])
    assert config.model.name == "builtin:tiny" and config.filter.samples == 4 and config.filter.low == 0.125


def test_kept_subset_uses_the_bounds(tmp_path, monkeypatch):
    """With pass rates fixed, exactly the queries in [low, high] are written, ready for `tapo train`."""
    import tapo.filtering as filtering
    from tapo.coldstart.build import load_queries

    config = load_filter_config(None, ["data.n=9", "data.n_steps=1", "data.max_operand=9", "filter.samples=8"])
    queries = load_queries(config)
    rates = [k / 8 for k in range(9)]
    monkeypatch.setattr(filtering, "estimate_pass_rates", lambda config, progress=False: (queries, rates))
    summary = run_filter(config, output_dir=tmp_path)
    kept = [json.loads(line) for line in open(tmp_path / "kept.jsonl")]
    assert [row["pass_rate"] for row in kept] == rates[1:8] and summary["kept"] == 7
    assert summary["counts"] == [1] * 9
    from tapo.data import load_records

    records = load_records(tmp_path / "kept.jsonl")  # the fields `tapo train` reads: id, problem, answer
    assert [r.id for r in records] == [q.id for q in queries[1:8]]
    assert records[0].problem == queries[1].problem and records[0].answer == queries[1].answer


def test_filter_cli_on_a_tiny_model(tmp_path, capsys):
    out = tmp_path / "filter"
    code = main([
        "filter", "--model", "builtin:tiny-arith", "--data", "builtin:arithmetic", "--samples", "4",
        "--low", "0.25", "--high", "0.75", "--max-new-tokens", "24", "--output", str(out),
        "--set", "data.n=12", "--set", "data.n_steps=1", "--set", "data.max_operand=9",
    ])
    stdout = capsys.readouterr().out
    assert code == 0
    saved = json.loads((out / "pass_rates.json").read_text())
    rates = saved["pass_rates"]
    assert len(rates) == 12 and all(r in (0, 0.25, 0.5, 0.75, 1.0) for r in rates.values())
    kept = [json.loads(line) for line in open(out / "kept.jsonl")]
    assert {row["id"] for row in kept} == {i for i, r in rates.items() if 0.25 <= r <= 0.75}
    assert (out / "histogram.txt").read_text().strip() in stdout  # printed and saved
    assert (out / "histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "filter" in (out / "config.yaml").read_text()


# --- empty data, and a filter that keeps nothing (issue 16, item 10) -----------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        # caught with the config (as for tapo train), before the data is even read
        (["data.n=0"], r"data\.n must be >= 1 \(it would keep no rows\), got 0 \(from --set data\.n=0\)"),
        (["data.limit=0"], r"data\.limit must be >= 1 \(it would keep no rows\), got 0 \(from --set data\.limit=0\)"),
        (["data.source=EMPTY"], r"no queries: data\.source '.*empty\.jsonl' has no rows"),
    ],
)
def test_filter_of_empty_data_is_an_error_before_a_model_loads(tmp_path, capsys, monkeypatch, overrides, message):
    import tapo.sampling as sample

    (tmp_path / "empty.jsonl").write_text("\n")
    overrides = [o.replace("EMPTY", str(tmp_path / "empty.jsonl")) for o in overrides]
    monkeypatch.setattr(sample, "make_sampler", lambda *a, **k: pytest.fail("a model was loaded for no queries"))
    args = ["filter", "--model", "builtin:tiny", "--output", str(tmp_path / "out")]
    assert main([*args, *sum((["--set", o] for o in overrides), [])]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "rates, low, high, why",
    [
        ([0.0] * 5, 0.125, 0.875, r"all 5 pass rates are 0 \(no sample was right\), below the kept range \[0\.125, 0\.875\]; lower filter\.low"),
        ([1.0] * 3, 0.125, 0.875, r"all 3 pass rates are 1 \(every sample was right\), above the kept range \[0\.125, 0\.875\]; raise filter\.high"),
        ([0.0, 0.125, 0.25], 0.5, 0.875, r"all 3 pass rates are 0\.25 or less, below the kept range \[0\.5, 0\.875\]"),
        ([0.75, 1.0], 0.125, 0.5, r"all 2 pass rates are 0\.75 or more, above the kept range \[0\.125, 0\.5\]"),
        ([0.0, 1.0, 1.0], 0.375, 0.625, r"the 3 pass rates span 0\.\.1 but none lies in the kept range \[0\.375, 0\.625\]"),
    ],
)
def test_a_filter_that_keeps_nothing_says_why(tmp_path, monkeypatch, capsys, rates, low, high, why):
    import tapo.filtering as filtering
    from tapo.coldstart.build import load_queries

    overrides = [f"data.n={len(rates)}", "data.n_steps=1", "filter.samples=8", f"filter.low={low}", f"filter.high={high}"]
    queries = load_queries(load_filter_config(None, overrides))
    monkeypatch.setattr(filtering, "estimate_pass_rates", lambda config, progress=False: (queries, rates))
    code = main(["filter", "--output", str(tmp_path), *sum((["--set", o] for o in overrides), [])])
    captured = capsys.readouterr()
    assert code == 1 and f"kept 0 of {len(rates)} queries" in captured.out
    assert re.search(rf"tapo filter: kept no query, .*kept\.jsonl is empty: {why}", captured.err), captured.err
    assert (tmp_path / "kept.jsonl").read_text() == "" and (tmp_path / "pass_rates.json").is_file()


@pytest.mark.parametrize("samples, low, high", [(4, 0.3, 0.45), (8, 0.13, 0.24), (2, 0.6, 0.9)])
def test_a_range_no_pass_rate_can_hit_is_a_config_error(samples, low, high):
    with pytest.raises(ConfigError, match=rf"no pass rate can lie in \[{low:g}, {high:g}\] with filter\.samples {samples}"):
        build_filter_config({"filter": {"samples": samples, "low": low, "high": high}}, where="f.yaml")
    build_filter_config({"filter": {"samples": samples * 8, "low": low, "high": high}}, where="f.yaml")  # finer: fine
