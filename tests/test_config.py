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


def test_a_config_written_before_a_field_existed_reads_as_that_field_off():
    today = model_config.TrainConfig("s", "m", weight_decay=0.0, sampling="balanced",
                                     model=model_config.ModelConfig(input_dropout=0.0, frame_dropout=0.0)).to_json()
    old = {k: v for k, v in today.items() if k not in ("weight_decay", "label_smoothing", "steps_per_execution",
                                                       "precision", "sampling")} | {"mixed_precision": False}
    old["model"] = {k: v for k, v in today["model"].items() if k not in ("input_dropout", "frame_dropout")}
    assert model_config.upgrade(old) == today  # before --sampling, batches were class-balanced


def test_sampling_is_uniform_unless_asked_for_balanced(tmp_path):
    def sampling(*flags):
        return model_config.parse_args(["--train_data", str(tmp_path), "--model_dir", str(tmp_path), *flags]).sampling

    assert (sampling(), sampling("--sampling", "balanced")) == ("uniform", "balanced")
    with pytest.raises(SystemExit):
        sampling("--sampling", "random")


@pytest.mark.parametrize("flag, value", [
    ("--learning_rate", "nan"), ("--learning_rate", "inf"), ("--learning_rate", "-0.001"), ("--learning_rate", "0"),
    ("--dropout", "1"), ("--dropout", "-0.1"), ("--dropout", "nan"), ("--num_heads", "0"), ("--num_heads", "-2"),
    ("--mixup", "nan"), ("--mixup", "inf"), ("--mixup", "-0.5"), ("--ema", "nan"), ("--cpu_replicas", "-1"),
    ("--steps_per_execution", "0"), ("--steps_per_execution", "3"),  # 3 does not divide --steps_per_epoch 200
])
def test_every_numeric_flag_is_validated_before_anything_runs(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_:
        model_config.parse_args(["--train_data", str(tmp_path), "--model_dir", str(tmp_path / "m"), flag, value])
    assert exit_.value.code == 2
    assert flag in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "m").exists()


def test_valid_numeric_flags_are_accepted(tmp_path):
    config = model_config.parse_args(["--train_data", str(tmp_path), "--model_dir", str(tmp_path / "m"),
                                      "--learning_rate", "1e-4", "--dropout", "0", "--num_heads", "1", "--mixup", "0",
                                      "--ema", "0"])
    assert config.learning_rate == 1e-4 and config.model.dropout == 0 and config.mixup == 0


def test_precision_flags_and_the_deprecated_mixed_precision_alias(tmp_path, capsys):
    base = ["--train_data", str(tmp_path), "--model_dir", str(tmp_path / "m")]
    assert model_config.parse_args(base).precision == "float32"
    assert model_config.parse_args(base + ["--precision", "mixed_bfloat16"]).precision == "mixed_bfloat16"
    config = model_config.parse_args(base + ["--mixed_precision", "--steps_per_execution", "4", "--jit_compile"])
    assert (config.precision, config.steps_per_execution, config.jit_compile) == ("mixed_float16", 4, True)
    assert "deprecated" in capsys.readouterr().err
    for bad in (["--precision", "float16"], ["--mixed_precision", "--precision", "mixed_bfloat16"]):
        with pytest.raises(SystemExit):
            model_config.parse_args(base + bad)
    assert "--precision" in capsys.readouterr().err
