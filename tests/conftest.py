"""Shared fixtures. Expensive artifacts (a real tiny TAPO run) are made once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_tapo(*args: str, timeout: int = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """The installed `tapo` command as a user runs it, in a subprocess."""
    return subprocess.run(
        [str(BIN / "tapo"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )


@pytest.fixture(scope="session")
def tiny_tapo_run(tmp_path_factory) -> Path:
    """Run directory of a real `tapo train --config recipes/tiny-tapo.yaml` (3 steps, aligned constructions).

    Read it, don't write into it: other tests share it.
    """
    run_dir = tmp_path_factory.mktemp("shared") / "tiny-tapo"
    result = run_tapo("train", "--config", "recipes/tiny-tapo.yaml", "--output-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "constructions.jsonl").is_file(), "tiny-tapo made no constructions"
    return run_dir
