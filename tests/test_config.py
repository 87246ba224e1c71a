"""Run configuration: recipes load, unknown or misplaced keys are named, `--set` overrides, save/load round trip."""

from pathlib import Path

import pytest
import yaml

from tapo.config import (
    ConfigError,
    DataSection,
    ModelSection,
    RunConfig,
    apply_overrides,
    build_config,
    load_config,
    parse_override,
    save_config,
)

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
TINY = RECIPES / "tiny-grpo.yaml"


def write(tmp_path: Path, mapping_or_text, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    text = mapping_or_text if isinstance(mapping_or_text, str) else yaml.safe_dump(mapping_or_text)
    path.write_text(text)
    return path


def minimal(**sections) -> dict:
    return {"algorithm": "tapo", "model": {"name": "builtin:tiny"}, **sections}


# --- recipes -------------------------------------------------------------------------------------------------


def test_tiny_grpo_recipe_loads_with_its_values():
    config = load_config(TINY)
    assert config.algorithm == "grpo"
    assert config.output_dir == "runs/tiny-grpo"
    assert config.model == ModelSection(name="builtin:tiny", dtype="float32")
    assert (config.data.source, config.data.n, config.data.n_steps, config.data.max_operand) == (
        "builtin:arithmetic",
        64,
        1,
        9,
    )
    assert config.data.split == DataSection().split  # unset keys keep their defaults
    assert config.trainer["num_generations"] == 4
    assert config.trainer["learning_rate"] == 1e-4 and isinstance(config.trainer["learning_rate"], float)
    assert config.tapo == {}


def test_demo_recipe_loads_its_tapo_section():
    config = load_config(RECIPES / "demo.yaml")
    assert config.algorithm == "tapo"
    assert config.tapo == {"construction": "aligned", "n_pos": 2, "n_neg": 4, "m_max": 4, "ref_baseline": "original"}


def test_model_may_be_given_as_a_bare_name(tmp_path):
    config = load_config(write(tmp_path, {"model": "builtin:smollm2-135m-instruct"}))
    assert config.model == ModelSection(name="builtin:smollm2-135m-instruct")


def test_a_real_grpo_config_field_is_accepted_under_trainer(tmp_path):
    config = load_config(write(tmp_path, {"trainer": {"beta": 0.04, "max_steps": 3}}))
    assert config.trainer == {"beta": 0.04, "max_steps": 3}


# --- unknown and misplaced keys --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, section, bad",
    [
        ({"algorithm": "grpo", "lerning_rate": 1e-5}, "top level", "lerning_rate"),
        ({"model": {"name": "builtin:tiny", "dtyp": "float16"}}, "model", "dtyp"),
        ({"data": {"source": "builtin:arithmetic", "n_step": 2}}, "data", "n_step"),
        ({"trainer": {"max_steps": 2, "max_stepz": 2}}, "trainer", "max_stepz"),
        (minimal(tapo={"n_pos": 2, "m_maxx": 3}), "tapo", "m_maxx"),
    ],
    ids=["top", "model", "data", "trainer", "tapo"],
)
def test_unknown_key_names_section_key_and_file(tmp_path, raw, section, bad):
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert f"'{section}'" in message
    assert bad in message
    assert str(path) in message


def test_unknown_key_message_lists_what_is_allowed(tmp_path):
    with pytest.raises(ConfigError, match=r"Allowed: dtype, name$"):
        load_config(write(tmp_path, {"model": {"nme": "x"}}))


@pytest.mark.parametrize("key, value", [("n_pos", 3), ("ots_w_min", 0.1), ("construction", "aligned")])
def test_tapo_option_under_trainer_points_to_tapo_section(tmp_path, key, value):
    path = write(tmp_path, minimal(trainer={"max_steps": 2, key: value}))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert key in message
    assert "belong in the 'tapo' section" in message
    assert str(path) in message


@pytest.mark.parametrize("key, value", [("output_dir", "elsewhere"), ("seed", 7), ("report_to", "none")])
def test_runner_owned_key_under_trainer_is_rejected(tmp_path, key, value):
    path = write(tmp_path, {"trainer": {key: value}})
    with pytest.raises(ConfigError, match=rf"{key} at the top level or on the command line, not in 'trainer'"):
        load_config(path)


def test_tapo_section_with_grpo_algorithm_is_rejected(tmp_path):
    path = write(tmp_path, {"algorithm": "grpo", "tapo": {"n_pos": 2}})
    with pytest.raises(ConfigError, match="'tapo' section was given but algorithm is grpo") as error:
        load_config(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("algorithm", ["ppo", "TAPO", ""])
def test_unknown_algorithm_is_rejected(tmp_path, algorithm):
    with pytest.raises(ConfigError, match=rf"algorithm must be one of grpo, tapo, got '{algorithm}'"):
        load_config(write(tmp_path, {"algorithm": algorithm}))


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level, got list") as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_build_config_rejects_non_mapping_section():
    with pytest.raises(ConfigError, match="here: 'data' must be a mapping"):
        build_config({"data": ["builtin:arithmetic"]}, where="here")


# --- --set overrides ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, path, value",
    [
        ("trainer.max_steps=10", ["trainer", "max_steps"], 10),
        ("trainer.learning_rate=1e-5", ["trainer", "learning_rate"], 1e-5),
        ("trainer.learning_rate=1.0e-5", ["trainer", "learning_rate"], 1e-5),
        ("trainer.learning_rate=2E3", ["trainer", "learning_rate"], 2000.0),
        ("trainer.learning_rate=-3e+2", ["trainer", "learning_rate"], -300.0),
        ("tapo.ots=false", ["tapo", "ots"], False),
        ("data.n_steps=[1, 3]", ["data", "n_steps"], [1, 3]),
        ("data.limit=null", ["data", "limit"], None),
        ("seed=3", ["seed"], 3),
        ("data.instruction=a=b", ["data", "instruction"], "a=b"),  # split at the first '='
        (" model.name = builtin:tiny", ["model", "name"], "builtin:tiny"),
        ("data.system_prompt=", ["data", "system_prompt"], ""),
    ],
)
def test_parse_override_values_are_yaml_typed(text, path, value):
    got_path, got_value = parse_override(text)
    assert got_path == path
    assert got_value == value
    assert type(got_value) is type(value)


