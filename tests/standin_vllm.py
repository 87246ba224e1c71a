r"""An in-process stand-in for the vLLM service, so TRL's REAL vLLM generation code runs without vLLM.

TRL 1.16's `VLLMGeneration` (trl/generation/vllm_generation.py) is what `GRPOTrainer._generate_single_turn`
calls when `use_vllm=True`. In server mode it gathers every process's prompts, asks a `VLLMClient` on the
main process for completions, broadcasts them and hands each process a slice; in colocate mode with
`vllm_tensor_parallel_size > 1` it all-gathers the prompts of the TP group, runs `LLM.generate` on all of
them and keeps a slice. That gather/slice logic is what TAPO's construction calls go through, and it needs
neither a GPU nor a model: only something that answers token-id prompts. This module provides that
something and nothing else; TRL's and tapo's code run unchanged.

The answers are DERIVED FROM THE PROMPT, so a test can tell which prompt an answer was written for:

- a rollout prompt (the chat-templated question) gets `"<tag> step i: \boxed{d}"`, where <tag> is a
  checksum of the question and i the completion's index, so every rollout is distinct;
- TAPO's `self` synthesis prompt gets a reconstruction that copies the prompt's wrong response verbatim,
  reflects, and names the prompt's question as `Q[<question>]`;
- splice's LOCATE prompt gets a quote of the first characters of the prompt's wrong response (or, every
  `quote_not_found_every`-th time, a quote that is not in it) and an analysis naming `Q[<question>]`;
- splice's CONTINUE prompt gets a continuation naming `Q[<question>]`.

A construction built from the wrong prompt's answer therefore names the wrong question (and, for `self`,
does not start with its own wrong response). The `self` and LOCATE answers go on after their last closing
tag (`AFTER_ANSWER`), so a test sees whether the stop strings cut them there.

Generation ends as vLLM ends it (`finish`): the answer's ids then eos, stopped at the eos, at the token
whose text completes one of the request's `stop` strings (that token kept, as vLLM keeps it in
`token_ids`; `include_stop_str_in_output` only decides whether the returned text keeps the string), or
at `max_tokens` (then without eos). The request's `generation_kwargs` override the named parameters, as
in TRL's client.

`install(tokenizer)` (server mode) and `install_colocate(tokenizer)` (colocate mode) patch the names
`vllm_generation` looks up: `VLLMClient`, `is_vllm_available`, and for colocate `LLM` and `SamplingParams`
(which exist there only when vLLM is importable).
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, NamedTuple

REFLECTION = "Wait, let me double-check"  # tapo.core.synthesis.REFLECTION_OPENER, written out by the stand-in
MISSING_QUOTE = "ZZZ not in the wrong response"  # contains no character sequence a rollout answer has
AFTER_ANSWER = "\nThat is all."  # what the self and LOCATE answers write after their last closing tag

_SECTION = re.compile(r"### (?P<name>[^\n]+)\n(?P<body>.*?)(?=\n\n### |\Z)", re.S)
_USER = re.compile(r"<\|im_start\|>user\n(?P<content>.*?)<\|im_end\|>", re.S)
_ASSISTANT_OPEN = "<|im_start|>assistant\n"


def question_tag(question: str) -> str:
    """A short, stable checksum of a question (rollout answers carry it, so each question has its own)."""
    return f"{zlib.crc32(question.encode()) & 0xFFFF:04x}"


def question_mark(question: str) -> str:
    """How every synthesis answer names the question of the prompt it answers."""
    return f"Q[{question}]"


def _digit(text: str, index: int = 0) -> int:
    return (zlib.crc32(text.encode()) + index) % 10


@dataclass
class StandInModel:
    """Writes an answer for a token-id prompt; shared by the server-mode client and the colocate `LLM`.

    `quote_not_found_every = k > 0` makes every k-th LOCATE answer (counted over this model's life) quote
    text that is not in the wrong response, so splice's fallback ("self") and `splice_fallback: drop`
    paths run. Replicas that see the same prompts in the same order (the ranks of a TP group) answer alike.
    """

    tokenizer: Any
    quote_not_found_every: int = 0
    locates: int = 0

    @property
    def logprob(self) -> float:
        """The log-prob reported for every generated token: a uniform model's over the vocabulary.

        The random tiny policy is close to uniform, so TRL's importance-sampling correction (on by default)
        keeps the rollouts instead of masking them all.
        """
        return -math.log(len(self.tokenizer))

    def kind(self, text: str) -> str:
        """Which prompt this is: self | locate | continue | rollout (by the templates' fixed headings)."""
        if "### Wrong response" in text and "### Correct response" in text and "<reconstruction>" in text:
            return "self"
        if "### Wrong response" in text and "<quote>" in text:
            return "locate"
        if "### Reference solution" in text and "### Note on the mistake" in text:
            return "continue"
        return "rollout"

    def answer_text(self, text: str, index: int) -> tuple[str, str]:
        """(kind, answer) for the decoded prompt `text`; `index` tells a prompt's completions apart."""
        kind = self.kind(text)
        sections = {m.group("name").strip(): m.group("body") for m in _SECTION.finditer(text)}
        if kind == "rollout":
            users = _USER.findall(text)
            question = users[-1].split("\n", 1)[0] if users else text
            return kind, f"{question_tag(question)} step {index}: \\boxed{{{_digit(question, index)}}}"
        question = sections["Question"]
        mark = question_mark(question)
        if kind == "self":
            negative = sections["Wrong response"]
            return kind, (
                f"<analysis>mistake in {mark}</analysis><reconstruction>{negative} {REFLECTION}. "
                f"{mark} so the answer is \\boxed{{{_digit(question)}}}.</reconstruction>{AFTER_ANSWER}"
            )
        if kind == "locate":
            self.locates += 1
            negative = sections["Wrong response"]
            missing = self.quote_not_found_every > 0 and self.locates % self.quote_not_found_every == 0
            quote = MISSING_QUOTE if missing else negative[:20]
            return kind, f"<quote>{quote}</quote><analysis>{mark}</analysis>{AFTER_ANSWER}"
        # continue: the prompt ends with y-'s kept prefix and the reflection opener; carry on after it
        return kind, f". {mark} so the answer is \\boxed{{{_digit(question)}}}."

    def complete(self, prompt_ids: list[int], index: int, max_tokens: int | None, stop=None,
                 include_stop_str_in_output: bool = False) -> tuple[str, list[int], str]:
        """(kind, completion ids, completion text): the answer + eos, ended as vLLM ends it (`finish`)."""
        text = self.tokenizer.decode(list(prompt_ids), skip_special_tokens=False)
        kind, answer = self.answer_text(text, index)
        ids = list(self.tokenizer.encode(answer, add_special_tokens=False)) + [self.tokenizer.eos_token_id]
        ids, text = finish(self.tokenizer, ids, max_tokens=max_tokens, stop=stop,
                           include_stop_str_in_output=include_stop_str_in_output)
        return kind, ids, text


def finish(tokenizer, ids: list[int], *, max_tokens: int | None, stop=None,
           include_stop_str_in_output: bool = False) -> tuple[list[int], str]:
    """(token ids, text) of a completion that would be `ids`, ended as vLLM's engine ends it.

    Token by token: an eos ends it (kept); else a stop string in the text so far ends it, the token
    that completed it kept in the ids, the text cut before the string (or after it, with
    `include_stop_str_in_output`); else `max_tokens` ends it, without eos.
    """
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    end = len(ids) if max_tokens is None else min(len(ids), max_tokens)
    if tokenizer.eos_token_id in ids[:end]:
        end = ids.index(tokenizer.eos_token_id) + 1
    for k in range(1, end + 1) if stops else ():
        text = tokenizer.decode(ids[:k], skip_special_tokens=True)
        found = [(text.find(s), s) for s in stops if s in text]
        if found:
            at, string = min(found)
            return ids[:k], text[: at + len(string)] if include_stop_str_in_output else text[:at]
    return ids[:end], tokenizer.decode(ids[:end], skip_special_tokens=True)


_settings: dict[str, Any] = {"tokenizer": None, "quote_not_found_every": 0}


def _model() -> StandInModel:
    if _settings["tokenizer"] is None:
        raise RuntimeError("call standin_vllm.install(tokenizer) before building the trainer")
    return StandInModel(_settings["tokenizer"], quote_not_found_every=_settings["quote_not_found_every"])


def _record(prompts, kinds, n, max_tokens, temperature, top_p, *, stop, include_stop_str_in_output,
            completions) -> dict:
    return {
        "prompts": [list(map(int, p)) for p in prompts], "kinds": kinds, "n": n,
        "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p,
        "stop": list(stop) if stop else None, "include_stop_str_in_output": include_stop_str_in_output,
        "completions": [list(map(int, c)) for c in completions],
    }


class StandInVLLMClient:
    """What TRL's server mode calls on `trl.generation.vllm_client.VLLMClient`, answered in process.

    Only the main process builds a client (as with the real server). `calls` records every `generate`;
    `weight_syncs` / `tensors_received` count weight pushes (the tensors themselves are dropped).
    """

    def __init__(self, base_url=None, group_port=None, connection_timeout=None, *, model=None, **kwargs):
        self.base_url, self.group_port = base_url, group_port
        self.model = model or _model()
        self.calls: list[dict] = []
        self.weight_syncs = 0
        self.tensors_received = 0
        self.prefix_cache_resets = 0
        self.communicator_device = None

    def get_server_info(self) -> dict:
        return {
            "model_config": {"logprobs_mode": "processed_logprobs"},
            "weight_transfer_config": {"backend": "stand-in"},  # the real init_communicator checks it
        }

    def check_server(self, total_timeout: float = 0.0, retry_interval: float = 2.0) -> None:
        return None

    def init_communicator(self, device=0) -> None:
        # The real client refuses non-CUDA devices here (its weight transfer is NCCL-only); the stand-in takes any.
        self.communicator_device = str(device)

    def update_named_params(self, metadata, params_iterator) -> None:
        # TRL gathers each parameter collectively WHILE this iterates, so the iterator must be consumed fully.
        count = sum(1 for _ in params_iterator)
        if count != len(metadata):
            raise ValueError(f"{count} tensors streamed for {len(metadata)} announced")
        self.weight_syncs += 1
        self.tensors_received += count

    def update_named_param(self, name, weights) -> None:
        self.update_named_params([(name, str(weights.dtype), list(weights.shape))], iter([(name, weights)]))

    def reset_prefix_cache(self) -> None:
        self.prefix_cache_resets += 1

    def close_communicator(self) -> None:
        self.communicator_device = None

    def generate(self, prompts, features=None, n=1, repetition_penalty=1.0, temperature=1.0, top_p=1.0, top_k=0,
                 min_p=0.0, max_tokens=16, logprobs=0, structured_outputs_regex=None, generation_kwargs=None, **kw):
        """`n` completions per prompt, prompt-major, in the real client's return format."""
        if features is not None:
            raise NotImplementedError("the stand-in answers text prompts only")
        params = {"n": n, "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
                  "stop": None, "include_stop_str_in_output": False, **(generation_kwargs or {})}
        ending = {k: params[k] for k in ("stop", "include_stop_str_in_output")}
        kinds, completion_ids = [], []
        for prompt in prompts:
            for i in range(params["n"]):
                kind, ids, _ = self.model.complete(prompt, i, params["max_tokens"], **ending)
                completion_ids.append(ids)
            kinds.append(kind)
        self.calls.append(_record(prompts, kinds, params["n"], params["max_tokens"], params["temperature"],
                                  params["top_p"], completions=completion_ids, **ending))
        self.calls[-1]["regex"] = structured_outputs_regex  # the request's output constraint
        return {
            "prompt_ids": [list(p) for p in prompts],
            "completion_ids": completion_ids,
            "logprobs": [[[self.model.logprob] for _ in ids] for ids in completion_ids],
            "logprob_token_ids": [[[t] for t in ids] for ids in completion_ids],
        }


# ---- colocate mode: vllm.LLM / SamplingParams / RequestOutput look-alikes ---------------------------------


class Logprob(NamedTuple):
    """What `extract_logprobs` reads from each entry of `CompletionOutput.logprobs`."""

    logprob: float
    rank: int


class StandInSamplingParams:
    """`vllm.SamplingParams`: TRL builds it with n, temperature, top_p, max_tokens, logprobs, ... and its
    generation_kwargs (where TAPO puts `stop` and `include_stop_str_in_output`)."""

    def __init__(self, n: int = 1, max_tokens: int | None = 16, temperature: float = 1.0, top_p: float = 1.0,
                 stop=None, include_stop_str_in_output: bool = False, **kwargs):
        self.n, self.max_tokens, self.temperature, self.top_p = n, max_tokens, temperature, top_p
        self.stop, self.include_stop_str_in_output = stop, include_stop_str_in_output
        self.kwargs = kwargs


class _Weights:
    """`llm.llm_engine.model_executor.driver_worker.model_runner.model`: takes the pushed weights."""

    def __init__(self):
        self.tensors_received = 0

    def load_weights(self, weights) -> None:
        self.tensors_received += sum(1 for _ in weights)


class StandInLLM:
    """`vllm.LLM` in colocate mode: one per process, answering the prompts it is given (n per prompt).

    With tensor parallelism TRL hands every rank of a TP group the group's gathered prompts, so the ranks
    see the same prompts in the same order and answer alike, as vLLM does with its shared seed. A prompt's
    completions are told apart by the prompt's occurrence count in the call (TRL passes duplicates, n=1).
    """

    def __init__(self, model=None, **kwargs):
        self.init_kwargs = {"model": model, **kwargs}
        self.standin = _model()
        self.calls: list[dict] = []
        self.prefix_cache_resets = 0
        self._weights = _Weights()
        runner = SimpleNamespace(model=self._weights)
        self.llm_engine = SimpleNamespace(
            model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=runner)),
            model_config=SimpleNamespace(max_model_len=kwargs.get("max_model_len") or 2048),
        )

    @property
    def tensors_received(self) -> int:
        return self._weights.tensors_received

    def generate(self, prompts, sampling_params=None, use_tqdm=False, **kwargs):
        params = sampling_params or StandInSamplingParams()
        ending = {"stop": params.stop, "include_stop_str_in_output": params.include_stop_str_in_output}
        seen: Counter = Counter()
        outputs, kinds, token_lists, generated = [], [], [], []
        for prompt in prompts:
            ids = list(prompt["prompt_token_ids"])
            key = tuple(ids)
            completions = []
            for _ in range(params.n):
                kind, completion, text = self.standin.complete(ids, seen[key], params.max_tokens, **ending)
                seen[key] += 1
                generated.append(completion)
                completions.append(SimpleNamespace(
                    token_ids=completion, text=text,
                    logprobs=[{t: Logprob(self.standin.logprob, 1)} for t in completion],
                ))
            kinds.append(kind)
            token_lists.append(ids)
            outputs.append(SimpleNamespace(prompt_token_ids=ids, outputs=completions))
        self.calls.append(_record(token_lists, kinds, params.n, params.max_tokens, params.temperature, params.top_p,
                                  completions=generated, **ending))
        return outputs

    def reset_prefix_cache(self) -> None:
        self.prefix_cache_resets += 1

    def sleep(self, level: int = 1) -> None:
        return None

    def wake_up(self, tags=None) -> None:
        return None


