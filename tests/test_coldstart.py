"""Cold start: pairing, mixing, the synthesis format round trip, the build, SFT masking, resume, and the hand-off
of the cold-start model to `tapo train`. Tiny models only; the real demo numbers are in benchmarks/coldstart_effect.py.
"""

from __future__ import annotations

import json
import random
import shutil

import pytest
import yaml

from tapo.coldstart.build import (
    REFERENCE,
    SYNTHETIC,
    build_coldstart,
    choose_pair,
    format_synthesis,
    mix_counts,
    synthesis_example,
)
from tapo.coldstart.config import ColdStartConfig, build_coldstart_config, load_coldstart_config
from tapo.config import ConfigError
from tapo.core import parse_synthesis
from tapo.data import format_prompt
from tapo.cli import main

TINY = {
    "seed": 0,
    "model": {"name": "builtin:tiny-arith"},
    "data": {"source": "builtin:arithmetic", "n": 12, "n_steps": 1, "max_operand": 9},
    "build": {
        "construction": "aligned", "samples": 2, "max_new_tokens": 24, "batch_size": 24,
        "positive_source": "either", "synthetic_negative": "unparsable",
    },
    "sft": {"learning_rate": 1e-4, "warmup_steps": 0, "max_steps": 2, "per_device_train_batch_size": 4,
            "save_steps": 1, "max_length": 256},
}


def _config(**sections) -> ColdStartConfig:
    raw = json.loads(json.dumps(TINY))
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values} if isinstance(values, dict) else values
    return build_coldstart_config(raw, where="test")


def _rows(path):
    return [json.loads(line) for line in open(path)]


# --- pure pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "analysis, reconstruction",
    [
        ("Step 2 multiplies wrong.", "Step 1: 3 + 4 = 7\nStep 2: 7 * 2 = 15\nWait, 7 * 2 is 14.\nThe answer is \\boxed{14}."),
        ("", "x = 1. Wait, let me double-check: x = 2, so \\boxed{2}."),
        ("Uses <b>tags</b> and braces {}.", "  leading and trailing space  "),
    ],
)
def test_synthesis_target_round_trips_through_parse_synthesis(analysis, reconstruction):
    assert parse_synthesis(format_synthesis(analysis, reconstruction)) == (analysis.strip(), reconstruction.strip())


def test_choose_pair_sources_and_eligibility():
    rng = random.Random(0)
    # policy: needs n_pos right and n_neg wrong samples; y+ is one of the right ones
    assert choose_pair([0, 0, 0], n_pos=1, n_neg=1, positive_source="policy", synthetic_always=False, rng=rng) is None
    mine = choose_pair([1, 0, 0, 1], n_pos=2, n_neg=2, positive_source="policy", synthetic_always=False, rng=rng)
    assert mine.negative in (1, 2) and mine.positive in (0, 3)
    # reference: only wrong samples are needed
    ref = choose_pair([0, 0, 0], n_pos=1, n_neg=2, positive_source="reference", synthetic_always=False, rng=rng)
    assert ref.positive == REFERENCE and ref.negative in (0, 1, 2)
    assert choose_pair([1, 1, 0], n_pos=1, n_neg=2, positive_source="reference", synthetic_always=False, rng=rng) is None
    # either: the policy's own y+ when it has n_pos of them, else the reference
    assert choose_pair([1, 0], n_pos=1, n_neg=1, positive_source="either", synthetic_always=False, rng=rng).positive == 0
    assert choose_pair([0, 0], n_pos=1, n_neg=1, positive_source="either", synthetic_always=False, rng=rng).positive == REFERENCE
    # synthetic y- and reference y+: no sample needed at all
    assert choose_pair([], n_pos=1, n_neg=4, positive_source="reference", synthetic_always=True, rng=rng) == (
        choose_pair([], n_pos=1, n_neg=4, positive_source="reference", synthetic_always=True, rng=rng)
    )
    assert choose_pair([], n_pos=1, n_neg=4, positive_source="reference", synthetic_always=True, rng=rng).negative == SYNTHETIC


