"""The class-factored softmax (Mikolov et al. 2011) as C ops, with the plain graphs they replace.

  log p(w | h) = log p(class(w) | h) + log p(w | class(w), h)
               = log softmax(h Wc + bc)[class(w)] + log softmax_{u in class(w)}(h . W[u] + b[u])[w]

The first factor is an ordinary (N, C) softmax: a product and the fused `softmax_nll`. The
second is where the time goes with a full softmax and where this module saves it: for a
target in class c only the words of c are scored, one dot product of h with each word's
row of W (V, K). `ClassNLL` does that for a batch — rows grouped by class, so each class's
rows of W are read once per batch, classes spread over OpenMP threads — keeps the in-class
probabilities, and `ClassNLLGrad` reads the gradient from them: no `exp` in the backward pass.
`ClassLogSoftmax` gives every word's in-class log-probability from full logits (N, V), for
the next-word distribution.

A class map is three int32 arrays, all from `word_class` (V,) (`output_tables.class_tables`):
`members` (V,) lists word ids class by class, and class c is `members[starts[c]:starts[c + 1]]`.
Nothing assumes a class is a contiguous id range.
"""

from __future__ import annotations

import numpy as np

from rnnlm.backend import Apply, DisconnectedType, disconnected_type
from rnnlm.backend import tensor as tt
from rnnlm.ops.class_softmax_c import _alloc, _ClassOp, _contiguous, _data
from rnnlm.ops.common import float_tensor, int32_vector


def _tables(word_class, members, starts):
    return (
        int32_vector(word_class, "word_class"),
        int32_vector(members, "members"),
        int32_vector(starts, "starts"),
    )


def _check_map(v, members, starts):
    """What the C code checks of a class map, for the numpy `perform`s."""
    if len(members) != v or len(starts) < 2:
        raise ValueError("class softmax: shapes do not match")
    sizes = np.diff(starts)
    if starts[0] != 0 or starts[-1] != v or (sizes <= 0).any():
        raise ValueError("the class map is inconsistent")
    if v and (members.min() < 0 or members.max() >= v):
        raise ValueError("the class map is inconsistent")


def _offsets(y, word_class, members, starts, v):
    """Where each row's in-class probabilities start in the flat buffer, and each row's class."""
    _check_map(v, members, starts)
    if len(word_class) != v:
        raise ValueError("class softmax: shapes do not match")
    if len(y) and (y.min() < 0 or y.max() >= v):
        raise ValueError("class_nll: targets out of range")
    classes = word_class[y]
    if len(y) and (classes.min() < 0 or classes.max() >= len(starts) - 1):
        raise ValueError("the class map is inconsistent")
    sizes = (starts[classes + 1] - starts[classes]).astype(np.intp)
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.intp), classes


