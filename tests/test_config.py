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
    assert config.tapo == {"construction": "self", "n_pos": 1, "n_neg": 1, "m_max": 3, "ref_baseline": "reflection",
                           "synthesis_template": "recipes/demo-synthesis.txt", "synthesis_extra_tokens": 80}


def test_model_may_be_given_as_a_bare_name(tmp_path):
    config = load_config(write(tmp_path, {"model": "builtin:smollm2-135m-instruct"}))
    assert config.model == ModelSection(name="builtin:smollm2-135m-instruct")
    # a --set into the short form's section keeps the name (it said "'model' is not a section")
    config = load_config(write(tmp_path, {"model": "builtin:tiny"}), ["model.dtype=bfloat16"])
    assert config.model == ModelSection(name="builtin:tiny", dtype="bfloat16")


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


def test_unknown_key_message_suggests_the_closest_key(tmp_path):
    with pytest.raises(ConfigError, match=r"'model': nme \(did you mean name\?\)$"):
        load_config(write(tmp_path, {"model": {"nme": "x"}}))


def test_unknown_key_with_nothing_close_lists_what_is_allowed(tmp_path):
    with pytest.raises(ConfigError, match=r"'model': zzz. Allowed: dtype, name$"):
        load_config(write(tmp_path, {"model": {"zzz": "x"}}))


@pytest.mark.parametrize("key, value", [("n_pos", 3), ("ots_w_min", 0.1), ("construction", "aligned")])
def test_tapo_option_under_trainer_points_to_tapo_section(tmp_path, key, value):
    path = write(tmp_path, minimal(trainer={"max_steps": 2, key: value}))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert key in message
    assert "belongs in the 'tapo' section" in message
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
    with pytest.raises(ConfigError, match=rf"algorithm must be one of grpo, tapo, sdpo, got '{algorithm}'"):
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
        TINY,
        ["trainer.max_steps=10", "trainer.learning_rate=1e-5", "algorithm=tapo", "tapo.construction=aligned",
         "tapo.n_neg=2"],  # the default n_pos 2 + n_neg 4 cannot occur in tiny-grpo's groups of 4
    )
    assert config.algorithm == "tapo"
    assert config.trainer["max_steps"] == 10
    assert config.trainer["learning_rate"] == 1e-5 and isinstance(config.trainer["learning_rate"], float)
    assert config.trainer["num_generations"] == 4  # untouched keys stay
    assert config.tapo == {"construction": "aligned", "n_neg": 2}


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


# --- values: types, ranges, choices, combinations (issue 16, items 9-10) -----------------------------------

TINY_TAPO = RECIPES / "tiny-tapo.yaml"


