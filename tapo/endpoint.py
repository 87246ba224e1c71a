"""A small client for OpenAI-compatible chat endpoints (vLLM, `transformers serve`, OpenAI, ...).

Used by the cold-start teacher and the LLM judge: POST `{base_url}/chat/completions`, retry
transient failures (connection errors, timeouts, HTTP 429 and 5xx) with exponential back-off,
run many conversations on a bounded thread pool, and keep every successful answer in an on-disk
cache, so that an interrupted build resumes without paying for the same request twice.

Only the standard library is used (urllib): no client package to install.

>>> client = ChatClient(EndpointConfig(base_url="http://127.0.0.1:8000/v1", model="my-model"))  # doctest: +SKIP
>>> client.chat([{"role": "user", "content": "What is 2+3?"}])  # doctest: +SKIP
'2 + 3 = 5'
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_READ_CHUNK = 1 << 16


@dataclass
class EndpointConfig:
    """Where and how to reach an OpenAI-compatible chat endpoint.

    `max_retries` counts retries after the first attempt: a request is tried at most
    `1 + max_retries` times, waiting `backoff_s * 2**i` (capped at `backoff_max_s`, or the
    server's `Retry-After` when it sends one and it is shorter than the cap) before retry i.
    `timeout_s` bounds one attempt: connecting, and the wait for each block of the answer, and
    the whole read. `cache_dir=None` turns the cache off.
    """

    base_url: str  # e.g. "http://127.0.0.1:8000/v1"
    model: str  # the model name the server expects
    api_key_env: str = "OPENAI_API_KEY"  # env var holding the key; unset -> no Authorization header
    max_concurrency: int = 4
    max_retries: int = 4
    timeout_s: float = 120.0
    temperature: float = 0.0
    max_tokens: int = 1024
    cache_dir: str | None = None
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"EndpointConfig.base_url must start with http:// or https://, got {self.base_url!r}")
        if not self.model:
            raise ValueError("EndpointConfig.model is empty; name the model the server expects")
        for name in ("max_concurrency", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"EndpointConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_retries < 0:
            raise ValueError(f"EndpointConfig.max_retries must be >= 0, got {self.max_retries}")
        for name in ("timeout_s", "backoff_max_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"EndpointConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.backoff_s < 0 or self.temperature < 0:
            raise ValueError(
                f"EndpointConfig.backoff_s and temperature must be >= 0, got {self.backoff_s} and {self.temperature}"
            )


class EndpointError(RuntimeError):
    """A chat request failed: a non-retryable answer, or every retry spent. The message names the URL."""


class _RetryableError(Exception):
    """One attempt failed in a way worth retrying; `retry_after` is the server's hint in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def backoff_delay(retry: int, *, base_s: float, max_s: float, retry_after: float | None = None) -> float:
    """Seconds to wait before retry `retry` (0-based): base * 2**retry, capped; the server's Retry-After wins.

    >>> [backoff_delay(i, base_s=1.0, max_s=5.0) for i in range(4)]
    [1.0, 2.0, 4.0, 5.0]
    >>> backoff_delay(0, base_s=1.0, max_s=5.0, retry_after=3.0)
    3.0
    """
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, max_s)
    return min(base_s * 2.0**retry, max_s)


