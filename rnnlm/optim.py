"""Optimizers: functions from (params, grads, learning rate) to an ordered dict of updates.

They compile nothing; the learning rate is a shared scalar, so a schedule changes it
without recompiling.
"""

from __future__ import annotations

from collections import OrderedDict

import aesara


def sgd(params: list, grads: list, learning_rate: aesara.compile.SharedVariable) -> OrderedDict:
    """Plain SGD, as the tutorial trains: p <- p - lr * g."""
    return OrderedDict(
        (p, p - learning_rate.astype(p.dtype) * g) for p, g in zip(params, grads, strict=True)
    )


OPTIMIZERS = {"sgd": sgd}