@pytest.mark.parametrize(
    "override, expected",
    [
        # types of TRL's fields (GRPOConfig annotations)
        ("trainer.max_steps=abc", "trainer.max_steps must be an integer, got 'abc'"),
        ("trainer.max_steps=2.5", "trainer.max_steps must be an integer, got 2.5"),
        ("trainer.learning_rate=fast", "trainer.learning_rate must be a number, got 'fast'"),
        ("trainer.use_vllm=maybe", "trainer.use_vllm must be true or false, got 'maybe'"),
        ("trainer.max_completion_length=[1]", "trainer.max_completion_length must be an integer or null"),
        # ranges TRL lets through (a crash or a silent 0-step run later)
        ("trainer.num_generations=0", "trainer.num_generations must be >= 2"),
        ("trainer.num_generations=1", "trainer.num_generations must be >= 2"),
        ("trainer.num_generations=null", "trainer.num_generations must be >= 2"),
        ("trainer.per_device_train_batch_size=0", "trainer.per_device_train_batch_size must be >= 1"),
        ("trainer.temperature=0", "trainer.temperature must be > 0"),
        ("trainer.top_p=1.5", "trainer.top_p must be in (0, 1]"),
        ("trainer.max_steps=0", "trainer.max_steps must be -1 (use num_train_epochs) or >= 1"),
        ("trainer.learning_rate=-1e-5", "trainer.learning_rate must be >= 0"),
        ("trainer.save_steps=0", "trainer.save_steps must be > 0"),
        ("trainer.loss_type=ppo", "trainer.loss_type must be one of grpo, dr_grpo, dapo"),
        ("trainer.vllm_mode=colocated", "trainer.vllm_mode must be one of server, colocate, got 'colocated' (did you mean 'colocate'?)"),
        ("trainer.scale_rewards=std", "trainer.scale_rewards must be one of group, batch, none, true, false"),
        # TAPO's options
        ("tapo.n_pos=abc", "tapo.n_pos must be an integer, got 'abc'"),
        ("tapo.n_pos=0", "tapo.n_pos must be >= 1"),
        ("tapo.n_pos=1.5", "tapo.n_pos must be an integer, got 1.5"),
        ("tapo.n_neg=-1", "tapo.n_neg must be >= 0"),
        ("tapo.m_max=-1", "tapo.m_max must be >= 0, got -1"),
        ("tapo.ref_loss_weight=-0.5", "tapo.ref_loss_weight must be >= 0"),
        ("tapo.ots=maybe", "tapo.ots must be true or false"),
        ("tapo.ots_w_min=-0.1", "tapo.ots_w_min must be >= 0"),
        ("tapo.ref_baseline=bogus", "tapo.ref_baseline must be one of reflection, original, got 'bogus'"),
        ("tapo.construction=bogus", "tapo.construction must be one of self, splice, aligned, got 'bogus'"),
        ("tapo.construction=slef", "got 'slef' (did you mean 'self'?)"),
        ("tapo.splice_fallback=nope", "tapo.splice_fallback must be one of self, drop, got 'nope'"),
        ("tapo.splice_locate=guess", "tapo.splice_locate must be one of ask, surprise, got 'guess'"),
        ("tapo.synthesis_schedule=later", "tapo.synthesis_schedule must be one of inline, deferred, got 'later'"),
        ("tapo.splice_surprise_threshold=0", "tapo.splice_surprise_threshold"),
        ("tapo.synthesis_temperature=0", "tapo.synthesis_temperature must be > 0"),
        ("tapo.synthesis_top_p=0", "tapo.synthesis_top_p must be in (0, 1]"),
        ("tapo.synthesis_extra_tokens=-16", "tapo.synthesis_extra_tokens must be >= 0"),
        ("tapo.splice_locate_tokens=0", "tapo.splice_locate_tokens must be >= 1 (the token budget of splice"),
        ("tapo.splice_locate_tokens=many", "tapo.splice_locate_tokens must be an integer, got 'many'"),
        ("tapo.splice_continuation_tokens=0", "tapo.splice_continuation_tokens must be >= 1 (the token budget of"),
        ("tapo.synthesis_template=5", "tapo.synthesis_template must be a string or null, got 5"),
        ("tapo.max_construction_tokens=0", "tapo.max_construction_tokens must be >= 1"),
        ("tapo.keep_truncated_constructions=1", "tapo.keep_truncated_constructions must be true or false, got 1"),
        # our sections
        ("model.dtype=float99", "model.dtype must be one of float32, bfloat16, float16, float64, got 'float99'"),
        ("model.dtype=int3", "model.dtype must be one of"),
        ("model.name=", "model.name must not be empty"),
        ("model.name=42", "model.name must be a string, got 42"),
        ("data.n=-5", "data.n must be >= 1 (it would keep no rows), got -5"),
        ("data.n=0", "data.n must be >= 1"),
        ("data.n=many", "data.n must be an integer, got 'many'"),
        ("data.limit=0", "data.limit must be >= 1 (it would keep no rows)"),
        ("data.n_steps=[3, 1]", "data.n_steps must be an integer >= 1 or a [low, high] pair"),
        ("data.n_steps=abc", "data.n_steps must be an integer >= 1 or a [low, high] pair"),
        ("data.max_operand=1", "data.max_operand must be >= 2"),
        ("data.split=3", "data.split must be a string, got 3"),
        ("data.problem_key=[a]", "data.problem_key must be a string or null"),
        ("seed=abc", "seed must be an integer, got 'abc'"),
        ("seed=true", "seed must be an integer, got True"),
        ("seed=-1", "seed must be in [0, 2**32)"),
        ("output_dir=", "output_dir must not be empty"),
        ("output_dir=3", "output_dir must be a string, got 3"),
        ("algorithm=TAPO", "algorithm must be one of grpo, tapo, sdpo, got 'TAPO' (did you mean 'tapo'?)"),
    ],
)
def test_bad_value_names_key_file_and_the_override(override, expected):
    with pytest.raises(ConfigError) as error:
        load_config(TINY_TAPO, [override])
    message = str(error.value)
    assert expected in message
    assert message.startswith(f"{TINY_TAPO}: ")
    assert message.endswith(f"(from --set {override})")


