"""`tapo train --dry-run` catches what the run would hit (issue 16, items 9-11), and the real run checks
the same files up front: synthesis template, run directory, local model folder, local data (and that
it fills a generation). A missing local path is an error unless another recipe next to this one has
its output_dir above it (an earlier step of a chained recipe makes it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tapo.config import ConfigError, load_config
from tapo.paths import looks_local
from tapo.validate import check_run, describe_run, engine_args, made_by, planned_outputs

ROOT = Path(__file__).resolve().parents[1]
TINY_TAPO = ROOT / "recipes" / "tiny-tapo.yaml"
PAPER = ROOT / "recipes" / "paper"


def recipe(folder: Path, name: str = "run.yaml", **changes) -> Path:
    """recipes/tiny-tapo.yaml with `changes` at the top level (sections merged), written into `folder`."""
    raw = yaml.safe_load(TINY_TAPO.read_text())
    for key, value in changes.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    path = folder / name
    path.write_text(yaml.safe_dump(raw))
    return path


def dry_run(path: Path, overrides: list[str] | None = None, **kwargs) -> list[str]:
    return describe_run(load_config(path, overrides), where=str(path), overrides=overrides, **kwargs)


def dry_run_error(path: Path, overrides: list[str] | None = None, **kwargs) -> str:
    with pytest.raises(ConfigError) as error:
        dry_run(path, overrides, **kwargs)
    return str(error.value)


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """A scratch working directory (relative output_dirs and paths resolve against it)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_tiny_recipe_passes_and_names_its_run_directory(here):
    lines = dry_run(recipe(here, output_dir=str(here / "run")))
    assert lines[0] == "config OK: algorithm=tapo model=builtin:tiny-arith rows=100"
    assert f"run directory: {here / 'run'}" in lines


# --- files the run reads and writes ------------------------------------------------------------------------


def test_missing_synthesis_template_is_an_error(here):
    message = dry_run_error(recipe(here), ["tapo.synthesis_template=prompts/mine.txt"])
    assert "tapo.synthesis_template: file not found: prompts/mine.txt" in message
    assert message.endswith("(from --set tapo.synthesis_template=prompts/mine.txt)")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Fix it: $question $negative", "lacks the placeholder(s) $positive"),
        ("$question $negative $positive $answer", "unknown placeholder(s) $answer"),
        ("$question $negative $positive costs $5", "a '$' that starts no valid placeholder"),
    ],
)
def test_synthesis_template_with_wrong_placeholders_is_an_error(here, text, expected):
    (here / "template.txt").write_text(text)
    path = recipe(here, tapo={"synthesis_template": "template.txt"})
    message = dry_run_error(path)
    assert f"{path}: tapo.synthesis_template: template.txt: self synthesis template" in message
    assert expected in message


def test_splice_locate_template_is_checked_like_the_synthesis_template(here):
    message = dry_run_error(recipe(here), ["tapo.splice_locate_template=prompts/locate.txt"])
    assert "tapo.splice_locate_template: file not found: prompts/locate.txt" in message
    (here / "locate.txt").write_text("Find it: $question $negative")
    path = recipe(here, tapo={"splice_locate_template": "locate.txt"})
    message = dry_run_error(path)
    assert f"{path}: tapo.splice_locate_template: locate.txt: locate template" in message
    assert "lacks the placeholder(s) $positive" in message
    (here / "locate.txt").write_text("Find it: $question $negative $positive")
    assert dry_run(recipe(here, tapo={"splice_locate_template": "locate.txt"}))[0].startswith("config OK")


def test_a_good_synthesis_template_passes(here):
    (here / "template.txt").write_text("Q: $question\nWrong: $negative\nRight: $positive\nCosts $$1.")
    assert dry_run(recipe(here, tapo={"synthesis_template": "template.txt"}))[0].startswith("config OK")


def test_output_dir_that_is_a_file_is_an_error(here):
    (here / "taken").write_text("x")
    path = recipe(here)
    assert "output_dir: taken is a file, not a folder (from --set output_dir=taken)" in dry_run_error(
        path, ["output_dir=taken"]
    )
    assert "output_dir: taken/run cannot be made: taken is a file" in dry_run_error(path, ["output_dir=taken/run"])
    # --output-dir replaces output_dir, so it is what is checked
    assert "output_dir: taken is a file" in dry_run_error(path, output_dir="taken")


def test_empty_data_is_an_error(here):
    (here / "empty.jsonl").write_text("")
    message = dry_run_error(recipe(here, data={"source": "empty.jsonl"}))
    assert "data.source: empty.jsonl has no rows, so training would run 0 steps" in message


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["data.n=3"], "builtin:arithmetic (data.n 3) has 3 row(s), fewer than the 4 queries of one generation"),
        (["data.limit=2"], "(data.n 100, data.limit 2) has 2 row(s), fewer than the 4 queries"),
        (["data.n=5", "trainer.per_device_train_batch_size=48"], "has 5 row(s), fewer than the 6 queries"),
    ],
)
def test_data_that_cannot_fill_one_generation_is_an_error(here, overrides, expected):
    # TRL's sampler drops an incomplete batch of queries, so fewer rows than one generation = 0 steps
    message = dry_run_error(recipe(here), overrides)
    assert expected in message and "so training would run 0 steps" in message
    assert f"(from --set {overrides[0]})" in message


