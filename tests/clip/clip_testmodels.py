"""Small hand-built models for the CLIP tests (the real ones live in clipfl.models, written elsewhere)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CharLSTM", "conv_chain", "mlp", "vgg_like"]


class CharLSTM(nn.Module):
    """Same structure as clipfl.models' CharLSTM: embedding -> 2-layer LSTM -> fc on the last step."""

    def __init__(self, vocab_size: int, embed_dim: int = 8, hidden: int = 128, num_layers: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=num_layers, batch_first=True)
        self.fc = nn.Linear(hidden, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(x))
        return self.fc(out[:, -1, :])


def mlp(n_in: int = 6, hidden: int = 5, n_out: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


def conv_chain(batchnorm: bool = False) -> nn.Sequential:
    """conv4 3x3 pad 1 (8x8) -> pool -> conv6 3x3 (2x2) -> flatten (24) -> FC7 -> FC3, input (3, 8, 8)."""
    norm1: list[nn.Module] = [nn.BatchNorm2d(4)] if batchnorm else []
    norm2: list[nn.Module] = [nn.BatchNorm2d(6)] if batchnorm else []
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        *norm1,
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3),
        *norm2,
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(24, 7),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(7, 3),
    )


def vgg_like(batchnorm: bool = True, width: int = 1) -> nn.Sequential:
    """VGG-9 for 32x32 inputs: conv32 x2, pool, conv64 x2, pool, conv128 x2, pool, FC512, FC256, FC10."""

    def conv(c_in: int, c_out: int) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1)]
        if batchnorm:
            layers.append(nn.BatchNorm2d(c_out))
        return [*layers, nn.ReLU()]

    w = width
    return nn.Sequential(
        *conv(3, 32 * w),
        *conv(32 * w, 32 * w),
        nn.MaxPool2d(2),
        *conv(32 * w, 64 * w),
        *conv(64 * w, 64 * w),
        nn.MaxPool2d(2),
        *conv(64 * w, 128 * w),
        *conv(128 * w, 128 * w),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(128 * w * 16, 512),
        nn.ReLU(),
        nn.Linear(512, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )
