"""What `scan` runs at each time step of a recurrent layer: a cell's step wrapped with the
mask (`masked`), or the fused op, which does both (`fused`). `rnnlm.model` scans them.

A step takes scan's arguments in order: the sequences (the projected input x_t (B, G*H), the
mask m_t (B,), optionally a probe (B, H)), the previous states, then the non-sequences.
"""

from __future__ import annotations

from collections.abc import Callable

from rnnlm.ops.recurrent import FusedStep


def masked(step: Callable, n_states: int, probed: bool = False) -> Callable:
    """Wrap a cell step so a padded position (mask 0) carries the previous states unchanged.

    `probed`: one more sequence, added to the output state — zeros whose gradient is the
    gradient with respect to the hidden state itself, through the recurrence (diagnostics).
    """

    def masked_step(x_t, m_t, *args):
        probe, args = (args[0], args[1:]) if probed else (None, args)
        previous, non_sequences = args[:n_states], args[n_states:]
        new = step(x_t, *previous, *non_sequences)
        new = new if isinstance(new, list) else [new]
        if probe is not None:
            new = [new[0] + probe, *new[1:]]
        m = m_t.dimshuffle(0, "x")  # (B, 1)
        return [m * h + (1 - m) * h_prev for h, h_prev in zip(new, previous, strict=True)]

    return masked_step


def fused(op: FusedStep, probed: bool = False) -> Callable:
    """The fused counterpart of `masked(step)`: the op does the step and the mask itself, and
    also returns the activations its gradient reads (a scan output, so never recomputed).

    A probe p adds m * p to the new output state, which is what `masked` makes of it.
    """

    def fused_step(x_t, m_t, *args):
        probe, args = (args[0], args[1:]) if probed else (None, args)
        new = list(op(x_t, m_t, *args))  # a copy: the op returns its node's own output list
        if probe is not None:
            new[0] = new[0] + m_t.dimshuffle(0, "x") * probe
        return new

    return fused_step