def test_bad_rows_name_the_file_and_row(here):
    (here / "bad.jsonl").write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2"}\n')
    assert "bad.jsonl row 2" in dry_run_error(recipe(here, data={"source": "bad.jsonl"}))


def test_every_file_problem_is_reported_at_once(here):
    (here / "taken").write_text("x")
    message = dry_run_error(recipe(here), ["output_dir=taken", "tapo.synthesis_template=nope.txt",
                                           "model.name=./no-model", "data.source=nope.jsonl"])
    assert len(message.splitlines()) == 4
    for part in ("taken is a file", "file not found: nope.txt", "model folder not found: ./no-model",
                 "data file not found: nope.jsonl"):
        assert part in message


def test_engine_errors_of_any_kind_are_config_errors():
    class Divides:
        def __init__(self, **settings):
            raise ZeroDivisionError("integer modulo by zero")

    with pytest.raises(ConfigError, match=r"^f.yaml: 'trainer': ZeroDivisionError: integer modulo by zero$"):
        engine_args(Divides, {}, where="f.yaml", section="trainer")


# --- local model and data paths (item 11) ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["./no-model", "runs/nowhere/model", "/definitely/not/here"])
def test_missing_local_model_folder_is_an_error(here, name):
    path = recipe(here)
    message = dry_run_error(path, [f"model.name={name}"])
    assert f"{path}: model.name: model folder not found: {name} (from --set model.name={name})" in message
    assert "hub" not in message


def test_two_part_path_under_an_existing_folder_is_local(here):
    (here / "runs").mkdir()
    assert looks_local("runs/model") and not looks_local("Qwen/Qwen3-8B")
    assert "model folder not found: runs/model" in dry_run_error(recipe(here), ["model.name=runs/model"])


def test_folder_without_config_json_is_not_a_model(here):
    (here / "half").mkdir()
    assert "model.name: ./half is not a model folder (it has no config.json)" in dry_run_error(
        recipe(here), ["model.name=./half"]
    )


def test_a_saved_model_folder_passes(here):
    (here / "m").mkdir()
    (here / "m" / "config.json").write_text("{}")
    assert "model: local folder ./m" in dry_run(recipe(here), ["model.name=./m"])


def test_missing_local_data_file_is_an_error(here):
    message = dry_run_error(recipe(here), ["data.source=runs/x/kept.jsonl"])
    assert "data.source: data file not found: runs/x/kept.jsonl (from --set data.source=runs/x/kept.jsonl)" in message


def test_path_under_the_output_of_a_neighbouring_recipe_will_be_made_by_it(here):
    earlier = recipe(here, "step1.yaml", output_dir="runs/step1")
    later = recipe(here, "step2.yaml", output_dir="runs/step2", model={"name": "runs/step1/model"},
                   data={"source": "runs/step1/kept.jsonl"})
    assert planned_outputs(later) == {(here / "runs/step1").resolve(): str(earlier)}
    lines = dry_run(later)
    assert f"model: local folder runs/step1/model (not there yet: made by {earlier})" in lines
    assert f"data: local file runs/step1/kept.jsonl (not there yet: made by {earlier})" in lines
    assert lines[0].endswith("rows=?")
    # ... but not a path outside it, nor one under the recipe's own output
    assert "model folder not found: runs/other/model" in dry_run_error(later, ["model.name=runs/other/model"])
    assert "model folder not found: runs/step2/model" in dry_run_error(later, ["model.name=runs/step2/model"])


def test_planned_outputs_skip_unreadable_files(here):
    (here / "broken.yaml").write_text("output_dir: [unclosed\n")
    (here / "list.yaml").write_text("- a\n")
    (here / "nodir.yaml").write_text("seed: 1\n")
    path = recipe(here)
    assert planned_outputs(path) == {}
    assert made_by("runs/x", {}) is None


def test_paper_recipes_chain_through_their_outputs(monkeypatch):
    monkeypatch.chdir(ROOT)  # the recipes' output_dirs are relative to the repository root
    planned = planned_outputs(PAPER / "tapo.yaml")
    assert made_by("runs/paper/coldstart/model", planned) == str(PAPER / "coldstart.yaml")
    assert made_by("runs/paper/filter/kept.jsonl", planned) == str(PAPER / "filter.yaml")
    lines = describe_run(load_config(PAPER / "tapo.yaml"), where="recipes/paper/tapo.yaml")
    made = "(not there yet: made by recipes/paper/{}.yaml)"
    assert f"model: local folder runs/paper/coldstart/model {made.format('coldstart')}" in lines
    assert f"data: local file runs/paper/filter/kept.jsonl {made.format('filter')}" in lines
    # a model no recipe there makes is an error, not "not there yet"
    with pytest.raises(ConfigError, match="model folder not found: runs/paper/other/model"):
        describe_run(load_config(PAPER / "tapo.yaml", ["model.name=runs/paper/other/model"]),
                     where="recipes/paper/tapo.yaml")