def test_mix_counts_follow_the_ratio():
    assert mix_counts(12, {"trajectory": 2, "synthesis": 1}) == {"trajectory": 12, "synthesis": 6, "plain": 0, "locate": 0}
    assert mix_counts(12, {"trajectory": 1, "synthesis": 1}) == {"trajectory": 12, "synthesis": 12, "plain": 0, "locate": 0}
    assert mix_counts(12, {"synthesis": 1}) == {"trajectory": 0, "synthesis": 12, "plain": 0, "locate": 0}
    assert mix_counts(0, {"trajectory": 2, "synthesis": 1}) == {"trajectory": 0, "synthesis": 0, "plain": 0, "locate": 0}
    assert mix_counts(12, {"trajectory": 2, "plain": 1}) == {"trajectory": 12, "synthesis": 0, "plain": 6, "locate": 0}
    assert mix_counts(12, {"trajectory": 1, "locate": 1}) == {"trajectory": 12, "synthesis": 0, "plain": 0, "locate": 12}


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="build.*positive_sorce"):
        build_coldstart_config({"build": {"positive_sorce": "reference"}}, where="x.yaml")
    with pytest.raises(ConfigError, match="x.yaml.*sft.*learning_rat"):
        build_coldstart_config({"sft": {"learning_rat": 1e-5}}, where="x.yaml")
    with pytest.raises(ConfigError, match="aligned.*arithmetic"):
        build_coldstart_config({"data": {"source": "some/hub-set"}, "build": {"construction": "aligned"}}, where="x")
    with pytest.raises(ConfigError, match="teacher.base_url"):
        build_coldstart_config({"build": {"construction": "teacher"}}, where="x")
    with pytest.raises(ConfigError, match="completion_only_loss"):
        build_coldstart_config({"sft": {"completion_only_loss": False}}, where="x")


def test_demo_recipe_loads_with_overrides():
    config = load_coldstart_config("recipes/coldstart-demo.yaml", ["build.samples=2", "sft.learning_rate=3e-5"])
    assert config.model.name == "builtin:smollm2-135m-instruct" and config.build.construction == "aligned"
    assert config.build.samples == 2 and config.sft["learning_rate"] == 3e-5
    assert config.build.positive_source == "reference" and config.build.synthetic_negative == "always"
    assert config.build.mix.get("plain", 0) > 0  # the demo's cold start does not teach reflecting on every answer
    # the synthesis examples use the template TAPO's `self` construction sends in the demo
    train = yaml.safe_load(open("recipes/demo.yaml"))
    assert config.build.self_template == train["tapo"]["synthesis_template"] == "recipes/demo-synthesis.txt"


# --- the build ------------------------------------------------------------------------------------


def test_build_with_aligned_on_a_tiny_model(tmp_path):
    out = tmp_path / "data.jsonl"
    stats = build_coldstart(_config(), output=out)
    rows = _rows(out)
    saved = json.loads(out.with_suffix(".stats.json").read_text())
    assert saved == stats and yaml.safe_load(out.with_suffix(".config.yaml").read_text())["build"]["construction"] == "aligned"
    assert stats["queries"] == 12 and stats["eligible"] >= 1
    assert stats["kept"] <= stats["constructed"] <= stats["eligible"] <= stats["queries"]
    traj = [r for r in rows if r["kind"] == "trajectory"]
    syn = [r for r in rows if r["kind"] == "synthesis"]
    assert len(traj) == stats["kept"] == stats["examples"]["trajectory"]
    assert len(syn) == round(stats["kept"] / 2) == stats["examples"]["synthesis"]  # 2 : 1
    from tapo.rewards import is_correct

    for row in traj:
        assert row["prompt"] == format_prompt(row["prompt"][-1]["content"].split("\n")[0])  # the training prompt
        text = row["completion"][0]["content"]
        assert is_correct(text, row["answer"]), text  # only right constructions go in
        assert "Wait" in text or "Let me work" in text
    for row in syn:
        analysis, reconstruction = parse_synthesis(row["completion"][0]["content"])
        assert reconstruction.startswith(row["negative"].split("\n")[0][:5])  # y-'s own start is kept
        assert row["negative"] in row["prompt"][0]["content"] and row["positive"] in row["prompt"][0]["content"]
        assert analysis.startswith("The first critical mistake is in step")
    # the same config and seed give the same data
    again = tmp_path / "again.jsonl"
    build_coldstart(_config(), output=again)
    assert again.read_text() == out.read_text()


