"""The benchmark's language models in PyTorch, trained as rnnlm trains them, for scale."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import numpy as np

from benchlib.configs import PTB_TRAIN
from rnnlm.config import ModelConfig


def pytorch_lm(config: ModelConfig):
    """nn.Embedding -> nn.LSTM or nn.GRU (E, H, layers) -> nn.Linear(H, V), weights uniform
    ±init_scale. nn.GRU applies its reset gate after the recurrent product, rnnlm's GRU
    before it: the same products and the same amount of work."""
    from torch import nn

    recurrent = {"lstm": nn.LSTM, "gru": nn.GRU}[config.cell]

    class LanguageModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(config.vocab_size, config.embedding_size)
            self.rnn = recurrent(config.embedding_size, config.hidden_size, config.layers)
            self.out = nn.Linear(config.hidden_size, config.vocab_size)

        def forward(self, x, state):
            h, state = self.rnn(self.embed(x), state)  # x (T, B) -> h (T, B, H)
            return self.out(h), state  # logits (T, B, V)

    model = LanguageModel()
    for weights in model.parameters():
        nn.init.uniform_(weights, -config.init_scale, config.init_scale)
    return model


def pytorch_runner(config: ModelConfig, windows: list) -> Callable[[], None]:
    """One repetition of PyTorch training steps on the same windows, as rnnlm trains."""
    import torch
    from torch import nn

    model = pytorch_lm(config)
    optimizer = torch.optim.SGD(model.parameters(), lr=PTB_TRAIN.learning_rate)
    summed_nll = nn.CrossEntropyLoss(reduction="sum")
    batches = [
        (torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64)))
        for x, y, _ in windows
    ]
    shape = (config.layers, PTB_TRAIN.batch_size, config.hidden_size)
    # an LSTM carries (h, c), a GRU h alone
    state = (
        (torch.zeros(shape), torch.zeros(shape)) if config.cell == "lstm" else torch.zeros(shape)
    )

    def run() -> None:
        nonlocal state
        for x, y in batches:
            optimizer.zero_grad()
            logits, state = model(x, state)
            # rnnlm's objective: the summed NLL divided by the batch size
            loss = summed_nll(logits.reshape(-1, config.vocab_size), y.reshape(-1)) / x.shape[1]
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), PTB_TRAIN.clip_norm)
            optimizer.step()
            # carried, gradients cut (stream mode)
            state = tuple(s.detach() for s in state) if config.cell == "lstm" else state.detach()

    return run


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None