# --- the real run checks the same files, strictly, before loading anything ------------------------------------


def test_real_run_refuses_a_path_an_earlier_step_has_not_made_yet(here):
    recipe(here, "step1.yaml", output_dir="runs/step1")
    later = recipe(here, "step2.yaml", model={"name": "runs/step1/model"})
    with pytest.raises(ConfigError, match=r"model.name: model folder not found: runs/step1/model"):
        check_run(load_config(later), where=str(later))


def test_real_run_checks_template_output_and_empty_data(here):
    (here / "taken").write_text("x")
    (here / "empty.jsonl").write_text("\n")
    path = recipe(here)
    overrides = ["tapo.synthesis_template=nope.txt", "data.source=empty.jsonl"]
    with pytest.raises(ConfigError) as error:
        check_run(load_config(path, overrides), where=str(path), overrides=overrides, output_dir="taken")
    message = str(error.value)
    assert "output_dir: taken is a file" in message
    assert "tapo.synthesis_template: file not found: nope.txt (from --set tapo.synthesis_template=nope.txt)" in message
    assert "data.source: empty.jsonl has no rows" in message


def test_real_run_refuses_data_that_cannot_fill_one_generation(here):
    """Not only empty data: too few rows for one generation would train 0 steps and publish the start model. The
    launched run checks it once its engine arguments (and so its world size) exist, before any step."""
    from tapo.engine.run import run_training

    config = load_config(recipe(here), ["data.limit=2"])
    with pytest.raises(ConfigError, match=r"has 2 row\(s\), fewer than the 4 queries of one generation \(32 "
                                          r"completions on 1 process\(es\) / num_generations 8\), so training"):
        run_training(config, output_dir=str(here / "run"))
    assert not (here / "run" / "model").exists()


def test_real_run_passes_the_tiny_recipe(here):
    check_run(load_config(TINY_TAPO), where=str(TINY_TAPO), output_dir=str(here / "run"))
    assert not (here / "run").exists()  # checking makes nothing


# --- load_policy / load_tokenizer (train, eval) ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["./no-model", "runs/nowhere/model", "/definitely/not/here", "~/no/such/model"])
def test_load_policy_names_a_missing_local_folder(here, name):
    from tapo.models import load_policy, load_tokenizer

    for load in (load_policy, load_tokenizer):
        with pytest.raises(FileNotFoundError, match=rf"^model folder not found: {name}$"):
            load(name)


def test_eval_sampler_names_a_missing_local_folder(here):
    from tapo.sampling import make_sampler

    with pytest.raises(FileNotFoundError, match="^model folder not found: ./no-model$"):
        make_sampler("./no-model", backend="hf")


# --- the command, as a user runs it --------------------------------------------------------------------------


def tapo(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`python -m tapo.cli ...` of this checkout (not whichever `tapo` the environment installed)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "tapo.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def test_cli_dry_run_reports_every_bad_value_without_a_traceback():
    result = tapo("train", "--config", "recipes/tiny-tapo.yaml", "--dry-run", "--set", "trainer.max_steps=abc",
                  "--set", "tapo.n_pos=0", "--set", "model.dtype=float99")
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr and "config OK" not in result.stdout
    err = result.stderr
    assert "trainer.max_steps must be an integer, got 'abc' (from --set trainer.max_steps=abc)" in err
    assert "tapo.n_pos must be >= 1 (every y- is paired with a correct y+), got 0 (from --set tapo.n_pos=0)" in err
    assert "model.dtype must be one of float32, bfloat16, float16, float64, got 'float99'" in err


def test_cli_real_run_stops_before_loading_the_model(tmp_path):
    run_dir = tmp_path / "run"
    result = tapo("train", "--config", "recipes/tiny-tapo.yaml", "--output-dir", str(run_dir),
                  "--set", "model.name=./no-such-model", "--set", "tapo.synthesis_template=missing.txt")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    missing = "model.name: model folder not found: ./no-such-model (from --set model.name=./no-such-model)"
    assert missing in result.stderr
    assert "tapo.synthesis_template: file not found: missing.txt" in result.stderr
    assert not run_dir.exists()


def test_cli_warns_loudly_about_an_inert_tapo_run():
    result = tapo("train", "--config", "recipes/tiny-tapo.yaml", "--dry-run", "--set", "tapo.m_max=0")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warning: recipes/tiny-tapo.yaml: tapo.m_max is 0: no query gets a construction" in result.stderr
    assert "config OK" in result.stdout
