"""One client's side of one secure round: a ``SecAggClient`` plus the fixed-point codec.

The client builds its ``SecAggConfig`` from its own configuration, never from what the server
announces (``ClientEngine`` refuses a run whose secure aggregation differs from its own); with a
roster (``Identity``) it refuses peers whose keys the roster's identities did not sign, and it binds
the round's instructions (``instructions_of``) into every signature. It checks the round's codec
against its own weight and clip caps before it encodes anything.

Minimum coverage (issue 13, attack 8): a client that prunes announces the units it trains to its peers
over the sealed client channel once it holds their keys, and withholds from the sum what fewer than
``SecAggConfig.min_coverage`` announced plans cover (``clipfl.secagg.coverage``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nacl.signing
import numpy as np

from clipfl.engine.secure_collect import codec_of
from clipfl.errors import RemoteProtocolError
from clipfl.secagg import (
    REAL,
    KeysBroadcast,
    Primitives,
    PrivatePayload,
    Roster,
    SecAggClient,
    SecAggConfig,
    UpdateLayout,
)
from clipfl.secagg.coverage import contributable, is_plan, pack_plan, unpack_plan
from clipfl.settings import CodecParams

if TYPE_CHECKING:
    from clipfl.clip.units import UnitLayout

__all__ = ["Identity", "SecureUpload"]

log = logging.getLogger("clipfl.client")


@dataclass(frozen=True, slots=True, eq=False)
class Identity:
    """A client's identity for secure aggregation: the operator-signed roster (already verified
    against the operator key) and this client's Ed25519 signing key, provisioned out of band."""

    roster: Roster
    signing_key: nacl.signing.SigningKey


class SecureUpload:
    """One client's secure aggregation for one round.

    ``plan`` (a client that prunes): the units it trains this round (``UnitLayout.unit_mask``), sent
    sealed to every peer once their keys are in; peers' plans are kept apart from the other private
    payloads (CLIP's timing reports), which ``received_private`` returns."""

    def __init__(
        self,
        client_id: int,
        round: int,
        config: SecAggConfig,
        identity: Identity | None,
        instructions: bytes,
        primitives: Primitives = REAL,
        plan: np.ndarray | None = None,
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
        self.min_coverage = config.min_coverage
        self.withheld_units = 0
        self._plan = plan
        self._peer_plans: dict[int, np.ndarray] = {}
        self._private: list[PrivatePayload] = []

    def receive(self, msg: Any) -> None:
        self.client.receive(msg)
        for private in self.client.received_private():
            if not is_plan(private.payload):
                self._private.append(private)
            elif self._plan is not None:
                try:
                    self._peer_plans[private.sender] = unpack_plan(private.payload, self._plan.shape[0])
                except ValueError as exc:  # counted as no plan: this client withholds more, never less
                    log.warning(
                        "client %d: plan of client %d ignored: %s", self.client.client_id, private.sender, exc
                    )
        if isinstance(msg, KeysBroadcast) and self._plan is not None and self.client.aborted is None:
            self.client.send_private_to_all(pack_plan(self._plan))

    def set_update(
        self,
        codec: CodecParams,
        delta: np.ndarray,
        trained_units: np.ndarray,
        weight: int,
        rng: np.random.Generator | None = None,
        unit_layout: UnitLayout | None = None,
    ) -> None:
        """Encode ``[weight * delta | coverage]`` and hand it to the protocol (sent when asked); with a
        ``plan`` and the model's ``unit_layout``, what too few peers' plans cover is withheld first."""
        fixed = codec_of(codec)
        if not self.client.accept_codec(fixed):  # above this client's caps: it leaves the round
            raise RemoteProtocolError(f"the server's codec for round {self.round} exceeds this client's caps")
        if self._plan is not None and unit_layout is not None and self.min_coverage > 1:
            units, coordinates = contributable(
                unit_layout, trained_units, self._peer_plans, self.min_coverage
            )
            self.withheld_units = int(trained_units.sum() - units.sum())
            delta = np.where(coordinates, delta, 0.0)
            trained_units = units
        layout = UpdateLayout(delta.shape[0], trained_units.shape[0])
        self.client.set_input(layout.encode(fixed, delta, trained_units, weight, rng))

    def data_to_send(self) -> list[Any]:
        return self.client.data_to_send()

    def received_private(self) -> list[PrivatePayload]:
        """The private payloads received since the last call, other than coverage plans."""
        out, self._private = self._private, []
        return out
