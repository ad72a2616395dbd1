"""The compiled-function disk cache: hits, misses when the graph changes, corrupt entries
rebuilt, files outside its folder (or not private to it) never read, and loaded functions
bound to the caller's own parameters, for inference and for training."""

import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnlm import backend
from rnnlm.compiled import ALIAS, ENTRY, FunctionCache, default_dir
from rnnlm.compiled_entry import MAGIC
from rnnlm.config import ModelConfig, TrainConfig
from rnnlm.model import Model
from rnnlm.optim import updates_for

CONFIG = ModelConfig(vocab_size=12, hidden_size=5, cell="gru", embedding_size=4, dtype="float64")


def batch(seed=0, steps=5, columns=3):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, CONFIG.vocab_size, size=(steps, columns)).astype(np.int32)
    y = rng.integers(0, CONFIG.vocab_size, size=(steps, columns)).astype(np.int32)
    return x, y, np.ones((steps, columns))


def log_probs(model):
    return model.log_probs(*batch())


def kinds(cache):
    return sorted(path.suffix for path in cache.files())


def test_a_second_model_loads_the_function_and_computes_with_its_own_weights(tmp_path):
    cache = FunctionCache(tmp_path / "cache")
    first = Model(CONFIG, seed=1, cache=cache)
    expected_first = log_probs(first)
    assert (cache.stats.hits, cache.stats.misses) == (0, 1)
    assert kinds(cache) == [ALIAS, ENTRY]

    second = Model(CONFIG, seed=2, cache=cache)  # other weights, same graph
    got = log_probs(second)
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)
    np.testing.assert_allclose(got, log_probs(Model(CONFIG, seed=2)), rtol=1e-12)
    assert not np.allclose(got, expected_first)
    # Changing the weights afterwards is seen too: the function reads the shared storage.
    second.params.assign(first.params.values_dict())
    np.testing.assert_allclose(log_probs(second), expected_first, rtol=1e-12)


def test_an_entry_holds_no_weights(tmp_path):
    cache = FunctionCache(tmp_path)
    big = ModelConfig(vocab_size=3000, hidden_size=64, dtype="float64")  # 1.6 MB of weights
    assert callable(Model(big, cache=cache)._log_probs_fn)
    sizes = [path.stat().st_size for path in cache.files()]
    assert max(sizes) < 1_000_000


def test_a_different_config_is_a_miss(tmp_path):
    cache = FunctionCache(tmp_path)
    log_probs(Model(CONFIG, cache=cache))
    log_probs(Model(ModelConfig(**{**CONFIG.__dict__, "hidden_size": 6}), cache=cache))
    log_probs(Model(ModelConfig(**{**CONFIG.__dict__, "cell": "lstm"}), cache=cache))
    assert (cache.stats.hits, cache.stats.misses) == (0, 3)
    assert kinds(cache).count(ENTRY) == 3


def test_a_different_function_is_a_different_entry(tmp_path):
    cache = FunctionCache(tmp_path)
    model = Model(CONFIG, cache=cache)
    assert callable(model._log_probs_fn)
    assert callable(model._step_fn)
    assert (cache.stats.hits, cache.stats.misses) == (0, 2)
    assert kinds(cache).count(ENTRY) == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: data[:-10] + bytes(10),  # payload bytes changed
        lambda data: b"garbage",
        lambda data: b"",
    ],
)
def test_a_corrupt_entry_is_rebuilt_silently(tmp_path, damage):
    cache = FunctionCache(tmp_path)
    expected = log_probs(Model(CONFIG, cache=cache))
    (entry,) = [path for path in cache.files() if path.suffix == ENTRY]
    entry.write_bytes(damage(entry.read_bytes()))

    got = log_probs(Model(CONFIG, cache=cache))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert cache.stats.rebuilt == 1
    # Rebuilt and written again: the next model hits.
    log_probs(Model(CONFIG, cache=cache))
    assert cache.stats.hits == 1


