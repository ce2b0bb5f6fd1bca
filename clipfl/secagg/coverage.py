"""Minimum coverage: a client contributes a unit only if enough clients train it (issue 13, attack 8).

Under coverage-weighted averaging (DESIGN section 4) a unit trained by one client only carries that
client's weighted delta in the clear in the sum. Agreed instructions (``SecAggClient(instructions=)``)
stop the server from singling a client out with its own deadline or keep ratio; this module covers the
rest: each client tells its neighbours, over the encrypted client channel, which units it will train
(``pack_plan``), and withholds from the sum every unit that fewer than ``min_clients`` announced plans
cover, itself included (``withhold_thin_units``): a withheld unit is encoded like a pruned one, zero
delta and zero coverage, so the sum never isolates it.

The server relays the plans but cannot read or forge them (``Box``-sealed between the two clients).
Limits: a client counts only the plans it received (its neighbours in SecAgg+, so the count is a lower
bound and it withholds more, never less); a colluding client can announce units it will not train, so
``min_clients`` should exceed the number of colluders a neighbourhood may hold plus one (the default,
``SecAggConfig.min_coverage = 3``, holds against one); a client that announces and then drops lowers
the real coverage by one, as with any dropout.

A coordinate tied to two units (a weight from unit ``i`` into unit ``j``) is trained by the clients that
kept both, which may be fewer than either unit's trainers: ``contributable`` counts plans per coordinate
too and withholds the coordinates that fewer than ``min_clients`` plans cover, while the unit's coverage
still counts the client, so the server's divisor for such a coordinate is an upper bound (the update is
shrunk, never amplified, as ``clipfl.clip.aggregation`` already documents for two-unit ties).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from clipfl.clip.units import UnitLayout

__all__ = ["PLAN_PREFIX", "contributable", "is_plan", "pack_plan", "unpack_plan", "withhold_thin_units"]

PLAN_PREFIX = b"clipfl.coverage.v1"
_HEADER = struct.Struct(">I")


def pack_plan(trained: np.ndarray) -> bytes:
    """The private-channel payload announcing which units this client trains (1 bit per unit)."""
    trained = np.asarray(trained)
    if trained.ndim != 1 or trained.dtype != np.bool_:
        raise ValueError(f"a plan is a 1-D bool array, got {trained.dtype} of shape {trained.shape}")
    return PLAN_PREFIX + _HEADER.pack(trained.shape[0]) + np.packbits(trained).tobytes()


def is_plan(payload: bytes) -> bool:
    """Whether a private payload is a coverage plan (the driver routes the others to CLIP)."""
    return payload.startswith(PLAN_PREFIX)


def unpack_plan(payload: bytes, units: int) -> np.ndarray:
    """The bool array of a peer's plan; ``ValueError`` when it is not a plan of ``units`` units."""
    if not is_plan(payload) or len(payload) < len(PLAN_PREFIX) + _HEADER.size:
        raise ValueError("not a coverage plan")
    (count,) = _HEADER.unpack_from(payload, len(PLAN_PREFIX))
    body = payload[len(PLAN_PREFIX) + _HEADER.size :]
    if count != units or len(body) != (units + 7) // 8:
        raise ValueError(f"coverage plan of {count} units in {len(body)} bytes, the model has {units}")
    return np.unpackbits(np.frombuffer(body, dtype=np.uint8), count=units).astype(bool)


def withhold_thin_units(own: np.ndarray, peers: Mapping[int, np.ndarray], min_clients: int) -> np.ndarray:
    """The units this client may contribute: those it trains that at least ``min_clients`` announced
    plans (its own and its peers') cover. Encode the others as pruned (zero delta, zero coverage)."""
    own = np.asarray(own, dtype=bool)
    if min_clients < 1:
        raise ValueError(f"min_clients must be at least 1, got {min_clients}")
    count = own.astype(np.int64)
    for plan in peers.values():
        if plan.shape != own.shape:
            raise ValueError(f"a peer's plan has shape {plan.shape}, this client's {own.shape}")
        count += plan.astype(np.int64)
    return own & (count >= min_clients)


def contributable(
    layout: UnitLayout, own: np.ndarray, peers: Mapping[int, np.ndarray], min_clients: int
) -> tuple[np.ndarray, np.ndarray]:
    """What this client may put in the sum: the units (``units + 1`` entries, as its coverage) and the
    state coordinates that at least ``min_clients`` announced plans, its own included, cover.

    A coordinate counts the plans that keep both of its units; plans that keep every unit are counted
    once and need no per-coordinate count, so the common round (most clients train the full model)
    costs one gather over the coordinates. The rest slot (state tied to no unit) is never withheld here: every
    client of the round trains it, and a round has at least ``SecAggConfig.min_clients`` clients."""
    units = withhold_thin_units(own, peers, min_clients)
    units[-1] = bool(own[-1])
    coordinates = units[layout.out_unit] & units[layout.in_unit]
    plans = [np.asarray(own, dtype=bool), *peers.values()]
    full = sum(1 for plan in plans if plan.all())
    if full < min_clients:
        count = np.full(coordinates.shape, full, dtype=np.int32)
        for plan in plans:
            if not plan.all():
                count += plan[layout.out_unit] & plan[layout.in_unit]
        rest = layout.units
        coordinates &= (count >= min_clients) | ((layout.out_unit == rest) & (layout.in_unit == rest))
    return units, coordinates