def test_build_without_sampling_uses_synthetic_negatives(tmp_path):
    config = _config(build={"samples": 0, "synthetic_negative": "always", "positive_source": "reference",
                            "mix": {"trajectory": 1, "synthesis": 1}})
    stats = build_coldstart(config, output=tmp_path / "d.jsonl")
    assert stats["eligible"] == stats["kept"] == 12 and stats["negative_source"] == {"synthetic": 12}
    assert stats["examples"] == {"trajectory": 12, "synthesis": 12, "plain": 0, "locate": 0}


def test_plain_examples_are_the_right_answer_without_reflection(tmp_path):
    config = _config(build={"samples": 0, "synthetic_negative": "always", "positive_source": "reference",
                            "mix": {"trajectory": 2, "plain": 1}})
    stats = build_coldstart(config, output=tmp_path / "d.jsonl")
    assert stats["examples"] == {"trajectory": 12, "synthesis": 0, "plain": 6, "locate": 0}
    plain = [r for r in _rows(tmp_path / "d.jsonl") if r["kind"] == "plain"]
    trajectories = {r["query_id"]: r for r in _rows(tmp_path / "d.jsonl") if r["kind"] == "trajectory"}
    for row in plain:
        text = row["completion"][0]["content"]
        assert text == row["positive"] and "Wait" not in text
        assert row["prompt"] == trajectories[row["query_id"]]["prompt"]  # the ordinary training prompt


def test_locate_examples_quote_y_minus_first_wrong_step_where_splice_cuts(tmp_path):
    """A locate example teaches splice's `ask` answer: its quote is y-'s first wrong step as the task
    diagnoses it, and the trainer's `find_quote_end` ends the cut exactly where that step ends."""
    from tapo.core.synthesis import find_quote_end, parse_locate
    from tapo.data.arithmetic import diagnose_steps, parse_question

    (tmp_path / "locate.txt").write_text("L: $question | $negative | $positive")
    config = _config(build={"samples": 0, "synthetic_negative": "always", "positive_source": "reference",
                            "mix": {"trajectory": 1, "locate": 1}, "locate_template": str(tmp_path / "locate.txt")})
    stats = build_coldstart(config, output=tmp_path / "d.jsonl")
    rows = [r for r in _rows(tmp_path / "d.jsonl") if r["kind"] == "locate"]
    assert stats["examples"]["locate"] == len(rows) == 12 - stats["locate_without_quote"] > 0
    for row in rows:
        [prompt] = row["prompt"]
        question = prompt["content"].removeprefix("L: ").split(" | ")[0]
        assert prompt == {"role": "user", "content": f"L: {question} | {row['negative']} | {row['positive']}"}
        quote, analysis = parse_locate(row["completion"][0]["content"])
        step = diagnose_steps(parse_question(question), row["negative"]).step
        assert quote == row["quote"] == row["negative"][step.span[0]:step.span[1]].strip()
        assert find_quote_end(quote, row["negative"]) == step.span[0] + len(quote)
        assert analysis.startswith("The first critical mistake is in step 1")


def test_locate_examples_need_aligned_constructions_and_a_template_that_exists(tmp_path):
    with pytest.raises(ConfigError, match=r"build.mix.locate needs construction: aligned"):
        _config(build={"construction": "self", "mix": {"trajectory": 1, "locate": 1}})
    with pytest.raises(ConfigError, match=r"build.locate_template: file not found: nowhere.txt"):
        _config(build={"locate_template": "nowhere.txt"})


def test_mix_with_an_unknown_kind_is_an_error():
    with pytest.raises(ConfigError, match=r"build.mix must map trajectory, synthesis, plain and/or locate"):
        _config(build={"mix": {"trajectory": 1, "plan": 1}})


def test_synthesis_example_is_dropped_when_it_would_not_round_trip():
    from tapo.core.types import ConstructedTrajectory, ConstructionPair, ConstructionRequest

    pair = ConstructionPair("q", 0, -1)
    request = ConstructionRequest(pair, "What is 1 + 1?", "1 + 1 = 3", (), "1 + 1 = 2", "2")
    bad = ConstructedTrajectory(pair, "self", "text </reconstruction> more", (), "a", 0, 0, 0)
    good = ConstructedTrajectory(pair, "self", "1 + 1 = 3. Wait, \\boxed{2}", (), "a", 0, 0, 0)
    assert synthesis_example(request, bad, {}, template="$question $negative $positive") is None
    example = synthesis_example(request, good, {}, template="Q: $question N: $negative P: $positive")
    assert example["prompt"] == [{"role": "user", "content": "Q: What is 1 + 1? N: 1 + 1 = 3 P: 1 + 1 = 2"}]


