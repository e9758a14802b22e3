"""models.config: the numbers a configuration refuses, each named by its flag."""

import pytest

from models import config as model_config


@pytest.mark.parametrize("field,value,flag", [("frame_dropout", 1.0, "--frame_dropout"), ("input_dropout", -0.1, "--input_dropout"),
                                              ("frame_dropout", float("nan"), "--frame_dropout")])
def test_bad_dropout_rates_are_refused_with_the_flag_name(field, value, flag):
    with pytest.raises(model_config.ConfigError, match=flag):
        model_config.TrainConfig("s", "m", model=model_config.ModelConfig(**{field: value}))


@pytest.mark.parametrize("field,value,flag", [("weight_decay", -1e-4, "--weight_decay"),
                                              ("label_smoothing", 1.0, "--label_smoothing"),
                                              ("weight_decay", float("inf"), "--weight_decay")])
def test_bad_optimiser_options_are_refused_with_the_flag_name(field, value, flag):
    with pytest.raises(model_config.ConfigError, match=flag):
        model_config.TrainConfig("s", "m", **{field: value})


@pytest.mark.parametrize("context", [0, 2, -1])
def test_context_must_be_an_odd_number_of_seconds(context):
    with pytest.raises(model_config.ConfigError, match="--context"):
        model_config.TrainConfig("s", "m", model=model_config.ModelConfig(context=context))


def test_a_config_written_before_a_field_existed_reads_as_that_field_off():
    today = model_config.TrainConfig("s", "m", weight_decay=0.0,
                                     model=model_config.ModelConfig(input_dropout=0.0, frame_dropout=0.0)).to_json()
    old = {k: v for k, v in today.items() if k not in ("weight_decay", "label_smoothing", "steps_per_execution",
                                                       "precision")} | {"mixed_precision": False}
    old["model"] = {k: v for k, v in today["model"].items() if k not in ("input_dropout", "frame_dropout", "context")}
    assert model_config.upgrade(old) == today
