"""The language-model graph, and the only module that calls `scan` / `function`.

    ids (T, B) -> [embedding] -> layer 0 ... layer L-1 -> [dropout] -> output layer
               -> log p(y_t | x_<=t) (T, B) -> masked NLL

The output layer is `rnnlm.output`'s, of the config's softmax kind (full, class, adaptive,
or sampled: the full softmax but while training), with the tables stored with the model.

Each layer's input projection (all time steps, gates stacked) is one product outside its
scan; dropout masks are drawn outside the scans too (`rnnlm.regularization`), on the
non-recurrent connections, and so are the word-dropout mask of the input and the
weight-drop mask of each recurrent matrix.
A bidirectional model adds a backward stack that reads the targets from the end, and
predicts y_t from the forward state at t and the backward state at t + 1 (the words after
y_t): a fill-in-the-blank model, not a left-to-right language model.

Batches are time-major: ids int32 (T, B), a mask (T, B) with 1 on real tokens; sentences
are left-padded, so they all end at step T - 1. Every function is compiled once, on first
use; initial recurrent states are inputs and final states outputs, so stream mode can carry
them from batch to batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from rnnlm import backend, compiling, output, regularization
from rnnlm.architecture import stacks
from rnnlm.backend import RandomStream
from rnnlm.backend import tensor as tt
from rnnlm.cells import CELLS
from rnnlm.compiling import compiled_function
from rnnlm.config import ModelConfig
from rnnlm.initialization import init_params
from rnnlm.ops.recurrent import FusedStep, recurrent_weights
from rnnlm.output_tables import tables_digest
from rnnlm.params import Params
from rnnlm.regularization import Shard
from rnnlm.scan_steps import fused, masked

if TYPE_CHECKING:
    from rnnlm.compiled import FunctionCache

UpdatesFn = Callable[[Mapping, Mapping], Mapping]  # (params, grads) -> updates


class Model:
    """A compiled-on-demand RNN language model over shared parameters.

    `config.bptt_truncate` None (the training mode's default, see `ModelConfig.for_mode`)
    is decided here as sentence mode decides it; a trainer passes the value already decided.
    `tables`: the output layer's (`rnnlm.output_tables`), which every softmax kind but the
    full one needs.
    """

    def __init__(
        self,
        config: ModelConfig,
        params: Mapping[str, np.ndarray] | None = None,
        seed: int = 0,
        compile_mode: str | None = None,
        cache: FunctionCache | None = None,
        tables: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self.config = config = config.for_mode("sentence")
        self.cache = cache  # compiled functions from disk when the same graph was compiled before
        self.cell = CELLS[config.cell]
        self.compile_mode = compiling.compile_mode(config, compile_mode)
        self.params = Params(init_params(config, np.random.default_rng(seed)), config.dtype)
        if params is not None:
            self.params.assign(params)
        self.random = RandomStream(seed)
        self.tables = dict(tables or {})
        self.tables_digest = tables_digest(self.tables)
        self.output = output.output_layer(config.output, self.params, self.tables, self.random)

    @property
    def random_in_training(self) -> bool:
        """Whether a training step draws random numbers (dropout and weight-drop masks,
        sampled negatives): then reseeding before each step makes a resumed run retrace an
        uninterrupted one."""
        config = self.config
        rates = (config.dropout, config.embedding_dropout, config.weight_drop)
        return any(rates) or config.softmax == "sampled"

    @property
    def n_states(self) -> int:
        """Recurrent state tensors carried between batches: per stack, layer and cell state."""
        return len(stacks(self.config)) * self.config.layers * self.cell.states

    def initial_states(self, batch_size: int) -> list[np.ndarray]:
        shape = (batch_size, self.config.hidden_size)
        return [np.zeros(shape, dtype=self.config.dtype) for _ in range(self.n_states)]

    def reseed(self, seed: int) -> None:
        """Dropout masks from here on depend only on `seed` (exact resume, reproducibility)."""
        self.random.seed(seed)

    # -- symbolic graph ---------------------------------------------------------------------

    def _inputs(self):
        x = tt.imatrix("x")  # (T, B) input ids
        y = tt.imatrix("y")  # (T, B) target ids
        mask = tt.matrix("mask", dtype=self.config.dtype)  # (T, B)
        states = [tt.matrix(f"h0_{i}", dtype=self.config.dtype) for i in range(self.n_states)]
        return x, y, mask, states

    def _dropout(self, h, train: bool, shard: Shard = None):
        """h (T, B, D) on a non-recurrent connection, with the config's dropout if `train`."""
        config = self.config
        if not train or not config.dropout:
            return h
        return regularization.dropout(
            self.random, h, config.dropout, config.variational_dropout, shard
        )

    def _embedded(self, key: str, ids, train: bool):
        """Rows of `key` (V, E), the embedding or a one-hot first layer's W_in, for ids (T, B):
        (T, B, E), with the config's embedding dropout (whole words) if `train`."""
        rows, rate = self.params[key][ids], self.config.embedding_dropout
        if not train or not rate:
            return rows
        return regularization.word_dropout(self.random, rows, ids, self.config.vocab_size, rate)

    def _recurrent_matrix(self, layer: str, train: bool):
        """A layer's W_rec (H, G*H) as its scan reads it: with the config's weight drop if
        `train` (one mask per step of training, the same on every shard)."""
        W_rec = self.params[layer + "W_rec"]
        if not train or not self.config.weight_drop:
            return W_rec
        return regularization.weight_drop(self.random, W_rec, self.config.weight_drop)

    def _stack(
        self, stack: str, ids, mask, initial: list, train: bool, probe=None, shard: Shard = None
    ):
        """One recurrent stack over ids (T, B): top states (T, B, H) and final states.

        `probe` (T, B, H), if given, is added to the top layer's states (see `masked`).
        """
        p, config = self.params, self.config
        finals = []
        h = None
        for layer in range(config.layers):
            name = f"{stack}{layer}/"
            if layer == 0 and not config.embedding_size:
                projected = self._embedded(name + "W_in", ids, train)  # (T, B, G*H): U x_t
            else:
                below = self._embedded("embed/W", ids, train) if layer == 0 else h  # E or H
                projected = tt.dot(self._dropout(below, train, shard), p[name + "W_in"])
            if config.bias:
                projected = projected + p[name + "b"]
            n = self.cell.states
            start = initial[layer * n : (layer + 1) * n]
            probed = probe is not None and layer == config.layers - 1
            W_rec = self._recurrent_matrix(name, train)
            if config.fused:
                step = fused(FusedStep(config.cell, config.hard_sigmoid), probed)
                weights = recurrent_weights(config.cell, W_rec, config.hidden_size)
                saved = [None]  # the activations, one (B, k*H) per step
            else:
                step = masked(self.cell.make_step(config), n, probed)
                weights, saved = [W_rec], []
            outputs, _ = backend.scan(
                step,
                sequences=[projected, mask, probe] if probed else [projected, mask],
                outputs_info=start + saved,
                non_sequences=weights,
                truncate_gradient=config.bptt_truncate,
                strict=True,
                mode=self.compile_mode,
                name=name.rstrip("/"),
            )
            outputs = (outputs if isinstance(outputs, list) else [outputs])[:n]
            h = outputs[0]  # (T, B, H)
            finals += [state[-1] for state in outputs]
        return h, finals

    def _top(self, x, y, mask, initial: list, train: bool, shard: Shard = None):
        """What the output layer reads, (T, B, top_size), and the final states."""
        per_stack = self.config.layers * self.cell.states
        top, finals = self._stack("layer", x, mask, initial[:per_stack], train, shard=shard)
        if self.config.bidirectional:
            # The backward stack reads y from the end; its state at t has seen y_t, y_t+1, ...
            back, back_finals = self._stack(
                "back", y[::-1], mask[::-1], initial[per_stack:], train, shard=shard
            )
            back = back[::-1]
            # y_t is predicted from the words after it: the backward state at t + 1.
            after = tt.concatenate([back[1:], tt.zeros_like(back[:1])], axis=0)
            top = tt.concatenate([top, after], axis=2)
            finals += back_finals
        return self._dropout(top, train, shard), finals

    def _nll(self, x, y, mask, initial, train: bool, shard: Shard = None):
        top, finals = self._top(x, y, mask, initial, train, shard)
        token_log_p = self.output.token_log_probs(top, y, train)
        return -(token_log_p * mask).sum(), finals

    def _function(self, inputs, outputs, **kwargs):
        if self.cache is not None:
            return self.cache.function(inputs, outputs, mode=self.compile_mode, **kwargs)
        return backend.function(inputs, outputs, mode=self.compile_mode, **kwargs)

    # -- compiled functions -----------------------------------------------------------------

    @compiled_function
    def _log_probs_fn(self):
        x, y, mask, initial = self._inputs()
        top, finals = self._top(x, y, mask, initial, train=False)
        token_log_p = self.output.token_log_probs(top, y) * mask
        return self._function([x, y, mask, *initial], [token_log_p, *finals])

    @compiled_function
    def _distribution_fn(self):
        x, y, mask, initial = self._inputs()
        top, _ = self._top(x, y, mask, initial, train=False)
        # Only a bidirectional model reads y here; a left-to-right one ignores it.
        return self._function(
            [x, y, mask, *initial], self.output.log_distribution(top), on_unused_input="ignore"
        )

    @compiled_function
    def _next_fn(self):
        """Left-padded x (T, B) -> log-probabilities (B, V) of the token after each column:
        the output layer at the last step only."""
        x, _, mask, initial = self._inputs()
        top, _ = self._stack("layer", x, mask, initial, train=False)
        return self._function([x, mask, *initial], self.output.log_distribution(top[-1]))

    @compiled_function
    def _gradients_fn(self):
        x, y, mask, initial = self._inputs()
        nll, _ = self._nll(x, y, mask, initial, train=False)
        grads = backend.grad(nll, list(self.params.values()))
        return self._function([x, y, mask, *initial], grads)

    @compiled_function
    def _step_fn(self):
        """One step for generation: ids (B,) and states -> log-probabilities (B, V), new
        states."""
        if self.config.bidirectional:
            raise ValueError("a bidirectional model cannot generate left to right")
        ids = tt.ivector("ids")
        _, _, _, initial = self._inputs()
        # A length-1 sequence through the same stack keeps one code path for the graph.
        mask = tt.ones((1, ids.shape[0]), dtype=self.config.dtype)
        top, finals = self._stack("layer", ids.dimshuffle("x", 0), mask, initial, train=False)
        return self._function([ids, *initial], [self.output.log_distribution(top[0]), *finals])

    @compiled_function
    def _gradient_flow_fn(self):
        """ids (T, 1) -> ||d loss_t / d h_s|| for every t, s (T, T), and the top states (T, H).

        h is the top layer's hidden state; the derivative runs through the recurrence (as
        far as `bptt_truncate` lets it) by way of a zero probe added to every h_s.
        """
        x, y, mask, initial = self._inputs()
        probe = tt.tensor3("probe", dtype=self.config.dtype)  # (T, 1, H), zeros
        top, _ = self._stack("layer", x, mask, initial, train=False, probe=probe)
        losses = -self.output.token_log_probs(top, y)[:, 0]  # (T,)
        jacobian = backend.jacobian(losses, probe)  # (T, T, 1, H)
        norms = tt.sqrt(tt.square(jacobian).sum(axis=(2, 3)))
        return self._function([x, y, mask, probe, *initial], [norms, top[:, 0]])

    def gradient_flow(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For one encoded sentence: (T, T) gradient norms [t, s] and top states (T, H)."""
        x, y = ids[:-1, None].astype(np.int32), ids[1:, None].astype(np.int32)
        probe = np.zeros((len(x), 1, self.config.hidden_size), dtype=self.config.dtype)
        mask = np.ones(x.shape, dtype=self.config.dtype)
        return self._gradient_flow_fn(x, y, mask, probe, *self.initial_states(1))

    def compile_train_step(self, updates_for: UpdatesFn) -> Callable[..., list[np.ndarray]]:
        """(x, y, mask, *states) -> [summed NLL, real tokens, *final states], updating params.

        The objective is the summed NLL divided by the batch size: the tutorial's per-sentence
        sum for one sentence, Zaremba et al.'s sum over time of the batch mean in stream mode.
        """
        x, y, mask, initial = self._inputs()
        nll, finals = self._nll(x, y, mask, initial, train=True)
        objective = nll / tt.cast(x.shape[1], self.config.dtype)
        grads = dict(
            zip(self.params, backend.grad(objective, list(self.params.values())), strict=True)
        )
        updates = updates_for(self.params, grads)
        return self._function([x, y, mask, *initial], [nll, mask.sum(), *finals], updates=updates)

    def compile_gradient_sums(self) -> Callable[..., list[np.ndarray]]:
        """(x, y, mask, offset, columns, *states) -> [*gradients of the summed NLL, summed NLL,
        real tokens, *final states], updating nothing: one shard's part of a distributed step.

        The batch is columns offset .. offset + B of a global batch of `columns`; dropout masks
        are those of the global batch (see `_dropout`). Nothing is divided: shards add up.
        """
        x, y, mask, initial = self._inputs()
        offset, columns = tt.iscalar("offset"), tt.iscalar("columns")
        nll, finals = self._nll(x, y, mask, initial, train=True, shard=(offset, columns))
        grads = backend.grad(nll, list(self.params.values()))
        return self._function(
            [x, y, mask, offset, columns, *initial],
            [*grads, nll, mask.sum(), *finals],
            on_unused_input="ignore",  # offset and columns matter only with dropout
        )

    def compile_apply_step(self, updates_for: UpdatesFn) -> Callable[..., list[np.ndarray]]:
        """(*gradient sums in parameter order, divisor) -> [], updating params: the update of
        `compile_train_step` from gradients summed over shards and the global batch size."""
        sums = [var.type(f"sum/{name}") for name, var in self.params.items()]
        divisor = tt.scalar("divisor", dtype=self.config.dtype)
        grads = {name: g / divisor for name, g in zip(self.params, sums, strict=True)}
        return self._function([*sums, divisor], [], updates=updates_for(self.params, grads))

    # -- numpy-facing API -------------------------------------------------------------------

    def _states_or_zeros(self, states, batch_size: int) -> list[np.ndarray]:
        return list(states) if states is not None else self.initial_states(batch_size)

    def log_probs(self, x, y, mask, states=None) -> np.ndarray:
        """(T, B) log-probability of each target; 0 where the mask is 0."""
        return self.log_probs_and_states(x, y, mask, states)[0]

    def log_probs_and_states(self, x, y, mask, states=None) -> tuple[np.ndarray, list]:
        """As `log_probs`, plus the final states to carry into the next batch."""
        out = self._log_probs_fn(
            x, y, mask.astype(self.config.dtype), *self._states_or_zeros(states, x.shape[1])
        )
        return out[0], out[1:]

    def distribution(self, x, y, mask) -> np.ndarray:
        """(T, B, V) log-probabilities of every word at every step."""
        return self._distribution_fn(
            x, y, mask.astype(self.config.dtype), *self.initial_states(x.shape[1])
        )

    def next_log_probs(self, x, mask) -> np.ndarray:
        """(B, V) log-probabilities of the token after each column of left-padded ids (T, B)."""
        if self.config.bidirectional:
            raise ValueError("a bidirectional model cannot predict left to right")
        return self._next_fn(x, mask.astype(self.config.dtype), *self.initial_states(x.shape[1]))

    def gradients(self, x, y, mask) -> dict[str, np.ndarray]:
        """Gradients of the summed masked NLL (no dropout) with respect to every parameter."""
        grads = self._gradients_fn(
            x, y, mask.astype(self.config.dtype), *self.initial_states(x.shape[1])
        )
        return dict(zip(self.params, grads, strict=True))

    def step(self, ids: np.ndarray, states: list[np.ndarray]) -> tuple[np.ndarray, list]:
        """Advance one token: ids (B,) and states -> log-probabilities (B, V) of the next
        token, and the new states."""
        out = self._step_fn(np.asarray(ids, dtype=np.int32), *states)
        return out[0], out[1:]