class ClassNLL(_ClassOp):
    """(h (N, K), W (V, K), b (V,), y (N,), word_class, members, starts) ->
    (-log p(y_i | class(y_i), h_i) (N,), the in-class probabilities of every row, flat)."""

    def make_node(self, h, W, b, y, word_class, members, starts):
        h, W = float_tensor(h, 2, "class_nll's h"), float_tensor(W, 2, "class_nll's W")
        W, b = W.astype(h.dtype), tt.as_tensor_variable(b).astype(h.dtype)
        if b.ndim != 1:
            raise TypeError(f"class_nll needs a bias vector (V,), got {b.type}")
        y = int32_vector(y, "class_nll's targets")
        tables = _tables(word_class, members, starts)
        outputs = [tt.vector(dtype=h.dtype), tt.vector(dtype=h.dtype)]
        return Apply(self, [h, W, b, y, *tables], outputs)

    def perform(self, node, inputs, outputs):
        h, W, b, y, word_class, members, starts = inputs
        n, v = len(h), len(W)
        if len(y) != n or W.shape[1] != h.shape[1] or len(b) != v:
            raise ValueError("class_nll: shapes do not match")
        offsets, classes = _offsets(y, word_class, members, starts, v)
        nll = np.empty(n, dtype=h.dtype)
        probs = np.empty(offsets[-1], dtype=h.dtype)
        for i in range(n):
            words = members[starts[classes[i]] : starts[classes[i] + 1]]
            z = W[words] @ h[i] + b[words]
            top = z.max()
            e = np.exp(z - top)
            total = e.sum()
            if not (words == y[i]).any():
                raise ValueError("class_nll: a target is not among its class's words")
            nll[i] = np.log(total) + top - z[words == y[i]][0]
            probs[offsets[i] : offsets[i + 1]] = e / total
        outputs[0][0], outputs[1][0] = nll, probs

    def pullback(self, inputs, outputs, output_grads):
        h, W, b, y, *tables = inputs
        g_nll, g_probs = output_grads
        if not isinstance(g_probs.type, DisconnectedType):
            raise NotImplementedError("class_nll: no gradient through the in-class probabilities")
        if isinstance(g_nll.type, DisconnectedType):
            g_nll = tt.zeros_like(y, dtype=h.dtype)
        _, probs = self(h, W, b, y, *tables)
        dh, dW, db = class_nll_grad(g_nll, probs, h, W, y, *tables)
        return [dh, dW, db] + [disconnected_type() for _ in range(4)]

    def connection_pattern(self, node):
        return [[True, True]] * 3 + [[False, False]] * 4

    def c_code(self, node, name, inputs, outputs, sub):
        h, W, b, y, word_class, members, starts = inputs
        nll, probs = outputs
        dtype = node.inputs[0].dtype
        t, typenum = f"npy_{dtype}", f"PyArray_TYPE({h})"
        declare, ok, release = _contiguous([h, W, b, y, word_class, members, starts])
        return f"""
        {{
        const char* err = NULL;
        npy_intp n = PyArray_DIMS({h})[0], k = PyArray_DIMS({h})[1];
        npy_intp v = PyArray_DIMS({W})[0], nc = PyArray_DIMS({starts})[0] - 1;
        {declare}
        npy_intp *offsets = (npy_intp*)malloc((n + 1) * sizeof(npy_intp));
        npy_intp *group = (npy_intp*)malloc((nc + 2) * sizeof(npy_intp));
        npy_intp *rows = (npy_intp*)malloc((n + 1) * sizeof(npy_intp));
        if (!({ok}) || !offsets || !group || !rows) err = "out of memory";
        else if (PyArray_DIMS({W})[1] != k || PyArray_DIMS({b})[0] != v
                 || PyArray_DIMS({y})[0] != n || PyArray_DIMS({word_class})[0] != v
                 || PyArray_DIMS({members})[0] != v || nc < 1)
            err = "class_nll: shapes do not match";
        if (!err)
            err = rnnlm_class_groups(n, v, nc, (const npy_int32*)PyArray_DATA(c_3),
                (const npy_int32*)PyArray_DATA(c_4), (const npy_int32*)PyArray_DATA(c_5),
                (const npy_int32*)PyArray_DATA(c_6), offsets, group, rows);
        if (!err) {{ {_alloc(nll, 1, f"PyArray_DIMS({y})", typenum)} }}
        if (!err) {{ {_alloc(probs, 1, "offsets + n", typenum)} }}
        if (!err && rnnlm_class_nll_{dtype}(n, k, nc, {_data(0, t)}, {_data(1, t)},
                {_data(2, t)}, (const npy_int32*)PyArray_DATA(c_3),
                (const npy_int32*)PyArray_DATA(c_4), (const npy_int32*)PyArray_DATA(c_5),
                (const npy_int32*)PyArray_DATA(c_6), offsets, group, rows,
                ({t}*)PyArray_DATA({nll}), ({t}*)PyArray_DATA({probs})))
            err = "class_nll: a target is not among its class's words";
        free(offsets); free(group); free(rows);
        {release}
        if (err) {{
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, err);
            {sub["fail"]};
        }}
        }}
        """


