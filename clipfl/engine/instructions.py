"""What a client trains under in one round, as bytes that every party of the round must agree on.

A server that wants one client's update alone could give that client other instructions than its
peers (another deadline, so that only it prunes a unit; another model). Secure aggregation binds
these bytes into every signature (``SecAggClient(instructions=...)``), so clients that were told
different things cannot complete a round together, and the server cannot single one out. Each client
computes them from the ``FitIns`` it received, the server from the one it sent; one function for both.
"""

from __future__ import annotations

import dataclasses
import hashlib

import msgpack
import numpy as np

from clipfl.messages import FitIns

__all__ = ["instructions_of"]


def instructions_of(fit: FitIns) -> bytes:
    """SHA-256 over the round, the model (its exact bytes), the training, the deadline and the codec.

    ``keep_ratio`` is included: under secure aggregation no strategy assigns one (FLuID runs only in
    the clear), so it is None for every client, and a server that sets one for a single client is seen.
    """
    model = hashlib.sha256()
    for name in sorted(fit.weights):
        model.update(name.encode())
        model.update(np.ascontiguousarray(fit.weights[name], dtype="<f4").tobytes())
    # Numbers as the receiver decodes them: a float field may hold an int on the sender's side (60
    # for 60.0), which msgpack would encode differently from the float the receiver reads back.
    train, codec = fit.train, fit.codec
    fields = {
        "round": fit.round,
        "model": model.digest(),
        "train": {**dataclasses.asdict(train), "lr": float(train.lr), "momentum": float(train.momentum)},
        "seed": fit.seed,
        "deadline": _float(fit.deadline),
        "keep_ratio": _float(fit.keep_ratio),
        "codec": None,
    }
    if codec is not None:
        fields["codec"] = {**dataclasses.asdict(codec), "clip_range": float(codec.clip_range)}
    return hashlib.sha256(msgpack.packb(fields, use_bin_type=True)).digest()


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)
