"""Runs that stop and go on: resume of a finished run, changed settings, cut-off logs, Ctrl-C, the model card.

Most tests copy the shared tiny TAPO run (3 steps, a checkpoint at each) and resume the copy in
this process, which trains at most one step; one launches `python -m tapo.cli train` and stops
it with SIGINT as Ctrl-C does.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from transformers import TrainerCallback

from conftest import ROOT, tapo_command, tapo_env

TAPO_RECIPE = ROOT / "recipes/tiny-tapo.yaml"


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def steps(run: Path) -> list[int]:
    return [row["step"] for row in rows(run / "metrics.jsonl")]


def config(*overrides: str, recipe: Path = TAPO_RECIPE):
    from tapo.config import load_config

    return load_config(recipe, list(overrides))


def resume(run: Path, *overrides: str, allow_config_change: bool = False, recipe: Path = TAPO_RECIPE) -> Path:
    from tapo.engine.run import run_training

    return run_training(config(*overrides, recipe=recipe), output_dir=str(run), resume=True,
                        allow_config_change=allow_config_change)


@pytest.fixture
def finished(tiny_tapo_run, tmp_path) -> Path:
    """A copy of the finished 3-step TAPO run (in another directory: its config.yaml names the original)."""
    return Path(shutil.copytree(tiny_tapo_run, tmp_path / "run"))


@pytest.fixture
def at_step_2(finished) -> Path:
    """The copy as a run killed after checkpoint-2: step 3 logged, its checkpoint and model/ never saved."""
    shutil.rmtree(finished / "checkpoint-3")
    shutil.rmtree(finished / "model")
    return finished


def card_config(card: str) -> dict:
    return yaml.safe_load(card.split("```yaml\n", 1)[1].split("\n```", 1)[0])


# ---- 5: a finished run resumes to "already complete" ----------------------------------------------


def test_finished_run_killed_before_model_resumes_to_complete(finished, capsys):
    shutil.rmtree(finished / "model")  # as a kill after the last checkpoint leaves it (`make demo` resumes it)
    metrics = finished / "metrics.jsonl"
    before = rows(metrics)
    metrics.write_text(metrics.read_text()[: len(metrics.read_text()) // 2])  # and cut off in line 2
    resume(finished)
    assert "already complete (step 3 of 3)" in capsys.readouterr().err
    assert not (finished / "checkpoint-4").exists() and rows(metrics) == before and steps(finished) == [1, 2, 3]
    assert (finished / "model" / "model.safetensors").read_bytes() == (
        finished / "checkpoint-3" / "model.safetensors").read_bytes()
    assert not (finished / "model" / "optimizer.pt").exists()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(finished / "model")
    AutoTokenizer.from_pretrained(finished / "model")
    assert "is the final model of" in (finished / "model" / "README.md").read_text()
    stamp = (finished / "model" / "model.safetensors").stat().st_mtime_ns
    resume(finished)
    assert "already complete (step 3 of 3); nothing to do" in capsys.readouterr().err
    assert (finished / "model" / "model.safetensors").stat().st_mtime_ns == stamp


class _KillAtEnd(TrainerCallback):
    """Stands for a kill after the last checkpoint and before model/ is saved."""

    def on_train_end(self, args, state, control, **kwargs):
        raise KeyboardInterrupt


def build_with_callback(monkeypatch, callback):
    """Every trainer `run_training` builds gets `callback`; returns the real builder (to restore)."""
    import tapo.engine.run as train

    real_build = train.build_trainer

    def build(config, *, run_dir):
        trainer = real_build(config, run_dir=run_dir)
        trainer.add_callback(callback)
        return trainer

    monkeypatch.setattr(train, "build_trainer", build)
    return real_build


def test_finished_grpo_run_of_other_length_resumes_to_complete(tmp_path, monkeypatch, capsys):
    import tapo.engine.run as train

    recipe = ROOT / "recipes/tiny-grpo.yaml"
    run = tmp_path / "grpo"
    real_build = build_with_callback(monkeypatch, _KillAtEnd())
    with pytest.raises(KeyboardInterrupt):
        train.run_training(config("trainer.max_steps=2", "trainer.save_steps=1", recipe=recipe), output_dir=str(run))
    assert (run / "checkpoint-2").is_dir() and not (run / "model").exists()
    monkeypatch.setattr(train, "build_trainer", real_build)
    resume(run, "trainer.max_steps=2", "trainer.save_steps=1", recipe=recipe)
    assert "already complete (step 2 of 2)" in capsys.readouterr().err
    assert steps(run) == [1, 2] and not (run / "checkpoint-3").exists()
    card = (run / "model" / "README.md").read_text()
    assert "GRPO" in card and "TAPO" not in card and "2402.03300" in card and "after 2 of 2" in card


# ---- 17: our model card ------------------------------------------------------------------------------


def test_model_card_says_what_ran(tiny_tapo_run):
    card = (tiny_tapo_run / "model" / "README.md").read_text()
    for fact in ("TAPO", "builtin:tiny-arith", "builtin:arithmetic", "arxiv.org/abs/2606.18844",
                 "AutoModelForCausalLM.from_pretrained", "after 3 of 3", "construction: `aligned`"):
        assert fact in card, fact
    assert "[None]" not in card and "trained with GRPO" not in card and "generated_from_trainer" not in card
    saved = yaml.safe_load((tiny_tapo_run / "config.yaml").read_text())
    assert card_config(card) == saved
    assert f'from_pretrained("{tiny_tapo_run / "model"}")' in card
    for step in (1, 2, 3):
        checkpoint_card = (tiny_tapo_run / f"checkpoint-{step}" / "README.md").read_text()
        assert f"after {step} of 3" in checkpoint_card and f"checkpoint-{step}" in checkpoint_card
    assert "TAPO" in (tiny_tapo_run / "README.md").read_text()  # where TRL put its card


# ---- 6: changed settings on resume ---------------------------------------------------------------


def test_changed_settings_are_refused_naming_each_key(at_step_2, capsys):
    from tapo.cli import main

    original = {name: (at_step_2 / name).read_text() for name in ("config.yaml", "metrics.jsonl")}
    code = main(["train", "--config", str(TAPO_RECIPE), "--output-dir", str(at_step_2), "--resume",
                 "--set", "trainer.num_generations=4", "--set", "tapo.construction=splice",
                 "--set", "trainer.beta=0.0"])  # beta 0.0 is the default: no change
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "trainer.num_generations: 8 -> 4" in err and "tapo.construction: aligned -> splice" in err
    assert "beta" not in err and "output_dir" not in err and "--allow-config-change" in err
    assert {name: (at_step_2 / name).read_text() for name in original} == original  # refused before touching it


def test_allowed_change_keeps_both_configs(at_step_2, capsys):
    original = (at_step_2 / "config.yaml").read_text()
    resume(at_step_2, "tapo.m_max=2", allow_config_change=True)
    assert steps(at_step_2) == [1, 2, 3] and (at_step_2 / "model").is_dir()
    assert (at_step_2 / "config.yaml").read_text() == original
    assert yaml.safe_load((at_step_2 / "config.resume-2.yaml").read_text())["tapo"]["m_max"] == 2
    card = (at_step_2 / "model" / "README.md").read_text()
    assert "`tapo.m_max: 4 -> 2`" in card and card_config(card)["tapo"]["m_max"] == 2
    capsys.readouterr()
    resume(at_step_2, "tapo.m_max=2")  # the settings of the last steps: no change
    assert "already complete" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"tapo\.m_max: 2 -> 4"):
        resume(at_step_2)


# ---- 7: a cut-off metrics.jsonl ---------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["in the last line", "in line 2", "after line 1"])
def test_cut_metrics_file_resumes_with_every_row(at_step_2, cut):
    path = at_step_2 / "metrics.jsonl"
    original = rows(path)
    lines = path.read_text().splitlines(keepends=True)
    kept = {"in the last line": "".join(lines[:2]) + lines[2][:40],
            "in line 2": lines[0] + lines[1][: len(lines[1]) // 2],
            "after line 1": lines[0]}[cut]
    path.write_text(kept)
    constructions = at_step_2 / "constructions.jsonl"
    constructions.write_text(constructions.read_text()[:-30])  # cut off too
    resume(at_step_2)
    now = rows(path)
    assert [row["step"] for row in now] == [1, 2, 3]
    assert now[:2] == original[:2]  # rows lost to the cut come back from checkpoint-2's log history
    assert {row["step"] for row in rows(constructions)} <= {1, 2, 3}


def test_broken_line_inside_a_log_is_an_error_naming_file_and_line(at_step_2, capsys):
    from tapo.cli import main

    path = at_step_2 / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1][:20] + "\n" + lines[2])
    code = main(["train", "--config", str(TAPO_RECIPE), "--output-dir", str(at_step_2), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and f"{path}, line 2: invalid JSON" in err


def test_incomplete_checkpoint_is_not_resumed_from(at_step_2, capsys):
    partial = at_step_2 / "checkpoint-3"
    partial.mkdir()
    shutil.copy(at_step_2 / "checkpoint-2" / "model.safetensors", partial)  # cut off before trainer_state.json
    resume(at_step_2)
    assert "removed checkpoint-3" in capsys.readouterr().err
    assert steps(at_step_2) == [1, 2, 3] and (partial / "trainer_state.json").is_file()


# ---- 8: Ctrl-C -----------------------------------------------------------------------------------


def interrupted_main(args: list[str]) -> int:
    """`tapo.cli.main(args)`, failing the test (not stopping pytest) when a Ctrl-C escapes it."""
    from tapo.cli import main

    try:
        return main(args)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped `tapo train` (a traceback for the user)")


def _our_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tapo train:")]


def _ctrl_c_reaches_it() -> None:
    """A suite started in the background of a non-interactive shell (`make test &`, a CI runner) inherits SIGINT
    ignored, and so would the run under test (Python keeps an ignored SIGINT ignored): give it back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler in this process while the test runs (see `_ctrl_c_reaches_it`)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_prints_one_line_and_the_command_that_resumes(tmp_path, capsys):
    from tapo.cli import main

    run = tmp_path / "interrupted"
    command = tapo_command("train", "--config", "recipes/tiny-tapo.yaml", "--output-dir", str(run),
                           "--set", "trainer.max_steps=20")  # steps enough that the signal lands mid-run
    process = subprocess.Popen(command, cwd=ROOT, env=tapo_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=_ctrl_c_reaches_it)
    deadline = time.monotonic() + 120
    while not any(run.glob("checkpoint-*/trainer_state.json")) and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    [line] = _our_lines(stderr)
    assert stderr.rstrip().endswith(line)
    saved = max(int(p.name.split("-")[1]) for p in run.glob("checkpoint-*") if (p / "trainer_state.json").is_file())
    assert f"saved checkpoint-{saved} (step {saved})" in line
    again = shlex.split(line.split("resume with: ", 1)[1])
    assert again[:2] == ["tapo", "train"] and again[-1] == "--resume"
    assert main(again[1:]) == 0
    assert steps(run) == list(range(1, 21))