# --- SFT -------------------------------------------------------------------------------------------


def test_sft_masks_the_prompt(tmp_path):
    from tapo.engine.sft import build_sft_trainer

    data = tmp_path / "d.jsonl"
    config = _config(build={"samples": 0, "synthetic_negative": "always", "positive_source": "reference"},
                     data={"n": 4}, sft={"max_length": 4096})  # long enough for the synthesis prompts
    build_coldstart(config, output=data)
    trainer = build_sft_trainer(config, data=data, output_dir=tmp_path / "run")
    tokenizer = trainer.processing_class
    rows = _rows(data)
    assert len(trainer.train_dataset) == len(rows) == 6 and {r["kind"] for r in rows} == {"trajectory", "synthesis"}
    for index in range(len(rows)):
        batch = trainer.data_collator([trainer.train_dataset[index]])
        ids, labels = batch["input_ids"][0], batch["labels"][0]  # [L], [L]
        trained = (labels != -100).nonzero().flatten()
        first = int(trained[0])
        prompt_text = tokenizer.apply_chat_template(rows[index]["prompt"], tokenize=False, add_generation_prompt=True)
        assert tokenizer.decode(ids[:first]) == prompt_text  # every prompt token is masked ...
        assert bool((labels[first:] != -100).all())  # ... and every completion token trained
        assert rows[index]["completion"][0]["content"] in tokenizer.decode(ids[first:])


def test_sft_rejects_bad_rows_with_file_and_row(tmp_path):
    from tapo.engine.sft import read_sft_rows
    from tapo.data import DataError

    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": [{"role": "user", "content": "hi"}], "completion": []}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl row 1: 'completion'"):
        read_sft_rows(path)


