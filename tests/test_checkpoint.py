"""Checkpoints: round trips, atomic writes, and every way `load` must refuse a file."""

import json
import os

import numpy as np
import pytest

from rnnlm import checkpoint
from rnnlm.config import Config, DataConfig, ModelConfig, TrainConfig
from rnnlm.errors import RnnlmError
from rnnlm.model import init_params
from rnnlm.vocab import build_vocabulary, count_tokens

CORPUS = ["the cat sat on the mat".split(), "a dog sat on a log".split()]


@pytest.fixture(scope="module")
def ckpt():
    """A small checkpoint built without compiling anything."""
    vocab = build_vocabulary(count_tokens(CORPUS), 50)
    config = Config(
        data=DataConfig(corpus="corpus.txt", vocab_size=50),
        model=ModelConfig(vocab_size=len(vocab), hidden_size=4),
        train=TrainConfig(epochs=3, seed=7),
    )
    rng = np.random.default_rng(0)
    params = {
        name: value.astype(np.float32) for name, value in init_params(config.model, rng).items()
    }
    progress = {"epoch": 2, "step": 17, "learning_rate": 0.0025, "last_loss": 2.5}
    return checkpoint.Checkpoint(config, vocab, params, progress)


@pytest.fixture
def saved(tmp_path, ckpt):
    path = tmp_path / "model.npz"
    checkpoint.save(path, ckpt)
    return path


def arrays_of(path):
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def meta_of(path):
    return json.loads(str(arrays_of(path)["meta"]))


def rewrite(path, meta=None, arrays=None):
    """A copy of a checkpoint with a new meta (a dict, dumped as JSON) and/or some arrays
    replaced (a value of None removes the array)."""
    contents = arrays_of(path)
    if meta is not None:
        contents["meta"] = np.array(json.dumps(meta))
    for name, value in (arrays or {}).items():
        if value is None:
            del contents[name]
        else:
            contents[name] = value
    target = path.with_name("tampered.npz")
    np.savez(target, **contents)
    return target


# -- round trip and atomic writes -------------------------------------------------------------


def test_round_trip_keeps_params(saved, ckpt):
    loaded = checkpoint.load(saved)
    assert list(loaded.params) == list(ckpt.params)
    for name, value in ckpt.params.items():
        np.testing.assert_array_equal(loaded.params[name], value)
        assert loaded.params[name].dtype == value.dtype


def test_round_trip_keeps_vocab(saved, ckpt):
    assert checkpoint.load(saved).vocab == ckpt.vocab


def test_round_trip_keeps_config(saved, ckpt):
    assert checkpoint.load(saved).config == ckpt.config


def test_round_trip_keeps_progress(saved, ckpt):
    assert checkpoint.load(saved).progress == ckpt.progress


def test_round_trip_keeps_optimizer_state_and_carried_states(tmp_path, ckpt):
    rng = np.random.default_rng(1)
    optimizer = {f"adam/m/{name}": rng.normal(size=v.shape) for name, v in ckpt.params.items()}
    carry = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(2)]
    path = tmp_path / "state.npz"
    checkpoint.save(
        path,
        checkpoint.Checkpoint(
            ckpt.config, ckpt.vocab, ckpt.params, ckpt.progress, optimizer=optimizer, carry=carry
        ),
    )
    loaded = checkpoint.load(path)
    assert sorted(loaded.optimizer) == sorted(optimizer)
    for name, value in optimizer.items():
        np.testing.assert_array_equal(loaded.optimizer[name], value)
    assert len(loaded.carry) == len(carry)
    for got, want in zip(loaded.carry, carry, strict=True):
        np.testing.assert_array_equal(got, want)


def test_save_leaves_only_the_checkpoint_in_its_folder(saved):
    assert os.listdir(saved.parent) == [saved.name]


def test_save_overwrites_an_existing_checkpoint(saved, ckpt):
    progress = {**ckpt.progress, "step": 99}
    checkpoint.save(saved, checkpoint.Checkpoint(ckpt.config, ckpt.vocab, ckpt.params, progress))
    assert checkpoint.load(saved).progress["step"] == 99
    assert os.listdir(saved.parent) == [saved.name]


def test_failed_save_keeps_the_previous_file_and_leaves_no_temp_file(saved, ckpt, monkeypatch):
    before = saved.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(saved, ckpt)
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == [saved.name]