class _InterruptDuringStep(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        raise KeyboardInterrupt


def test_ctrl_c_before_any_checkpoint_says_nothing_saved(tmp_path, monkeypatch, capsys):
    import tapo.engine.run as train
    from tapo.cli import main

    run = tmp_path / "early"
    real_build = build_with_callback(monkeypatch, _InterruptDuringStep())
    args = ["train", "--config", str(TAPO_RECIPE), "--output-dir", str(run), "--set", "trainer.max_steps=2"]
    assert interrupted_main(args) == 130
    [line] = _our_lines(capsys.readouterr().err)
    assert "no checkpoint saved yet" in line
    monkeypatch.setattr(train, "build_trainer", real_build)
    assert main(shlex.split(line.split("resume with: ", 1)[1])[1:]) == 0
    assert steps(run) == [1, 2]


class _Swallower:
    """Sends itself SIGINT from its destructor, where CPython prints "Exception ignored" and goes on."""

    def __del__(self):
        signal.raise_signal(signal.SIGINT)


class _SignalSwallowedAtStep2(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 1:
            _Swallower()  # collected at once: the KeyboardInterrupt dies inside __del__


def test_ctrl_c_swallowed_by_a_destructor_still_stops_the_run(tmp_path, monkeypatch, capsys, python_sigint):
    import tapo.engine.run as train
    from tapo.cli import main

    run = tmp_path / "swallowed"
    real_build = build_with_callback(monkeypatch, _SignalSwallowedAtStep2())
    ignored = []  # what CPython reports as "Exception ignored in ..." (unraisable), were it not for the guard
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)
    args = ["train", "--config", str(TAPO_RECIPE), "--output-dir", str(run), "--set", "trainer.max_steps=4"]
    assert interrupted_main(args) == 130
    assert ignored == []  # the swallowed interrupt's report is not shown: it was raised again instead
    assert sys.unraisablehook == ignored.append  # and the hook is the caller's again
    [line] = _our_lines(capsys.readouterr().err)
    assert "resume with: " in line
    assert steps(run) == [1]  # stopped at the end of step 2, where the signal arrived (unlogged, as any Ctrl-C
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # mid-step); Python's handler is back
    monkeypatch.setattr(train, "build_trainer", real_build)
    assert main(shlex.split(line.split("resume with: ", 1)[1])[1:]) == 0
    assert steps(run) == [1, 2, 3, 4]


def test_ctrl_c_while_reading_the_config(monkeypatch, capsys):
    import tapo.config

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tapo.config, "load_config", interrupted)
    assert interrupted_main(["train", "--config", str(TAPO_RECIPE)]) == 130
    [line] = _our_lines(capsys.readouterr().err)
    assert "nothing saved" in line and "run again: tapo train --config" in line


INTERRUPTED_IN_EXEC = """
import sys, tapo.cli, tapo.commands.train, tapo.config, tapo.engine.run

def load_config(*args, **kwargs):  # a Ctrl-C inside an exec() of a string, as in a dataclass created on import
    exec("raise KeyboardInterrupt")

tapo.config.load_config = load_config
sys.exit(tapo.cli.main(["train", "--config", "recipes/tiny-tapo.yaml"]))
"""


def test_ctrl_c_inside_a_string_exec_still_exits_130(tmp_path):
    """Under `python -m` (how accelerate launches tapo), CPython would end such a run by SIGINT (-2)."""
    (tmp_path / "interrupted_in_exec.py").write_text(INTERRUPTED_IN_EXEC)
    env = tapo_env()
    env["PYTHONPATH"] += f"{os.pathsep}{tmp_path}"
    result = subprocess.run([sys.executable, "-m", "interrupted_in_exec"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 130, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(_our_lines(result.stderr)) == 1
