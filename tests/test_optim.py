"""Optimizer steps against values worked out by hand, on a loss whose gradient is known.

The problem: params x (2,) and W (2, 2), loss = (|x|^2 + |W|^2) / 2, so each gradient is the
parameter itself. Every rule is elementwise and odd, so an entry that starts at ±1 follows the
trajectory "a" below with its sign, and one that starts at ±2 follows "b".
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnnlm import backend
from rnnlm import config as config_module
from rnnlm.backend import tensor as tt
from rnnlm.config import TrainConfig
from rnnlm.optim import OPTIMIZERS, clip_by_global_norm, updates_for

X0 = [1.0, -2.0]
W0 = [[-1.0, 2.0], [2.0, 1.0]]
EPS = 1e-6


def compile_step(config, x0=X0, w0=W0, dtype="float64", lr_dtype="float64"):
    """The params, their state, the shared rate and a compiled step (loss = sum of squares / 2)."""
    params = {
        "layer0/x": backend.shared(np.asarray(x0, dtype=dtype), name="layer0/x"),
        "out/W": backend.shared(np.asarray(w0, dtype=dtype), name="out/W"),
    }
    loss = sum(0.5 * tt.sum(tt.square(p)) for p in params.values())
    grads = dict(zip(params, backend.grad(loss, list(params.values())), strict=True))
    lr = backend.shared(np.asarray(config.learning_rate, dtype=lr_dtype), name="lr")
    updates, state = updates_for(config, params, grads, lr)
    step = backend.function([], [], updates=updates, mode="FAST_COMPILE")
    return params, state, lr, step


def run(config, steps, **kwargs):
    """(param values, state values) by name after `steps` steps."""
    params, state, _, step = compile_step(config, **kwargs)
    for _ in range(steps):
        step()
    values = {name: var.get_value() for name, var in params.items()}
    return values, {name: var.get_value() for name, var in state.items()}


def shaped(a, b):
    """x and W after the entries starting at ±1 moved to ±a and those at ±2 to ±b."""
    return np.array([a, -b]), np.array([[-a, b], [b, a]])


def close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-15)


def check(values, a, b):
    x, w = shaped(a, b)
    close(values["layer0/x"], x)
    close(values["out/W"], w)


def check_accumulator(state, slot, a, b):
    """A sum of squares: a where the params started at ±1, b where they started at ±2."""
    x, w = shaped(a, b)
    close(state[f"{slot}/layer0/x"], np.abs(x))
    close(state[f"{slot}/out/W"], np.abs(w))


def test_registry_matches_config():
    assert set(OPTIMIZERS) == set(config_module.OPTIMIZERS)


def test_sgd_three_steps():
    values, state = run(TrainConfig(optimizer="sgd", learning_rate=0.1), steps=3)
    # each step: p <- p - 0.1*p = 0.9*p
    check(values, 0.9 * 0.9 * 0.9, 2.0 * 0.9 * 0.9 * 0.9)
    assert state == {}


def test_momentum_three_steps():
    values, state = run(TrainConfig(optimizer="momentum", learning_rate=0.1, momentum=0.9), 3)
    # per unit of p0 (g = p):
    # 1: v = 0.9*0 - 0.1*1 = -0.1;              p = 1 - 0.1 = 0.9
    # 2: v = 0.9*(-0.1) - 0.1*0.9 = -0.18;      p = 0.9 - 0.18 = 0.72
    # 3: v = 0.9*(-0.18) - 0.1*0.72 = -0.234;   p = 0.72 - 0.234 = 0.486
    check(values, 0.486, 2.0 * 0.486)
    x, w = shaped(-0.234, 2.0 * -0.234)
    close(state["momentum/velocity/layer0/x"], x)
    close(state["momentum/velocity/out/W"], w)


def test_nesterov_three_steps():
    values, state = run(TrainConfig(optimizer="nesterov", learning_rate=0.1, momentum=0.9), 3)
    # per unit of p0 (g = p):
    # 1: v = -0.1*1 = -0.1;                      p = 1 + 0.9*(-0.1) - 0.1*1 = 0.81
    # 2: v = 0.9*(-0.1) - 0.1*0.81 = -0.171;     p = 0.81 + 0.9*(-0.171) - 0.081 = 0.5751
    # 3: v = 0.9*(-0.171) - 0.1*0.5751 = -0.21141;
    #    p = 0.5751 + 0.9*(-0.21141) - 0.05751 = 0.327321
    check(values, 0.327321, 2.0 * 0.327321)
    x, w = shaped(-0.21141, 2.0 * -0.21141)
    close(state["nesterov/velocity/layer0/x"], x)
    close(state["nesterov/velocity/out/W"], w)


def test_adagrad_two_steps():
    config = TrainConfig(optimizer="adagrad", learning_rate=0.1, epsilon=EPS)
    values, state = run(config, steps=2)
    # from 1: cache = 1;          p = 1 - 0.1*1 / (sqrt(1) + eps)
    a1 = 1.0 - 0.1 * 1.0 / (1.0 + 1e-6)
    #         cache = 1 + a1^2;   p = a1 - 0.1*a1 / (sqrt(1 + a1^2) + eps)
    a_cache = 1.0 + a1 * a1
    a2 = a1 - 0.1 * a1 / (math.sqrt(a_cache) + 1e-6)
    # from 2: cache = 4;          p = 2 - 0.1*2 / (sqrt(4) + eps)
    b1 = 2.0 - 0.1 * 2.0 / (2.0 + 1e-6)
    b_cache = 4.0 + b1 * b1
    b2 = b1 - 0.1 * b1 / (math.sqrt(b_cache) + 1e-6)
    check(values, a2, b2)
    check_accumulator(state, "adagrad/cache", a_cache, b_cache)


def test_rmsprop_two_steps():
    config = TrainConfig(optimizer="rmsprop", learning_rate=0.1, rho=0.9, epsilon=EPS)
    values, state = run(config, steps=2)
    # from 1: c = 0.9*0 + 0.1*1 = 0.1;           p = 1 - 0.1*1 / sqrt(0.1 + eps)
    a1 = 1.0 - 0.1 * 1.0 / math.sqrt(0.1 + 1e-6)
    #         c = 0.9*0.1 + 0.1*a1^2;            p = a1 - 0.1*a1 / sqrt(c + eps)
    a_cache = 0.09 + 0.1 * a1 * a1
    a2 = a1 - 0.1 * a1 / math.sqrt(a_cache + 1e-6)
    # from 2: c = 0.1*4 = 0.4;                   p = 2 - 0.1*2 / sqrt(0.4 + eps)
    b1 = 2.0 - 0.2 / math.sqrt(0.4 + 1e-6)
    b_cache = 0.36 + 0.1 * b1 * b1
    b2 = b1 - 0.1 * b1 / math.sqrt(b_cache + 1e-6)
    check(values, a2, b2)
    check_accumulator(state, "rmsprop/cache", a_cache, b_cache)


def test_adam_two_steps():
    config = TrainConfig(optimizer="adam", learning_rate=0.1, beta1=0.9, beta2=0.999, epsilon=EPS)
    values, state = run(config, steps=2)
    # from 1, t = 1: m = 0.1*1 = 0.1, v = 0.001*1 = 0.001;
    #   m_hat = 0.1 / (1 - 0.9) = 1, v_hat = 0.001 / (1 - 0.999) = 1
    a1 = 1.0 - 0.1 * 1.0 / (1.0 + 1e-6)
    # t = 2, g = a1: corrections 1 - 0.9^2 = 0.19 and 1 - 0.999^2 = 0.001999
    a_m = 0.9 * 0.1 + 0.1 * a1
    a_v = 0.999 * 0.001 + 0.001 * a1 * a1
    a2 = a1 - 0.1 * (a_m / 0.19) / (math.sqrt(a_v / 0.001999) + 1e-6)
    # from 2, t = 1: m = 0.2, v = 0.004; m_hat = 2, v_hat = 4
    b1 = 2.0 - 0.1 * 2.0 / (2.0 + 1e-6)
    b_m = 0.9 * 0.2 + 0.1 * b1
    b_v = 0.999 * 0.004 + 0.001 * b1 * b1
    b2 = b1 - 0.1 * (b_m / 0.19) / (math.sqrt(b_v / 0.001999) + 1e-6)
    check(values, a2, b2)
    x, w = shaped(a_m, b_m)
    close(state["adam/m/layer0/x"], x)
    close(state["adam/m/out/W"], w)
    check_accumulator(state, "adam/v", a_v, b_v)
    assert state["adam/t"] == 2


SLOTS = {
    "sgd": [],
    "momentum": ["momentum/velocity"],
    "nesterov": ["nesterov/velocity"],
    "adagrad": ["adagrad/cache"],
    "rmsprop": ["rmsprop/cache"],
    "adam": ["adam/m", "adam/v"],
}


@pytest.mark.parametrize("name", sorted(SLOTS))
def test_state_names_and_zero_init(name):
    params, state, _, _ = compile_step(TrainConfig(optimizer=name))
    expected = {f"{slot}/{param}" for slot in SLOTS[name] for param in params}
    assert set(state) == expected | ({"adam/t"} if name == "adam" else set())
    for key, var in state.items():
        assert var.name == key
        value = var.get_value()
        assert not value.any()
        if key == "adam/t":
            assert value.dtype == np.float64 and value.shape == ()  # the params' dtype
            continue
        param = params[key.split("/", 2)[2]].get_value()
        assert value.dtype == param.dtype and value.shape == param.shape


def evaluate(grads):
    names = list(grads)
    outputs = backend.function([], [grads[n] for n in names], mode="FAST_COMPILE")()
    return dict(zip(names, outputs, strict=True))


def test_clipping_scales_a_large_norm_down():
    # norm sqrt(6^2 + 8^2) = 10, clipped to 5: every entry halves
    grads = {
        "a": tt.as_tensor_variable(np.array([6.0, 0.0])),
        "b": tt.as_tensor_variable(np.array(8.0)),
    }
    clipped = evaluate(clip_by_global_norm(grads, 5.0))
    close(clipped["a"], [3.0, 0.0])
    close(clipped["b"], 4.0)


def test_clipping_leaves_a_small_norm_alone():
    grads = {
        "a": tt.as_tensor_variable(np.array([0.6, 0.0])),
        "b": tt.as_tensor_variable(np.array(0.8)),
    }
    clipped = evaluate(clip_by_global_norm(grads, 5.0))
    close(clipped["a"], [0.6, 0.0])
    close(clipped["b"], 0.8)


def test_clipping_a_zero_gradient_gives_zero():
    clipped = evaluate(clip_by_global_norm({"a": tt.as_tensor_variable(np.zeros(2))}, 5.0))
    close(clipped["a"], [0.0, 0.0])


def test_weight_decay_adds_to_the_gradient():
    config = TrainConfig(optimizer="sgd", learning_rate=0.1, weight_decay=0.5)
    values, _ = run(config, steps=1)
    # g = p + 0.5*p; p <- p - 0.1*1.5*p = 0.85*p
    check(values, 0.85, 2.0 * 0.85)


def test_weight_decay_comes_before_clipping():
    # |p0| = sqrt(3^2 + 4^2) = 5; g = p + 1.0*p has norm 10, clipped to 5, i.e. back to p
    config = TrainConfig(optimizer="sgd", learning_rate=0.1, weight_decay=1.0, clip_norm=5.0)
    values, _ = run(config, steps=1, x0=[3.0, 0.0], w0=[[0.0, 4.0], [0.0, 0.0]])
    close(values["layer0/x"], [0.9 * 3.0, 0.0])  # p - 0.1*p
    close(values["out/W"], [[0.0, 0.9 * 4.0], [0.0, 0.0]])


def test_learning_rate_is_read_at_call_time():
    params, _, lr, step = compile_step(TrainConfig(optimizer="sgd", learning_rate=0.1))
    step()  # p <- 0.9*p
    lr.set_value(0.5)
    step()  # p <- p - 0.5*p
    close(params["layer0/x"].get_value(), [0.9 * 0.5 * 1.0, 0.9 * 0.5 * -2.0])


def test_mismatched_names_are_an_error():
    p = backend.shared(np.zeros(2), name="p")
    lr = backend.shared(0.1)
    with pytest.raises(ValueError, match="q"):
        updates_for(TrainConfig(), {"p": p}, {"q": tt.sum(p)}, lr)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_float32_stays_float32(name):
    config = TrainConfig(optimizer=name, learning_rate=0.1, clip_norm=1.0, weight_decay=0.1)
    params, state, _, step = compile_step(config, dtype="float32", lr_dtype="float64")
    step()
    for var in [*params.values(), *state.values()]:
        assert var.get_value().dtype == np.float32, var.name