def test_bad_value_from_the_file_names_the_file_and_no_override(tmp_path):
    path = write(tmp_path, minimal(tapo={"n_pos": 0}, trainer={"max_steps": "abc"}))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    lines = str(error.value).splitlines()  # every problem at once, one per line
    assert lines == [
        f"{path}: trainer.max_steps must be an integer, got 'abc'",
        f"{path}: tapo.n_pos must be >= 1 (every y- is paired with a correct y+), got 0",
    ]


@pytest.mark.parametrize(
    "override, values",
    [
        ("trainer.scale_rewards=false", {"scale_rewards": False}),  # TRL takes true/false for group/none
        ("trainer.max_steps=-1", {"max_steps": -1}),
        ("trainer.learning_rate=1", {"learning_rate": 1}),  # an integer is a number
        ("trainer.max_completion_length=null", {"max_completion_length": None}),
        ("trainer.lr_scheduler_type=cosine", {"lr_scheduler_type": "cosine"}),
        ("trainer.chat_template_kwargs={enable_thinking: false}", {"chat_template_kwargs": {"enable_thinking": False}}),
        ("tapo.max_construction_tokens=null", {"max_construction_tokens": None}),
        ("data.n_steps=[1, 3]", {}),
        ("model.dtype=bfloat16", {}),
    ],
)
def test_good_values_still_load(override, values):
    config = load_config(TINY_TAPO, [override])
    assert values.items() <= {**config.trainer, **config.tapo}.items()


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["tapo.n_neg=99"], "tapo.n_pos + tapo.n_neg (1 + 99) must be <= trainer.num_generations (8)"),
        (["tapo.n_pos=7"], "tapo.n_pos + tapo.n_neg (7 + 2) must be <= trainer.num_generations (8)"),
        (["trainer.num_generations=2", "trainer.per_device_train_batch_size=8"],
         "tapo.n_pos + tapo.n_neg (1 + 2) must be <= trainer.num_generations (2)"),
        (["tapo.decoupled=false"], "tapo.decoupled: false mixes y_ref into the original group, so tapo.ref_baseline "
                                   "'original' has no meaning there"),
        (["tapo.ots_w_min=5", "tapo.ots_w_max=1"], "tapo.ots_w_min (5) must be <= tapo.ots_w_max (1)"),
        (["trainer.multi_objective_aggregation=normalize_then_sum"], "'normalize_then_sum' is not supported"),
    ],
)
def test_combinations_that_cannot_run_or_never_construct_are_errors(overrides, expected):
    with pytest.raises(ConfigError) as error:
        load_config(TINY_TAPO, overrides)
    assert expected in str(error.value)
    assert f"(from --set {overrides[0]})" in str(error.value)


def test_default_thresholds_in_groups_of_four_are_an_error_naming_the_file(tmp_path):
    path = write(tmp_path, minimal(trainer={"num_generations": 4, "per_device_train_batch_size": 8}))
    with pytest.raises(ConfigError, match=r"tapo.n_pos \+ tapo.n_neg \(2 \+ 4\) must be <= trainer.num_generations \(4\)"):
        load_config(path)


def test_combinations_are_for_tapo_only():
    config = load_config(TINY, ["trainer.multi_objective_aggregation=normalize_then_sum"])  # grpo
    assert config.trainer["multi_objective_aggregation"] == "normalize_then_sum"
    assert load_config(TINY_TAPO, ["tapo.decoupled=false", "tapo.ref_baseline=reflection"]).tapo["decoupled"] is False


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["tapo.m_max=0"], "tapo.m_max is 0: no query gets a construction"),
        (["tapo.ref_loss_weight=0"], "tapo.ref_loss_weight is 0: constructions are made"),
        (["tapo.ref_baseline=reflection"], "aligned constructions end with the gold answer"),
    ],
)
def test_values_that_leave_tapo_inert_are_loud_warnings(overrides, expected, caplog):
    with caplog.at_level("WARNING", logger="tapo"):
        load_config(TINY_TAPO, overrides)  # they run, so they are not errors
    messages = [r.getMessage() for r in caplog.records if r.name == "tapo"]
    assert len(messages) == 1 and expected in messages[0]
    assert messages[0].startswith(f"warning: {TINY_TAPO}: ") and f"(from --set {overrides[0]})" in messages[0]