# ---- installing ---------------------------------------------------------------------------------------------


def install(tokenizer, *, quote_not_found_every: int = 0) -> None:
    """Make TRL's server mode talk to `StandInVLLMClient`, with vLLM not installed.

    `VLLMGeneration._init_vllm` raises unless `is_vllm_available()` (the name imported into
    vllm_generation; GRPOConfig and GRPOTrainer do not check it themselves), then builds `VLLMClient` on
    the main process. Only those two names in `trl.generation.vllm_generation` are replaced; the global
    `trl.import_utils.is_vllm_available` stays false so nothing else tries to import vllm.
    """
    from trl.generation import vllm_generation

    _settings.update(tokenizer=tokenizer, quote_not_found_every=quote_not_found_every)
    vllm_generation.is_vllm_available = lambda *args, **kwargs: True
    vllm_generation.VLLMClient = StandInVLLMClient


def install_colocate(tokenizer, *, quote_not_found_every: int = 0) -> None:
    """`install`, plus the `LLM` and `SamplingParams` names that colocate mode uses.

    vllm_generation imports those from vllm only when it is available, so they are added to the module.
    `vllm_structured_outputs_regex` (which would need `StructuredOutputsParams`) is not supported.
    """
    from trl.generation import vllm_generation

    install(tokenizer, quote_not_found_every=quote_not_found_every)
    vllm_generation.LLM = StandInLLM
    vllm_generation.SamplingParams = StandInSamplingParams
