"""Messages of the federated-learning protocol between server and clients.

One round, as the server drives it (rounds count from 1, as in Flower)::

    client                                  server
      Register(client_id, num_samples, ...) ->
                                          <- Welcome(run settings)       or Reject(reason)
                                          <- NotRegistered(reason)       to any connection it does not
                                                                         know: a restarted server
                                          <- RoundStart(round)           tiny: starts the download clock
                                          <- FitIns(round, weights, config)
      (local fit)
      TimingRelay(round, report)            <->                          CLIP, plain mode (relayed)
      FitRes(round, delta, num_samples)     ->                           plain mode
      SecAgg messages                       <->                          secure mode (clipfl.secagg)
                                          <- Receipt(round)              stops the upload clock
                                          <- Shutdown(reason)            end of the run

Values are frozen, slotted, keyword-only dataclasses that validate what a constructor can; the
codec in ``clipfl.wire`` turns a constructor's ValueError into ``RemoteProtocolError``. Settings are
typed value objects (``clipfl.settings``), never string-keyed maps. Importing this module registers
every message of the protocol, secure aggregation's included, so that any peer that decodes has them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clipfl.secagg import (
    Abort,
    AdvertiseKeys,
    ConsistencyCheck,
    ConsistencySignature,
    KeysBroadcast,
    MaskedInput,
    MaskedInputRequest,
    PrivateDelivery,
    RelayPrivate,
    RoundSetup,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
)
from clipfl.settings import CodecParams, RunSettings, TrainSettings
from clipfl.wire import message

__all__ = [
    "SECAGG_MESSAGES",
    "TOKEN_BYTES",
    "FitIns",
    "FitRes",
    "NotRegistered",
    "Receipt",
    "Register",
    "Reject",
    "RoundStart",
    "Shutdown",
    "TimingRelay",
    "Welcome",
]

TOKEN_BYTES = 32
"""Session tokens are 256 random bits (``secrets.token_bytes``)."""

SECAGG_MESSAGES: tuple[type, ...] = (
    RoundSetup,
    AdvertiseKeys,
    KeysBroadcast,
    ShareKeys,
    MaskedInputRequest,
    MaskedInput,
    UnmaskRequest,
    UnmaskShares,
    RelayPrivate,
    PrivateDelivery,
    Abort,
    ConsistencyCheck,
    ConsistencySignature,
)
"""Secure aggregation's messages (``clipfl.secagg``), carried in the same envelopes as the rest."""

for _cls, _name in zip(
    SECAGG_MESSAGES,
    (
        "setup",
        "advertise_keys",
        "keys",
        "share_keys",
        "masked_input_request",
        "masked_input",
        "unmask_request",
        "unmask_shares",
        "relay",
        "private",
        "abort",
        "consistency_check",
        "consistency_signature",
    ),
    strict=True,
):
    message(f"secagg.{_name}")(_cls)


def _positive_round(value: int) -> None:
    if value < 1:
        raise ValueError(f"round must be >= 1, got {value}")


def _float_state(state: dict[str, np.ndarray], what: str) -> None:
    for name, tensor in state.items():
        if tensor.dtype != np.float32:
            raise ValueError(f"{what} tensor {name!r} must be float32, got {tensor.dtype}")


