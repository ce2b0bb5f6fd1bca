"""One client's side of one secure round: a ``SecAggClient`` plus the fixed-point codec.

The client builds its ``SecAggConfig`` from its own configuration, never from what the server
announces (``ClientEngine`` refuses a run whose secure aggregation differs from its own); with a
roster (``Identity``) it refuses peers whose keys the roster's identities did not sign, and it binds
the round's instructions (``instructions_of``) into every signature. It checks the round's codec
against its own weight and clip caps before it encodes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nacl.signing
import numpy as np

from clipfl.engine.secure_collect import codec_of
from clipfl.errors import RemoteProtocolError
from clipfl.secagg import REAL, Primitives, PrivatePayload, Roster, SecAggClient, SecAggConfig, UpdateLayout
from clipfl.settings import CodecParams

__all__ = ["Identity", "SecureUpload"]


@dataclass(frozen=True, slots=True, eq=False)
class Identity:
    """A client's identity for secure aggregation: the operator-signed roster (already verified
    against the operator key) and this client's Ed25519 signing key, provisioned out of band."""

    roster: Roster
    signing_key: nacl.signing.SigningKey


class SecureUpload:
    """One client's secure aggregation for one round."""

    def __init__(
        self,
        client_id: int,
        round: int,
        config: SecAggConfig,
        identity: Identity | None,
        instructions: bytes,
        primitives: Primitives = REAL,
    ) -> None:
        self.client = SecAggClient(
            client_id=client_id,
            round=round,
            config=config,
            roster=identity.roster if identity is not None else None,
            signing_key=identity.signing_key if identity is not None else None,
            trust_server=identity is None,
            instructions=instructions,
            primitives=primitives,
        )
        self.round = round

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
        fixed = codec_of(codec)
        if not self.client.accept_codec(fixed):  # above this client's caps: it leaves the round
            raise RemoteProtocolError(f"the server's codec for round {self.round} exceeds this client's caps")
        layout = UpdateLayout(delta.shape[0], trained_units.shape[0])
        self.client.set_input(layout.encode(fixed, delta, trained_units, weight, rng))

    def data_to_send(self) -> list[Any]:
        return self.client.data_to_send()

    def received_private(self) -> list[PrivatePayload]:
        return self.client.received_private()
