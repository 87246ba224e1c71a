"""Cold-start config checks at load (`tapo.coldstart.config.build_coldstart_config`), which the dry run and the
real build both go through: what used to surface only after the sampling stage, or as a raw error, is named
here with the file and the dotted key.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tapo.cli import main
from tapo.coldstart.config import build_coldstart_config, load_coldstart_config
from tapo.config import ConfigError

WHERE = "config.yaml"
# no sampling, no model call: the build's own checks are what is tested
BASE = {
    "model": {"name": "builtin:tiny"},
    "data": {"source": "builtin:arithmetic", "n": 4, "n_steps": 1, "max_operand": 9},
    "build": {"construction": "aligned", "samples": 0, "positive_source": "reference",
              "synthetic_negative": "always"},
}


def _raw(build: dict | None = None, sft: dict | None = None) -> dict:
    raw = json.loads(json.dumps(BASE))
    raw["build"].update(build or {})
    if sft is not None:
        raw["sft"] = sft
    return raw


def _refused(build: dict | None = None, sft: dict | None = None) -> str:
    with pytest.raises(ConfigError) as error:
        build_coldstart_config(_raw(build, sft), where=WHERE)
    return str(error.value)


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: a refused config must stop before any expensive work."""
    import tapo.sampling as sampling

    monkeypatch.setattr(sampling, "make_sampler", lambda *a, **k: pytest.fail("a model was loaded"))


def _write(tmp_path, raw: dict):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# --- 1. templates: placeholders checked at load, naming the key and the file --------------------------------


@pytest.mark.parametrize("key, prompt", [("self_template", "self synthesis template"),
                                         ("locate_template", "locate template")])
def test_a_template_without_negative_is_refused_at_load(tmp_path, key, prompt):
    bad = tmp_path / "bad.txt"
    bad.write_text("Question: $question\nRight: $positive\n")
    message = _refused({key: str(bad)})
    assert message == f"{WHERE}: build.{key}: {bad}: {prompt} lacks the placeholder(s) $negative"


def test_a_template_with_a_stray_dollar_or_unknown_placeholder_is_refused(tmp_path):
    stray = tmp_path / "stray.txt"
    stray.write_text("$question $negative $positive costs $5\n")
    assert "build.self_template" in _refused({"self_template": str(stray)}) and "$$" in _refused(
        {"self_template": str(stray)})
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("$question $negative $positive $answer\n")
    assert "build.locate_template" in (message := _refused({"locate_template": str(unknown)}))
    assert "unknown placeholder(s) $answer" in message


