"""Secure aggregation (SecAgg of Bonawitz et al. 2017, SecAgg+ of Bell et al. 2020), sans-IO.

Pure, synchronous, deterministic given injected randomness: no sockets, no asyncio, no torch. The
drivers in ``clipfl.server`` / ``clipfl.client`` move the messages and own the deadlines.
"""

from __future__ import annotations

from clipfl.secagg.client import ClientStatistics, PrivatePayload, SecAggClient
from clipfl.secagg.config import MODES, Mode, ResolvedSecAgg, SecAggConfig
from clipfl.secagg.encoding import FixedPoint, UpdateLayout
from clipfl.secagg.graph import regular_graph
from clipfl.secagg.messages import (
    Abort,
    AdvertiseKeys,
    ClientMessage,
    ConsistencyCheck,
    ConsistencySignature,
    KeysBroadcast,
    MaskedInput,
    MaskedInputRequest,
    Message,
    PrivateDelivery,
    RelayPrivate,
    RoundSetup,
    ServerMessage,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
)
from clipfl.secagg.params import CORRUPTED_FRACTION, DROPOUT_FRACTION, ActiveParameters, active_parameters
from clipfl.secagg.prg import MaskStream, expand
from clipfl.secagg.primitives import MODELLED, REAL, Primitives
from clipfl.secagg.roster import Roster, RosterEntry
from clipfl.secagg.server import SecAggServer, ServerStatistics
from clipfl.secagg.stages import Stage

__all__ = [
    "CORRUPTED_FRACTION",
    "DROPOUT_FRACTION",
    "MODELLED",
    "MODES",
    "REAL",
    "Abort",
    "ActiveParameters",
    "AdvertiseKeys",
    "ClientMessage",
    "ClientStatistics",
    "ConsistencyCheck",
    "ConsistencySignature",
    "FixedPoint",
    "KeysBroadcast",
    "MaskStream",
    "MaskedInput",
    "MaskedInputRequest",
    "Message",
    "Mode",
    "Primitives",
    "PrivateDelivery",
    "PrivatePayload",
    "RelayPrivate",
    "ResolvedSecAgg",
    "Roster",
    "RosterEntry",
    "RoundSetup",
    "SecAggClient",
    "SecAggConfig",
    "SecAggServer",
    "ServerMessage",
    "ServerStatistics",
    "ShareKeys",
    "Stage",
    "UnmaskRequest",
    "UnmaskShares",
    "UpdateLayout",
    "active_parameters",
    "expand",
    "regular_graph",
]
