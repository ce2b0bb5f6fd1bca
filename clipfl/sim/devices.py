"""Device profiles: what a simulated client's hardware and link are, and fleets of them.

A ``DeviceProfile`` is four numbers: compute speed in multiply-accumulates (MACs) per second of
training, upload and download rates in bits per second (None: not capped) and a one-way latency in
seconds. A fleet is one profile per client id. Two ways to make one:

* ``straggler_fleet`` maps the live harness's emulation (DESIGN.md section 6) one to one: a client with
  compute slowdown F gets ``base_speed / F`` (live, its fit lasts F x the CPU time this machine took),
  and a network straggler gets the capped rates. ``base_speed`` is this machine's measured training
  speed for the model (``clipfl.sim.costs``), so a simulated fleet is the emulated one, minus the noise.
* ``drawn_fleet`` draws profiles from distributions, seeded: log-normal compute speeds and a few
  bandwidth classes picked with given probabilities (a fleet of phones, not a fleet of copies).

Every impossible value raises ``ConfigError`` with one line naming the field and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from clipfl.errors import ConfigError

__all__ = ["BandwidthClass", "DeviceProfile", "Fleet", "choose_stragglers", "drawn_fleet", "straggler_fleet"]

Fleet = Mapping[int, "DeviceProfile"]
"""One device profile per client id, 0 .. clients-1."""


def _finite(name: str, value: float, *, positive: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        allowed = "a finite number > 0" if positive else "a finite number >= 0"
        raise ConfigError(f"device profile: {name} must be {allowed}, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceProfile:
    """One client's device: compute speed, link rates and latency."""

    macs_per_second: float
    """Training speed: multiply-accumulates per second (a fit's MACs over this is its duration)."""
    upload_bps: float | None = None
    """Upload rate in bits per second; None is not capped."""
    download_bps: float | None = None
    """Download rate in bits per second; None is not capped."""
    latency_s: float = 0.0
    """One-way latency in seconds, added to every message."""

    def __post_init__(self) -> None:
        _finite("macs_per_second", self.macs_per_second, positive=True)
        for name in ("upload_bps", "download_bps"):
            value = getattr(self, name)
            if value is not None:
                _finite(name, value, positive=True)
        _finite("latency_s", self.latency_s, positive=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class BandwidthClass:
    """A class of links in a drawn fleet (say "4G", "cable"), picked with probability ``weight``."""

    upload_bps: float | None
    download_bps: float | None
    latency_s: float = 0.0
    weight: float = 1.0

    def __post_init__(self) -> None:
        DeviceProfile(
            macs_per_second=1.0,
            upload_bps=self.upload_bps,
            download_bps=self.download_bps,
            latency_s=self.latency_s,
        )
        _finite("bandwidth class weight", self.weight, positive=True)


def choose_stragglers(clients: int, count: int, seed: int) -> frozenset[int]:
    """The launcher's seeded choice of ``count`` stragglers among ``clients`` (the live harness's)."""
    if not 0 <= count <= clients:
        raise ConfigError(f"stragglers must be in 0..{clients} (the number of clients), got {count}")
    rng = np.random.default_rng(seed + 7919)
    return frozenset(rng.choice(clients, size=count, replace=False).tolist())


def _ids(name: str, ids: Collection[int], clients: int) -> frozenset[int]:
    bad = sorted(i for i in ids if not 0 <= i < clients)
    if bad:
        raise ConfigError(f"{name}: ids {bad} are outside 0..{clients - 1}")
    return frozenset(ids)


def straggler_fleet(
    clients: int,
    *,
    base_speed: float,
    slowdown: float = 1.0,
    straggler_ids: Collection[int] = (),
    straggler_slowdown: float = 1.0,
    network_ids: Collection[int] | None = None,
    upload_bps: float | None = None,
    download_bps: float | None = None,
    straggler_upload_bps: float | None = None,
    straggler_download_bps: float | None = None,
    latency_s: float = 0.0,
) -> dict[int, DeviceProfile]:
    """The live emulation's fleet: base slowdown, compute stragglers, network stragglers.

    As in the launcher: compute stragglers run ``slowdown * straggler_slowdown`` slower; network
    stragglers (``network_ids``, else the compute stragglers) get the stragglers' caps where given,
    else the base caps.
    """
    if clients < 1:
        raise ConfigError(f"clients must be >= 1, got {clients}")
    for name, value in (("slowdown", slowdown), ("straggler_slowdown", straggler_slowdown)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 1):
            raise ConfigError(
                f"{name} must be a finite number >= 1 (a factor on the fit time), got {value!r}"
            )
    slow = _ids("straggler_ids", straggler_ids, clients)
    capped = slow if network_ids is None else _ids("network_ids", network_ids, clients)
    if len(slow | capped) >= clients:
        raise ConfigError(
            f"{len(slow | capped)} stragglers of {clients} clients leaves nobody fast to compare with"
        )
    fleet = {}
    for i in range(clients):
        factor = slowdown * (straggler_slowdown if i in slow else 1.0)
        fleet[i] = DeviceProfile(
            macs_per_second=base_speed / factor,
            upload_bps=(straggler_upload_bps or upload_bps) if i in capped else upload_bps,
            download_bps=(straggler_download_bps or download_bps) if i in capped else download_bps,
            latency_s=latency_s,
        )
    return fleet


def drawn_fleet(
    clients: int,
    *,
    seed: int,
    median_speed: float,
    speed_sigma: float = 0.5,
    bandwidth: Sequence[BandwidthClass] = (BandwidthClass(upload_bps=None, download_bps=None),),
) -> dict[int, DeviceProfile]:
    """Profiles drawn from distributions, seeded: speed ~ log-normal(ln median, sigma), links by class.

    ``speed_sigma`` is the standard deviation of the speed's natural logarithm (0.5: the middle two
    thirds of the fleet within 0.6x .. 1.65x of the median).
    """
    if clients < 1:
        raise ConfigError(f"clients must be >= 1, got {clients}")
    _finite("median_speed", median_speed, positive=True)
    _finite("speed_sigma", speed_sigma, positive=False)
    if not bandwidth:
        raise ConfigError("bandwidth must name at least one bandwidth class")
    rng = np.random.default_rng([seed, 0x5EED])
    speeds = median_speed * np.exp(speed_sigma * rng.standard_normal(clients))
    weights = np.array([c.weight for c in bandwidth], dtype=np.float64)
    picks = rng.choice(len(bandwidth), size=clients, p=weights / weights.sum())
    fleet = {}
    for i in range(clients):
        link = bandwidth[int(picks[i])]
        fleet[i] = DeviceProfile(
            macs_per_second=float(speeds[i]),
            upload_bps=link.upload_bps,
            download_bps=link.download_bps,
            latency_s=link.latency_s,
        )
    return fleet