@pytest.mark.parametrize("recipe", ["tiny-tapo.yaml", "tiny-grpo.yaml", "tiny-sdpo.yaml", "demo.yaml", "paper/tapo.yaml",
                                    "paper/grpo.yaml", "paper/sdpo.yaml"])
def test_recipes_load_without_warnings(recipe, caplog):
    with caplog.at_level("WARNING", logger="tapo"):
        load_config(RECIPES / recipe)
    assert not [r for r in caplog.records if r.name == "tapo"]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("tapo.npos=2", "unknown key(s) in 'tapo': npos (did you mean n_pos?) (from --set tapo.npos=2)"),
        ("tapo.m_maxx=2", "m_maxx (did you mean m_max?)"),
        ("trainer.lerning_rate=1e-5", "unknown key(s) in 'trainer': lerning_rate (did you mean learning_rate?)"),
        ("trainer.npos=2", "unknown key(s) in 'trainer': npos (did you mean tapo.n_pos?)"),
        ("tapo.max_step=2", "unknown key(s) in 'tapo': max_step (did you mean trainer.max_steps?)"),
        ("max_stepz=3", "unknown key(s) in 'top level': max_stepz (did you mean trainer.max_steps?)"),
        ("data.n_step=2", "unknown key(s) in 'data': n_step (did you mean n_steps?)"),
        ("model.dtpye=float32", "unknown key(s) in 'model': dtpye (did you mean dtype?)"),
    ],
)
def test_unknown_key_suggests_the_closest_one(override, expected):
    with pytest.raises(ConfigError) as error:
        load_config(TINY_TAPO, [override])
    assert expected in str(error.value)


def test_unknown_trainer_key_does_not_list_trls_fields():
    with pytest.raises(ConfigError) as error:
        load_config(TINY, ["trainer.zzzzqqq=1"])
    assert "Allowed" not in str(error.value) and len(str(error.value)) < 200


def test_tapo_option_of_trl_points_to_the_trainer_section():
    with pytest.raises(ConfigError, match=r"learning_rate belongs in the 'trainer' section, not 'tapo' \(from --set"):
        load_config(TINY_TAPO, ["tapo.learning_rate=1e-5"])


def test_every_tapo_option_has_a_type_and_every_text_option_its_choices():
    """A new TAPOConfig field is validated from its annotation; a new text option needs its choices listed."""
    import typing

    from tapo.engine.trainer import TAPOConfig, tapo_option_names
    from tapo.config_checks import choices

    hints = typing.get_type_hints(TAPOConfig)
    for name in tapo_option_names():
        assert hints[name] is not typing.Any, name
        if hints[name] is str:
            assert f"tapo.{name}" in choices(), (
                f"tapo.{name} is free text: add its choices to tapo.config_checks.choices"
            )


def test_reward_section_configures_answer_checking(tmp_path):
    """`reward.timeout_s` / `reward.workers` reach tapo.rewards when the trainer is built."""
    from tapo.rewards import CheckingSettings, checking_settings, configure_checking
    from tapo.engine.run import build_trainer

    config = load_config(TINY, ["reward.timeout_s=7.5", "reward.workers=3"])
    saved = checking_settings()
    try:
        build_trainer(config, run_dir=tmp_path)
        assert checking_settings() == CheckingSettings(timeout_s=7.5, workers=3)
    finally:
        configure_checking(timeout_s=saved.timeout_s, workers=saved.workers)
    with pytest.raises(ConfigError, match=r"reward.timeout_s .*\(from --set reward.timeout_s=0\)"):
        load_config(TINY, ["reward.timeout_s=0"])


