"""`tapo demo`: the stage logic (skip, resume, order, timing), the summary's numbers, config errors, and the
whole pipeline on the built-in tiny model (seconds; the real demo's figures are in the README)."""

from __future__ import annotations

import doctest
import io
import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import run_tapo
from tapo import demo
from tapo.config import ConfigError
from tapo.demo import (
    Stage,
    load_demo,
    read_summary,
    run_demo,
    run_stages,
    stage_state,
    summary_text,
    trajectory_lines,
)
from tapo.engine.run import last_checkpoint

COLDSTART = {
    "seed": 0,
    "model": {"name": "builtin:tiny-arith"},
    "data": {"source": "builtin:arithmetic", "n": 8, "n_steps": 1, "max_operand": 9},
    "build": {"construction": "aligned", "samples": 0, "positive_source": "reference",
              "synthetic_negative": "always", "mix": {"trajectory": 1, "plain": 1}},
    "sft": {"learning_rate": 1e-4, "warmup_steps": 0, "max_steps": 2, "per_device_train_batch_size": 4,
            "save_steps": 1, "max_length": 256, "activation_checkpointing": False},
}
TRAIN = {
    "algorithm": "tapo",
    "seed": 0,
    "data": {"source": "builtin:arithmetic", "n": 40, "n_steps": 1, "max_operand": 9},
    "trainer": {"max_steps": 2, "num_generations": 8, "per_device_train_batch_size": 32,
                "max_completion_length": 24, "learning_rate": 1e-4, "save_steps": 1, "temperature": 1.0,
                "activation_checkpointing": False},
    "tapo": {"construction": "aligned", "n_pos": 1, "n_neg": 1, "m_max": 4, "ref_baseline": "original"},
}
EVAL = {"problems": 4, "samples": 2, "runs": 1, "max_tokens": 24, "batch_size": 2, "backend": "hf"}


def write_demo(root: Path, *, coldstart=COLDSTART, train=TRAIN, **top) -> Path:
    (root / "coldstart.yaml").write_text(yaml.safe_dump(coldstart))
    (root / "train.yaml").write_text(yaml.safe_dump(train))
    config = {"output_dir": str(root / "demo"), "coldstart": str(root / "coldstart.yaml"),
              "train": str(root / "train.yaml"), "eval": EVAL, **top}
    (root / "demo.yaml").write_text(yaml.safe_dump(config))
    return root / "demo.yaml"


def announced(text: str) -> dict[str, str]:
    """stage name -> what its line said ("skipped", "continuing", "start")."""
    lines = {}
    for line in text.splitlines():
        if line.startswith("[") and "] " in line and ": " in line:
            name, what = line.split("] ", 1)[1].split(": ", 1)
            lines[name] = "skipped" if what.startswith("skipped") else "continuing" if what.startswith("continuing") else "start"
    return lines


def test_doctests():
    assert doctest.testmod(demo, optionflags=doctest.ELLIPSIS).failed == 0


# ---- the stage logic, with stand-in stages ----------------------------------------------------------


def fake_stage(tmp_path: Path, name: str, calls: list, *, started=None, fail: BaseException | None = None) -> Stage:
    output = tmp_path / f"{name}.out"

    def run(resume: bool) -> None:
        calls.append((name, resume))
        if fail is not None:
            raise fail
        output.write_text("done")

    return Stage(name, output, run, started or (lambda: None))


def test_a_stage_with_its_output_is_skipped_and_the_others_run_in_order(tmp_path):
    calls = []
    stages = [fake_stage(tmp_path, n, calls) for n in ("a", "b", "c")]
    (tmp_path / "b.out").write_text("earlier")
    out = io.StringIO()
    states = run_stages(stages, times_file=tmp_path / "stages.json", out=out)
    assert states == {"a": "start", "b": "done", "c": "start"}
    assert calls == [("a", False), ("c", False)]
    assert (tmp_path / "b.out").read_text() == "earlier"
    assert "[2/3] b: skipped, " in out.getvalue() and "[1/3] a: -> " in out.getvalue()
    assert set(json.loads((tmp_path / "stages.json").read_text())) == {"a", "c"}


def test_an_interrupted_stage_resumes_and_later_stages_wait(tmp_path):
    calls = []
    stages = [fake_stage(tmp_path, "a", calls), fake_stage(tmp_path, "b", calls, fail=KeyboardInterrupt()),
              fake_stage(tmp_path, "c", calls)]
    with pytest.raises(KeyboardInterrupt):
        run_stages(stages, times_file=tmp_path / "stages.json", out=io.StringIO())
    assert calls == [("a", False), ("b", False)]  # c never started
    assert set(json.loads((tmp_path / "stages.json").read_text())) == {"a", "b"}  # b's time so far is kept
    calls.clear()
    stages[1] = fake_stage(tmp_path, "b", calls, started=lambda: "from checkpoint-1")
    out = io.StringIO()
    run_stages(stages, times_file=tmp_path / "stages.json", out=out)
    assert calls == [("b", True), ("c", False)]
    assert "[2/3] b: continuing (from checkpoint-1)" in out.getvalue()