def cache_key(model: str, messages: list[dict], *, temperature: float, max_tokens: int) -> str:
    """sha256 of a canonical JSON of what determines an answer: model, messages and sampling params.

    Key order inside the message dicts does not matter; any change of content, model or params does.

    >>> a = cache_key("m", [{"role": "user", "content": "hi"}], temperature=0.0, max_tokens=8)
    >>> a == cache_key("m", [{"content": "hi", "role": "user"}], temperature=0.0, max_tokens=8)
    True
    >>> a == cache_key("m", [{"role": "user", "content": "hi"}], temperature=0.0, max_tokens=9)
    False
    >>> len(a)
    64
    """
    canonical = json.dumps(
        {"model": model, "messages": messages, "temperature": float(temperature), "max_tokens": int(max_tokens)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def cache_path(cache_dir: str | Path, key: str) -> Path:
    """Where the answer of one key lives: two-character shards keep folders small.

    >>> cache_path("/c", "ab12").as_posix()
    '/c/ab/ab12.json'
    """
    return Path(cache_dir) / key[:2] / f"{key}.json"


def read_cached(path: Path) -> str | None:
    """The cached answer text, or None when there is none (a damaged file counts as none and is logged)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        text = record["text"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("ignoring unreadable cache file %s: %s", path, err)
        return None
    return text if isinstance(text, str) else None


def write_cached(path: Path, record: dict) -> None:
    """Write one cache record atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem[:8]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def completion_text(response: dict, *, url: str) -> str:
    """The assistant's text in a chat-completions response; EndpointError naming the URL when it has none.

    >>> completion_text({"choices": [{"message": {"role": "assistant", "content": "5"}}]}, url="u")
    '5'
    """
    try:
        content = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        snippet = str(response)[:300]
        raise EndpointError(f"POST {url}: the answer has no choices[0].message.content: {snippet}") from None
    if content is None:  # e.g. a tool call only: no text
        return ""
    if not isinstance(content, str):
        raise EndpointError(f"POST {url}: choices[0].message.content is {type(content).__name__}, not text")
    return content


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After in seconds (the date form is ignored)."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def post_json(url: str, payload: dict, *, headers: dict[str, str], timeout_s: float) -> dict:
    """One POST of a JSON body; the decoded JSON answer.

    Raises `_RetryableError` for what is worth another try (connection refused or reset,
    timeouts, HTTP 408/409/425/429/5xx) and EndpointError for the rest (other 4xx, a body
    that is not JSON).
    """
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    headers = {"Content-Type": "application/json", **headers}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    deadline = time.monotonic() + timeout_s
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            chunks = []
            while chunk := response.read(_READ_CHUNK):
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the answer took longer than {timeout_s} s")
            raw = b"".join(chunks)
    except urllib.error.HTTPError as err:
        detail = err.read()[:500].decode("utf-8", "replace")
        message = f"HTTP {err.code}: {detail}"
        if err.code in RETRYABLE_STATUS:
            raise _RetryableError(message, retry_after=_retry_after_seconds(err.headers.get("Retry-After"))) from None
        raise EndpointError(f"POST {url} failed: {message}") from None
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise _RetryableError(f"timed out after {timeout_s} s") from None
        raise _RetryableError(f"cannot connect: {reason}") from None
    except (TimeoutError, socket.timeout):
        raise _RetryableError(f"timed out after {timeout_s} s") from None
    except (OSError, http.client.HTTPException) as err:  # reset, closed without an answer, ...
        raise _RetryableError(f"connection failed: {type(err).__name__}: {err}") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise EndpointError(f"POST {url}: the answer is not JSON: {raw[:300]!r}") from None


class ChatClient:
    """Chat with one model behind an OpenAI-compatible endpoint; thread-safe.

    `stats` counts HTTP attempts (`requests`), answers served from the cache (`cache_hits`),
    retries, and calls that failed for good (`failures`).
    """

    def __init__(self, config: EndpointConfig):
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.stats: dict[str, int] = {"requests": 0, "cache_hits": 0, "retries": 0, "failures": 0}
        self._lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.config.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def chat(self, messages: list[dict]) -> str:
        """The assistant's answer to one conversation; EndpointError (naming the URL and the last error) on failure."""
        config = self.config
        path = None
        if config.cache_dir is not None:
            key = cache_key(config.model, messages, temperature=config.temperature, max_tokens=config.max_tokens)
            path = cache_path(config.cache_dir, key)
            cached = read_cached(path)
            if cached is not None:
                self._count("cache_hits")
                return cached
        payload = {
            "model": config.model,
            "messages": messages,
            "temperature": config.temperature,
            "max_tokens": config.max_tokens,
        }
        try:
            text = self._post_with_retries(payload)
        except EndpointError:
            self._count("failures")
            raise
        if path is not None:
            record = {**payload, "text": text}  # the request beside its answer, for a person to inspect
            write_cached(path, record)
        return text

    def _post_with_retries(self, payload: dict) -> str:
        config = self.config
        attempts = 1 + config.max_retries
        last: _RetryableError | None = None
        for attempt in range(attempts):
            if attempt > 0:
                self._count("retries")
            self._count("requests")
            try:
                response = post_json(self.url, payload, headers=self._headers(), timeout_s=config.timeout_s)
                return completion_text(response, url=self.url)
            except _RetryableError as err:
                last = err
                if attempt + 1 < attempts:
                    delay = backoff_delay(attempt, base_s=config.backoff_s, max_s=config.backoff_max_s,
                                          retry_after=err.retry_after)
                    logger.info("POST %s: %s; retry %d of %d in %.2f s", self.url, err, attempt + 1,
                                config.max_retries, delay)
                    time.sleep(delay)
        raise EndpointError(f"POST {self.url} failed after {attempts} attempt(s); last error: {last}")

    def chat_many(self, conversations: list[list[dict]]) -> list[str | None]:
        """Answers in the order of `conversations`, at most `max_concurrency` in flight; None where one failed."""

        def one(messages: list[dict]) -> str | None:
            try:
                return self.chat(messages)
            except EndpointError as err:
                logger.warning("%s", err)
                return None

        if not conversations:
            return []
        workers = min(self.config.max_concurrency, len(conversations))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tapo-endpoint") as pool:
            return list(pool.map(one, conversations))
