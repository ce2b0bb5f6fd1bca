"""One client's side of one secure round: a ``SecAggClient`` plus the fixed-point codec.

The client builds its ``SecAggConfig`` from its own configuration, never from what the server
announces (``ClientEngine`` refuses a run whose secure aggregation differs from its own), and checks
the round's codec numbers against its own weight cap before it encodes anything.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from clipfl.engine.secure_collect import codec_of
from clipfl.errors import RemoteProtocolError
from clipfl.secagg import PrivatePayload, SecAggClient, SecAggConfig, UpdateLayout
from clipfl.settings import CodecParams

__all__ = ["SecureUpload"]


class SecureUpload:
    """One client's secure aggregation for one round."""

    def __init__(self, client_id: int, round: int, config: SecAggConfig) -> None:
        self.client = SecAggClient(client_id=client_id, round=round, config=config)
        self.round = round
        self._config = config

    def receive(self, msg: Any) -> None:
        self.client.receive(msg)

    def set_update(
        self,
        codec: CodecParams,
        delta: np.ndarray,
        trained_units: np.ndarray,
        weight: int,
        rng: np.random.Generator | None = None,
    ) -> None:
        """Encode ``[weight * delta | coverage]`` and hand it to the protocol (sent when asked)."""
        if codec.max_weight > self._config.max_weight:
            raise RemoteProtocolError(
                f"the server sized the round's codec for weight {codec.max_weight}, above this client's "
                f"cap of {self._config.max_weight:g}: refusing to encode"
            )
        if codec.clip_range != self._config.clip_range:
            raise RemoteProtocolError(
                f"the server's clip range {codec.clip_range:g} differs from this client's "
                f"{self._config.clip_range:g}"
            )
        layout = UpdateLayout(delta.shape[0], trained_units.shape[0])
        self.client.set_input(layout.encode(codec_of(codec), delta, trained_units, weight, rng))

    def data_to_send(self) -> list[Any]:
        return self.client.data_to_send()

    def received_private(self) -> list[PrivatePayload]:
        return self.client.received_private()