class ClassNLLGrad(_ClassOp):
    """(g (N,), in-class probabilities, h, W, y, tables) -> (dh (N, K), dW (V, K), db (V,)):
    the gradients of sum(g * nll). dW and db are dense, zero outside the batch's classes."""

    def make_node(self, g, probs, h, W, y, word_class, members, starts):
        h, W = float_tensor(h, 2, "h"), float_tensor(W, 2, "W").astype(h.dtype)
        g = tt.as_tensor_variable(g).astype(h.dtype)
        probs = tt.as_tensor_variable(probs).astype(h.dtype)
        y = int32_vector(y, "targets")
        tables = _tables(word_class, members, starts)
        outputs = [h.type(), W.type(), tt.vector(dtype=h.dtype)]
        return Apply(self, [g, probs, h, W, y, *tables], outputs)

    def perform(self, node, inputs, outputs):
        g, probs, h, W, y, word_class, members, starts = inputs
        if len(g) != len(h) or len(y) != len(h) or W.shape[1] != h.shape[1]:
            raise ValueError("class_nll_grad: shapes do not match")
        offsets, classes = _offsets(y, word_class, members, starts, len(W))
        if len(probs) != offsets[-1]:
            raise ValueError("class_nll_grad: shapes do not match")
        dh, dW = np.zeros_like(h), np.zeros_like(W)
        db = np.zeros(len(W), dtype=h.dtype)
        for i in range(len(h)):
            words = members[starts[classes[i]] : starts[classes[i] + 1]]
            d = g[i] * (probs[offsets[i] : offsets[i + 1]] - (words == y[i]))
            dh[i] = d @ W[words]
            dW[words] += np.outer(d, h[i])
            db[words] += d
        outputs[0][0], outputs[1][0], outputs[2][0] = dh, dW, db

    def c_code(self, node, name, inputs, outputs, sub):
        g, probs, h, W, y, word_class, members, starts = inputs
        dh, dW, db = outputs
        dtype = node.inputs[2].dtype
        t, typenum = f"npy_{dtype}", f"PyArray_TYPE({h})"
        declare, ok, release = _contiguous([g, probs, h, W, y, word_class, members, starts])
        return f"""
        {{
        const char* err = NULL;
        npy_intp n = PyArray_DIMS({h})[0], k = PyArray_DIMS({h})[1];
        npy_intp v = PyArray_DIMS({W})[0], nc = PyArray_DIMS({starts})[0] - 1;
        {declare}
        npy_intp *offsets = (npy_intp*)malloc((n + 1) * sizeof(npy_intp));
        npy_intp *group = (npy_intp*)malloc((nc + 2) * sizeof(npy_intp));
        npy_intp *rows = (npy_intp*)malloc((n + 1) * sizeof(npy_intp));
        if (!({ok}) || !offsets || !group || !rows) err = "out of memory";
        else if (PyArray_DIMS({g})[0] != n || PyArray_DIMS({y})[0] != n || nc < 1
                 || PyArray_DIMS({W})[1] != k || PyArray_DIMS({word_class})[0] != v)
            err = "class_nll_grad: shapes do not match";
        if (!err)
            err = rnnlm_class_groups(n, v, nc, (const npy_int32*)PyArray_DATA(c_4),
                (const npy_int32*)PyArray_DATA(c_5), (const npy_int32*)PyArray_DATA(c_6),
                (const npy_int32*)PyArray_DATA(c_7), offsets, group, rows);
        if (!err && PyArray_DIMS({probs})[0] != offsets[n])
            err = "class_nll_grad: shapes do not match";
        if (!err) {{ {_alloc(dh, 2, f"PyArray_DIMS({h})", typenum)} }}
        if (!err) {{ {_alloc(dW, 2, f"PyArray_DIMS({W})", typenum, zero=True)} }}
        if (!err) {{ {_alloc(db, 1, f"PyArray_DIMS({W})", typenum, zero=True)} }}
        if (!err) {{
            rnnlm_class_nll_grad_{dtype}(n, k, nc, {_data(0, t)}, {_data(1, t)},
                {_data(2, t)}, {_data(3, t)}, (const npy_int32*)PyArray_DATA(c_4),
                (const npy_int32*)PyArray_DATA(c_6), (const npy_int32*)PyArray_DATA(c_7),
                offsets, group, rows, ({t}*)PyArray_DATA({dh}), ({t}*)PyArray_DATA({dW}),
                ({t}*)PyArray_DATA({db}));
        }}
        free(offsets); free(group); free(rows);
        {release}
        if (err) {{
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, err);
            {sub["fail"]};
        }}
        }}
        """