@message("register")
@dataclass(frozen=True, slots=True, kw_only=True)
class Register:
    """A client asks to join: who it is, how much data it holds, what it can do.

    ``token`` is the session token of an earlier ``Welcome`` (None the first time): the proof that
    a client reconnecting while its old connection still looks alive is the same client.
    """

    client_id: int
    num_samples: int
    dataset: str
    capabilities: list[str] = field(default_factory=list)
    token: bytes | None = None

    def __post_init__(self) -> None:
        if self.client_id < 0:
            raise ValueError(f"client_id must be >= 0, got {self.client_id}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.token is not None and len(self.token) != TOKEN_BYTES:
            raise ValueError(f"a session token has {TOKEN_BYTES} bytes, got {len(self.token)}")


@message("welcome")
@dataclass(frozen=True, slots=True, kw_only=True)
class Welcome:
    """The server admits a client and tells it the run's settings (model, secure aggregation, ...).

    ``token`` is a secret of this client's session: only a ``Register`` that carries it may take the
    client's id over from a connection the server still holds.
    """

    client_id: int
    settings: RunSettings
    token: bytes

    def __post_init__(self) -> None:
        if len(self.token) != TOKEN_BYTES:
            raise ValueError(f"a session token has {TOKEN_BYTES} bytes, got {len(self.token)}")


@message("reject")
@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    """The server refuses a registration; ``reason`` says what to change. ``retryable``: the cause
    may pass by itself (this id's old connection has not timed out yet), so the client retries."""

    reason: str
    retryable: bool = False


@message("not_registered")
@dataclass(frozen=True, slots=True, kw_only=True)
class NotRegistered:
    """The server does not know this connection (it restarted, or forgot it): register again."""

    reason: str


@message("round_start")
@dataclass(frozen=True, slots=True, kw_only=True)
class RoundStart:
    """Sent just before ``FitIns`` so that the client can time the model's download."""

    round: int

    def __post_init__(self) -> None:
        _positive_round(self.round)


@message("fit_ins")
@dataclass(frozen=True, slots=True, kw_only=True)
class FitIns:
    """Train on the global model ``weights`` (named float32 tensors) with ``train``.

    - ``seed``: the round's training seed (each client adds its own id).
    - ``deadline``: the server's cap on the round target T*, in seconds (DESIGN 5.2): how long the server
      waits this round. A client's CLIP planner never aims later than this.
    - ``keep_ratio``: under ``fluid`` only, the keep ratio the server assigned this client.
    - ``codec``: under secure aggregation, the numbers the fixed-point codec is built from.
    """

    round: int
    weights: dict[str, np.ndarray]
    train: TrainSettings
    seed: int
    deadline: float | None
    keep_ratio: float | None
    codec: CodecParams | None

    def __post_init__(self) -> None:
        _positive_round(self.round)
        _float_state(self.weights, "weights")
        if self.deadline is not None and not self.deadline > 0:
            raise ValueError(f"deadline must be positive, got {self.deadline}")
        if self.keep_ratio is not None and not 0 < self.keep_ratio <= 1:
            raise ValueError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")


@message("fit_res")
@dataclass(frozen=True, slots=True, kw_only=True)
class FitRes:
    """A client's model delta (trained minus global) in the clear, for ``--secagg off``."""

    round: int
    delta: dict[str, np.ndarray]
    num_samples: int
    metrics: dict[str, float]
    trained_units: np.ndarray
    """Coverage (DESIGN section 4): True for each prunable unit this client trained, then the rest slot."""

    def __post_init__(self) -> None:
        _positive_round(self.round)
        _float_state(self.delta, "delta")
        if (
            self.trained_units.dtype != np.bool_
            or self.trained_units.ndim != 1
            or self.trained_units.size < 1
        ):
            raise ValueError("trained_units must be a non-empty 1-D bool array")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")


@message("timing_relay")
@dataclass(frozen=True, slots=True, kw_only=True)
class TimingRelay:
    """A CLIP timing report in the clear (``--secagg off`` only), relayed by the server to the round's
    other clients; under secure aggregation reports travel sealed on the client-to-client channel."""

    round: int
    sender: int
    payload: bytes

    def __post_init__(self) -> None:
        _positive_round(self.round)
        if len(self.payload) > 4096:
            raise ValueError(f"timing report of {len(self.payload)} bytes exceeds 4096")


@message("receipt")
@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """The server got a client's upload for ``round``: the client stops its upload clock."""

    round: int


@message("shutdown")
@dataclass(frozen=True, slots=True, kw_only=True)
class Shutdown:
    """The run is over (or the server is stopping): the client exits."""

    reason: str
