"""Parameters: one ordered name -> shared-variable container and the initialisers.

Hierarchical names (`layer0/W_rec`, `out/W`) name the shared variable, the checkpoint entry
and any optimizer state derived from it, so nothing ever lists parameters by hand.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from rnnlm import backend


def uniform_fan_in(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """The tutorial's initialisation: uniform in ±1/sqrt(fan_in)."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape)


class Params(Mapping[str, backend.SharedVariable]):
    """Ordered shared variables of one dtype, addressed by hierarchical name."""

    def __init__(self, arrays: Mapping[str, np.ndarray], dtype: str) -> None:
        self.dtype = dtype
        self._shared = {
            name: backend.shared(np.asarray(value, dtype=dtype), name=name)
            for name, value in arrays.items()
        }

    def __getitem__(self, name: str) -> backend.SharedVariable:
        return self._shared[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._shared)

    def __len__(self) -> int:
        return len(self._shared)

    def values_dict(self) -> dict[str, np.ndarray]:
        """Copies of the current values, in order."""
        return {name: var.get_value() for name, var in self._shared.items()}

    def assign(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Set every parameter; names and shapes must match exactly."""
        if set(arrays) != set(self._shared):
            raise ValueError(f"parameter names differ: {sorted(set(arrays) ^ set(self._shared))}")
        for name, var in self._shared.items():
            value = np.asarray(arrays[name], dtype=self.dtype)
            if value.shape != var.get_value(borrow=True).shape:
                raise ValueError(f"{name}: shape {value.shape} != {var.get_value().shape}")
            var.set_value(value)

    def count(self) -> int:
        return sum(var.get_value(borrow=True).size for var in self._shared.values())
