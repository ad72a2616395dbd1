"""rnnlm's own C ops, each born with the plain graph it replaces and the test that holds them equal.

- `softmax`: the fused softmax + cross-entropy of the output layer, and its gradient.
- `recurrent`: fused cell steps (rnn-tanh, rnn-relu, gru, lstm) for inside `scan`, and their
  gradients; their numpy arithmetic in `recurrent_numpy`, their C in `recurrent_c` (shared
  frame), `recurrent_c_forward` and `recurrent_c_backward` (one kernel per cell).
- `norm`: the sum of squares in one pass, for global-norm clipping.
- `class_softmax`: the class-factored softmax's in-class NLL and in-class log-softmax; their C
  in `class_softmax_c`.
- `adaptive_softmax`: the adaptive softmax as a graph of products and the fused `softmax`.
- `sampled_softmax`: the sampled softmax's loss over shared negatives, and its gradient.
- `product`: matrix products in our own AVX-512 kernel (C in `product_c`), put in place of
  the library's BLAS ops by a rewrite that importing this package registers.
"""

from rnnlm.ops import product  # noqa: F401  (registers the rewrite before anything compiles)
