"""The Shakespeare next-character model: embedding 8, two LSTM layers of 128 units, FC to the vocabulary.

LEAF's and CLIP's Shakespeare model. The attribute names (``embedding``, ``lstm``, ``fc``) are part of
the contract with the CLIP slicer, which shrinks ``lstm``'s hidden units and ``fc``'s inputs together.

Parameter count for ``CharLSTM(81)`` (LEAF's 80 symbols + the reserved unknown id): embedding
81*8 = 648; LSTM layer 1 4*128*(8+128) + 2*4*128 = 70,656; layer 2 4*128*(128+128) + 2*4*128 =
132,096; fc 128*81 + 81 = 10,449; total 213,849.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CharLSTM"]


class CharLSTM(nn.Module):
    """Embed token ids, run a stacked LSTM, and classify the next character from the last step."""

    def __init__(self, vocab_size: int, embed_dim: int = 8, hidden: int = 128, num_layers: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=num_layers, batch_first=True)
        self.fc = nn.Linear(hidden, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(x))
        return self.fc(out[:, -1, :])
