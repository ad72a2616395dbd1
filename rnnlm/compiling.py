"""How a model's functions are compiled: the mode its graphs compile in, and each function
compiled once per model, or found in the disk cache (`rnnlm.compiled`) by its recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from rnnlm import parallel_compile
from rnnlm.config import ModelConfig

if TYPE_CHECKING:
    from rnnlm.model import Model


def compile_mode(config: ModelConfig, mode: str | None) -> Any:
    """The mode (None: the flags') that compiles both a model's functions and its scans'
    inner graphs, their missing C modules on every core, less the rewrites that hurt it."""
    chosen = parallel_compile.parallel(mode)
    if config.bptt_truncate != -1:
        # Aesara 2.9.4's scan_pushout_add moves the truncated gradient's sums out of the
        # scan with the full sequence length: a shape error at run time.
        chosen = chosen.excluding("scan_pushout_add")
    # This rewrite folds the clipping scale into the output layer's weight gradient as a
    # second (T*B, K)' x (T*B, V) product instead of reusing the one the norm was
    # taken of: 11 % of a PTB step, measured.
    return chosen.excluding("local_dot22_to_dot22scalar")


def compiled_function(build: Callable[[Model], Callable]) -> cached_property:
    """`cached_property` for a compiled function that depends on the model config alone: with
    a disk cache (`rnnlm.compiled`), a later process loads it by name, building no graph."""

    def get(self: Model) -> Callable:
        if self.cache is None:
            return build(self)
        recipe = {
            "function": build.__name__,
            "model": self.config,
            "mode": self.compile_mode,
            "tables": self.tables_digest,  # constants of the graph that the config does not fix
        }
        return self.cache.named(recipe, self.params, lambda: build(self))

    get.__doc__ = build.__doc__
    return cached_property(get)