def test_a_corrupt_alias_is_dropped_and_rebuilt(tmp_path):
    cache = FunctionCache(tmp_path)
    expected = log_probs(Model(CONFIG, cache=cache))
    (alias,) = [path for path in cache.files() if path.suffix == ALIAS]
    alias.write_text("{not json")
    np.testing.assert_allclose(log_probs(Model(CONFIG, cache=cache)), expected, rtol=1e-12)
    # The graph-keyed entry was still good: found through the graph, not compiled again.
    assert cache.stats.hits == 1
    assert json.loads(alias.read_text())["shared"]


class Planted:
    """Unpickling this creates a marker file: proof that a pickle was read."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def forged(entry: Path, marker: Path) -> bytes:
    """The entry's own header with a payload that runs code, and a digest that matches."""
    data = entry.read_bytes()
    start = len(MAGIC) + 4
    (length,) = struct.unpack("<I", data[len(MAGIC) : start])
    payload = pickle.dumps(Planted(marker))
    return data[: start + length] + hashlib.sha256(payload).digest() + payload


def test_a_forged_entry_runs_code_only_from_a_private_file_in_the_folder(tmp_path):
    """The threat is real (a forged entry in place does run), so the cache must never read
    one from anywhere else: beside a model, through a link, or from a file others can write."""
    cache = FunctionCache(tmp_path / "cache")
    assert callable(Model(CONFIG, cache=cache)._log_probs_fn)
    (entry,) = [path for path in cache.files() if path.suffix == ENTRY]
    marker = tmp_path / "ran"
    evil = forged(entry, marker)

    # Beside a model file, and in the folder above the cache: never looked at.
    (tmp_path / entry.name).write_bytes(evil)
    (tmp_path / "model.npz").write_bytes(b"")
    (tmp_path / ("model.npz" + ENTRY)).write_bytes(evil)
    # In the cache folder, but a link to a file elsewhere: not followed.
    entry.unlink()
    entry.symlink_to(tmp_path / entry.name)
    log_probs(Model(CONFIG, cache=cache))
    assert not marker.exists()

    # A regular file that others may write: not read either.
    entry.unlink()  # (compiling again had replaced the link with a good private entry)
    entry.write_bytes(evil)
    entry.chmod(0o666)
    log_probs(Model(CONFIG, cache=cache))
    assert not marker.exists()
    assert cache.stats.rebuilt == 0

    # The same bytes as a private file in the folder are read: the test could fail. (The
    # forged function then fails validation and is rebuilt; its code has run all the same.)
    entry.write_bytes(evil)
    entry.chmod(0o600)
    log_probs(Model(CONFIG, cache=cache))
    assert marker.exists()
    assert cache.stats.rebuilt == 1


def test_the_folder_is_private_and_a_foreign_one_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_dir() == tmp_path / "xdg" / "rnnlm"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored, per the XDG spec
    assert default_dir() == Path.home() / ".cache" / "rnnlm"

    cache = FunctionCache(tmp_path / "new" / "rnnlm")
    log_probs(Model(CONFIG, cache=cache))
    assert (os.stat(cache.root).st_mode & 0o777) == 0o700

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    off = FunctionCache(not_a_folder)
    np.testing.assert_allclose(log_probs(Model(CONFIG, cache=off)), log_probs(Model(CONFIG)))
    assert not off.usable()


def test_info_and_clear(tmp_path):
    cache = FunctionCache(tmp_path)
    model = Model(CONFIG, cache=cache)
    assert callable(model._log_probs_fn)
    assert callable(model._step_fn)
    (tmp_path / "keep-me.txt").write_text("not ours")
    info = cache.info()
    assert (info.entries, info.usable) == (2, True)
    assert info.bytes == sum(path.stat().st_size for path in cache.files())
    assert cache.clear() == 2
    assert cache.files() == []
    assert (tmp_path / "keep-me.txt").exists()


