"""Optimizers: functions from (params, grads, learning rate, config) to updates and named state.

They compile nothing. The learning rate is a shared scalar, so a schedule changes it without
recompiling; optimizer state is named `{optimizer}/{slot}/{param}` so checkpoints save it by name.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from rnnlm import backend
from rnnlm.backend import SharedVariable, Variable
from rnnlm.backend import tensor as tt
from rnnlm.config import TrainConfig
from rnnlm.ops.norm import sum_of_squares

State = dict[str, SharedVariable]  # "adam/m/layer0/W_in" -> its shared variable
Params = Mapping[str, SharedVariable]
Grads = Mapping[str, Variable]
Optimizer = Callable[[Params, Grads, SharedVariable, TrainConfig], tuple[OrderedDict, State]]


def sgd(
    params: Params, grads: Grads, lr: SharedVariable, config: TrainConfig
) -> tuple[OrderedDict, State]:
    """Plain SGD, as the tutorial trains."""
    updates: OrderedDict = OrderedDict()
    for _name, p, g in _pairs(params, grads):
        updates[p] = p - _cast(lr, p) * g  # p <- p - lr*g
    return updates, {}


def momentum(
    params: Params, grads: Grads, lr: SharedVariable, config: TrainConfig
) -> tuple[OrderedDict, State]:
    """Classical (heavy-ball) momentum."""
    updates: OrderedDict = OrderedDict()
    state: State = {}
    for name, p, g in _pairs(params, grads):
        v = _slot(state, "momentum/velocity", name, p)
        mu = _const(config.momentum, p)
        v_new = mu * v - _cast(lr, p) * g  # v <- mu*v - lr*g
        updates[v] = v_new
        updates[p] = p + v_new  # p <- p + v
    return updates, state


def nesterov(
    params: Params, grads: Grads, lr: SharedVariable, config: TrainConfig
) -> tuple[OrderedDict, State]:
    """Nesterov momentum in Lasagne's form: the gradient is taken at the current parameters."""
    updates: OrderedDict = OrderedDict()
    state: State = {}
    for name, p, g in _pairs(params, grads):
        v = _slot(state, "nesterov/velocity", name, p)
        mu = _const(config.momentum, p)
        step = _cast(lr, p) * g
        v_new = mu * v - step  # v <- mu*v - lr*g
        updates[v] = v_new
        updates[p] = p + mu * v_new - step  # p <- p + mu*v_new - lr*g
    return updates, state


def adagrad(
    params: Params, grads: Grads, lr: SharedVariable, config: TrainConfig
) -> tuple[OrderedDict, State]:
    """Adagrad: each weight's step shrinks with the sum of its squared gradients."""
    updates: OrderedDict = OrderedDict()
    state: State = {}
    for name, p, g in _pairs(params, grads):
        cache = _slot(state, "adagrad/cache", name, p)
        cache_new = cache + tt.square(g)  # a <- a + g^2
        updates[cache] = cache_new
        # p <- p - lr*g / (sqrt(a) + eps)
        updates[p] = p - _cast(lr, p) * g / (tt.sqrt(cache_new) + _const(config.epsilon, p))
    return updates, state


def rmsprop(
    params: Params, grads: Grads, lr: SharedVariable, config: TrainConfig
) -> tuple[OrderedDict, State]:
    """RMSprop as in the WildML tutorial (part 4): epsilon inside the square root."""
    updates: OrderedDict = OrderedDict()
    state: State = {}
    for name, p, g in _pairs(params, grads):
        cache = _slot(state, "rmsprop/cache", name, p)
        rho = config.rho
        # c <- rho*c + (1-rho)*g^2
        cache_new = _const(rho, p) * cache + _const(1 - rho, p) * tt.square(g)
        updates[cache] = cache_new
        # p <- p - lr*g / sqrt(c + eps)
        updates[p] = p - _cast(lr, p) * g / tt.sqrt(cache_new + _const(config.epsilon, p))
    return updates, state