def test_every_config_kind_shares_loading_checks_and_saving(tmp_path):
    """Run, cold-start and filter configs: one reader (UTF-8, BOM accepted), one section loader (types, did-you-mean,
    the --set that gave a value), one saver that reads back the same."""
    from tapo.coldstart.config import load_coldstart_config, load_filter_config
    from tapo.config import save_config

    path = tmp_path / "cs.yaml"
    path.write_bytes("\ufeffseed: 3\nbuild: {samples: 2}\n".encode("utf-8"))  # a BOM, as editors on Windows write
    config = load_coldstart_config(path, ["build.construction=aligned"])
    assert config.seed == 3 and config.build.samples == 2 and config.build.construction == "aligned"
    saved = tmp_path / "saved" / "config.yaml"
    save_config(config, saved)
    assert load_coldstart_config(saved) == config
    with pytest.raises(ConfigError, match=r"seed must be an integer, got 'abc' \(from --set seed=abc\)"):
        load_coldstart_config(path, ["seed=abc"])
    with pytest.raises(ConfigError, match=r"build.samples must be an integer.*\(from --set build.samples=x\)"):
        load_coldstart_config(path, ["build.samples=x"])
    with pytest.raises(ConfigError, match=r"did you mean samples"):
        load_filter_config(None, ["filter.sampels=4"])
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("output_dir: runs/caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text"):
        load_config(latin1)


# --- algorithm sdpo: its own section, TRL's SDPOConfig under trainer (issue 15, item 1) ----------------------

TINY_SDPO = RECIPES / "tiny-sdpo.yaml"


def test_tiny_sdpo_recipe_loads_its_sdpo_section():
    config = load_config(TINY_SDPO)
    assert config.algorithm == "sdpo" and config.tapo == {}
    assert config.sdpo["teacher_model_kind"] == "ema" and config.sdpo["distillation_weight"] == 1.0
    overridden = load_config(TINY_SDPO, ["sdpo.teacher_update_rate=0.2", "sdpo.include_environment_feedback=true"])
    assert overridden.sdpo["teacher_update_rate"] == 0.2 and overridden.sdpo["include_environment_feedback"] is True


def test_sdpo_options_are_sdpoconfigs_own_fields():
    """The sdpo section is derived from TRL: SDPOConfig's fields beyond GRPOConfig's (less the data's
    max_prompt_length, a trainer key); the two sections cover SDPOConfig exactly, with no key in both."""
    from dataclasses import fields

    from trl import GRPOConfig

    from tapo.engine.arguments import SDPOConfig, sdpo_option_names, sdpo_trainer_keys

    own, shared = sdpo_option_names(), sdpo_trainer_keys()
    assert own | shared == {f.name for f in fields(SDPOConfig)} and not own & shared
    assert not own & {f.name for f in fields(GRPOConfig)}
    assert {"teacher_model_kind", "distillation_weight", "success_reward_threshold", "use_teacher_server"} <= own
    assert "max_prompt_length" in shared and "learning_rate" in shared and "top_entropy_quantile" not in shared


@pytest.mark.parametrize(
    "override, expected",
    [
        ("sdpo.teacher_model_kind=emma", "sdpo.teacher_model_kind must be one of ema, base, live, got 'emma' "
                                         "(did you mean 'ema'?)"),
        ("sdpo.distillation_weight=1.5", "sdpo.distillation_weight must be in [0, 1]"),
        ("sdpo.distillation_mode=full", "sdpo.distillation_mode must be sampled_token, full_logits or topk_logits"),
        ("sdpo.teacher_update_rate=2", "sdpo.teacher_update_rate must be in [0, 1]"),
        ("sdpo.teacher_sync_steps=0", "sdpo.teacher_sync_steps must be >= 1"),
        ("sdpo.max_reprompt_len=0", "sdpo.max_reprompt_len must be >= 1"),
        ("sdpo.distillation_is_clip=0", "sdpo.distillation_is_clip must be > 0"),
        ("sdpo.use_successful_as_teacher=maybe", "sdpo.use_successful_as_teacher must be true or false, got 'maybe'"),
        ("sdpo.reprompt_template=3", "sdpo.reprompt_template must be a string, got 3"),
        ("trainer.max_prompt_length=0", "trainer.max_prompt_length must be >= 1 (null keeps prompts whole)"),
        # combinations TRL ignores silently, rejects after loading the model, or fails on mid-run
        ("trainer.beta=0.04", "trainer.beta is 0.04: TRL 1.16's SDPOTrainer has no KL term"),
        ("trainer.loss_type=cispo", "SDPOTrainer's policy term implements grpo, bnpo, dr_grpo, dapo only"),
        ("sdpo.distillation_mode=topk_logits", "sdpo.distillation_mode topk_logits needs sdpo.distillation_topk"),
        ("sdpo.distillation_topk=8", "sdpo.distillation_topk is for distillation_mode topk_logits only"),
        ("sdpo.use_teacher_server=true", "needs trainer.use_vllm true with trainer.vllm_mode server; "
                                         "sdpo.teacher_model_kind live"),
        # keys in the wrong place
        ("sdpo.temperature=0.5", "temperature belongs in the 'trainer' section, not 'sdpo'"),
        ("trainer.teacher_model_kind=live", "teacher_model_kind belongs in the 'sdpo' section, not 'trainer'"),
        ("trainer.top_entropy_quantile=0.2", "trainer.top_entropy_quantile: GRPOConfig option(s) that TRL's SDPOConfig "
                                             "does not have"),
        ("sdpo.teacher_updte_rate=0.1", "unknown key(s) in 'sdpo': teacher_updte_rate (did you mean teacher_update_rate?)"),
        ("tapo.n_pos=2", "a 'tapo' section was given but algorithm is sdpo"),
    ],
)
def test_bad_sdpo_values_name_key_file_and_the_override(override, expected):
    with pytest.raises(ConfigError) as error:
        load_config(TINY_SDPO, [override])
    message = str(error.value)
    assert expected in message
    assert message.startswith(f"{TINY_SDPO}: ") and message.endswith(f"(from --set {override})")


