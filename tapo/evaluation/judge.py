"""An LLM judge of reflection behind an OpenAI-compatible endpoint (vLLM, `transformers serve`, OpenAI, ...).

For each response the judge answers three questions: does it reflect (stop and reconsider its
own work)? Does a reflection locate a real error in the earlier reasoning? Does it then fix that
error? It must answer in a strict format, one JSON object:

    {"reflects": true, "locates_error": true, "fixes_error": false}

`parse_judgement` also accepts the same three fields as `KEY: yes/no` lines, inside code
fences or after some prose, and returns None for anything else (an unparseable answer is
counted, never guessed). A response that does not reflect cannot locate or fix an error: those
two fields are then False whatever the judge wrote.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from tapo.evaluation.reflection import ReflectionVerdict

JUDGE_FIELDS = ("reflects", "locates_error", "fixes_error")

JUDGE_SYSTEM_PROMPT = """You grade the reasoning of a math solution. Answer three questions about the SOLUTION:
1. reflects: does the solution at some point stop and reconsider its own earlier work (re-checking a step, doubting a result, noticing a possible mistake)? Merely stating the final answer does not count.
2. locates_error: does a reflection point to an actual error in the earlier reasoning (a wrong step, a wrong number, a wrong assumption), not just re-confirm correct work?
3. fixes_error: after locating it, does the solution correct that error and continue from the corrected work?
If reflects is false, locates_error and fixes_error are false.
Reply with exactly one JSON object and nothing else, for example:
{"reflects": true, "locates_error": true, "fixes_error": false}"""

_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


def judge_messages(problem: str, response: str, *, gold: str | None = None) -> list[dict]:
    """The chat messages that ask the judge about one response.

    >>> judge_messages("1+1?", "2", gold="2")[1]["content"].splitlines()[0]
    'PROBLEM:'
    """
    reference = f"\n\nREFERENCE ANSWER: {gold}" if gold is not None else ""
    user = f"PROBLEM:\n{problem}{reference}\n\nSOLUTION:\n{response}\n\nReply with the JSON object only."
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_judgement(text: str | None) -> ReflectionVerdict | None:
    """The verdict in a judge's answer, or None when the answer does not hold all three fields.

    >>> parse_judgement('```json\\n{"reflects": true, "locates_error": true, "fixes_error": true}\\n```')
    ReflectionVerdict(reflects=True, locates_error=True, fixes_error=True)
    >>> parse_judgement("REFLECTS: yes\\nLOCATES_ERROR: no\\nFIXES_ERROR: no")
    ReflectionVerdict(reflects=True, locates_error=False, fixes_error=False)
    >>> parse_judgement("I think it reflects.") is None
    True
    """
    if not text:
        return None
    values = _from_json(text) or _from_lines(text)
    if values is None:
        return None
    reflects = values["reflects"]
    return ReflectionVerdict(
        reflects=reflects, locates_error=reflects and values["locates_error"], fixes_error=reflects and values["fixes_error"]
    )


def _as_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, str)):
        word = str(value).strip().strip(".").lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    return None


def _normalize_key(key: str) -> str:
    return re.sub(r"[\s\-]+", "_", key.strip().strip("*`\"'").lower())


def _from_json(text: str) -> dict[str, bool] | None:
    """The last {...} in the text that parses as JSON and holds the three fields as booleans."""
    for match in reversed(list(re.finditer(r"\{[^{}]*\}", text))):
        try:
            obj = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        if not isinstance(obj, dict):
            continue
        values = {_normalize_key(k): _as_bool(v) for k, v in obj.items()}
        if all(values.get(f) is not None for f in JUDGE_FIELDS):
            return {f: values[f] for f in JUDGE_FIELDS}
    return None


def _from_lines(text: str) -> dict[str, bool] | None:
    """`KEY: yes/no` lines (keys in any case, `_`, `-` or spaces); the last line of each key wins."""
    values: dict[str, bool] = {}
    for line in text.splitlines():
        match = re.match(r"^\s*[-*\d.)\s]*([A-Za-z_\- `*\"']+?)\s*[:=]\s*([A-Za-z0-9]+)\W*$", line)
        if not match:
            continue
        key, value = _normalize_key(match.group(1)), _as_bool(match.group(2))
        if key in JUDGE_FIELDS and value is not None:
            values[key] = value
    return values if all(f in values for f in JUDGE_FIELDS) else None


@dataclass
class ReflectionJudge:
    """Judges responses through a `tapo.endpoint.ChatClient`; `stats` counts judged, unparseable and failed calls."""

    client: object  # tapo.endpoint.ChatClient
    stats: dict[str, int] = field(default_factory=lambda: {"judged": 0, "unparseable": 0, "failed": 0})

    @property
    def name(self) -> str:
        return f"judge:{self.client.config.model}"

    def judge_many(self, items: Sequence[tuple[str, str, str | None]]) -> list[ReflectionVerdict | None]:
        """Verdicts for (problem, response, gold) items, in order; None where the call failed or did not parse."""
        answers = self.client.chat_many([judge_messages(p, r, gold=g) for p, r, g in items])
        verdicts = []
        for answer in answers:
            verdict = None if answer is None else parse_judgement(answer)
            key = "failed" if answer is None else "unparseable" if verdict is None else "judged"
            self.stats[key] += 1
            verdicts.append(verdict)
        return verdicts


def make_judge(
    base_url: str,
    model: str,
    *,
    api_key_env: str = "OPENAI_API_KEY",
    max_concurrency: int = 4,
    max_tokens: int = 256,
    timeout_s: float = 120.0,
    cache_dir: str | None = None,
) -> ReflectionJudge:
    """A judge for the model `model` served at `base_url` (greedy decoding, short answers)."""
    from tapo.endpoint import ChatClient, EndpointConfig

    config = EndpointConfig(
        base_url=base_url,
        model=model,
        api_key_env=api_key_env,
        max_concurrency=max_concurrency,
        max_tokens=max_tokens,
        timeout_s=timeout_s,
        temperature=0.0,
        cache_dir=cache_dir,
    )
    return ReflectionJudge(ChatClient(config))
