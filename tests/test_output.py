"""The output-layer registry: every softmax kind, tied or not, normalises, agrees with itself,
and keeps what it needs in checked tables."""

import math

import numpy as np
import pytest

from rnnlm import backend, output, output_tables
from rnnlm import config as config_module
from rnnlm.architecture import OUTPUT_PARAMS, OutputConfig, output_params, param_shapes
from rnnlm.backend import RandomStream
from rnnlm.backend import tensor as tt
from rnnlm.errors import RnnlmError
from rnnlm.ops.adaptive_softmax import adaptive_log_softmax
from rnnlm.params import Params, uniform_fan_in

V, K = 23, 6
# Zipf-like counts in id order, but the last word (the vocabulary's unknown token) is frequent:
# frequency order is not id order.
COUNTS = np.array([1000 // (i + 1) for i in range(V - 1)] + [400])


def config(softmax, **kwargs):
    defaults = {"classes": 4, "cutoffs": (3, 9), "div_value": 2.0, "samples": 8}
    return OutputConfig(V, K, softmax, **(defaults | kwargs))


def shapes(cfg):
    return {name: spec.shape for name, spec in output_params(cfg).items()}


def build(cfg, seed=0, random=None, counts=COUNTS):
    rng = np.random.default_rng(seed)
    arrays = output.init_params(cfg, rng)
    # Random biases too, so that a bias wired to the wrong place would show.
    arrays = {n: a + rng.normal(size=a.shape) * 0.5 if "/b" in n else a for n, a in arrays.items()}
    if cfg.tied:
        arrays["embed/W"] = rng.normal(size=(V, K)) * 0.5
    params = Params(arrays, "float64")
    layer = output.output_layer(cfg, params, output_tables.make_tables(cfg, counts), random)
    return layer, params


KINDS = [(kind, tied) for kind in OUTPUT_PARAMS for tied in (False, True)]


@pytest.fixture(scope="module", params=KINDS, ids=[f"{k}{'-tied' if t else ''}" for k, t in KINDS])
def compiled(request):
    """(top (T, B, K), y (T, B)) -> exact log p(y) (T, B), the distribution (T, B, V) and the
    gradients of sum(log p(y)) by every parameter."""
    kind, tied = request.param
    layer, params = build(config(kind, tied=tied))
    top, y = tt.tensor3(dtype="float64"), tt.imatrix()
    log_p = layer.token_log_probs(top, y)
    grads = backend.grad(log_p.sum(), list(params.values()))
    f = backend.function([top, y], [log_p, layer.log_distribution(top), *grads])
    return f, params


def test_distribution_normalises_and_holds_the_targets_log_probs(compiled):
    f, params = compiled
    rng = np.random.default_rng(1)
    y = rng.integers(0, V, (3, 4)).astype(np.int32)
    y[0] = [0, V - 1, 5, 20]  # frequent, the out-of-order one, rare
    log_p, dist, *grads = f(rng.normal(size=(3, 4, K)), y)
    assert dist.shape == (3, 4, V)
    np.testing.assert_allclose(np.exp(dist).sum(axis=-1), 1, rtol=1e-12)
    np.testing.assert_allclose(
        log_p, np.take_along_axis(dist, y[..., None], -1)[..., 0], rtol=1e-10
    )
    for name, g in zip(params, grads, strict=True):
        assert np.abs(g).sum() > 0, f"{name} gets no gradient"


def test_tied_layers_read_the_embedding():
    for kind in OUTPUT_PARAMS:
        untied, tied = (set(shapes(config(kind, tied=t))) for t in (False, True))
        assert untied - tied, kind  # tying removes a matrix...
        assert not any(name.startswith("embed/") for name in untied | tied)  # ...owned upstream


def test_adaptive_positions_follow_frequency_order():
    """The word at frequency rank r takes position r: the layer is PyTorch's on ranks."""
    cfg = config("adaptive")
    layer, params = build(cfg)
    order = layer.constants["order"]
    assert order[:4].tolist() == [0, 1, V - 1, 2]  # the frequent last word moved up
    top = tt.dmatrix()
    tails = [(params[f"out/tail{k}/P"], params[f"out/tail{k}/W"]) for k in (0, 1)]
    head_W, head_b = params["out/head/W"], params["out/head/b"]
    f = backend.function(
        [top],
        [layer.log_distribution(top), adaptive_log_softmax(top, head_W, head_b, tails, (3, 9))],
    )
    by_word, by_rank = f(np.random.default_rng(2).normal(size=(3, K)))
    np.testing.assert_allclose(by_word[:, order], by_rank, rtol=1e-12)


def test_adaptive_on_ids_already_in_frequency_order():
    """No permutation in the graph then (a slice of the embedding when tied): same numbers."""
    in_order = np.sort(COUNTS)[::-1]
    top, y = tt.dmatrix(), tt.ivector()
    h, targets = np.random.default_rng(6).normal(size=(4, K)), np.array([0, 2, 7, 22], np.int32)
    for tied in (False, True):
        layer, _ = build(config("adaptive", tied=tied), counts=in_order)
        assert (layer.constants["order"] == np.arange(V)).all()
        f = backend.function([top, y], [layer.token_log_probs(top, y), layer.log_distribution(top)])
        log_p, dist = f(h, targets)
        np.testing.assert_allclose(np.exp(dist).sum(axis=1), 1, rtol=1e-12)
        np.testing.assert_allclose(log_p, dist[np.arange(4), targets], rtol=1e-10)


def test_sampled_training_draws_replay_after_reseeding():
    random = RandomStream(0)
    layer, params = build(config("sampled"), random=random)
    top, y = tt.dmatrix(), tt.ivector()
    train = layer.token_log_probs(top, y, train=True)
    grad_W = backend.grad(train.sum(), params["out/W"])
    f = backend.function([top, y], [train, layer.token_log_probs(top, y), grad_W])
    rng = np.random.default_rng(3)
    h, targets = rng.normal(size=(5, K)), np.array([0, 1, 2, 3, 22], np.int32)
    random.seed([4, 17])
    first, exact, grad = f(h, targets)
    second = f(h, targets)[0]
    random.seed([4, 17])
    np.testing.assert_array_equal(f(h, targets)[0], first)
    assert not np.array_equal(first, second)  # fresh negatives each step
    assert not np.allclose(first, exact)  # the sampled objective, not the exact log p
    # Only the targets' and the negatives' output vectors learn: 8 negatives leave some out.
    assert 5 <= (np.abs(grad).sum(axis=0) > 0).sum() <= 5 + 8 < V


def test_sampled_training_needs_a_random_stream():
    layer, _ = build(config("sampled"))
    with pytest.raises(ValueError, match="RandomStream"):
        layer.token_log_probs(tt.dmatrix(), tt.ivector(), train=True)


def test_frequency_classes():
    counts = np.array([1000 // (i + 1) for i in range(100)])
    word_class = output_tables.frequency_classes(counts, 10)
    assert np.all(np.diff(word_class) >= 0)  # contiguous in frequency (here id) order
    assert set(word_class) == set(range(10))
    shares = np.bincount(word_class, weights=counts) / counts.sum()
    assert shares.max() < 0.3  # the top word alone has 19 %
    # Every class gets a word even when the counts run out, and zero counts are fine.
    assert set(output_tables.frequency_classes(np.zeros(5), 5)) == set(range(5))
    assert set(output_tables.frequency_classes(np.array([100, 0, 0, 0]), 3)) == {0, 1, 2}
    assert OutputConfig(10_000, 8, "class").n_classes == 100


def test_proposals():
    order = output_tables.frequency_order(COUNTS)
    q = output_tables.log_uniform_proposal(order)
    np.testing.assert_allclose(q.sum(), 1, rtol=1e-12)
    assert q[order[0]] == pytest.approx(math.log(2) / math.log(V + 1))
    assert np.all(np.diff(q[order]) < 0)
    u = output_tables.unigram_proposal(np.array([16, 1, 0]))
    np.testing.assert_allclose(u, np.array([8, 1, 1]) / 10)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"softmax": "hierarchical"}, "softmax"),
        ({"classes": V + 1}, "classes"),
        ({"cutoffs": (9, 3)}, "cutoffs"),
        ({"cutoffs": (3, V)}, "cutoffs"),
        ({"cutoffs": (3, 3)}, "cutoffs"),
        ({"softmax": "adaptive", "div_value": 16.0}, "div_value"),
        ({"div_value": 0.0}, "div_value"),
        ({"samples": 0}, "samples"),
    ],
)
def test_bad_config_values_name_their_key(kwargs, key):
    with pytest.raises(RnnlmError, match=f"model.{key}"):
        OutputConfig(V, K, **kwargs)


