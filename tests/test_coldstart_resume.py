"""`tapo coldstart run` and `build` when a run directory already holds something, or a run was cut off: the data a
run trained on is never rebuilt by mistake, and `--resume` goes on from whatever an interruption left.

In-process `tapo.cli.main` on builtin:tiny (samples 0: no sampling, the aligned construction from references).
"""

from __future__ import annotations

import json

import pytest
import yaml

from tapo.cli import main
from tests.test_coldstart import TINY


@pytest.fixture
def config(tmp_path):
    raw = json.loads(json.dumps(TINY))
    raw["model"] = {"name": "builtin:tiny"}
    raw["build"].update(samples=0, synthetic_negative="always", positive_source="reference", mix={"trajectory": 1})
    path = tmp_path / "cs.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run(config, run_dir, *extra: str) -> int:
    return main(["coldstart", "run", "--config", str(config), "--output-dir", str(run_dir), *extra])


def losses(run_dir) -> list[int]:
    return [json.loads(line)["step"] for line in open(run_dir / "metrics.jsonl") if "loss" in line]


def test_run_into_a_finished_run_is_refused_before_the_data_is_rebuilt(config, tmp_path, capsys):
    run_dir = tmp_path / "cs"
    (run_dir / "model").mkdir(parents=True)
    (run_dir / "data.jsonl").write_text('{"marker": "the data the model was trained on"}\n')
    assert run(config, run_dir) == 2
    assert "already holds a cold-start run; pass --resume" in capsys.readouterr().err
    assert "marker" in (run_dir / "data.jsonl").read_text()


def test_resume_of_a_run_cut_off_before_its_first_checkpoint_reuses_the_data_and_trains_from_step_0(
        config, tmp_path, capsys):
    run_dir = tmp_path / "cs"
    assert run(config, run_dir) == 0
    data = (run_dir / "data.jsonl").read_text()
    for leftover in ("model", "checkpoint-1", "checkpoint-2"):  # as if stopped during step 1
        import shutil

        shutil.rmtree(run_dir / leftover)
    (run_dir / "data.jsonl").write_text(data)  # the same rows, written anew: a rebuild would rewrite them
    stamp = (run_dir / "data.jsonl").stat().st_mtime_ns
    assert run(config, run_dir, "--resume") == 0
    err = capsys.readouterr()
    assert "(built before; reused)" in err.out and "starts again from step 0" in err.err
    assert (run_dir / "data.jsonl").stat().st_mtime_ns == stamp
    assert losses(run_dir) == [1, 2] and (run_dir / "model" / "config.json").is_file()


def test_resume_of_a_run_cut_off_while_building_builds_and_trains(config, tmp_path):
    run_dir = tmp_path / "cs"
    run_dir.mkdir()
    assert run(config, run_dir, "--resume") == 0
    assert (run_dir / "data.jsonl").is_file() and losses(run_dir) == [1, 2]


def test_resume_refuses_data_built_with_other_settings_and_allows_other_fine_tuning(config, tmp_path, capsys):
    run_dir = tmp_path / "cs"
    assert run(config, run_dir) == 0
    assert run(config, run_dir, "--resume", "--set", "data.n=8") == 2
    assert "was built with other settings (data.n: 12 -> 8)" in capsys.readouterr().err
    # the fine-tuning's settings are not the data's (a finished run then has nothing to do)
    assert run(config, run_dir, "--resume", "--set", "sft.learning_rate=0.001") == 0
    assert "already complete" in capsys.readouterr().err


def test_an_interrupted_build_leaves_the_data_and_its_settings_as_they_were(config, tmp_path, monkeypatch, capsys):
    import tapo.coldstart.build as build

    data = tmp_path / "d.jsonl"
    assert main(["coldstart", "build", "--config", str(config), "--output", str(data)]) == 0
    before = data.with_suffix(".config.yaml").read_text()

    def interrupted(path, rows):
        raise KeyboardInterrupt  # Ctrl-C while the rows are written

    monkeypatch.setattr(build, "write_jsonl", interrupted)
    args = ["coldstart", "build", "--config", str(config), "--output", str(data), "--set", "data.n=8"]
    assert main(args) == 130
    assert "tapo coldstart build: interrupted" in capsys.readouterr().err
    assert data.with_suffix(".config.yaml").read_text() == before  # not the n=8 settings beside the n=12 rows


def test_build_into_a_folder_is_refused_before_any_work(config, tmp_path, capsys):
    assert main(["coldstart", "build", "--config", str(config), "--output", str(tmp_path)]) == 2
    assert "is a folder; name the JSONL file to write" in capsys.readouterr().err


def test_resume_from_a_checkpoint_refuses_other_fine_tuning_settings(config, tmp_path, capsys):
    """As `tapo train --resume`: the steps after a checkpoint train with the settings of the steps before it."""
    import shutil

    run_dir = tmp_path / "cs"
    assert run(config, run_dir) == 0
    shutil.rmtree(run_dir / "model")
    shutil.rmtree(run_dir / "checkpoint-2")  # cut off after checkpoint-1
    assert run(config, run_dir, "--resume", "--set", "sft.learning_rate=0.001") == 2
    err = capsys.readouterr().err
    assert "the settings differ from config.yaml, which trained steps up to 1: sft.learning_rate: 0.0001 -> 0.001" in err
    assert run(config, run_dir, "--resume") == 0 and losses(run_dir) == [1, 2]