def test_coldstart_cli_run_resume_and_handoff_to_tapo_train(tmp_path, capsys):
    """`tapo coldstart run` on the tiny model; a resumed run logs every step once; `tapo train` takes DIR/model.

    In-process `tapo.cli.main` (the console script's entry point; tests/test_cli.py runs the script itself).
    """
    config = tmp_path / "cs.yaml"
    raw = json.loads(json.dumps(TINY))
    raw["model"] = {"name": "builtin:tiny"}
    raw["build"].update(samples=0, synthetic_negative="always", positive_source="reference",
                        mix={"trajectory": 1})
    config.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "cs"
    assert main(["coldstart", "run", "--config", str(config), "--output-dir", str(run_dir)]) == 0
    assert (run_dir / "model" / "config.json").is_file() and (run_dir / "data.jsonl").is_file()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["sft"]["max_steps"] == 2
    first_metrics = [json.loads(line)["step"] for line in open(run_dir / "metrics.jsonl")]
    assert first_metrics[:2] == [1, 2]

    # An interruption after checkpoint-1: the model and checkpoint-2 are gone; --resume finishes the run.
    shutil.rmtree(run_dir / "model")
    shutil.rmtree(run_dir / "checkpoint-2")
    train_args = ["coldstart", "train", "--config", str(config), "--data", str(run_dir / "data.jsonl"),
                  "--output-dir", str(run_dir)]
    assert main(train_args) == 2 and "--resume" in capsys.readouterr().err  # a run is never overwritten
    assert main([*train_args, "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in open(run_dir / "metrics.jsonl") if "loss" in line]
    assert steps == [1, 2]
    assert (run_dir / "model" / "tokenizer_config.json").is_file()

    # tapo train loads the cold-start model folder: one real step of TAPO on it
    assert main(["train", "--config", "recipes/tiny-tapo.yaml", "--set", f"model.name={run_dir / 'model'}",
                 "--set", "trainer.max_steps=1", "--output-dir", str(tmp_path / "tapo")]) == 0
    assert (tmp_path / "tapo" / "model" / "config.json").is_file()
    assert yaml.safe_load((tmp_path / "tapo" / "config.yaml").read_text())["model"]["name"] == str(run_dir / "model")


def test_coldstart_effect_benchmark_smoke(tmp_path, capsys):
    """benchmarks/coldstart_effect.py --smoke: build, train, and the before/after table on builtin:tiny."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("coldstart_effect", "benchmarks/coldstart_effect.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--smoke", "--output-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "coldstart_effect.json").read_text())
    assert set(result["before"]) == set(result["after"]) == {"pass_rate", "synthesis_parsed", "synthesis_right"}
    assert result["examples"]["trajectory"] == 6 and (tmp_path / "run" / "model" / "config.json").is_file()
    assert "before" in capsys.readouterr().out


# --- no config, empty data, nothing kept (issue 16, items 15 and 10) ----------------------------------------


@pytest.mark.parametrize("step", ["build", "run", "train"])
def test_coldstart_without_a_config_is_refused_before_any_work(tmp_path, monkeypatch, capsys, step):
    import tapo.sampling as sample

    monkeypatch.chdir(tmp_path)  # the default output_dir, runs/coldstart, would land here
    monkeypatch.setattr(sample, "make_sampler", lambda *a, **k: pytest.fail("a model was loaded without a config"))
    assert main(["coldstart", step, "--set", "model.name=builtin:tiny"]) == 2
    err = capsys.readouterr().err
    assert f"{step}: --config is required" in err and "recipes/coldstart-demo.yaml" in err
    assert list(tmp_path.iterdir()) == []
    assert main(["coldstart", "build", "--dry-run"]) == 0  # the defaults can still be looked at


def test_coldstart_build_that_keeps_nothing_says_so_and_run_does_not_train(tmp_path, capsys):
    raw = json.loads(json.dumps(TINY))
    raw["model"] = {"name": "builtin:tiny"}  # untrained: never right, so no query has a y+ of its own
    raw["data"]["n"] = 4
    raw["build"].update(positive_source="policy", synthetic_negative="never", samples=2, max_new_tokens=6)
    config = tmp_path / "cs.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["coldstart", "build", "--config", str(config), "--output", str(tmp_path / "d.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "nothing was kept" in err and "d.jsonl is empty: none of the 4 queries could be paired: no sample was right" in err
    assert (tmp_path / "d.jsonl").read_text() == ""
    assert main(["coldstart", "run", "--config", str(config), "--output-dir", str(tmp_path / "run")]) == 1
    assert "nothing was kept" in capsys.readouterr().err
    assert not (tmp_path / "run" / "model").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_coldstart_build_of_empty_data_is_an_error_before_anything_is_written(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    config = _config(data={"source": str(empty)}, build={"positive_source": "policy", "synthetic_negative": "never",
                                                         "construction": "self"})
    with pytest.raises(ValueError, match=r"no queries: data\.source '.*empty\.jsonl' has no rows"):
        build_coldstart(config, output=tmp_path / "out" / "data.jsonl")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "stats, why",
    [
        ({"eligible": 0, "sample_pass_rate": 1.0}, "every sample was right (sample pass rate 1), so there is no y-"),
        ({"eligible": 0, "sample_pass_rate": 0.5}, "too few right and wrong samples per query (sample pass rate 0.5"),
        ({"eligible": 3, "constructed": 0, "failed": {"no_step": 3}}, 'all 3 constructions failed ({"no_step": 3})'),
        ({"eligible": 3, "constructed": 2, "kept": 0}, "none of the 2 constructed trajectories ends with the right answer"),
    ],
)
def test_nothing_kept_names_the_stage_that_lost_everything(stats, why):
    from tapo.coldstart.build import nothing_kept

    base = {"examples": {"trajectory": 0, "synthesis": 0}, "queries": 4, "samples_per_query": 2, "failed": {},
            "constructed": 0, "kept": 0, "sample_pass_rate": 0.5}
    assert why in nothing_kept({**base, **stats})
    assert nothing_kept({**base, **stats, "examples": {"trajectory": 1}}) is None


def test_sft_data_with_a_bom_is_read_and_latin1_names_the_row(tmp_path):
    from tapo.engine.sft import read_sft_rows

    row = {"prompt": [{"role": "user", "content": "Café?"}], "completion": [{"role": "assistant", "content": "oui"}]}
    path = tmp_path / "sft.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    assert read_sft_rows(path) == [row]
    path.write_bytes((json.dumps(row) + "\n" + json.dumps(row, ensure_ascii=False) + "\n").encode("latin-1"))
    with pytest.raises(ValueError, match=r"sft\.jsonl row 2: not UTF-8 text \(byte 0xe9"):
        read_sft_rows(path)
