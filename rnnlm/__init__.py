"""rnnlm: recurrent neural network language models as Aesara (Theano) graphs.

Importing the package sets the tensor library's flags (see `rnnlm.flags`) before anything
imports it; `rnnlm.backend` is where the library itself is imported.
"""

from rnnlm.flags import configure

__version__ = "0.1.0"

configure()