def test_scientific_notation_without_a_dot_is_a_float():
    # Plain YAML 1.1 reads `1e-5` as the string "1e-5", which would reach the optimizer as a string.
    assert yaml.safe_load("1e-5") == "1e-5"
    _, value = parse_override("trainer.learning_rate=1e-5")
    assert isinstance(value, float) and value == 1e-5


@pytest.mark.parametrize("raw", ["'1e-5'", '"1e5"', "1e", "e5", "abc1e5", "1e-5x"])
def test_quoted_or_non_numeric_values_stay_strings(raw):
    _, value = parse_override(f"model.name={raw}")
    assert isinstance(value, str)
    assert value == raw.strip("'\"")


def test_scientific_notation_in_a_file_is_a_float(tmp_path):
    config = load_config(write(tmp_path, "trainer:\n  learning_rate: 1e-5\n  beta: 4E-2\n"))
    assert config.trainer == {"learning_rate": 1e-5, "beta": 0.04}
    assert all(isinstance(v, float) for v in config.trainer.values())


@pytest.mark.parametrize("text", ["trainer.max_steps", "trainer.max_steps:10", ""])
def test_override_without_equals_is_rejected(text):
    with pytest.raises(ConfigError, match="expected key=value") as error:
        parse_override(text)
    assert repr(text) in str(error.value)


def test_override_with_empty_key_is_rejected():
    with pytest.raises(ConfigError, match="empty key"):
        parse_override(" =3")


def test_apply_overrides_sets_nested_keys_and_leaves_input_alone():
    raw = {"algorithm": "grpo", "trainer": {"max_steps": 4, "num_generations": 4}}
    merged = apply_overrides(raw, ["trainer.max_steps=10", "data.n=8", "algorithm=tapo", "tapo.n_pos=3"])
    assert merged == {
        "algorithm": "tapo",
        "trainer": {"max_steps": 10, "num_generations": 4},
        "data": {"n": 8},
        "tapo": {"n_pos": 3},
    }
    assert raw == {"algorithm": "grpo", "trainer": {"max_steps": 4, "num_generations": 4}}


def test_later_override_wins():
    assert apply_overrides({}, ["seed=1", "seed=2"]) == {"seed": 2}


def test_override_into_an_empty_section(tmp_path):
    path = write(tmp_path, "algorithm: tapo\ntapo:\ntrainer:\n")  # sections present but empty (null)
    config = load_config(path, ["tapo.n_pos=3", "trainer.max_steps=2"])
    assert config.tapo == {"n_pos": 3}
    assert config.trainer == {"max_steps": 2}


def test_override_below_a_value_is_rejected():
    with pytest.raises(ConfigError, match="'max_steps' is not a section"):
        apply_overrides({"trainer": {"max_steps": 4}}, ["trainer.max_steps.x=1"])


def test_load_config_applies_overrides_then_validates():
    config = load_config(
        TINY, ["trainer.max_steps=10", "trainer.learning_rate=1e-5", "algorithm=tapo", "tapo.construction=aligned"]
    )
    assert config.algorithm == "tapo"
    assert config.trainer["max_steps"] == 10
    assert config.trainer["learning_rate"] == 1e-5 and isinstance(config.trainer["learning_rate"], float)
    assert config.trainer["num_generations"] == 4  # untouched keys stay
    assert config.tapo == {"construction": "aligned"}


def test_override_to_an_unknown_key_is_rejected_naming_the_file():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in 'trainer': bogus") as error:
        load_config(TINY, ["trainer.bogus=1"])
    assert str(TINY) in str(error.value)


def test_override_adding_tapo_options_to_a_grpo_run_is_rejected():
    with pytest.raises(ConfigError, match="algorithm is grpo"):
        load_config(TINY, ["tapo.n_pos=3"])


# --- files -------------------------------------------------------------------------------------------------


def test_invalid_yaml_names_the_file(tmp_path):
    path = write(tmp_path, "trainer: {max_steps: 4\nmodel: [\n", name="broken.yaml")
    with pytest.raises(ConfigError, match="not valid YAML") as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_missing_file_is_a_config_error(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="config file not found") as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_a_directory_is_not_a_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path)


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == RunConfig()


@pytest.mark.parametrize("source", ["tiny-grpo.yaml", "demo.yaml"])
def test_save_then_load_round_trips(tmp_path, source):
    config = load_config(RECIPES / source, ["trainer.learning_rate=1e-5", "data.n_steps=[1, 2]", "seed=5"])
    saved = tmp_path / "config.yaml"
    save_config(config, saved)
    again = load_config(saved)
    assert again == config
    assert again.to_dict() == config.to_dict()
    assert again.data.n_steps == [1, 2]


def test_round_trip_keeps_number_like_strings_as_strings(tmp_path):
    config = build_config(
        {"data": {"instruction": "1e5", "system_prompt": "2.0E-3"}, "trainer": {"learning_rate": 1e-5}}
    )
    saved = tmp_path / "config.yaml"
    save_config(config, saved)
    again = load_config(saved)
    assert again == config
    assert again.data.instruction == "1e5" and again.data.system_prompt == "2.0E-3"
    assert isinstance(again.trainer["learning_rate"], float)