def adam(
    params: Params, grads: Grads, lr: SharedVariable, config: TrainConfig
) -> tuple[OrderedDict, State]:
    """Adam (Kingma & Ba 2015, Algorithm 1) with bias-corrected moments."""
    updates: OrderedDict = OrderedDict()
    state: State = {}
    # steps taken, a float in the params' dtype since checkpoints hold float state only
    dtype = next(iter(params.values())).dtype if params else "float64"
    t = backend.shared(np.asarray(0, dtype=dtype), name="adam/t")
    state["adam/t"] = t
    t_new = t + _const(1, t)  # t <- t+1
    updates[t] = t_new
    b1, b2 = config.beta1, config.beta2
    # the bias corrections 1 - b^t, in float64 and cast once per parameter below
    t64 = tt.cast(t_new, "float64")
    correction1 = 1 - tt.power(tt.constant(b1, dtype="float64"), t64)
    correction2 = 1 - tt.power(tt.constant(b2, dtype="float64"), t64)
    for name, p, g in _pairs(params, grads):
        m = _slot(state, "adam/m", name, p)
        v = _slot(state, "adam/v", name, p)
        m_new = _const(b1, p) * m + _const(1 - b1, p) * g  # m <- b1*m + (1-b1)*g
        v_new = _const(b2, p) * v + _const(1 - b2, p) * tt.square(g)  # v <- b2*v + (1-b2)*g^2
        updates[m] = m_new
        updates[v] = v_new
        m_hat = m_new / _cast(correction1, p)  # m / (1-b1^t)
        v_hat = v_new / _cast(correction2, p)  # v / (1-b2^t)
        # p <- p - lr * m_hat / (sqrt(v_hat) + eps)
        updates[p] = p - _cast(lr, p) * m_hat / (tt.sqrt(v_hat) + _const(config.epsilon, p))
    return updates, state


OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": sgd,
    "momentum": momentum,
    "nesterov": nesterov,
    "adagrad": adagrad,
    "rmsprop": rmsprop,
    "adam": adam,
}


def clip_by_global_norm(grads: Grads, max_norm: float) -> dict[str, Variable]:
    """Scale every gradient by min(1, max_norm / norm), norm = sqrt(sum of all their squares)."""
    if max_norm <= 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    grads = {name: tt.as_tensor_variable(g) for name, g in grads.items()}
    if not grads:
        return {}
    # sum_of_squares: one pass per gradient, no squared temporary (rnnlm.ops.norm)
    norm = tt.sqrt(tt.add(*(sum_of_squares(g) for g in grads.values())))  # () scalar
    # max_norm / max(norm, max_norm) == min(1, max_norm / norm), and never divides by zero
    scale = tt.constant(max_norm, dtype=norm.dtype) / tt.maximum(norm, max_norm)
    return {name: g * tt.cast(scale, g.dtype) for name, g in grads.items()}


def updates_for(
    config: TrainConfig, params: Params, grads: Grads, lr: SharedVariable
) -> tuple[OrderedDict, State]:
    """The one entry point: L2 weight decay, then global-norm clipping, then the optimizer."""
    _check_names(params, grads)
    grads = dict(grads)
    if config.weight_decay > 0:
        # g <- g + weight_decay * p, the gradient of (weight_decay / 2) * |p|^2
        grads = {
            name: g + _const(config.weight_decay, params[name]) * params[name]
            for name, g in grads.items()
        }
    if config.clip_norm > 0:
        grads = clip_by_global_norm(grads, config.clip_norm)
    return OPTIMIZERS[config.optimizer](params, grads, lr, config)


# -- helpers ----------------------------------------------------------------------------------


def _check_names(params: Params, grads: Grads) -> None:
    if set(params) != set(grads):
        raise ValueError(
            f"params and grads name different sets: {sorted(set(params) ^ set(grads))}"
        )


def _pairs(params: Params, grads: Grads) -> Iterator[tuple[str, SharedVariable, Variable]]:
    """(name, param, grad) in the params' order; each gradient in its parameter's dtype."""
    _check_names(params, grads)
    for name, p in params.items():
        yield name, p, _cast(grads[name], p)


def _slot(state: State, prefix: str, name: str, param: SharedVariable) -> SharedVariable:
    """A zero state array shaped and typed like `param`, registered as `{prefix}/{name}`."""
    key = f"{prefix}/{name}"
    value = param.get_value(borrow=True)
    var = backend.shared(np.zeros(value.shape, dtype=value.dtype), name=key, shape=param.type.shape)
    state[key] = var
    return var


def _const(value: float, like: Variable) -> Variable:
    """A constant in `like`'s dtype, so float32 graphs stay float32."""
    return tt.constant(value, dtype=like.dtype)


def _cast(x: Variable, like: Variable) -> Variable:
    x = tt.as_tensor_variable(x)
    return x if x.dtype == like.dtype else tt.cast(x, like.dtype)