def test_the_oldest_entries_go_beyond_the_size_limit(tmp_path):
    cache = FunctionCache(tmp_path)
    model = Model(CONFIG, cache=cache)
    assert callable(model._log_probs_fn)
    size = sum(path.stat().st_size for path in cache.files())
    cache.max_bytes = size + 1  # room for about one function
    assert callable(model._step_fn)
    assert cache.info().bytes <= size + 1 + 10_000  # the newest entry and its alias remain


ADAM = TrainConfig(optimizer="adam", clip_norm=1.0)


def train_step(model, config=ADAM):
    lr = backend.shared(np.float64(0.1), name="lr")
    state = {}

    def updates(params, grads):
        result, found = updates_for(config, params, grads, lr)
        state.update(found)
        return result

    return model.compile_train_step(updates), state


def test_a_loaded_training_step_updates_the_callers_parameters_and_optimizer_state(tmp_path):
    cache = FunctionCache(tmp_path)
    x, y, mask = batch()
    reference = Model(CONFIG, seed=3)
    reference_step, reference_state = train_step(reference)
    train_step(Model(CONFIG, seed=3, cache=cache))  # compiled and saved
    model = Model(CONFIG, seed=3, cache=cache)
    step, state = train_step(model)
    assert cache.stats.hits == 1

    for _ in range(3):
        expected = reference_step(x, y, mask, *reference.initial_states(3))
        got = step(x, y, mask, *model.initial_states(3))
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-10)
    for name, var in reference.params.items():
        np.testing.assert_allclose(model.params[name].get_value(), var.get_value(), rtol=1e-9)
    for name, var in reference_state.items():
        np.testing.assert_allclose(state[name].get_value(), var.get_value(), rtol=1e-9)
    # The scoring function sees what training did (one storage, not a copy).
    np.testing.assert_allclose(log_probs(model), log_probs(reference), rtol=1e-9)


def test_another_optimizer_setting_is_another_training_entry(tmp_path):
    cache = FunctionCache(tmp_path)
    train_step(Model(CONFIG, cache=cache), ADAM)
    train_step(Model(CONFIG, cache=cache), TrainConfig(optimizer="adam", clip_norm=2.0))
    train_step(Model(CONFIG, cache=cache), TrainConfig(optimizer="sgd"))
    assert (cache.stats.hits, cache.stats.misses) == (0, 3)


def test_dropout_random_streams_are_rebound(tmp_path):
    """A loaded dropout step draws from the model's own random streams: reseeding repeats."""
    config = ModelConfig(**{**CONFIG.__dict__, "dropout": 0.5})
    cache = FunctionCache(tmp_path)
    train_step(Model(config, cache=cache))
    x, y, mask = batch()
    losses = []
    for use_cache in (False, True):
        model = Model(config, seed=4, cache=cache if use_cache else None)
        step, _ = train_step(model)
        model.reseed(7)
        losses.append(float(step(x, y, mask, *model.initial_states(3))[0]))
    assert cache.stats.hits == 1
    assert losses[0] == pytest.approx(losses[1], rel=1e-12)


def test_a_fresh_process_finds_the_entry(tmp_path):
    """Keys are stable across processes (no object ids, no hash randomisation)."""
    cache = FunctionCache(tmp_path)
    expected = log_probs(Model(CONFIG, seed=5, cache=cache))
    script = f"""
import numpy as np
from rnnlm.compiled import FunctionCache
from rnnlm.config import ModelConfig
from rnnlm.model import Model
cache = FunctionCache({str(tmp_path)!r})
model = Model(ModelConfig(**{CONFIG.__dict__!r}), seed=5, cache=cache)
x, y, mask = {[a.tolist() for a in batch()]!r}
out = model.log_probs(np.array(x, np.int32), np.array(y, np.int32), np.array(mask))
print(cache.stats.hits, repr(float(out.sum())))
"""
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    hits, total = result.stdout.split()
    assert hits == "1"
    assert float(total) == pytest.approx(expected.sum(), rel=1e-12)
