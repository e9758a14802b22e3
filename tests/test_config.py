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
