"""The language-model graph: input projection -> scan -> output layer -> log-softmax -> NLL.

The only module that calls `aesara.scan` and `aesara.function`. Every function is compiled
once, on first use, and reused. Batches are time-major: ids `x`, `y` int32 (T, B), `mask`
(T, B) with 1 on real tokens; sentences are left-padded, so they all end at step T - 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property

import aesara
import aesara.tensor as at
import numpy as np
from aesara.tensor.special import log_softmax

from rnnlm.cells import CELLS
from rnnlm.config import ModelConfig
from rnnlm.params import Params, uniform_fan_in

Optimizer = Callable[[list, list, aesara.compile.SharedVariable], dict]


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's shape, in graph order, without allocating anything."""
    cell = CELLS[config.cell]
    shapes = {
        f"layer0/{name}": shape
        for name, shape in cell.shapes(config.vocab_size, config.hidden_size).items()
    }
    shapes["out/W"] = (config.hidden_size, config.vocab_size)
    return shapes


def init_params(config: ModelConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Fresh parameter values, in graph order."""
    cell = CELLS[config.cell]
    arrays = {
        f"layer0/{name}": value
        for name, value in cell.init(rng, config.vocab_size, config.hidden_size).items()
    }
    arrays["out/W"] = uniform_fan_in(rng, param_shapes(config)["out/W"], config.hidden_size)
    return arrays


def masked(step: Callable) -> Callable:
    """Wrap a cell step so a padded position (mask 0) carries the previous state unchanged."""

    def masked_step(x_t, m_t, h_prev, *non_sequences):
        h = step(x_t, h_prev, *non_sequences)
        m = m_t.dimshuffle(0, "x")  # (B, 1)
        return m * h + (1 - m) * h_prev

    return masked_step


class Model:
    """A compiled-on-demand RNN language model over shared parameters."""

    def __init__(
        self,
        config: ModelConfig,
        params: Mapping[str, np.ndarray] | None = None,
        seed: int = 0,
        mode: str | None = None,
    ) -> None:
        self.config = config
        # The mode compiles both the functions and the scans' inner graphs (None: the config's).
        self.mode = aesara.compile.mode.get_mode(mode)
        if config.bptt_truncate != -1:
            # Aesara 2.9.4's scan_pushout_add moves the truncated gradient's sums out of the
            # scan with the full sequence length: a shape error at run time.
            self.mode = self.mode.excluding("scan_pushout_add")
        fresh = init_params(config, np.random.default_rng(seed))
        self.params = Params(fresh, config.dtype)
        if params is not None:
            self.params.assign(params)
        self.cell = CELLS[config.cell]

    # -- symbolic graph ---------------------------------------------------------------------

    def _inputs(self):
        x = at.imatrix("x")  # (T, B) input ids
        y = at.imatrix("y")  # (T, B) target ids
        mask = at.matrix("mask", dtype=self.config.dtype)  # (T, B)
        return x, y, mask

    def _states(self, x, mask):
        """Hidden states (T, B, H) for ids (T, B); the initial state is zero."""
        p = self.params
        projected = p["layer0/W_in"][x]  # (T, B, H): U x_t for every step, outside the scan
        h0 = at.zeros((x.shape[1], self.config.hidden_size), dtype=self.config.dtype)
        non_sequences = [p[f"layer0/{name}"] for name in self.cell.recurrent_params]
        states, _ = aesara.scan(
            masked(self.cell.step),
            sequences=[projected, mask],
            outputs_info=[h0],
            non_sequences=non_sequences,
            truncate_gradient=self.config.bptt_truncate,
            strict=True,
            mode=self.mode,
            name="layer0",
        )
        return states

    def _token_log_probs(self, states, y):
        """log p(y_t | x_<=t), (T, B)."""
        logits = at.dot(states, self.params["out/W"])  # (T, B, V)
        log_p = log_softmax(logits, axis=-1)
        flat = log_p.reshape((-1, self.config.vocab_size))  # (T*B, V)
        return flat[at.arange(flat.shape[0]), y.flatten()].reshape(y.shape)

    def _nll_sum(self, x, y, mask):
        """The tutorial's loss: summed cross-entropy over real tokens; and their count."""
        token_log_p = self._token_log_probs(self._states(x, mask), y)
        return -(token_log_p * mask).sum(), mask.sum()

    def _function(self, inputs, outputs, **kwargs):
        return aesara.function(inputs, outputs, mode=self.mode, **kwargs)

    # -- compiled functions -----------------------------------------------------------------

    @cached_property
    def _log_probs_fn(self):
        x, y, mask = self._inputs()
        token_log_p = self._token_log_probs(self._states(x, mask), y)
        return self._function([x, y, mask], token_log_p * mask)

    @cached_property
    def _gradients_fn(self):
        x, y, mask = self._inputs()
        nll, _ = self._nll_sum(x, y, mask)
        return self._function([x, y, mask], aesara.grad(nll, list(self.params.values())))

    @cached_property
    def _step_fn(self):
        """One step for generation: ids (B,) and states (B, H) -> logits (B, V), new states."""
        ids = at.ivector("ids")
        h_prev = at.matrix("h_prev", dtype=self.config.dtype)
        p = self.params
        non_sequences = [p[f"layer0/{name}"] for name in self.cell.recurrent_params]
        h = self.cell.step(p["layer0/W_in"][ids], h_prev, *non_sequences)
        logits = at.dot(h, p["out/W"])
        return self._function([ids, h_prev], [logits, h])

    def compile_train_step(
        self, optimizer: Optimizer, learning_rate: aesara.compile.SharedVariable
    ) -> Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """(x, y, mask) -> (summed NLL, real tokens), updating the parameters in place."""
        x, y, mask = self._inputs()
        nll, n_tokens = self._nll_sum(x, y, mask)
        params = list(self.params.values())
        updates = optimizer(params, aesara.grad(nll, params), learning_rate)
        return self._function([x, y, mask], [nll, n_tokens], updates=updates)

    # -- numpy-facing API -------------------------------------------------------------------

    def log_probs(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(T, B) log-probability of each target; 0 where the mask is 0."""
        return self._log_probs_fn(x, y, mask.astype(self.config.dtype))

    def gradients(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Gradients of the summed masked NLL with respect to every parameter."""
        grads = self._gradients_fn(x, y, mask.astype(self.config.dtype))
        return dict(zip(self.params, grads, strict=True))

    def initial_state(self, batch_size: int) -> np.ndarray:
        return np.zeros((batch_size, self.config.hidden_size), dtype=self.config.dtype)

    def step(self, ids: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance one token: ids (B,) and state (B, H) -> logits (B, V) and the new state."""
        return self._step_fn(np.asarray(ids, dtype=np.int32), state)