class ClassLogSoftmax(_ClassOp):
    """(logits (N, V), members, starts) -> every word's log-softmax within its class (N, V).

    For the next-word distribution only: no gradient (training uses `ClassNLL`)."""

    def make_node(self, logits, members, starts):
        logits = float_tensor(logits, 2, "class_log_softmax's logits")
        members = int32_vector(members, "members")
        starts = int32_vector(starts, "starts")
        return Apply(self, [logits, members, starts], [logits.type()])

    def perform(self, node, inputs, outputs):
        logits, members, starts = inputs
        _check_map(logits.shape[1], members, starts)
        out = np.empty_like(logits)
        for c in range(len(starts) - 1):
            words = members[starts[c] : starts[c + 1]]
            z = logits[:, words]
            top = z.max(axis=1, keepdims=True)
            out[:, words] = z - top - np.log(np.exp(z - top).sum(axis=1, keepdims=True))
        outputs[0][0] = out

    def c_code(self, node, name, inputs, outputs, sub):
        logits, members, starts = inputs
        (out,) = outputs
        dtype = node.inputs[0].dtype
        t, typenum = f"npy_{dtype}", f"PyArray_TYPE({logits})"
        declare, ok, release = _contiguous([logits, members, starts])
        return f"""
        {{
        const char* err = NULL;
        npy_intp n = PyArray_DIMS({logits})[0], v = PyArray_DIMS({logits})[1];
        npy_intp nc = PyArray_DIMS({starts})[0] - 1;
        {declare}
        if (!({ok})) err = "out of memory";
        else if (PyArray_DIMS({members})[0] != v || nc < 1)
            err = "class_log_softmax: shapes do not match";
        else err = rnnlm_class_check(v, nc, (const npy_int32*)PyArray_DATA(c_1),
                                     (const npy_int32*)PyArray_DATA(c_2));
        if (!err) {{ {_alloc(out, 2, f"PyArray_DIMS({logits})", typenum)} }}
        if (!err)
            rnnlm_class_log_softmax_{dtype}(n, v, nc, {_data(0, t)},
                (const npy_int32*)PyArray_DATA(c_1), (const npy_int32*)PyArray_DATA(c_2),
                ({t}*)PyArray_DATA({out}));
        {release}
        if (err) {{
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, err);
            {sub["fail"]};
        }}
        }}
        """


_class_nll = ClassNLL()
class_nll_grad = ClassNLLGrad()
class_log_softmax = ClassLogSoftmax()


def class_nll(h, W, b, y, word_class, members, starts):
    """-log p(y_i | class(y_i), h_i), the in-class part only: (N, K), (V, K), (V,), (N,) -> (N,)."""
    return _class_nll(h, W, b, tt.cast(y, "int32"), word_class, members, starts)[0]


def class_nll_plain(h, W, b, y, word_class):
    """The same as a plain graph over all V logits of every row: the oracle."""
    z = tt.dot(h, W.T) + b  # (N, V)
    same = tt.eq(word_class[None, :], word_class[y][:, None])  # (N, V): y's class
    masked = tt.switch(same, z, -np.inf)
    top = masked.max(axis=1, keepdims=True)
    lse = top[:, 0] + tt.log(tt.exp(masked - top).sum(axis=1))
    return lse - z[tt.arange(z.shape[0]), y]


def class_log_softmax_plain(logits, word_class, n_classes: int):
    """`class_log_softmax` as a plain (N, C, V) graph: the oracle."""
    onehot = tt.eq(tt.arange(n_classes)[:, None], word_class[None, :])  # (C, V)
    masked = tt.switch(onehot[None], logits[:, None, :], -np.inf)  # (N, C, V)
    top = masked.max(axis=2, keepdims=True)
    lse = top[:, :, 0] + tt.log(tt.exp(masked - top).sum(axis=2))  # (N, C)
    return logits - lse[:, word_class]