def test_default_cutoffs():
    assert OutputConfig(50_000, 200, "adaptive").head_cutoffs == (2000, 10_000)
    assert OutputConfig(10_001, 8, "adaptive").head_cutoffs == (2000,)
    assert OutputConfig(20, 8, "adaptive").head_cutoffs == (5,)


@pytest.mark.parametrize(
    "kind, tables, match",
    [
        ("class", {}, "needs the tables"),
        ("class", {"word_class": np.zeros(V - 1, np.int32)}, "shape"),
        ("class", {"word_class": np.zeros(V, np.int32)}, "no words"),
        ("adaptive", {"order": np.zeros(V, np.int32)}, "permutation"),
        ("adaptive", {"order": np.arange(V) * 1.0}, "permutation"),
        ("sampled", {"proposal": np.full(V, 0.5)}, "sums to"),
        ("sampled", {"proposal": np.r_[np.zeros(1), np.full(V - 1, 1 / (V - 1))]}, "positive"),
        ("full", {"order": np.arange(V)}, "needs the tables"),
    ],
)
def test_bad_tables_are_an_error(kind, tables, match):
    with pytest.raises(RnnlmError, match=match):
        output_tables.check_tables(config(kind), tables)


def test_good_tables_pass_the_check():
    for kind in OUTPUT_PARAMS:
        cfg = config(kind)
        output_tables.check_tables(cfg, output_tables.make_tables(cfg, COUNTS))
    with pytest.raises(RnnlmError, match="counts"):
        output_tables.make_tables(config("class"), COUNTS[:-1])