def test_stages_after_one_that_ran_are_made_afresh(tmp_path):
    calls, resets = [], []
    a, b = fake_stage(tmp_path, "a", calls), fake_stage(tmp_path, "b", calls)
    b = Stage(b.name, b.output, b.run, reset=lambda: (resets.append("b"), b.output.unlink()))
    (tmp_path / "b.out").write_text("made from an older a")
    run_stages([a, b], out=io.StringIO())
    assert resets == ["b"] and calls == [("a", False), ("b", False)] and b.output.read_text() == "done"
    calls.clear()
    run_stages([a, b], out=io.StringIO())  # nothing ran, so nothing is reset
    assert calls == [] and resets == ["b"]


def test_an_always_stage_runs_even_when_its_output_exists(tmp_path):
    output = tmp_path / "page.html"
    output.write_text("old")
    stage = Stage("report", output, lambda resume: output.write_text("new"), always=True)
    assert stage_state(stage) == ("start", None)
    run_stages([stage], out=io.StringIO())
    assert output.read_text() == "new"


def test_stage_seconds_add_up_over_runs(tmp_path):
    path = tmp_path / "stages.json"
    demo.add_seconds(path, "a", 1.25)
    demo.add_seconds(path, "a", 2.0)
    demo.add_seconds(path, "b", 0.5)
    assert json.loads(path.read_text()) == {"a": 3.2, "b": 0.5}  # each sum rounded to 0.1 s


# ---- the summary ----------------------------------------------------------------------------------


def result(pass1: float) -> dict:
    return {"model": "m", "protocol": {"samples": 4, "runs": 1, "temperature": 0.6},
            "benchmarks": {"arithmetic-heldout": {"n_problems": 32, "pass_at_k": {"1": {"mean": pass1, "std": 0.0}}}}}


def record(step: int, reward: float, **changes) -> dict:
    text = "Step 1: 6 - 10 = -4\nWait, let me double-check step 1: subtract 4, not 10.\nStep 1: 6 - 4 = 2\nThe answer is \\boxed{2}."
    return {"step": step, "question": "Start with 6. Subtract 4.", "text": text, "reward": reward,
            "reflection_start_char": text.index("\nWait"), "correction_start_char": text.index("Step 1: 6 - 4"),
            **changes}


