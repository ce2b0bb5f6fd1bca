"""Benchmark scenarios: one TOML file says which federation to run, how its devices straggle, and what
accuracy counts as "trained", so that a benchmark is reproducible from its file name alone.

A scenario file (``benchmarks/scenarios/<name>.toml``)::

    description = "what this scenario is for"
    target_accuracy = 0.8      # time to target is measured to the first round at or above it
    seeds = 3                  # seeds 0 .. seeds-1; ``--seeds N`` overrides
    warmup_rounds = 1          # rounds run but not timed (every process warms torch up at once)
    run_timeout = 600          # seconds one launcher run may take before it is killed and marked failed
    secagg = "secagg"          # secure aggregation of every private strategy ("fluid" always runs "off")
    strategies = ["none", "clip"]   # optional: the default strategies (else all of STRATEGIES)

    [federation]               # launcher flags, keys as flag names with underscores
    preset = "cifar10"         # or dataset = "digits", model = ...
    clients = 20
    rounds = 40

    [devices]                  # every client
    slowdown = 10.0            # base compute slowdown (DESIGN.md section 6)
    upload_rate = "50mbit"     # optional link caps, tc units
    download_rate = "100mbit"

    [stragglers]
    ids = [3, 7, 11, 15]       # or count = 4 (the launcher's seeded choice)
    slowdown = 3.0             # a multiple of the base slowdown
    upload_rate = "4mbit"      # optional caps that replace the base ones for the stragglers
    download_rate = "20mbit"

    [sim]                      # optional, --engine sim only (the live harness has no such devices)
    server_rate = "1gbit"      # the server's link, shared by every client (default: not capped)
    latency = 0.02             # every client's one-way latency in seconds (default 0)
    fleet = "drawn"            # "stragglers" (default: [devices] and [stragglers]) or "drawn":
    speed_sigma = 0.5          #   compute speeds log-normal around the base (this machine / slowdown)
    bandwidth = [              #   link classes picked with these weights, seeded by the run's seed
        { upload_rate = "5mbit", download_rate = "20mbit", latency = 0.05, weight = 1 },
        { upload_rate = "50mbit", download_rate = "100mbit", weight = 3 },
    ]

    [quick]                    # overrides for ``--quick``, same layout (tables are merged key by key)
    run_timeout = 120
    [quick.federation]
    rounds = 5

The launcher applies one straggler profile to every straggler, so a "mixed" straggler is slow in
compute *and* network at once. Every mistake raises ``ConfigError`` with one line that names the
scenario and the key.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from clipfl.config import RunConfig
from clipfl.errors import ConfigError
from clipfl.shaping import parse_rate

__all__ = [
    "FEDERATION_KEYS",
    "SCENARIO_DIR",
    "SECAGG_MODES",
    "STRATEGIES",
    "BandwidthSpec",
    "DeviceProfile",
    "Scenario",
    "SimSettings",
    "StragglerProfile",
    "available_scenarios",
    "load_scenario",
    "parse_scenario",
]

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"

# The strategies of issue 6, in the order a seed runs them; "ideal" is added by the harness.
STRATEGIES = ("none", "deadline", "random", "ordered", "clip-compute", "clip", "fluid")
SECAGG_MODES = ("off", "secagg", "secagg+")

# Launcher flags a scenario may set in [federation]: the federation fields of the launcher's command
# line (``clipfl.config.RunConfig``, from which the flags are generated, so the two cannot drift) and
# the launcher's heartbeat timeout. Seeds, mitigation, secure aggregation, target, devices and shaping
# belong to the harness: a scenario that set them there would silently be overridden.
_HARNESS_KEYS = {
    "seed": "seeds",
    "secagg": "the top-level secagg key",
    "mitigation": "strategies",
    "run_dir": "--out",
    "stragglers": "[stragglers]",
    "straggler_ids": "[stragglers]",
    "straggler_slowdown": "[stragglers]",
    "straggler_upload_rate": "[stragglers]",
    "straggler_download_rate": "[stragglers]",
    "slowdown": "[devices]",
    "upload_rate": "[devices]",
    "download_rate": "[devices]",
    "shape": "the harness (tc when root, else app)",
    "quiet": "the harness",
    "config": "the harness",
    "target_accuracy": "the top-level target_accuracy",
}
FEDERATION_KEYS = frozenset(
    {f.name for f in dataclasses.fields(RunConfig)} - set(_HARNESS_KEYS) | {"heartbeat_timeout"}
)
_SWITCHES = frozenset(f.name for f in dataclasses.fields(RunConfig) if f.type in ("bool", bool))
"""The launcher's on/off flags (``--eval-overlap`` / ``--no-eval-overlap``): true or false in TOML."""
_TOP_KEYS = frozenset(
    {
        "name",
        "description",
        "target_accuracy",
        "seeds",
        "warmup_rounds",
        "run_timeout",
        "secagg",
        "strategies",
        "federation",
        "devices",
        "stragglers",
        "sim",
        "quick",
    }
)
_DEVICE_KEYS = frozenset({"slowdown", "upload_rate", "download_rate"})
_SIM_KEYS = frozenset({"server_rate", "latency", "fleet", "speed_sigma", "bandwidth"})
_BANDWIDTH_KEYS = frozenset({"upload_rate", "download_rate", "latency", "weight"})
SIM_FLEETS = ("stragglers", "drawn")
_STRAGGLER_KEYS = frozenset({"count", "ids", "network_ids", "slowdown", "upload_rate", "download_rate"})
_DEFAULT_RUN_TIMEOUT = 900.0  # seconds; a paper run at full size ends well inside this


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceProfile:
    """What every client is: a compute slowdown (>= 1) and optional link caps (tc rate strings)."""

    slowdown: float = 1.0
    upload_rate: str | None = None
    download_rate: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StragglerProfile:
    """Which clients straggle and how much more: ``slowdown`` multiplies the base one; caps replace it."""

    count: int = 0
    ids: tuple[int, ...] | None = None  # None: the launcher's seeded choice of ``count`` clients
    slowdown: float = 1.0
    upload_rate: str | None = None
    download_rate: str | None = None
    network_ids: tuple[int, ...] | None = None  # capped clients, if not the slow ones: a mixed fleet

    @property
    def all_ids(self) -> tuple[int, ...] | None:
        """Every straggler, slow in compute or in network (None: the launcher's seeded choice)."""
        if self.ids is None:
            return None
        return tuple(sorted(set(self.ids) | set(self.network_ids or ())))

    @property
    def has_network(self) -> bool:
        return self.upload_rate is not None or self.download_rate is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class BandwidthSpec:
    """A class of links of a drawn fleet: tc rate caps, a one-way latency, a relative weight."""

    upload_rate: str | None = None
    download_rate: str | None = None
    latency: float = 0.0
    weight: float = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SimSettings:
    """What only the simulator models: the server's shared link, latency, drawn fleets."""

    server_rate: str | None = None
    latency: float = 0.0
    fleet: str = "stragglers"
    speed_sigma: float = 0.5
    bandwidth: tuple[BandwidthSpec, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A validated scenario (build it with :func:`parse_scenario` or :func:`load_scenario`)."""

    name: str
    description: str
    federation: tuple[tuple[str, str | int | float], ...]  # launcher flags, in file order
    devices: DeviceProfile
    stragglers: StragglerProfile
    target_accuracy: float
    seeds: int
    warmup_rounds: int
    run_timeout: float
    secagg: str
    strategies: tuple[str, ...]
    quick: bool = False
    sim: SimSettings = SimSettings()

    @property
    def clients(self) -> int:
        return int(dict(self.federation)["clients"])

    @property
    def rounds(self) -> int:
        return int(dict(self.federation)["rounds"])

    @property
    def has_network_caps(self) -> bool:
        d = self.devices
        return d.upload_rate is not None or d.download_rate is not None or self.stragglers.has_network

    def with_rounds(self, rounds: int) -> Scenario:
        """The same scenario with another number of rounds (smoke tests, quick looks)."""
        if rounds <= self.warmup_rounds:
            raise ConfigError(
                f"scenario {self.name}: rounds ({rounds}) must exceed warmup_rounds ({self.warmup_rounds})"
            )
        federation = tuple((k, rounds if k == "rounds" else v) for k, v in self.federation)
        return replace(self, federation=federation)

    def with_seeds(self, seeds: int) -> Scenario:
        if seeds < 1:
            raise ConfigError(f"scenario {self.name}: seeds must be >= 1, got {seeds}")
        return replace(self, seeds=seeds)


# ------------------------------------------------------------------------------------------ parsing


class _Reader:
    """Typed access to one table of the file, with errors that name the scenario and the key."""

    def __init__(self, scenario: str, table: str, data: Mapping[str, Any], allowed: frozenset[str]) -> None:
        self.scenario, self.table, self.data = scenario, table, data
        if not isinstance(data, Mapping):
            self.fail(f"[{table}] must be a table")
        unknown = sorted(set(data) - allowed)
        if unknown:
            where = f"[{table}]" if table else "the file"
            self.fail(f"unknown key {unknown[0]!r} in {where}; allowed: {', '.join(sorted(allowed))}")

    def fail(self, message: str) -> None:
        raise ConfigError(f"scenario {self.scenario}: {message}")

    def key(self, name: str) -> str:
        return f"{self.table}.{name}" if self.table else name

    def number(self, name: str, default: float | None, *, minimum: float, integer: bool = False) -> Any:
        value = self.data.get(name, default)
        if value is None:
            self.fail(f"{self.key(name)} is required")
        ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type or not math.isfinite(value):
            kind = "an integer" if integer else "a number"
            self.fail(f"{self.key(name)} must be {kind}, got {value!r}")
        if value < minimum:
            self.fail(f"{self.key(name)} must be >= {minimum:g}, got {value!r}")
        return value

    def rate(self, name: str) -> str | None:
        value = self.data.get(name)
        if value is None:
            return None
        try:
            parse_rate(value)
        except ConfigError as exc:
            self.fail(f"{self.key(name)}: {exc}")
        return str(value)

    def string(self, name: str, default: str, choices: tuple[str, ...] | None = None) -> str:
        value = self.data.get(name, default)
        if not isinstance(value, str):
            self.fail(f"{self.key(name)} must be a string, got {value!r}")
        if choices is not None and value not in choices:
            self.fail(f"{self.key(name)} must be one of {', '.join(choices)}; got {value!r}")
        return str(value)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` on top; tables are merged key by key, everything else replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _federation(r: _Reader) -> tuple[tuple[str, str | int | float], ...]:
    for key, value in r.data.items():
        if isinstance(value, bool) and key not in _SWITCHES:
            r.fail(f"federation.{key} is not a switch: give a string or a number, not {value!r}")
        if not isinstance(value, str | int | float):
            r.fail(f"federation.{key} must be a string or a number, got {value!r}")
    if "preset" not in r.data and "dataset" not in r.data:
        r.fail("[federation] needs a preset or a dataset")
    clients = r.number("clients", None, minimum=1, integer=True)
    r.number("rounds", None, minimum=1, integer=True)
    if clients < 2:
        r.fail(f"federation.clients must be >= 2 to have anyone to compare with, got {clients}")
    return tuple(r.data.items())


def _id_tuple(r: _Reader, key: str, clients: int) -> tuple[int, ...] | None:
    value = r.data.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        r.fail(f"stragglers.{key} must be a list of client ids, got {value!r}")
    ids = tuple(sorted(value))
    if len(set(ids)) != len(ids) or (ids and not 0 <= ids[0] <= ids[-1] < clients):
        r.fail(f"stragglers.{key} must be distinct client ids in 0..{clients - 1}")
    return ids


def _stragglers(r: _Reader, clients: int) -> StragglerProfile:
    ids_value = r.data.get("ids")
    if ids_value is not None and "count" in r.data:
        r.fail("[stragglers] takes ids or count, not both")
    ids: tuple[int, ...] | None = None
    if ids_value is not None:
        if not isinstance(ids_value, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids_value
        ):
            r.fail(f"stragglers.ids must be a list of client ids, got {ids_value!r}")
        ids = tuple(sorted(ids_value))
        if len(set(ids)) != len(ids):
            r.fail(f"stragglers.ids has duplicates: {list(ids_value)}")
        if ids and not 0 <= ids[0] <= ids[-1] < clients:
            r.fail(f"stragglers.ids must lie in 0..{clients - 1} (federation.clients = {clients})")
        count = len(ids)
    else:
        count = r.number("count", 0, minimum=0, integer=True)
    network_ids = _id_tuple(r, "network_ids", clients)
    if network_ids is not None and ids is None:
        r.fail("stragglers.network_ids needs explicit stragglers.ids")
    if network_ids is not None:
        count = len(set(ids or ()) | set(network_ids))  # every straggler, slow in compute or in network
    if count >= clients:
        r.fail(f"{count} stragglers of {clients} clients leaves nobody fast to compare with")
    profile = StragglerProfile(
        count=count,
        ids=ids,
        network_ids=network_ids,
        slowdown=float(r.number("slowdown", 1.0, minimum=1)),
        upload_rate=r.rate("upload_rate"),
        download_rate=r.rate("download_rate"),
    )
    if count and profile.slowdown == 1.0 and not profile.has_network:
        r.fail("stragglers that are neither slower (slowdown > 1) nor capped (rates) do not straggle")
    return profile


def _sim(r: _Reader) -> SimSettings:
    fleet = r.string("fleet", "stragglers", SIM_FLEETS)
    raw = r.data.get("bandwidth", [])
    if not isinstance(raw, list) or not all(isinstance(b, Mapping) for b in raw):
        r.fail("sim.bandwidth must be a list of tables {upload_rate, download_rate, latency, weight}")
    classes = []
    for i, table in enumerate(raw):
        b = _Reader(r.scenario, f"sim.bandwidth[{i}]", table, _BANDWIDTH_KEYS)
        weight = b.number("weight", 1.0, minimum=0)
        if weight <= 0:
            b.fail(f"sim.bandwidth[{i}].weight must be > 0, got {weight!r}")
        classes.append(
            BandwidthSpec(
                upload_rate=b.rate("upload_rate"),
                download_rate=b.rate("download_rate"),
                latency=float(b.number("latency", 0.0, minimum=0)),
                weight=float(weight),
            )
        )
    if classes and fleet != "drawn":
        r.fail('sim.bandwidth describes a drawn fleet: set sim.fleet = "drawn"')
    return SimSettings(
        server_rate=r.rate("server_rate"),
        latency=float(r.number("latency", 0.0, minimum=0)),
        fleet=fleet,
        speed_sigma=float(r.number("speed_sigma", 0.5, minimum=0)),
        bandwidth=tuple(classes),
    )


def parse_scenario(data: Mapping[str, Any], name: str, *, quick: bool = False) -> Scenario:
    """Validate a scenario's TOML mapping (with its ``[quick]`` overrides applied when ``quick``).

    Both sizes are validated either way, so that a broken ``[quick]`` table is found before anyone
    asks for it.
    """
    full = _parse(data, name, quick=False)
    small = _parse(data, name, quick=True) if "quick" in data else replace(full, quick=True)
    return small if quick else full


def _parse(data: Mapping[str, Any], name: str, *, quick: bool) -> Scenario:
    top = _Reader(name, "", data, _TOP_KEYS)
    quick_table = data.get("quick", {})
    _Reader(name, "quick", quick_table, _TOP_KEYS - {"quick", "name"})
    if quick:
        data = _merge(data, quick_table)
        top = _Reader(name, "", data, _TOP_KEYS)
    name = top.string("name", name)

    fed_data = data.get("federation")
    if fed_data is None:
        top.fail("the [federation] table is missing")
    for key in fed_data if isinstance(fed_data, Mapping) else ():
        if key in _HARNESS_KEYS:
            top.fail(f"federation.{key} is set by the harness; use {_HARNESS_KEYS[key]}")
    assert fed_data is not None  # top.fail raised otherwise
    federation = _federation(_Reader(name, "federation", fed_data, FEDERATION_KEYS))
    clients = int(dict(federation)["clients"])
    rounds = int(dict(federation)["rounds"])

    dev = _Reader(name, "devices", data.get("devices", {}), _DEVICE_KEYS)
    devices = DeviceProfile(
        slowdown=float(dev.number("slowdown", 1.0, minimum=1)),
        upload_rate=dev.rate("upload_rate"),
        download_rate=dev.rate("download_rate"),
    )
    stragglers = _stragglers(
        _Reader(name, "stragglers", data.get("stragglers", {}), _STRAGGLER_KEYS), clients
    )

    target = data.get("target_accuracy")
    if target is None and "preset" in dict(federation):
        target = _preset_target(top, str(dict(federation)["preset"]))
    target = top.number("target_accuracy", target, minimum=0)
    if not 0 < target <= 1:
        top.fail(f"target_accuracy must be in (0, 1], got {target!r}")
    warmup = top.number("warmup_rounds", 1, minimum=0, integer=True)
    if warmup >= rounds:
        top.fail(f"warmup_rounds ({warmup}) must be fewer than federation.rounds ({rounds})")

    strategies = data.get("strategies", list(STRATEGIES))
    if not isinstance(strategies, list) or not strategies:
        top.fail(f"strategies must be a non-empty list, got {strategies!r}")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        top.fail(f"unknown strategy {unknown[0]!r}; known: {', '.join(STRATEGIES)}")
    if len(set(strategies)) != len(strategies):
        top.fail(f"strategies has duplicates: {strategies}")

    description = data.get("description", "")
    if not isinstance(description, str):
        top.fail("description must be a string")
    sim = _sim(_Reader(name, "sim", data.get("sim", {}), _SIM_KEYS))
    return Scenario(
        name=name,
        description=description,
        federation=federation,
        devices=devices,
        stragglers=stragglers,
        target_accuracy=float(target),
        seeds=top.number("seeds", 1, minimum=1, integer=True),
        warmup_rounds=warmup,
        run_timeout=float(top.number("run_timeout", _DEFAULT_RUN_TIMEOUT, minimum=1)),
        secagg=top.string("secagg", "secagg", SECAGG_MODES),
        strategies=tuple(strategies),
        quick=quick,
        sim=sim,
    )


def _preset_target(r: _Reader, preset: str) -> float | None:
    from clipfl.presets import get_preset  # the workload table, not server internals

    try:
        return get_preset(preset).target_accuracy
    except ConfigError as exc:
        r.fail(f"federation.preset: {exc}")
    return None


def available_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def load_scenario(name_or_path: str | Path, *, quick: bool = False) -> Scenario:
    """A shipped scenario by name (``digits-quick``) or any scenario file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml" and not path.exists():
        path = SCENARIO_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise ConfigError(
                f"unknown scenario {str(name_or_path)!r}; shipped: {', '.join(available_scenarios())} "
                "(or give a path to a .toml file)"
            )
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"scenario file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"scenario file {str(path)!r} is not valid TOML: {exc}") from None
    return parse_scenario(data, path.stem, quick=quick)