def test_a_missing_template_file_names_the_key_and_the_set(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(ConfigError) as error:
        load_coldstart_config(None, [f"build.self_template={missing}"])
    assert str(error.value) == (f"command line: build.self_template: file not found: {missing} "
                                f"(from --set build.self_template={missing})")


def test_the_recipe_templates_load():
    config = load_coldstart_config("recipes/coldstart-demo.yaml", ["build.mix.locate=1",
                                                                   "build.locate_template=recipes/demo-locate.txt"])
    assert config.build.self_template == "recipes/demo-synthesis.txt"
    assert config.build.locate_template == "recipes/demo-locate.txt"


def test_the_real_build_refuses_a_bad_template_before_loading_a_model(tmp_path, capsys, no_model):
    bad = tmp_path / "bad.txt"
    bad.write_text("$question $positive\n")
    config = _write(tmp_path, _raw({"samples": 2, "positive_source": "policy"}))
    out = tmp_path / "d.jsonl"
    argv = ["coldstart", "build", "--config", str(config), "--output", str(out), "--set", f"build.self_template={bad}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{config}: build.self_template: {bad}: self synthesis template lacks the placeholder(s) $negative" in err
    assert not out.exists()


# --- 2. synthesis sampling options: range-checked under their own keys --------------------------------------


@pytest.mark.parametrize("key, value, expected", [
    ("synthesis_top_p", 1.5, "build.synthesis_top_p must be in (0, 1], got 1.5"),
    ("synthesis_top_p", 0, "build.synthesis_top_p must be in (0, 1], got 0"),
    ("synthesis_temperature", -0.5, "build.synthesis_temperature must be >= 0, got -0.5"),
    ("synthesis_max_new_tokens", 0, "build.synthesis_max_new_tokens must be a positive integer, got 0"),
])
def test_synthesis_sampling_options_are_range_checked(key, value, expected):
    assert _refused({"construction": "self", key: value}) == f"{WHERE}: {expected}"


def test_synthesis_sampling_options_in_range_load():
    raw = _raw({"construction": "self", "synthesis_top_p": 1, "synthesis_temperature": 0,
                "synthesis_max_new_tokens": 1})
    build = build_coldstart_config(raw, where=WHERE).build
    assert (build.synthesis_top_p, build.synthesis_temperature, build.synthesis_max_new_tokens) == (1, 0, 1)


def test_the_dry_run_names_the_synthesis_key(capsys):
    assert main(["coldstart", "build", "--config", "recipes/coldstart-demo.yaml", "--dry-run",
                 "--set", "build.synthesis_top_p=1.5"]) == 2
    assert "recipes/coldstart-demo.yaml: build.synthesis_top_p must be in (0, 1], got 1.5" in capsys.readouterr().err


# --- 3. n_pos / n_neg that no query's samples can meet ------------------------------------------------------


@pytest.mark.parametrize("build, head", [
    ({"positive_source": "policy", "synthetic_negative": "never", "samples": 2, "n_pos": 2, "n_neg": 1},
     "build.n_pos + build.n_neg (2 + 1) must be <= build.samples (2)"),
    ({"positive_source": "policy", "synthetic_negative": "unparsable", "samples": 4, "n_pos": 2, "n_neg": 4},
     "build.n_pos + build.n_neg (2 + 4) must be <= build.samples (4)"),
    # select_pairs draws y- from the wrong samples, so n_neg 0 still needs one
    ({"positive_source": "policy", "synthetic_negative": "never", "samples": 2, "n_pos": 2, "n_neg": 0},
     "build.n_pos + build.n_neg (2 + 1) must be <= build.samples (2) (build.n_neg 0 still needs one wrong sample"),
    # y- is synthetic: only the policy's right samples are needed
    ({"positive_source": "policy", "synthetic_negative": "always", "samples": 1, "n_pos": 2},
     "build.n_pos (2) must be <= build.samples (1)"),
    # a reference y+ (or either's fallback to it) still needs n_neg wrong samples
    ({"positive_source": "reference", "synthetic_negative": "never", "samples": 2, "n_neg": 3},
     "build.n_neg (3) must be <= build.samples (2)"),
    ({"positive_source": "either", "synthetic_negative": "unparsable", "samples": 2, "n_pos": 1, "n_neg": 3},
     "build.n_neg (3) must be <= build.samples (2)"),
])
def test_pairing_thresholds_no_query_can_meet_are_refused(build, head):
    message = _refused(build)
    assert message.startswith(f"{WHERE}: {head}") and "the build would keep nothing" in message


@pytest.mark.parametrize("build", [
    {"positive_source": "policy", "synthetic_negative": "never", "samples": 3, "n_pos": 2, "n_neg": 1},
    {"positive_source": "policy", "synthetic_negative": "always", "samples": 2, "n_pos": 2, "n_neg": 4},
    # either falls back to the reference y+ when a query lacks n_pos right samples
    {"positive_source": "either", "synthetic_negative": "never", "samples": 2, "n_pos": 2, "n_neg": 1},
    {"positive_source": "either", "synthetic_negative": "always", "samples": 1, "n_pos": 4, "n_neg": 4},
    {"positive_source": "reference", "synthetic_negative": "always", "samples": 0, "n_pos": 4, "n_neg": 4},
])
def test_pairing_thresholds_some_query_can_meet_load(build):
    assert build_coldstart_config(_raw(build), where=WHERE).build.samples == build["samples"]


def test_the_paper_recipe_thresholds_load():
    build = load_coldstart_config("recipes/paper/coldstart.yaml").build
    assert build.positive_source == "policy" and build.n_pos + build.n_neg <= build.samples


# --- 4. sft values: TRL SFTConfig field types ---------------------------------------------------------------


def test_an_sft_value_of_the_wrong_type_names_the_key():
    assert _refused(sft={"learning_rate": "abc"}) == f"{WHERE}: sft.learning_rate must be a number, got 'abc'"


def test_every_wrong_sft_type_is_reported_with_its_set():
    with pytest.raises(ConfigError) as error:
        load_coldstart_config(None, ["sft.learning_rate=abc", "sft.per_device_train_batch_size=1.5",
                                     "sft.bf16=maybe"])
    lines = str(error.value).splitlines()
    assert lines == [
        "command line: sft.learning_rate must be a number, got 'abc' (from --set sft.learning_rate=abc)",
        "command line: sft.per_device_train_batch_size must be an integer, got 1.5 "
        "(from --set sft.per_device_train_batch_size=1.5)",
        "command line: sft.bf16 must be true or false or null, got 'maybe' (from --set sft.bf16=maybe)",
    ]


def test_sft_values_of_the_field_types_load():
    sft = {"learning_rate": 1e-4, "num_train_epochs": 1, "lr_scheduler_type": "linear", "report_to": [],
           "max_length": None, "bf16": False, "save_strategy": "no", "gradient_accumulation_steps": 2}
    assert build_coldstart_config(_raw(sft=sft), where=WHERE).sft == sft


def test_the_dry_run_and_the_real_run_name_a_bad_sft_value(tmp_path, capsys, no_model):
    dry = ["coldstart", "build", "--config", "recipes/coldstart-demo.yaml", "--dry-run",
           "--set", "sft.learning_rate=abc"]
    assert main(dry) == 2
    err = capsys.readouterr().err
    assert "recipes/coldstart-demo.yaml: sft.learning_rate must be a number, got 'abc'" in err
    assert "format code" not in err
    run = ["coldstart", "run", "--config", "recipes/coldstart-demo.yaml", "--output-dir", str(tmp_path / "cs"),
           "--set", "sft.learning_rate=abc"]
    assert main(run) == 2
    assert "sft.learning_rate must be a number, got 'abc'" in capsys.readouterr().err
    assert not (tmp_path / "cs").exists()
