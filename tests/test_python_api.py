"""The README's Python snippet, run as a TRL user would run it (its own reward, data set and column names).

Only what cannot run here is substituted: the hub model becomes the cached built-in tiny model's folder,
and the run is made one short step on CPU.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- python-api:.*?-->\n```python\n(.*?)```", text, re.DOTALL)
    assert match, "the README lost its Python API snippet"
    return match.group(1)


def test_readme_snippet_trains_with_tapo(tmp_path, monkeypatch):
    from tapo.models import builtin_folder

    code = readme_snippet()
    substitutions = {
        '"Qwen/Qwen3-0.6B"': repr(str(builtin_folder("builtin:tiny-arith"))),
        '"runs/api"': repr(str(tmp_path / "api")),
        "max_completion_length=256,": 'max_completion_length=24, max_steps=1, per_device_train_batch_size=8, '
                                      'report_to=[], use_cpu=True, save_strategy="no", logging_steps=1,',
    }
    for old, new in substitutions.items():
        assert old in code, old
        code = code.replace(old, new)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the documented snippet itself
    trainer = scope["trainer"]
    assert trainer.state.global_step == 1
    logged = [row for row in trainer.state.log_history if "loss" in row]
    assert logged and "tapo/eligible_frac" in logged[0]
    row = scope["dataset"][0]
    assert trainer._question_of(row) == row["question"] and trainer._answer_of(row) == row["solution"]


def test_a_missing_configured_column_is_a_clear_error(tmp_path):
    from datasets import Dataset

    from tapo import TAPOConfig, TAPOTrainer
    from tapo.models import load_policy

    model, tokenizer = load_policy("builtin:tiny")
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": "What is 1 + 1?"}], "solution": "2"}])
    args = TAPOConfig(output_dir=str(tmp_path), question_column="question", report_to=[], use_cpu=True,
                      num_generations=2, per_device_train_batch_size=2, max_completion_length=8)
    with pytest.raises(ValueError, match=r"question_column 'question' is not a column .*prompt, solution"):
        TAPOTrainer(model=model, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)], args=args,
                    train_dataset=data, processing_class=tokenizer)
