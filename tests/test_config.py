"""Config files: every shipped config loads; strict keys and types; defaults <- file <- CLI."""

from pathlib import Path

import pytest

from rnnlm.config import Config, ModelConfig, TrainConfig, load_config, resolve
from rnnlm.errors import RnnlmError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_there_are_configs():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_every_shipped_config_loads_and_resolves(path):
    values = load_config(path)
    config = resolve(values, {})
    assert isinstance(config, Config)
    assert config.data.vocab_size == config.model.vocab_size
    assert config.data.corpus is not None and config.data.corpus.startswith("../shared/data/")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_every_shipped_config_names_its_command(path):
    assert f"rnnlm train --config configs/{path.name}" in path.read_text(encoding="utf-8")


def test_load_returns_the_file_values_only(tmp_path):
    path = write(tmp_path, "[model]\nhidden_size = 7\n")
    assert load_config(path) == {"model": {"hidden_size": 7}}


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, "[model]\nhidden_sise = 7\n")
    with pytest.raises(RnnlmError, match=r"model\.hidden_sise") as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_unknown_section_is_named(tmp_path):
    path = write(tmp_path, "[optimiser]\nlearning_rate = 0.1\n")
    with pytest.raises(RnnlmError, match="optimiser"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[model]\nhidden_size = "big"\n', "model.hidden_size"),
        ("[model]\nhidden_size = true\n", "model.hidden_size"),
        ("[train]\nlearning_rate = false\n", "train.learning_rate"),
        ("[data]\nlowercase = 1\n", "data.lowercase"),
        ("[data]\ncorpus = 3\n", "data.corpus"),
    ],
)
def test_wrong_type_is_named(tmp_path, text, key):
    with pytest.raises(RnnlmError, match=key.replace(".", r"\.")):
        load_config(write(tmp_path, text))


def test_bad_value_is_named_with_the_file(tmp_path):
    path = write(tmp_path, '[model]\ncell = "transformer"\n')
    with pytest.raises(RnnlmError, match=r"model\.cell") as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_an_int_is_a_valid_float(tmp_path):
    values = load_config(write(tmp_path, "[train]\nlearning_rate = 1\n"))
    assert resolve(values, {}).train.learning_rate == 1


def test_invalid_toml_is_one_line_with_the_line_number(tmp_path):
    path = write(tmp_path, "[model]\nhidden_size = 7\ncell = lstm\n")
    with pytest.raises(RnnlmError) as error:
        load_config(path)
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message and "line 3" in message


def test_missing_file_is_one_line(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(RnnlmError) as error:
        load_config(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_directory_is_an_error(tmp_path):
    with pytest.raises(RnnlmError, match="directory"):
        load_config(tmp_path)


def test_non_utf8_is_an_error(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[data]\ncolumn = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(RnnlmError, match="UTF-8") as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_defaults_without_file_or_overrides():
    assert resolve(None, {}) == Config()


def test_overrides_beat_file_values_beat_defaults(tmp_path):
    values = load_config(write(tmp_path, "[model]\nhidden_size = 7\nlayers = 2\n"))
    config = resolve(values, {"model": {"hidden_size": 9}, "train": {"epochs": 3}})
    assert config.model.hidden_size == 9  # override
    assert config.model.layers == 2  # file
    assert config.model.cell == ModelConfig().cell  # default
    assert config.train.epochs == 3
    assert config.train.optimizer == TrainConfig().optimizer


def test_resolve_leaves_its_inputs_alone():
    file_values = {"model": {"hidden_size": 7}}
    resolve(file_values, {"model": {"hidden_size": 9}})
    assert file_values == {"model": {"hidden_size": 7}}


def test_overrides_are_checked_strictly():
    with pytest.raises(RnnlmError, match=r"model\.hidden_size"):
        resolve(None, {"model": {"hidden_size": "big"}})
    with pytest.raises(RnnlmError, match=r"train\.nope"):
        resolve(None, {"train": {"nope": 1}})


def test_tie_weights_needs_matching_sizes():
    with pytest.raises(RnnlmError, match=r"model\.tie_weights"):
        resolve(None, {"model": {"tie_weights": True, "embedding_size": 50, "hidden_size": 100}})
    tied = resolve(None, {"model": {"tie_weights": True, "embedding_size": 64, "hidden_size": 64}})
    assert tied.model.tie_weights


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_round_trip_through_dict(path):
    config = resolve(load_config(path), {})
    assert Config.from_dict(config.to_dict()) == config


def test_round_trip_of_defaults():
    assert Config.from_dict(Config().to_dict()) == Config()


def test_adaptive_cutoffs_may_be_a_toml_array(tmp_path):
    path = tmp_path / "adaptive.toml"
    path.write_text('[model]\nsoftmax = "adaptive"\ncutoffs = [2000, 4000]\n')
    assert resolve(load_config(path), {}).model.cutoffs == "2000,4000"
    for bad in ("[4000, 2000]", '[2000, "4000"]', "[2000, true]", "[2000.0]"):
        path.write_text(f'[model]\nsoftmax = "adaptive"\ncutoffs = {bad}\n')
        with pytest.raises(RnnlmError, match=r"model\.cutoffs"):
            resolve(load_config(path), {})
