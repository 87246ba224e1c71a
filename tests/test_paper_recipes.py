"""The paper's GPU recipes load and validate here, with no GPU and no network, and carry the paper's numbers."""

from __future__ import annotations

import pytest
import yaml

from tapo.cli import main

PAPER = "recipes/paper"


def _yaml(name: str) -> dict:
    with open(f"{PAPER}/{name}") as f:
        return yaml.safe_load(f)


@pytest.fixture
def no_downloads(monkeypatch):
    """Any attempt to fetch a model, tokenizer or data set fails the test."""
    import datasets
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError(f"a dry run tried to fetch {args[:1]}")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer, transformers.AutoConfig):
        monkeypatch.setattr(cls, "from_pretrained", refuse)


def test_tapo_recipe_dry_run_offline(no_downloads, capsys):
    assert main(["train", "--config", f"{PAPER}/tapo.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "config OK: algorithm=tapo" in out
    assert "TAPOConfig OK" in out and "vLLM on (colocate)" in out
    assert "runs/paper/filter/kept.jsonl (not there yet" in out


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["train", "--config", f"{PAPER}/grpo.yaml", "--dry-run"], "GRPOConfig OK"),
        (["train", "--config", f"{PAPER}/sdpo.yaml", "--dry-run"], "SDPOConfig OK"),
        (["coldstart", "build", "--config", f"{PAPER}/coldstart.yaml", "--dry-run"], "SFTConfig OK"),
        (["filter", "--config", f"{PAPER}/filter.yaml", "--dry-run"], "keep pass rate in [0.125, 0.875]"),
    ],
)
def test_other_paper_recipes_dry_run(argv, expect, no_downloads, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert expect in out
    if "coldstart" in argv:
        assert "hub model Qwen/Qwen3-8B (not fetched)" in out
        assert "hub dataset agentica-org/DeepScaleR-Preview-Dataset (split train; not fetched)" in out


def test_hub_data_is_named_not_fetched(no_downloads, capsys):
    argv = ["train", "--config", f"{PAPER}/tapo.yaml", "--dry-run",
            "--set", "model.name=Qwen/Qwen3-8B", "--set", "data.source=agentica-org/DeepScaleR-Preview-Dataset"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "model: hub model Qwen/Qwen3-8B (not fetched)" in out
    assert "data: hub dataset agentica-org/DeepScaleR-Preview-Dataset (split train; not fetched)" in out


def test_bad_engine_values_fail_the_dry_run_with_the_file(capsys):
    assert main(["train", "--config", f"{PAPER}/tapo.yaml", "--dry-run", "--set", "trainer.num_generations=6"]) == 2
    err = capsys.readouterr().err
    assert "recipes/paper/tapo.yaml" in err and "divisible" in err  # 32 completions cannot form groups of 6
    assert main(["coldstart", "build", "--config", f"{PAPER}/coldstart.yaml", "--dry-run",
                 "--set", "sft.lr_scheduler_type=wobbly"]) == 2
    assert "wobbly" in capsys.readouterr().err


def test_paper_hyperparameters():
    """DESIGN section 1: lr 1e-6 cosine, K = 8, 32 queries per step (8 GPUs), n_pos 2 / n_neg 4 / m_max 4,
    lambda 1, OTS [0.01, 10], synthesis at 0.7 / 0.95 / +512; cold start lr 5e-6, 50 warm-up, cosine, 3 epochs."""
    tapo, grpo = _yaml("tapo.yaml"), _yaml("grpo.yaml")
    trainer = tapo["trainer"]
    assert trainer["learning_rate"] == 1e-6 and trainer["lr_scheduler_type"] == "cosine"
    assert trainer["num_generations"] == 8 and trainer["use_vllm"] is True
    completions_per_step = trainer["per_device_train_batch_size"] * trainer["gradient_accumulation_steps"] * 8
    assert completions_per_step // trainer["num_generations"] == 32
    assert tapo["tapo"] == {**tapo["tapo"], "n_pos": 2, "n_neg": 4, "m_max": 4, "ref_loss_weight": 1.0,
                            "ots_w_min": 0.01, "ots_w_max": 10.0, "synthesis_temperature": 0.7,
                            "synthesis_top_p": 0.95, "synthesis_extra_tokens": 512}
    assert grpo["algorithm"] == "grpo" and "tapo" not in grpo
    assert {k: v for k, v in grpo.items() if k not in ("algorithm", "output_dir")} == {
        k: v for k, v in tapo.items() if k not in ("algorithm", "output_dir", "tapo")
    }
    cold = _yaml("coldstart.yaml")
    assert cold["sft"] == {**cold["sft"], "learning_rate": 5e-6, "warmup_steps": 50, "lr_scheduler_type": "cosine",
                           "num_train_epochs": 3}
    assert cold["build"]["mix"] == {"trajectory": 2, "synthesis": 1}
    assert cold["data"]["source"] == "agentica-org/DeepScaleR-Preview-Dataset"
    assert (cold["data"]["problem_key"], cold["data"]["answer_key"]) == ("problem", "answer")
    flt = _yaml("filter.yaml")
    assert (flt["filter"]["samples"], flt["filter"]["low"], flt["filter"]["high"]) == (8, 0.125, 0.875)
    # the steps hand over through files: cold start -> filter -> TAPO / GRPO
    assert flt["model"]["name"] == tapo["model"]["name"] == f"{cold['output_dir']}/model"
    assert tapo["data"]["source"] == f"{flt['output_dir']}/kept.jsonl"


def test_sdpo_recipe_is_the_grpo_recipe_with_sdpos_defaults(no_downloads, capsys):
    """Same model, data, seed and engine settings as the GRPO baseline; its `sdpo:` values are TRL's
    SDPOConfig defaults; prompts kept whole (GRPOConfig never cuts them, SDPOConfig would at 512 tokens)."""
    from dataclasses import fields

    from tapo.engine.arguments import SDPOConfig, sdpo_option_names

    sdpo, grpo = _yaml("sdpo.yaml"), _yaml("grpo.yaml")
    assert sdpo["algorithm"] == "sdpo" and sdpo["trainer"].pop("max_prompt_length", "unset") is None
    assert {k: v for k, v in sdpo.items() if k not in ("algorithm", "output_dir", "sdpo")} == {
        k: v for k, v in grpo.items() if k not in ("algorithm", "output_dir")
    }
    defaults = {f.name: f.default for f in fields(SDPOConfig) if f.name in sdpo_option_names()}
    assert sdpo["sdpo"] and sdpo["sdpo"] == {key: defaults[key] for key in sdpo["sdpo"]}
    assert main(["train", "--config", f"{PAPER}/sdpo.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "config OK: algorithm=sdpo" in out and "vLLM on (colocate)" in out
    assert "sdpo: teacher ema, sampled_token distillation, weight 1; the teacher sees successful rollouts" in out
