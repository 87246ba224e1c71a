"""tapo.endpoint against a real `transformers serve` on loopback (the `chat_server` fixture), plus
three small fault injectors made here: a closed port, a socket that never answers, and a stub
HTTP server that fails on purpose."""

from __future__ import annotations

import doctest
import json
import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import tapo.endpoint as endpoint
from tapo.endpoint import ChatClient, EndpointConfig, EndpointError

QUESTION = [{"role": "user", "content": "What is 2+3?"}]


def client_for(base_url: str, model: str, **options) -> ChatClient:
    return ChatClient(EndpointConfig(base_url=base_url, model=model, **{"max_tokens": 8, **options}))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: connecting is refused


@contextmanager
def silent_server():
    """A loopback socket that accepts connections and never answers; yields its base URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)
    held, stop = [], threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in held:
            conn.close()
        listener.close()


@contextmanager
def stub_server(*, fail_first: int = 0):
    """An OpenAI-shaped stub: 503 (Retry-After: 0) to the first `fail_first` requests, 400 to a
    message "bad", else an answer echoing the last message. Yields (base URL, seen requests)."""
    seen: list[dict] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                failing = len(seen) <= fail_first
            content = body["messages"][-1]["content"]
            if failing:
                self.answer(503, {"error": "busy"}, {"Retry-After": "0"})
            elif content == "bad":
                self.answer(400, {"error": "bad request"})
            else:
                self.answer(200, {"choices": [{"message": {"role": "assistant", "content": f"echo: {content}"}}]})

        def answer(self, code: int, payload: dict, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # keep the test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()


def test_doctests():
    result = doctest.testmod(endpoint)
    assert result.attempted > 0 and result.failed == 0


# ---- against the real server ----


def test_chat_returns_the_served_models_text(chat_server):
    client = client_for(chat_server.base_url, chat_server.model)
    text = client.chat(QUESTION)
    assert isinstance(text, str) and text.strip(), f"empty answer; server log: {chat_server.log_path}"
    assert client.chat(QUESTION) == text  # greedy (temperature 0): the same answer again
    assert client.stats == {"requests": 2, "cache_hits": 0, "retries": 0, "failures": 0}


def test_chat_many_keeps_order_and_length(chat_server):
    client = client_for(chat_server.base_url, chat_server.model, max_concurrency=3)
    prompts = ["What is 2+3?", "Hello", "Compute 12+7 step by step", "7"]
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    one_by_one = [client.chat(c) for c in conversations]
    assert len(set(one_by_one)) >= 2, f"order is invisible when every answer is the same: {one_by_one}"
    mixed = conversations[::-1] + conversations  # 8 conversations, 3 in flight at a time
    assert client.chat_many(mixed) == one_by_one[::-1] + one_by_one
    assert client.chat_many([]) == []


def test_cache_spares_a_repeat_and_survives_a_new_client(chat_server, tmp_path):
    cache = tmp_path / "cache"
    first = client_for(chat_server.base_url, chat_server.model, cache_dir=str(cache))
    text = first.chat(QUESTION)
    assert first.chat(QUESTION) == text
    assert (first.stats["requests"], first.stats["cache_hits"]) == (1, 1)

    files = list(cache.rglob("*"))
    records = [f for f in files if f.is_file()]
    assert len(records) == 1 and records[0].suffix == ".json", files  # no temporary file left behind
    record = json.loads(records[0].read_text())
    assert record["text"] == text and record["messages"] == QUESTION and record["model"] == chat_server.model

    second = client_for(chat_server.base_url, chat_server.model, cache_dir=str(cache))
    assert second.chat_many([QUESTION, QUESTION]) == [text, text]
    assert (second.stats["requests"], second.stats["cache_hits"]) == (0, 2)

    other_params = client_for(chat_server.base_url, chat_server.model, cache_dir=str(cache), max_tokens=4)
    other_params.chat(QUESTION)
    assert (other_params.stats["requests"], other_params.stats["cache_hits"]) == (1, 0)


def test_a_rejected_request_fails_at_once_without_retries(chat_server, tmp_path):
    client = client_for(chat_server.base_url, "not-the-served-model", cache_dir=str(tmp_path), backoff_s=5.0)
    with pytest.raises(EndpointError, match=r"HTTP 400") as info:
        client.chat(QUESTION)
    assert client.url in str(info.value)
    assert client.stats == {"requests": 1, "cache_hits": 0, "retries": 0, "failures": 1}
    assert not any(tmp_path.rglob("*.json")), "a failure must not be cached"


# ---- faults ----


def test_a_server_that_is_down_is_retried_with_back_off_then_raises(tmp_path):
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    client = client_for(base_url, "m", max_retries=3, backoff_s=0.05, cache_dir=str(tmp_path))
    start = time.monotonic()
    with pytest.raises(EndpointError, match=r"after 4 attempt\(s\); last error: cannot connect") as info:
        client.chat(QUESTION)
    elapsed = time.monotonic() - start
    assert f"{base_url}/chat/completions" in str(info.value)
    assert elapsed >= 0.05 + 0.1 + 0.2  # waited 0.05 * 2**i before retry i
    assert client.stats == {"requests": 4, "cache_hits": 0, "retries": 3, "failures": 1}

    assert client.chat_many([QUESTION, [{"role": "user", "content": "Hello"}]]) == [None, None]
    assert client.stats["failures"] == 3
    assert not any(tmp_path.rglob("*.json")), "a failure must not be cached"


def test_a_request_that_gets_no_answer_times_out():
    with silent_server() as base_url:
        client = client_for(base_url, "m", timeout_s=0.3, max_retries=1, backoff_s=0.01)
        start = time.monotonic()
        with pytest.raises(EndpointError, match=r"timed out after 0.3 s"):
            client.chat(QUESTION)
        elapsed = time.monotonic() - start
        assert 0.6 <= elapsed < 5, elapsed
        assert client.stats["requests"] == 2
        assert client.chat_many([QUESTION]) == [None]


def test_busy_answers_are_retried_and_bad_ones_are_not(monkeypatch):
    monkeypatch.setenv("TAPO_TEST_KEY", "secret")
    with stub_server(fail_first=2) as (base_url, seen):
        client = client_for(base_url + "/", "m", api_key_env="TAPO_TEST_KEY", backoff_s=5.0, max_concurrency=2)
        assert client.chat(QUESTION) == "echo: What is 2+3?"  # 503, 503, then 200; Retry-After: 0 beats 5 s
        assert client.stats == {"requests": 3, "cache_hits": 0, "retries": 2, "failures": 0}
        assert {r["path"] for r in seen} == {"/v1/chat/completions"}
        assert {r["auth"] for r in seen} == {"Bearer secret"}
        assert seen[-1]["body"] == {"model": "m", "messages": QUESTION, "temperature": 0.0, "max_tokens": 8}

        conversations = [[{"role": "user", "content": c}] for c in ("a", "bad", "c")]
        assert client.chat_many(conversations) == ["echo: a", None, "echo: c"]
        assert client.stats["failures"] == 1 and client.stats["retries"] == 2

        monkeypatch.delenv("TAPO_TEST_KEY")
        client.chat([{"role": "user", "content": "no key"}])
        assert seen[-1]["auth"] is None


@pytest.mark.parametrize(
    ("options", "field"),
    [({"base_url": "127.0.0.1:8000/v1"}, "base_url"), ({"max_concurrency": 0}, "max_concurrency"),
     ({"max_retries": -1}, "max_retries"), ({"timeout_s": 0}, "timeout_s")],
)
def test_a_bad_config_names_its_field(options, field):
    with pytest.raises(ValueError, match=field):
        EndpointConfig(**{"base_url": "http://127.0.0.1:8000/v1", "model": "m", **options})