@pytest.mark.parametrize("recipe", [TINY, TINY_TAPO])
def test_sdpo_section_with_another_algorithm_is_rejected(recipe):
    algorithm = load_config(recipe).algorithm
    with pytest.raises(ConfigError, match=rf"a 'sdpo' section was given but algorithm is {algorithm} "
                                          r"\(from --set sdpo.teacher_model_kind=live\)"):
        load_config(recipe, ["sdpo.teacher_model_kind=live"])


def test_sdpo_only_trainer_key_is_unknown_to_grpo():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in 'trainer': max_prompt_length"):
        load_config(TINY, ["trainer.max_prompt_length=256"])
    assert load_config(TINY_SDPO, ["trainer.max_prompt_length=256"]).trainer["max_prompt_length"] == 256


def test_sdpo_good_values_load():
    config = load_config(TINY_SDPO, ["sdpo.distillation_mode=topk_logits", "sdpo.distillation_topk=8",
                                     "sdpo.distillation_alpha=0.5", "sdpo.teacher_model_kind=live",
                                     "sdpo.distillation_is_clip=null", "trainer.loss_type=grpo",
                                     "trainer.max_prompt_length=null"])
    assert config.sdpo["distillation_topk"] == 8 and config.sdpo["distillation_is_clip"] is None


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["sdpo.success_reward_threshold=2"], "sdpo.success_reward_threshold 2 is above the reward's maximum"),
        (["sdpo.use_successful_as_teacher=false"], "neither successful rollouts (use_successful_as_teacher) nor the "
                                                   "gold answer (include_environment_feedback) reach the teacher"),
    ],
)
def test_values_that_leave_sdpo_inert_are_loud_warnings(overrides, expected, caplog):
    with caplog.at_level("WARNING", logger="tapo"):
        load_config(TINY_SDPO, overrides)
    messages = [r.getMessage() for r in caplog.records if r.name == "tapo"]
    assert len(messages) == 1 and expected in messages[0] and f"(from --set {overrides[0]})" in messages[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="tapo"):  # the gold answer as privileged context: not inert
        load_config(TINY_SDPO, [*overrides, "sdpo.include_environment_feedback=true"])
    assert not [r for r in caplog.records if r.name == "tapo"]


def test_every_sdpo_text_option_is_a_template_or_has_its_choices():
    """A new SDPOConfig text field is validated: its choices listed, or it is one of the reprompt templates."""
    import typing

    from tapo.config_checks import choices
    from tapo.engine.arguments import SDPOConfig, sdpo_option_names

    hints = typing.get_type_hints(SDPOConfig)
    for name in sdpo_option_names():
        assert hints[name] is not typing.Any, name
        if hints[name] is str:
            assert f"sdpo.{name}" in choices() or name.endswith("_template"), name


# --- defects found in review: duplicate keys, --set into a default mapping, --set values YAML cannot read ----