def test_summary_numbers_come_from_the_run_files(tmp_path):
    root = tmp_path / "demo"
    for name, value in (("eval-coldstart", 0.4375), ("eval-tapo", 0.53125)):
        (root / name).mkdir(parents=True)
        (root / name / "result.json").write_text(json.dumps(result(value)))
    (root / "tapo").mkdir()
    metrics = [{"step": 1, "tapo/pairs": 4.0, "tapo/tried": 4.0}, {"step": 2, "tapo/pairs": 3.0, "tapo/tried": 3.0},
               {"step": 3, "tapo/pairs": 0.0}]
    (root / "tapo" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    records = [record(1, 1.0), record(1, 0.0), record(2, 1.0, text="no reflection here",
                                                     reflection_start_char=0, correction_start_char=0)]
    (root / "tapo" / "constructions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "stages.json").write_text(json.dumps({"cold start SFT": 100.0, "TAPO (self)": 50.5}))
    summary = read_summary(root)
    assert (summary.pass_before, summary.pass_after) == (0.4375, 0.53125)
    assert (summary.steps, summary.tried, summary.built, summary.steps_built, summary.right) == (3, 7, 3, 2, 2)
    assert summary.example == records[0]  # the last one that ends right with all three parts
    text = summary_text(summary)
    assert "cold start 43.8% -> after TAPO 53.1%" in text and "32 held-out problems x 4 samples" in text
    assert "constructions built 3 / attempted 7 (43%), on 2 of 3 steps" in text
    assert "ended right: 2 of 3 (67%)" in text
    assert "kept prefix  | Step 1: 6 - 10 = -4" in text and "reflection   | Wait, let me double-check" in text
    assert "correction   | Step 1: 6 - 4 = 2" in text and "             | The answer is \\boxed{2}." in text
    assert "time: 150 s (cold start SFT 100 s, TAPO (self) 50 s)" in text or "time: 150 s (cold start SFT 100 s, TAPO (self) 51 s)" in text
    assert f"report: {root / 'report.html'}" in text


def test_summary_of_a_demo_that_has_not_run_says_so(tmp_path):
    text = summary_text(read_summary(tmp_path))
    assert "cold start n/a -> after TAPO n/a" in text and "built 0 / attempted 0 (n/a)" in text


def test_trajectory_lines_join_back_to_the_text():
    r = record(1, 1.0)
    shown = [line.split(" | ", 1)[1] for line in trajectory_lines(r)]
    assert "\n".join(shown) == r["text"]


# ---- config errors --------------------------------------------------------------------------------


def test_config_errors_name_the_file_and_key(tmp_path):
    path = write_demo(tmp_path)
    with pytest.raises(ConfigError, match=r"demo.yaml: train: config file not found: .*nope.yaml"):
        load_demo(path, ["train=nope.yaml"])
    with pytest.raises(ConfigError, match=r"the demo sets train.model.name itself"):
        load_demo(path, ["train.model.name=other"])
    with pytest.raises(ConfigError, match=r"eval.samples must be at least 1, got 0"):
        load_demo(path, ["eval.samples=0"])
    with pytest.raises(ConfigError, match=r"train.yaml: algorithm must be tapo"):
        load_demo(path, ["train.algorithm=grpo", "train.tapo={}"])
    with pytest.raises(ConfigError, match=r"train.yaml.*trainer.*max_stepz"):
        load_demo(path, ["train.trainer.max_stepz=3"])
    plan = load_demo(path, ["train.trainer.max_steps=3", "coldstart.sft.max_steps=1"])
    assert plan.train.trainer["max_steps"] == 3 and plan.coldstart.sft["max_steps"] == 1
    assert plan.train.model.name == str(tmp_path / "demo" / "coldstart" / "model")
    assert plan.coldstart.output_dir == str(tmp_path / "demo" / "coldstart")


def test_cli_reports_a_bad_demo_config_with_exit_code_2(tmp_path):
    path = write_demo(tmp_path)
    result = run_tapo("demo", "--config", str(path), "--set", "eval.top_p=2", timeout=300)
    assert result.returncode == 2 and "tapo demo: error:" in result.stderr and "eval.top_p must be in (0, 1]" in result.stderr


# ---- the whole pipeline on the tiny model ---------------------------------------------------------


def test_the_console_shows_one_bar_per_stage_and_no_warnings(tmp_path):
    """`tapo demo` as a user runs it: the stage lines, one bar per model stage with its counters, the summary;
    no warning, no per-tensor loading bar, no raw log dicts."""
    import re

    path = write_demo(tmp_path)
    result = run_tapo("demo", "--config", str(path), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    err = result.stderr
    assert "Warning" not in err and "warn(" not in err, err[-3000:]
    assert "Loading weights" not in err and "{'loss'" not in err and "Map" not in err
    bars = {re.sub(r"\s+\d+%.*", "", line.strip()) for line in re.split(r"[\r\n]+", err) if "%|" in line}
    assert bars == {"cold start SFT:", "tapo:", f"eval {tmp_path / 'demo' / 'coldstart' / 'model'}:",
                    f"eval {tmp_path / 'demo' / 'tapo' / 'model'}:"}, bars
    assert re.search(r"tapo: 100%.*reward=.*acc=.*elig=.*built=\d+/\d+", err)
    assert re.search(r"cold start SFT: 100%.*loss=.*tok_acc=", err)
    assert [line.split("]")[0] for line in result.stdout.splitlines() if line.startswith("[")] == [
        f"[{i}/6" for i in range(1, 7)]
    assert "TAPO demo summary" in result.stdout and "report: " in result.stdout


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    """A finished tiny demo: (demo config path, the first run's console output)."""
    root = tmp_path_factory.mktemp("demo")
    path = write_demo(root)
    out = io.StringIO()
    run_demo(load_demo(path), out=out)
    return path, out.getvalue()


def test_the_first_run_makes_every_stage_and_the_summary_matches_the_files(tiny_demo):
    path, printed = tiny_demo
    root = path.parent / "demo"
    assert set(announced(printed).values()) == {"start"} and len(announced(printed)) == 6
    for output in ("coldstart/data.jsonl", "coldstart/model/config.json", "eval-coldstart/result.json",
                   "tapo/model/config.json", "eval-tapo/result.json", "report.html", "summary.txt", "stages.json"):
        assert (root / output).is_file(), output
    records = [json.loads(line) for line in (root / "tapo" / "constructions.jsonl").read_text().splitlines()]
    metrics = [json.loads(line) for line in (root / "tapo" / "metrics.jsonl").read_text().splitlines()]
    before = json.loads((root / "eval-coldstart" / "result.json").read_text())
    after = json.loads((root / "eval-tapo" / "result.json").read_text())
    pass1 = lambda r: r["benchmarks"]["arithmetic-heldout"]["pass_at_k"]["1"]["mean"]
    summary = (root / "summary.txt").read_text()
    assert summary.strip() == printed.strip().split("\n", printed.strip().count("\n") - summary.strip().count("\n"))[-1]
    assert f"cold start {100 * pass1(before):.1f}% -> after TAPO {100 * pass1(after):.1f}%" in summary
    tried = sum(round(r.get("tapo/tried", 0)) for r in metrics)
    assert records and f"constructions built {len(records)} / attempted {tried}" in summary
    assert f"ended right: {sum(r['reward'] > 0 for r in records)} of {len(records)}" in summary
    assert "kept prefix  | " in summary and "reflection   | " in summary and "correction   | " in summary
    page = (root / "report.html").read_text()
    assert "Held-out Pass@1, side by side" in page and page.count('<table class="eval">') == 2
    assert str(root / "coldstart" / "model") in page and str(root / "tapo" / "model") in page


def test_a_second_run_skips_every_finished_stage(tiny_demo):
    path, _ = tiny_demo
    root = path.parent / "demo"
    stamps = {p: p.stat().st_mtime_ns for p in (root / "coldstart/data.jsonl", root / "tapo/model/config.json",
                                                  root / "eval-tapo/result.json")}
    out = io.StringIO()
    run_demo(load_demo(path), out=out)
    lines = announced(out.getvalue())
    assert [name for name, what in lines.items() if what != "skipped"] == ["report"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_interrupted_stages_continue_where_they_stopped(tiny_demo):
    """Runs last: it changes the shared demo folder into what interruptions leave, then continues it."""
    path, _ = tiny_demo
    root = path.parent / "demo"
    # What an interruption during TAPO step 2 leaves: checkpoint-1, no model/ (and no later stage's output).
    shutil.rmtree(root / "tapo" / "model")
    shutil.rmtree(root / "tapo" / "checkpoint-2")
    before = (root / "eval-coldstart" / "result.json").stat().st_mtime_ns
    out = io.StringIO()
    run_demo(load_demo(path), out=out)
    lines = announced(out.getvalue())
    assert lines["TAPO (aligned)"] == "continuing" and "from " + str(root / "tapo" / "checkpoint-1") in out.getvalue()
    assert lines["cold start SFT"] == lines["eval of the cold-started model"] == "skipped"
    assert (root / "eval-coldstart" / "result.json").stat().st_mtime_ns == before
    assert lines["eval of the TAPO model"] == "start"  # made afresh: its model was trained again
    steps = [json.loads(line)["step"] for line in (root / "tapo" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2] and (root / "tapo" / "model").is_dir()
    assert last_checkpoint(root / "tapo").name == "checkpoint-2"

    # An evaluation cut off after its first chunk keeps that chunk and samples the rest.
    rows = (root / "eval-tapo" / "responses.jsonl").read_text().splitlines()
    chunks = {json.loads(r)["chunk"] for r in rows}
    assert len(chunks) >= 2, "the test needs an evaluation of at least two chunks"
    first = [r for r in rows if json.loads(r)["chunk"] == 0]
    (root / "eval-tapo" / "responses.jsonl").write_text("\n".join(first) + "\n")
    (root / "eval-tapo" / "result.json").unlink()
    out = io.StringIO()
    run_demo(load_demo(path), out=out)
    assert announced(out.getvalue())["eval of the TAPO model"] == "continuing"
    assert (root / "eval-tapo" / "responses.jsonl").read_text().splitlines()[: len(first)] == first
    assert len((root / "eval-tapo" / "responses.jsonl").read_text().splitlines()) == len(rows)

    # A cold start cut off after its first checkpoint continues from it, and everything after it is made afresh.
    shutil.rmtree(root / "coldstart" / "model")
    shutil.rmtree(root / "coldstart" / "checkpoint-2")
    out = io.StringIO()
    run_demo(load_demo(path), out=out)
    lines = announced(out.getvalue())
    assert lines["cold start data"] == "skipped" and lines["cold start SFT"] == "continuing"
    assert all(lines[name] == "start" for name in ("eval of the cold-started model", "TAPO (aligned)",
                                                   "eval of the TAPO model", "report"))
    sft_steps = [json.loads(line)["step"] for line in (root / "coldstart" / "metrics.jsonl").read_text().splitlines()]
    assert sft_steps == [1, 2]


def test_only_the_named_dependency_notices_are_filtered():
    import warnings

    from tapo.console import filter_dependency_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filter_dependency_warnings()
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("`gradient_checkpointing_disable` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("`gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)  # ours to fix
        warnings.warn("`is_gradient_checkpointing` is deprecated", UserWarning)  # another category
        warnings.warn("something else", DeprecationWarning)
    assert [str(w.message) for w in caught] == [
        "`gradient_checkpointing` is deprecated and will be removed in v6.",
        "`is_gradient_checkpointing` is deprecated", "something else"]