def test_save_to_a_bare_file_name_writes_in_the_working_folder(tmp_path, ckpt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoint.save("bare.npz", ckpt)
    assert os.listdir(tmp_path) == ["bare.npz"]
    assert checkpoint.load("bare.npz").progress == ckpt.progress


# -- load refuses -----------------------------------------------------------------------------


def refused(path, *fragments):
    with pytest.raises(RnnlmError) as error:
        checkpoint.load(path)
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return message


def test_load_refuses_a_missing_file(tmp_path):
    refused(tmp_path / "nope.npz", "not found")


def test_load_refuses_a_wrong_format_tag(saved):
    meta = {**meta_of(saved), "format": "someone-elses-checkpoint"}
    refused(rewrite(saved, meta=meta), "not an rnnlm model file")


def test_load_refuses_an_unsupported_format_version_and_names_it(saved):
    meta = {**meta_of(saved), "format_version": 99}
    refused(rewrite(saved, meta=meta), "99")


def test_load_refuses_a_param_of_the_wrong_shape(saved):
    refused(rewrite(saved, arrays={"param/out/W": np.zeros((3, 3), np.float32)}), "out/W")


def test_load_refuses_nan_weights(saved, ckpt):
    weights = ckpt.params["out/W"].copy()
    weights[0, 0] = np.nan
    refused(rewrite(saved, arrays={"param/out/W": weights}), "out/W", "NaN")


def test_load_refuses_integer_weights(saved, ckpt):
    refused(rewrite(saved, arrays={"param/out/W": ckpt.params["out/W"].astype(np.int32)}), "out/W")


def test_load_refuses_a_vocab_whose_length_differs_from_the_config(saved):
    meta = meta_of(saved)
    meta["vocab"]["words"].append("extra")
    meta["vocab"]["counts"].append(1)
    refused(rewrite(saved, meta=meta), "vocabulary")


def test_load_refuses_a_missing_param(saved):
    refused(rewrite(saved, arrays={"param/out/W": None}), "missing", "out/W")


def test_load_refuses_an_unexpected_param(saved):
    refused(rewrite(saved, arrays={"param/extra/W": np.zeros(2, np.float32)}), "extra/W")


class Exploit:
    """Unpickling this would create a folder: proof that pickled data was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_load_refuses_object_arrays_without_unpickling_them(saved, tmp_path):
    marker = tmp_path / "pwned"
    bad = np.empty(1, dtype=object)
    bad[0] = Exploit(marker)
    refused(rewrite(saved, arrays={"param/out/W": bad}), "not an rnnlm model file")
    assert not marker.exists()


def test_load_refuses_a_pickled_meta_without_unpickling_it(saved, tmp_path):
    marker = tmp_path / "pwned"
    bad = np.empty((), dtype=object)
    bad[()] = Exploit(marker)
    refused(rewrite(saved, arrays={"meta": bad}), "not an rnnlm model file")
    assert not marker.exists()


def test_load_refuses_non_finite_optimizer_state(saved):
    refused(rewrite(saved, arrays={"optim/adam/v/out/W": np.array([np.inf])}), "adam/v/out/W")


def test_load_refuses_a_meta_that_is_not_json(saved):
    refused(rewrite(saved, arrays={"meta": np.array("{not json")}), "JSON")


def test_load_refuses_a_file_without_meta(saved):
    refused(rewrite(saved, arrays={"meta": None}), "not an rnnlm model file")


def test_load_refuses_a_config_with_an_unknown_key(saved):
    meta = meta_of(saved)
    meta["config"]["model"]["colour"] = "blue"
    refused(rewrite(saved, meta=meta), "model.colour")


def test_load_refuses_progress_that_is_not_a_table(saved):
    meta = {**meta_of(saved), "progress": [1, 2]}
    refused(rewrite(saved, meta=meta), "progress")


@pytest.mark.parametrize(
    "content",
    [os.urandom(2000), b"just some text\n", b""],
    ids=["random-bytes", "text", "empty"],
)
def test_load_refuses_files_that_are_not_checkpoints(tmp_path, content):
    path = tmp_path / "model.npz"
    path.write_bytes(content)
    refused(path, "not an rnnlm model file")


def test_load_refuses_a_plain_npz(tmp_path):
    path = tmp_path / "model.npz"
    np.savez(path, a=np.arange(3))
    refused(path, "not an rnnlm model file")


def test_load_refuses_a_truncated_checkpoint(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    refused(saved, "not an rnnlm model file")


def test_load_refuses_a_npy_file(tmp_path):
    path = tmp_path / "model.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))
    refused(path, "not an rnnlm model file")


def test_load_refuses_a_zip_whose_meta_is_not_an_array(tmp_path):
    import zipfile

    path = tmp_path / "model.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("meta", "{}")
    refused(path, "not an rnnlm model file")


def test_load_refuses_deeply_nested_meta(saved):
    deep = np.array("[" * 100_000 + "]" * 100_000)
    refused(rewrite(saved, arrays={"meta": deep}), "JSON")
