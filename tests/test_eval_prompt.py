"""The evaluation prompt is the training prompt: instruction, system prompt and chat template arguments
(Qwen3's `enable_thinking: false`) reach `tapo eval`, are recorded, and are passed by the demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tapo.evaluation import EvalProtocol, evaluate
from tapo.sampling import Completion, messages_prompt_ids, prompt_token_ids

ROOT = Path(__file__).resolve().parents[1]
BENCH = str(ROOT / "tests" / "data" / "mini_bench.jsonl")  # 5 problems
PROTOCOL = EvalProtocol(samples=1, runs=1, max_tokens=4)
NO_THINKING = {"enable_thinking": False}
# A Qwen3-style switch: without enable_thinking=False the assistant turn opens in thinking mode.
THINKING_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{% endif %}"
)


@pytest.fixture
def tokenizer():
    from tapo.models import load_tokenizer

    tok = load_tokenizer("builtin:tiny-arith")
    tok.chat_template = THINKING_TEMPLATE
    return tok


class PromptSampler:
    """Records the decoded prompts it is given; answers 5."""

    backend = "hf"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.prompts: list[str] = []

    def sample(self, prompt_ids, *, n, seed, settings):
        self.prompts += [self.tokenizer.decode(ids) for ids in prompt_ids]
        return [[Completion("\\boxed{5}", 1, True)] * n for _ in prompt_ids]


def test_prompt_token_ids_is_the_training_prompt_with_template_arguments(tokenizer):
    from tapo.data import format_prompt

    ids = prompt_token_ids(tokenizer, "What is 2+3?", instruction="Answer.", chat_template_kwargs=NO_THINKING)
    messages = format_prompt("What is 2+3?", instruction="Answer.")
    assert ids == messages_prompt_ids(tokenizer, messages, enable_thinking=False)
    rollout = tokenizer.apply_chat_template(conversation=[messages], add_generation_prompt=True, tokenize=True,
                                            return_dict=True, **NO_THINKING)  # how TRL's GRPOTrainer templates
    assert ids == list(rollout["input_ids"][0])
    opened = "What is 2+3?\nAnswer.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert tokenizer.decode(ids).endswith(opened)
    assert not tokenizer.decode(prompt_token_ids(tokenizer, "What is 2+3?")).endswith("</think>\n\n")


def test_evaluate_prompts_with_the_settings_and_records_them(tmp_path, tokenizer):
    out = tmp_path / "eval"
    sampler = PromptSampler(tokenizer)
    options = dict(output_dir=out, protocol=PROTOCOL, limit=2, progress=False)
    result = evaluate("m", [BENCH], **options, sampler=sampler, instruction="Answer.", chat_template_kwargs=NO_THINKING)
    assert len(sampler.prompts) == 2
    assert all(p.endswith("Answer.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n") for p in sampler.prompts)
    saved = json.loads((out / "eval_config.json").read_text())["prompt"]
    assert saved == {"instruction": "Answer.", "system_prompt": None, "chat_template_kwargs": NO_THINKING}
    assert result["prompt"] == saved  # result.json says which prompt its numbers are for
    with pytest.raises(ValueError, match=r"prompt.chat_template_kwargs.enable_thinking: False -> None.*--overwrite"):
        evaluate("m", [BENCH], **options, sampler=PromptSampler(tokenizer), instruction="Answer.")
    with pytest.raises(ValueError, match=r"prompt.instruction: 'Answer.' -> None"):
        evaluate("m", [BENCH], **options, sampler=PromptSampler(tokenizer), chat_template_kwargs=NO_THINKING)
    again = PromptSampler(tokenizer)
    evaluate("m", [BENCH], **options, sampler=again, instruction="Answer.", chat_template_kwargs=NO_THINKING)
    assert again.prompts == []  # the same settings: resumed, nothing sampled again


def test_the_default_prompt_resumes_whichever_way_it_is_spelled(tmp_path, tokenizer):
    """An evaluation of an earlier version (no chat_template_kwargs recorded) resumes with the default prompt."""
    from tapo.data import DEFAULT_INSTRUCTION

    out = tmp_path / "eval"
    options = dict(output_dir=out, protocol=PROTOCOL, limit=2, progress=False)
    evaluate("m", [BENCH], **options, sampler=PromptSampler(tokenizer))
    config = json.loads((out / "eval_config.json").read_text())
    del config["prompt"]["chat_template_kwargs"]
    (out / "eval_config.json").write_text(json.dumps(config))
    again = PromptSampler(tokenizer)
    evaluate("m", [BENCH], **options, sampler=again, instruction=DEFAULT_INSTRUCTION, system_prompt="",
             chat_template_kwargs={})
    assert again.prompts == []


@pytest.mark.parametrize("bad, message", [({"enable_thinking"}, "chat_template_kwargs must be a mapping"),
                                          ({1: True}, "keys must be strings")])
def test_bad_template_arguments_are_refused_before_anything_runs(tmp_path, tokenizer, bad, message):
    with pytest.raises(ValueError, match=message):
        evaluate("m", [BENCH], output_dir=tmp_path / "eval", protocol=PROTOCOL, progress=False,
                 sampler=PromptSampler(tokenizer), chat_template_kwargs=bad)
    assert not (tmp_path / "eval").exists()


def test_cli_passes_instruction_and_template_arguments(tmp_path, monkeypatch):
    from tapo.cli import main
    from tapo.evaluation import run, tables

    seen = {}

    def recording(model, benchmarks, **kwargs):
        seen.update(kwargs)
        return {"model": model, "protocol": {}, "benchmarks": {}}

    monkeypatch.setattr(run, "evaluate", recording)
    monkeypatch.setattr(tables, "result_markdown", lambda result: "")
    code = main(["eval", "--model", "m", "--benchmarks", BENCH, "--output", str(tmp_path / "e"), "--instruction",
                 "Answer.", "--chat-template-kwargs", '{"enable_thinking": false}'])
    assert code == 0
    assert seen["instruction"] == "Answer." and seen["chat_template_kwargs"] == NO_THINKING


@pytest.mark.parametrize("text, message", [("{enable_thinking: false}", "not valid JSON"),
                                           ('["enable_thinking"]', "a JSON object")])
def test_cli_refuses_template_arguments_that_are_no_json_object(tmp_path, capsys, text, message):
    from tapo.cli import main

    assert main(["eval", "--model", "m", "--benchmarks", BENCH, "--output", str(tmp_path / "e"),
                 "--chat-template-kwargs", text]) == 2
    err = capsys.readouterr().err
    assert "--chat-template-kwargs" in err and message in err and "Traceback" not in err
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("kwargs", [{"enable_thinking": False}, '{"enable_thinking": false}'])
def test_training_prompt_reads_the_run_config(kwargs):
    from tapo.config import build_config
    from tapo.evaluation.run import training_prompt

    config = build_config({"data": {"instruction": "Answer.", "system_prompt": "Be brief."},
                           "trainer": {"chat_template_kwargs": kwargs}})
    assert training_prompt(config) == {"instruction": "Answer.", "system_prompt": "Be brief.",
                                       "chat_template_kwargs": NO_THINKING}
    assert training_prompt(build_config({}))["chat_template_kwargs"] == {}


def test_the_demo_evaluates_both_models_with_the_training_prompt(tmp_path, monkeypatch):
    from tapo import demo
    from tapo.evaluation import run

    coldstart = {"model": {"name": "builtin:tiny-arith"}, "data": {"source": "builtin:arithmetic", "n": 8}}
    train = {"algorithm": "tapo", "data": {"source": "builtin:arithmetic", "n": 8, "instruction": "Answer."},
             "trainer": {"chat_template_kwargs": NO_THINKING}}
    (tmp_path / "coldstart.yaml").write_text(yaml.safe_dump(coldstart))
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(train))
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump({
        "output_dir": str(tmp_path / "demo"), "coldstart": str(tmp_path / "coldstart.yaml"),
        "train": str(tmp_path / "train.yaml"), "eval": {"problems": 2, "backend": "hf"}}))
    plan = demo.load_demo(tmp_path / "demo.yaml")
    seen = []
    monkeypatch.setattr(run, "evaluate", lambda model, benchmarks, **kwargs: seen.append(kwargs))
    stages = {stage.name: stage for stage in demo.demo_stages(plan)}
    stages["eval of the cold-started model"].run(False)
    stages["eval of the TAPO model"].run(False)
    assert len(seen) == 2
    for kwargs in seen:
        assert kwargs["instruction"] == "Answer." and kwargs["chat_template_kwargs"] == NO_THINKING
        assert kwargs["system_prompt"] is None