def test_parameter_names_and_shapes():
    assert shapes(config("full")) == {"out/W": (K, V), "out/b": (V,)}
    assert shapes(config("sampled", bias=False)) == {"out/W": (K, V)}
    assert shapes(config("class", tied=True)) == {
        "out/class/W": (K, 4),
        "out/class/b": (4,),
        "out/word/b": (V,),
    }
    assert shapes(config("adaptive")) == {
        "out/head/W": (5, K),
        "out/head/b": (5,),
        "out/tail0/P": (3, K),
        "out/tail0/W": (6, 3),
        "out/tail1/P": (1, K),
        "out/tail1/W": (14, 1),
    }
    tied = shapes(config("adaptive", tied=True, bias=False))
    assert tied["out/head/clusters"] == (2, K) and "out/head/W" not in tied


def test_init_is_the_fan_in_rule_and_the_full_softmax_draws_as_before():
    arrays = output.init_params(config("full"), np.random.default_rng(5))
    np.testing.assert_array_equal(
        arrays["out/W"], uniform_fan_in(np.random.default_rng(5), (K, V), K)
    )
    assert not arrays["out/b"].any()
    adaptive = output.init_params(config("adaptive"), np.random.default_rng(5))
    assert np.abs(adaptive["out/tail0/W"]).max() <= 1 / math.sqrt(3)  # fan-in: its 3 inputs
    scaled = output.init_params(config("class"), np.random.default_rng(5), init_scale=0.01)
    assert all(np.abs(a).max() <= 0.01 for a in scaled.values())


def test_the_registries_and_the_choice_lists_agree():
    assert tuple(OUTPUT_PARAMS) == config_module.SOFTMAXES
    assert set(output.SOFTMAXES) == set(output_tables.TABLES) == set(OUTPUT_PARAMS)
    assert tuple(output_tables.PROPOSALS) == config_module.SAMPLERS


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"softmax": "hierarchical"}, "model.softmax"),
        ({"sampler": "uniform"}, "model.sampler"),
        ({"cutoffs": "10,5"}, "model.cutoffs"),
        ({"cutoffs": "2000;10000"}, "model.cutoffs"),
        ({"cutoffs": "0,5"}, "model.cutoffs"),
        ({"classes": -1}, "model.classes"),
        ({"div_value": 0.0}, "model.div_value"),
        ({"samples": 0}, "model.samples"),
    ],
)
def test_bad_model_config_values_name_their_key(kwargs, key):
    with pytest.raises(RnnlmError, match=key):
        config_module.ModelConfig(**kwargs)


def test_the_model_config_gives_the_output_layer_its_sizes():
    model = config_module.ModelConfig(
        vocab_size=50, hidden_size=8, bidirectional=True, softmax="adaptive", cutoffs="5, 20"
    )
    assert model.output == OutputConfig(50, 16, "adaptive", cutoffs=(5, 20))
    # What the vocabulary decides is checked once it is known: here a cutoff past its end.
    with pytest.raises(RnnlmError, match="model.cutoffs"):
        param_shapes(config_module.ModelConfig(vocab_size=20, softmax="adaptive", cutoffs="5,20"))
