"""rnnlm: recurrent neural network language models as Aesara graphs.

Importing the package configures Aesara (see `rnnlm.backend`) before anything imports it.
"""

from rnnlm.backend import configure_aesara

__version__ = "0.1.0"

configure_aesara()
