"""Shared fixtures. Expensive artifacts (a real tiny TAPO run) are made once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tapo_command(*args: str) -> list[str]:
    """`tapo ARGS...` as `python -m tapo.cli`: the `tapo` console script's `main`, from this checkout.

    The installed `tapo` script imports whichever checkout the virtual environment was installed from
    (an editable install); this one runs the package these tests sit beside (PYTHONPATH points at it).
    """
    return [sys.executable, "-m", "tapo.cli", *args]


def tapo_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "TOKENIZERS_PARALLELISM": "false"}


def run_tapo(*args: str, timeout: int = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """The `tapo` command as a user runs it, in a subprocess."""
    return subprocess.run(tapo_command(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=tapo_env())


def run_benchmark(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python benchmarks/SCRIPT ARGS...` from the repository root, in a subprocess."""
    return subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
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


# ---- A real OpenAI-compatible server on loopback (`transformers serve`), for endpoint clients ----

from dataclasses import dataclass  # noqa: E402  (this section was appended)


@dataclass(frozen=True)
class ChatServer:
    """A running `transformers serve`: POST `{base_url}/chat/completions` with `"model": model`."""

    base_url: str  # "http://127.0.0.1:PORT/v1"
    model: str  # the served folder's path: the server is pinned to it and refuses other names
    log_path: Path  # the server's stdout and stderr


def free_loopback_port() -> int:
    """A TCP port nobody listens on right now, on 127.0.0.1."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


CHAT_MODEL_SEED = 3  # a seed of builtin:tiny whose greedy answers differ between prompts


def save_tiny_chat_model(folder: Path) -> Path:
    """`builtin:tiny` (model, tokenizer, ChatML template) saved as a Hugging Face folder to serve.

    The random tiny model with tied embeddings greedily repeats the last prompt token, which is the
    newline that opens the assistant turn, and the server strips white space: every answer would be
    "". Suppressing blank, unprintable and partial-byte tokens in the saved generation config makes
    greedy answers non-empty, readable and still deterministic. With CHAT_MODEL_SEED different
    prompts get different answers ("What is 2+3?" -> "2727...", "Hello" -> "ZZZ..."), which lets
    tests see that answers come back in order.
    """
    from tapo.models import load_policy, load_tokenizer

    model, _ = load_policy("builtin:tiny", seed=CHAT_MODEL_SEED)
    tokenizer = load_tokenizer("builtin:tiny")
    texts = [tokenizer.decode([i], skip_special_tokens=True) for i in range(len(tokenizer))]
    unreadable = [i for i, t in enumerate(texts) if not (t.strip() and t.isprintable()) or "\ufffd" in t]
    model.generation_config.suppress_tokens = unreadable
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def chat_server(tmp_path_factory):
    """`transformers serve` of the tiny model on a free loopback port, offline; stopped after the session."""
    import time
    import urllib.request

    root = tmp_path_factory.mktemp("chat_server")
    folder = save_tiny_chat_model(root / "tiny-chat")
    port = free_loopback_port()
    log_path = root / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    command = [str(BIN / "transformers"), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port),
               "--device", "cpu", "--log-level", "warning"]
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)

    def log_tail() -> str:
        return log_path.read_text(errors="replace")[-3000:]

    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"`{' '.join(command)}` exited with code {server.returncode}; log tail:\n{log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"`{' '.join(command)}` did not answer /health within 60 s; log tail:\n{log_tail()}")
            time.sleep(0.3)
        yield ChatServer(base_url=f"http://127.0.0.1:{port}/v1", model=str(folder), log_path=log_path)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
