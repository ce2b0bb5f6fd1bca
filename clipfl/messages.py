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
codec in ``clipfl.wire`` turns a constructor's ValueError into ``RemoteProtocolError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clipfl.wire import message

__all__ = [
    "ConfigValue",
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

ConfigValue = int | float | str | bool | None


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
    """A client asks to join: who it is, how much data it holds, what it can do."""

    client_id: int
    num_samples: int
    dataset: str
    capabilities: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.client_id < 0:
            raise ValueError(f"client_id must be >= 0, got {self.client_id}")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")


@message("welcome")
@dataclass(frozen=True, slots=True, kw_only=True)
class Welcome:
    """The server admits a client and tells it the run's settings (model, secure aggregation, ...)."""

    client_id: int
    settings: dict[str, ConfigValue]


@message("reject")
@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    """The server refuses a registration; ``reason`` says what to change."""

    reason: str


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
    """Train on the global model ``weights`` (named float32 tensors) with ``config``."""

    round: int
    weights: dict[str, np.ndarray]
    config: dict[str, ConfigValue]

    def __post_init__(self) -> None:
        _positive_round(self.round)
        _float_state(self.weights, "weights")


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