def test_a_key_given_twice_is_an_error_naming_key_lines_and_file(tmp_path):
    """PyYAML keeps the last of two equal keys: a second `trainer:` block would silently drop the first."""
    path = write(tmp_path, "trainer: {max_steps: 4, num_generations: 4}\nseed: 1\ntrainer: {learning_rate: 1e-4}\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'trainer' on line 3 \(first on line 1\)") as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: ")
    nested = write(tmp_path, "trainer:\n  max_steps: 4\n  max_steps: 5\n", name="nested.yaml")
    with pytest.raises(ConfigError, match=r"nested\.yaml: duplicate key 'max_steps' on line 3 \(first on line 2\)"):
        load_config(nested)
    merged = write(tmp_path, "trainer: {<<: {max_steps: 4, num_generations: 4}, max_steps: 2}\n", name="merge.yaml")
    assert load_config(merged).trainer == {"max_steps": 2, "num_generations": 4}  # a merge's keys may be overridden
    with pytest.raises(ConfigError, match=r"--set 'trainer=\{a: 1, a: 2\}': duplicate key 'a'"):
        parse_override("trainer={a: 1, a: 2}")


@pytest.mark.parametrize("value", ["[1,3", "{a: 1", "@x", "*x", "&x", "%x", "`x", "a: b: c"])
def test_override_value_yaml_cannot_read_says_how_to_quote_it(value):
    text = f"data.n_steps={value}"
    with pytest.raises(ConfigError, match="the value is not valid YAML") as error:
        load_config(TINY, [text])
    message = str(error.value)
    assert message.startswith(f"--set {text!r}: ")
    assert f"""--set 'data.n_steps="{value}"'""" in message  # the quoted form, which gives the text itself
    assert parse_override(f'data.n_steps="{value}"')[1] == value


def coldstart_file(tmp_path, *, mix: str | None = None) -> Path:
    """A cold-start config like recipes/coldstart-demo.yaml, with `mix` under build when given."""
    build = "build: {samples: 0, positive_source: reference, synthetic_negative: always"
    return write(tmp_path, f"{build}{', mix: ' + mix if mix else ''}}}\n", name="cs.yaml")


def test_override_into_a_mapping_the_file_lacks_starts_from_its_default(tmp_path):
    """`--set build.mix.plain=1` adds a weight to the default mix; it replaces it only where the file gives one."""
    from tapo.coldstart.config import BuildSection, load_coldstart_config

    default = BuildSection().mix
    assert load_coldstart_config(coldstart_file(tmp_path), ["build.mix.plain=1"]).build.mix == {**default, "plain": 1}
    assert load_coldstart_config(None, ["build.mix.plain=1", "build.samples=0", "build.positive_source=reference",
                                        "build.synthetic_negative=always"]).build.mix == {**default, "plain": 1}
    given = coldstart_file(tmp_path, mix="{plain: 0, trajectory: 1}")
    assert load_coldstart_config(given, ["build.mix.plain=1"]).build.mix == {"plain": 1, "trajectory": 1}
    whole = ["build.mix.plain=1", "build.mix={synthesis: 1}"]  # a later --set that gives the mapping whole wins
    assert load_coldstart_config(coldstart_file(tmp_path), whole).build.mix == {"synthesis": 1}
    assert load_coldstart_config(coldstart_file(tmp_path), ["build.mix={plain: 1}"]).build.mix == {"plain": 1}


@pytest.mark.parametrize("kind", ["coldstart", "filter"])
def test_every_config_kind_checks_model_dtype(kind):
    """`model.dtype` is held to MODEL_DTYPES for every config with a model section, not only `tapo train`'s."""
    from tapo.coldstart.config import load_coldstart_config, load_filter_config

    load = {"coldstart": load_coldstart_config, "filter": load_filter_config}[kind]
    path = RECIPES / "coldstart-demo.yaml" if kind == "coldstart" else None
    with pytest.raises(ConfigError, match=r"model\.dtype must be one of float32, bfloat16, float16, float64, got "
                                          r"'bf16' \(did you mean 'bfloat16'\?\) \(from --set model\.dtype=bf16\)"):
        load(path, ["model.dtype=bf16"])
    assert load(path, ["model.dtype=bfloat16"]).model.dtype == "bfloat16"
