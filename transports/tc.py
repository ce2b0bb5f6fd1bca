"""Bandwidth caps with Linux traffic control: a network namespace per client, tbf on both ends.

A *network bench* is the network of one emulated federation (DESIGN.md section 6)::

    root namespace                                        client namespace clipfl-<run>-c<i>
    +----------------------------------------+            +-------------------------------+
    | server process, binds 198.18.N.1       |            | client process (ip netns exec)|
    | bridge clipfl-<run>-br  198.18.N.1/24  |  veth pair |  lo                           |
    |   port clipfl-<run>-<i> ===============|============|= clipfl-c<i>  198.18.N.(i+2)  |
    |   egress tbf = download cap of i       |            |  egress tbf = upload cap of i |
    +----------------------------------------+            +-------------------------------+

Why this shape:

* **The server stays in the root namespace** and is launched like any process: the harness reaches its
  HTTP API on loopback and needs no ``ip netns exec`` for it.
* **A bridge gives the server one address** (``Bench.server_address``) that every client reaches on
  its own link; the server binds exactly that address, so nothing it serves is exposed on the
  machine's real interfaces. No routing, forwarding or NAT is involved.
* **Client namespaces hold only loopback and their veth end, with no default route**: a client can
  reach nothing but the bench's subnet, a block of the benchmarking range 198.18.0.0/15 (RFC 2544)
  that is free in the root namespace when the bench is built (so two benches never overlap).
* **Caps are egress qdiscs**: the client's end shapes what it sends (upload), the bridge port
  shapes what the client receives (download). Egress is where Linux queues, so both are true shapers.

**tbf, not htb**: each link carries one class of traffic, and tbf *is* the token bucket, with
exactly the semantics that :class:`transports.ratelimit.TokenBucket` reproduces for ``--shape app``;
htb's classes and borrowing add nothing here. Burst: :func:`transports.ratelimit.default_burst_bytes`
(shared with the app limiter). Queue: 100 ms of traffic at the rate plus one burst, enough for TCP to
keep the link busy without bloating the round trip.

**Naming and cleanup**: every namespace and link starts with ``clipfl-<run>-``; Linux limits interface
names to 15 characters, so run ids are at most 5 characters of ``[a-z0-9]``. A bench records its
owner (pid and start time) under ``/run/clipfl-netbench`` *before* it creates anything, and removes
everything in a ``finally`` (a SIGTERM is turned into ``SystemExit`` while a bench is open, so the
``finally`` runs). :func:`cleanup_stale` removes what a crashed run (SIGKILL, power loss) left behind:
only names with the prefix whose owner is gone, so it never touches a live bench of another process.

**A client alone** (``python -m clipfl.client --shape tc`` already inside a clipfl namespace):
:func:`shape_own_interface` caps its upload with tbf on its interface, and its download with an ``ifb``
device: ingress traffic is redirected (``u32`` filter, ``mirred`` action) to the ifb, whose egress
tbf paces it. That works on kernels with ifb, cls_u32 and act_mirred (these machines have them, not
netem, matchall or police); unlike the bench's download cap it shapes packets after they crossed the
link, which TCP cannot tell apart (its ACK clock follows the delivery rate), but a burst that
overflows the ifb queue is dropped and retransmitted instead of waiting at the sender. Without
those modules the client cannot cap its download alone: use the bench's caps or ``--shape app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from clipfl.errors import ConfigError
from transports.ratelimit import default_burst_bytes

__all__ = [
    "BENCH_RANGE",
    "PREFIX",
    "REQUIRE_MESSAGE",
    "Bench",
    "ClientLink",
    "LinkSpec",
    "allocate_subnet",
    "cleanup_stale",
    "current_namespace",
    "format_rate",
    "interface_towards",
    "network_bench",
    "network_bench_async",
    "new_run_id",
    "parse_rate",
    "require_root_netns",
    "shape_own_interface",
    "tbf_argv",
]

log = logging.getLogger(__name__)

PREFIX = "clipfl-"
BENCH_RANGE = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544 benchmarking range, never routed
REQUIRE_MESSAGE = "tc shaping needs root and network namespaces (ip netns); run as root or use --shape app"
STATE_DIR = Path("/run/clipfl-netbench")  # tmpfs: emptied at boot, like the namespaces themselves

_IFNAMSIZ = 15  # longest Linux interface name (IFNAMSIZ - 1)
_RUN_ID = re.compile(r"[a-z0-9]{1,5}")
_QUEUE_SECONDS = 0.1  # tbf queue: 100 ms of traffic at the rate, plus one burst
_COMMAND_TIMEOUT = 15.0
_TERMINATE_GRACE = 1.0  # seconds between SIGTERM and SIGKILL for processes left in a namespace
_IFB = PREFIX + "ifb"

# ---------------------------------------------------------------------------------------------- rates

# tc(8), section "RATES": SI prefixes are powers of 1000, IEC prefixes (ki, mi, gi, ti) powers of
# 1024; "bit" counts bits and "bps" counts *bytes* per second (so "mbps" is megabytes per second, not
# megabits); a bare number is bits per second; units are case-insensitive.
_PREFIXES = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20}
_PREFIXES |= {"gi": 2**30, "ti": 2**40}
_UNITS = {p + "bit": m for p, m in _PREFIXES.items()} | {p + "bps": 8 * m for p, m in _PREFIXES.items()}
_UNITS[""] = 1
_RATE = re.compile(r"\s*((?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)\s*([a-z]*)\s*", re.IGNORECASE)
_MAX_RATE_BPS = 2**63  # tc keeps rates as 64-bit byte counts


def parse_rate(text: str) -> int:
    """A tc rate ("2mbit", "10Mbit", "1.5gbit", "125kbps", "4mibit", "8000") as bits per second.

    Follows tc's units (see the table above): ``kbit`` = 1000 bit/s, ``kibit`` = 1024 bit/s,
    ``kbps`` = 1000 *bytes*/s. Percentages (tc's share of the device speed) are refused: a veth has no
    speed. The result is rounded to a whole bit/s and must be at least 8 (one byte per second).
    """
    if not isinstance(text, str):
        raise ConfigError(f"rate must be a string such as '2mbit', got {text!r}")
    match = _RATE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ConfigError(
            f"bad rate {text!r}: expected a number and a tc unit such as 500kbit, 2mbit, 1gbit, 125kbps "
            "(bit = bits/s, bps = bytes/s)"
        )
    bps = round(float(match.group(1)) * _UNITS[unit])
    if not 8 <= bps <= _MAX_RATE_BPS:
        raise ConfigError(f"rate {text!r} is {bps} bit/s; it must lie between 8 bit/s and 2**63 bit/s")
    return bps


def format_rate(bps: int | None) -> str:
    """A rate for people and reports: "4mbit", "1.5gbit", "unlimited" (SI units, as tc prints them)."""
    if bps is None:
        return "unlimited"
    for unit, scale in (("tbit", 10**12), ("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps}bit"


def tbf_argv(rate_bps: int) -> list[str]:
    """The tbf qdisc for a cap, as tc arguments: rate in exact bits, burst and queue limit in bytes."""
    burst = default_burst_bytes(rate_bps)
    limit = burst + math.ceil(rate_bps / 8 * _QUEUE_SECONDS)
    return ["tbf", "rate", f"{rate_bps}bit", "burst", str(burst), "limit", str(limit)]


# ------------------------------------------------------------------------------------------ values


def _check_rate(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 8):
        raise ConfigError(f"{name} must be at least 8 bit/s or None (unlimited), got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkSpec:
    """The caps of one client's link, in bits per second; None means unlimited."""

    upload_bps: int | None = None
    download_bps: int | None = None

    def __post_init__(self) -> None:
        _check_rate("upload_bps", self.upload_bps)
        _check_rate("download_bps", self.download_bps)

    @classmethod
    def parse(cls, upload: str | None = None, download: str | None = None) -> LinkSpec:
        """From command-line rates such as ``--upload-rate 2mbit --download-rate 10mbit``."""
        return cls(
            upload_bps=None if upload is None else parse_rate(upload),
            download_bps=None if download is None else parse_rate(download),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientLink:
    """One client's place in a bench: where it runs, its addresses, its caps."""

    index: int
    namespace: str  # run the client with Bench.exec_argv(index, argv)
    host_interface: str  # root-namespace end (a bridge port); its tbf is the download cap
    client_interface: str  # the end inside the namespace; its tbf is the upload cap
    client_address: str
    server_address: str  # what the client connects to
    upload_bps: int | None
    download_bps: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Bench:
    """A built network bench. The server binds ``server_address``; client i connects to it from
    ``clients[i].namespace``."""

    run_id: str
    bridge: str
    network: str  # the bench's subnet, e.g. "198.18.3.0/24"
    server_address: str
    clients: tuple[ClientLink, ...]

    def exec_argv(self, index: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside client ``index``'s namespace (``ip netns exec``), for subprocess APIs."""
        return ["ip", "netns", "exec", self.clients[index].namespace, *argv]

    def names(self) -> tuple[str, ...]:
        """Every namespace and root-namespace link the bench owns."""
        ns = tuple(c.namespace for c in self.clients)
        return (*ns, *(c.host_interface for c in self.clients), self.bridge)


def new_run_id() -> str:
    """A random run id: 4 characters, leaving 3 digits for client indexes in interface names."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(4))


def _run_prefix(run_id: str) -> str:
    return f"{PREFIX}{run_id}-"


def _plan(run_id: str, specs: Sequence[LinkSpec], network: ipaddress.IPv4Network) -> Bench:
    hosts = network.hosts()
    server = str(next(hosts))
    clients = []
    for i, spec in enumerate(specs):
        clients.append(
            ClientLink(
                index=i,
                namespace=f"{_run_prefix(run_id)}c{i}",
                host_interface=f"{_run_prefix(run_id)}{i}",
                client_interface=f"{PREFIX}c{i}",
                client_address=str(next(hosts)),
                server_address=server,
                upload_bps=spec.upload_bps,
                download_bps=spec.download_bps,
            )
        )
    return Bench(
        run_id=run_id,
        bridge=f"{_run_prefix(run_id)}br",
        network=str(network),
        server_address=server,
        clients=tuple(clients),
    )


def _validate(run_id: str, specs: Sequence[LinkSpec]) -> None:
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ConfigError(f"run id must be 1 to 5 characters of [a-z0-9], got {run_id!r}")
    if not specs:
        raise ConfigError("a network bench needs at least one client")
    longest = f"{_run_prefix(run_id)}{len(specs) - 1}"
    if len(longest) > _IFNAMSIZ:
        raise ConfigError(
            f"{len(specs)} clients do not fit run id {run_id!r} in 15-character interface names; "
            "use a shorter run id"
        )
    for spec in specs:
        if not isinstance(spec, LinkSpec):
            raise ConfigError(f"clients must be LinkSpec values, got {spec!r}")


def allocate_subnet(n_clients: int, used: Iterable[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The first block of 198.18.0.0/15 that holds the server and ``n_clients`` and overlaps nothing
    in ``used``; at least a /24, so that addresses read naturally (server .1, client i at .i+2)."""
    need = n_clients + 3  # network, broadcast, server
    prefix = min(24, 32 - math.ceil(math.log2(need)))
    taken = [u for u in used if u.overlaps(BENCH_RANGE)]
    for candidate in BENCH_RANGE.subnets(new_prefix=prefix):
        if not any(candidate.overlaps(u) for u in taken):
            return candidate
    raise ConfigError(f"no free /{prefix} left in {BENCH_RANGE} for {n_clients} clients; run cleanup_stale()")


# ------------------------------------------------------------------------------------------ commands


def _run(argv: Sequence[str], *, check: bool = True) -> str:
    """Run one ip/tc command; failures are ConfigErrors that quote the command and its stderr."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=_COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        if not check:
            return ""
        raise ConfigError(f"`{' '.join(argv)}` could not run: {exc}") from exc
    if check and done.returncode != 0:
        raise ConfigError(f"`{' '.join(argv)}` failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _namespaces() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _root_links() -> list[str]:
    out = _run(["ip", "-j", "link", "show"], check=False)
    return [str(link["ifname"]) for link in json.loads(out or "[]")]


def _used_networks() -> list[ipaddress.IPv4Network]:
    used = []
    for link in json.loads(_run(["ip", "-j", "-4", "addr", "show"]) or "[]"):
        for addr in link.get("addr_info", []):
            used.append(ipaddress.IPv4Interface(f"{addr['local']}/{addr['prefixlen']}").network)
    for route in json.loads(_run(["ip", "-j", "-4", "route", "show"]) or "[]"):
        with contextlib.suppress(ValueError):
            if route.get("dst") not in (None, "default"):
                used.append(ipaddress.IPv4Network(route["dst"], strict=False))
    return used


def current_namespace() -> str | None:
    """The name of this process's network namespace, or None for the root or an unnamed one."""
    name = _run(["ip", "netns", "identify", str(os.getpid())], check=False).strip()
    return name or None


def interface_towards(address: str) -> str:
    """The interface this namespace uses to reach ``address`` (a client finds its own link with it)."""
    ipaddress.ip_address(address)  # refuse host names: a lookup could leave the bench
    routes = json.loads(_run(["ip", "-j", "route", "get", address]) or "[]")
    if not routes or "dev" not in routes[0]:
        raise ConfigError(f"no route to {address} in this network namespace")
    return str(routes[0]["dev"])


def require_root_netns() -> None:
    """Raise ConfigError (REQUIRE_MESSAGE) unless this process can build a network bench.

    Checks root, the ip and tc tools, and really adds and deletes a probe namespace, since a container
    can be root and still be refused namespaces.
    """
    if os.geteuid() != 0:
        raise ConfigError(REQUIRE_MESSAGE) from PermissionError("not running as root")
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        raise ConfigError(REQUIRE_MESSAGE) from FileNotFoundError(f"missing tools: {', '.join(missing)}")
    probe = f"{PREFIX}probe{os.getpid()}"
    try:
        _run(["ip", "netns", "add", probe])
    except ConfigError as exc:
        raise ConfigError(REQUIRE_MESSAGE) from exc
    finally:
        _run(["ip", "netns", "del", probe], check=False)


# ------------------------------------------------------------------------------ ownership and locking


def _process_start(pid: int) -> str | None:
    """The start time of a live process (to tell it from a later one with the same pid), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else fields[19]


def _owner_path(run_id: str) -> Path:
    return STATE_DIR / f"{run_id}.owner"


def _write_owner(run_id: str) -> None:
    pid = os.getpid()
    _owner_path(run_id).write_text(f"{pid} {_process_start(pid)}\n")


def _owner_alive(run_id: str) -> bool:
    try:
        pid_text, start = _owner_path(run_id).read_text().split()
    except (OSError, ValueError):
        return False
    return _process_start(int(pid_text)) == start


@contextlib.contextmanager
def _state_lock() -> Iterator[None]:
    """Serialises building and cleaning benches across processes (subnet choice, owner records)."""
    STATE_DIR.mkdir(mode=0o700, exist_ok=True)
    with (STATE_DIR / "lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------- build, teardown


def _kill_namespace_processes(namespace: str) -> None:
    """End the processes still inside one of our namespaces (clients of an interrupted run)."""
    pids = [int(p) for p in _run(["ip", "netns", "pids", namespace], check=False).split()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [pid for pid in pids if _process_start(pid) is not None]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + _TERMINATE_GRACE
        while alive and time.monotonic() < deadline:
            time.sleep(0.02)
            alive = [pid for pid in alive if _process_start(pid) is not None]
        if not alive:
            return


def _remove_names(namespaces: Iterable[str], links: Iterable[str]) -> list[str]:
    """Delete namespaces (their processes first) and root links; returns what was there to remove."""
    removed = []
    for link in links:
        # Deleting one end of a veth pair deletes both at once, even while a process holds the
        # namespace; deleting the namespace first would leave the pair to the kernel's lazy cleanup.
        _run(["ip", "link", "del", link], check=False)
        removed.append(link)
    for ns in namespaces:
        _kill_namespace_processes(ns)
        _run(["ip", "netns", "del", ns], check=False)
        removed.append(ns)
    return removed


def _leftovers(prefix: str) -> list[str]:
    return sorted(n for n in (*_namespaces(), *_root_links()) if n.startswith(prefix))


def _teardown(bench: Bench) -> None:
    prefix = _run_prefix(bench.run_id)
    namespaces = [n for n in _namespaces() if n.startswith(prefix)]
    links = [n for n in _root_links() if n.startswith(prefix)]
    links.sort(key=lambda n: n == bench.bridge)  # ports first, the bridge last
    _remove_names(namespaces, links)
    left = _leftovers(prefix)
    if left:
        log.warning("network bench %s: could not remove %s", bench.run_id, ", ".join(left))
    else:
        _owner_path(bench.run_id).unlink(missing_ok=True)


def _build(run_id: str, specs: Sequence[LinkSpec]) -> Bench:
    _validate(run_id, specs)
    require_root_netns()
    with _state_lock():
        if _owner_alive(run_id):
            raise ConfigError(f"network bench run id {run_id!r} is in use by a live process")
        _remove_names(*_split_by_kind(_leftovers(_run_prefix(run_id))))  # a crashed run with our id
        _write_owner(run_id)  # before anything exists, so cleanup_stale never takes us for a leftover
        bench = _plan(run_id, specs, allocate_subnet(len(specs), _used_networks()))
        try:
            _create(bench)
        except BaseException:
            _teardown(bench)
            raise
    return bench


def _create(bench: Bench) -> None:
    plen = ipaddress.IPv4Network(bench.network).prefixlen
    _run(["ip", "link", "add", bench.bridge, "type", "bridge", "forward_delay", "0"])
    _run(["ip", "addr", "add", f"{bench.server_address}/{plen}", "dev", bench.bridge])
    _run(["ip", "link", "set", bench.bridge, "up"])
    for c in bench.clients:
        ns = ["ip", "-n", c.namespace]
        _run(["ip", "netns", "add", c.namespace])
        veth = ["type", "veth", "peer", "name", c.client_interface, "netns", c.namespace]
        _run(["ip", "link", "add", c.host_interface, *veth])
        _run(["ip", "link", "set", c.host_interface, "master", bench.bridge, "up"])
        _run([*ns, "link", "set", "lo", "up"])
        _run([*ns, "addr", "add", f"{c.client_address}/{plen}", "dev", c.client_interface])
        _run([*ns, "link", "set", c.client_interface, "up"])
        if c.upload_bps is not None:
            upload = tbf_argv(c.upload_bps)
            _run(["tc", "-n", c.namespace, "qdisc", "add", "dev", c.client_interface, "root", *upload])
        if c.download_bps is not None:
            _run(["tc", "qdisc", "add", "dev", c.host_interface, "root", *tbf_argv(c.download_bps)])


def _split_by_kind(names: Iterable[str]) -> tuple[list[str], list[str]]:
    existing = set(_namespaces())
    names = list(names)
    return [n for n in names if n in existing], [n for n in names if n not in existing]


def cleanup_stale(prefix: str = PREFIX) -> list[str]:
    """Remove the namespaces and root links of crashed runs; returns the names removed.

    Only names starting with ``prefix`` (which must start with ``clipfl-``) are considered, and of
    those only the runs whose owner process is gone: a bench that is alive, in this process or
    another, is left alone. Processes still inside a removed namespace are terminated.
    """
    if not prefix.startswith(PREFIX):
        raise ConfigError(f"cleanup prefix must start with {PREFIX!r}, got {prefix!r}")
    with _state_lock():
        namespaces = [n for n in _namespaces() if n.startswith(prefix)]
        links = [n for n in _root_links() if n.startswith(prefix)]
        runs = {_run_of(n) for n in (*namespaces, *links)}
        runs |= {p.stem for p in STATE_DIR.glob("*.owner") if _run_prefix(p.stem).startswith(prefix)}
        dead = {run for run in runs if not _owner_alive(run)}
        removed = _remove_names(
            [n for n in namespaces if _run_of(n) in dead],
            sorted((n for n in links if _run_of(n) in dead), key=lambda n: n.endswith("-br")),
        )
        for run in dead:
            if not _leftovers(_run_prefix(run)):
                _owner_path(run).unlink(missing_ok=True)
    return removed


def _run_of(name: str) -> str:
    return name[len(PREFIX) :].partition("-")[0]


# ----------------------------------------------------------------------------- context managers


@dataclass(slots=True)
class _SignalState:
    """Who changed this process's SIGINT and SIGTERM handlers, so that nested or concurrent benches
    (several tasks on one loop) install them once and restore them once."""

    term_users: int = 0  # open benches that turned SIGTERM into SystemExit
    term_fired: bool = False  # SystemExit raised once; later SIGTERMs must not abort the teardown
    defer_depth: int = 0  # builds and teardowns in progress with signals deferred
    saved: dict[int, Any] = field(default_factory=dict)  # the handlers replaced while deferring
    pending: list[int] = field(default_factory=list)  # signals that arrived while deferred


_signals = _SignalState()
_DEFERRED = (signal.SIGINT, signal.SIGTERM)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _handler(sig: int) -> Any:
    return _signals.saved[sig] if _signals.defer_depth else signal.getsignal(sig)


def _set_handler(sig: int, handler: Any) -> None:
    if _signals.defer_depth:
        _signals.saved[sig] = handler
    else:
        signal.signal(sig, handler)


def _raise_system_exit(signum: int, frame: object) -> None:
    if not _signals.term_fired:
        _signals.term_fired = True
        raise SystemExit(128 + signum)


@contextlib.contextmanager
def _sigterm_raises_system_exit(enabled: bool) -> Iterator[None]:
    """While a bench is open, make SIGTERM unwind the stack (SystemExit) so that teardown runs.

    Only from the main thread and while SIGTERM has its default action: a program that handles
    SIGTERM itself (an asyncio harness with ``loop.add_signal_handler``) keeps its handler.
    """
    if not enabled or not _in_main_thread():
        yield
        return
    if _signals.term_users == 0:
        if _handler(signal.SIGTERM) is not signal.SIG_DFL:
            yield
            return
        _set_handler(signal.SIGTERM, _raise_system_exit)
        _signals.term_fired = False
    _signals.term_users += 1
    try:
        yield
    finally:
        _signals.term_users -= 1
        if _signals.term_users == 0:
            _set_handler(signal.SIGTERM, signal.SIG_DFL)


def _record_signal(signum: int, frame: object) -> None:
    _signals.pending.append(signum)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while a bench is built or torn down, and deliver them after.

    An interrupt in the middle of ``ip`` commands would otherwise leave a bench half built with no
    one to tear it down, or a teardown half done. The signals are recorded by Python-level handlers
    (which also works when other threads receive them) and re-raised, in order, once the last
    deferral ends. Only possible from the main thread; elsewhere signals are not delivered anyway.
    """
    if not _in_main_thread():
        yield
        return
    if _signals.defer_depth == 0:
        for sig in _DEFERRED:
            handler = signal.getsignal(sig)
            if handler is not None:  # None: installed outside Python, leave it
                _signals.saved[sig] = signal.signal(sig, _record_signal)
    _signals.defer_depth += 1
    try:
        yield
    finally:
        _signals.defer_depth -= 1
        if _signals.defer_depth == 0:
            for saved_sig, saved_handler in _signals.saved.items():
                signal.signal(saved_sig, saved_handler)
            _signals.saved.clear()
            pending, _signals.pending[:] = list(_signals.pending), []
            for signum in pending:
                signal.raise_signal(signum)


@contextlib.contextmanager
def network_bench(
    run_id: str, clients: Sequence[LinkSpec], *, handle_sigterm: bool = True
) -> Iterator[Bench]:
    """Build a bench (one namespace and capped veth pair per client), yield it, always tear it down.

    Needs root (see :func:`require_root_netns`). Teardown runs when the body returns or raises,
    on KeyboardInterrupt, and on SIGTERM (see ``handle_sigterm``); interrupts that arrive while the
    bench is being built or torn down are held until that step is complete. Teardown also ends the
    processes left inside the namespaces. After a SIGKILL, :func:`cleanup_stale` removes the remains.
    """
    bench: Bench | None = None
    with _sigterm_raises_system_exit(handle_sigterm):
        try:
            with _signals_deferred():
                bench = _build(run_id, list(clients))
            yield bench
        finally:
            if bench is not None:
                with _signals_deferred():
                    _teardown(bench)


_T = TypeVar("_T")


async def _to_thread_to_completion(fn: Callable[..., _T], *args: Any) -> tuple[_T, bool]:
    """Run ``fn`` in a worker thread and wait for it to finish even if we are cancelled meanwhile.

    Returns the result and whether a cancellation arrived, which the caller re-raises once it has
    undone what it must: a half-built bench must never be left behind by an interrupted harness.
    """
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    cancelled = False
    while True:
        try:
            return await asyncio.shield(future), cancelled
        except asyncio.CancelledError:
            if future.done():
                raise
            cancelled = True


@contextlib.asynccontextmanager
async def network_bench_async(
    run_id: str, clients: Sequence[LinkSpec], *, handle_sigterm: bool = True
) -> AsyncIterator[Bench]:
    """:func:`network_bench` for asyncio code: the ip/tc commands run in a worker thread, so the event
    loop keeps serving while a bench of many clients is built or torn down, and a cancellation waits
    for the build or the teardown to finish before it propagates."""
    bench: Bench | None = None
    with _sigterm_raises_system_exit(handle_sigterm):
        try:
            with _signals_deferred():
                built, cancelled = await _to_thread_to_completion(_build, run_id, list(clients))
                bench = built
            if cancelled:
                raise asyncio.CancelledError
            yield built
        finally:
            if bench is not None:
                with _signals_deferred():
                    _, cancelled = await _to_thread_to_completion(_teardown, bench)
                if cancelled:
                    raise asyncio.CancelledError


# ---------------------------------------------------------------------------------- own interface


def shape_own_interface(iface: str, upload_bps: int | None, download_bps: int | None = None) -> None:
    """Cap this process's own link from inside a clipfl namespace (``clipfl.client --shape tc``).

    Upload: tbf on ``iface``'s egress. Download: ingress redirected to an ifb device whose egress
    tbf paces it (see the module docstring for what that can and cannot emulate). None removes the
    cap of that direction. Refused outside a namespace named ``clipfl-...``, so that it can never
    shape the machine's real interfaces.
    """
    _check_rate("upload_bps", upload_bps)
    _check_rate("download_bps", download_bps)
    if os.geteuid() != 0 or shutil.which("tc") is None:
        raise ConfigError(REQUIRE_MESSAGE)
    namespace = current_namespace()
    if namespace is None or not namespace.startswith(PREFIX):
        raise ConfigError(
            f"--shape tc must run inside a clipfl network namespace (ip netns exec {PREFIX}...), not in "
            f"{namespace or 'the root namespace'}; use --shape app"
        )
    if iface == "lo" or iface not in {
        str(link["ifname"]) for link in json.loads(_run(["ip", "-j", "link", "show"]) or "[]")
    }:
        raise ConfigError(f"no interface {iface!r} to shape in namespace {namespace}")
    _run(["tc", "qdisc", "del", "dev", iface, "root"], check=False)
    if upload_bps is not None:
        _run(["tc", "qdisc", "add", "dev", iface, "root", *tbf_argv(upload_bps)])
    _run(["tc", "qdisc", "del", "dev", iface, "ingress"], check=False)
    _run(["ip", "link", "del", _IFB], check=False)
    if download_bps is None:
        return
    try:
        _run(["ip", "link", "add", _IFB, "type", "ifb"])
        _run(["ip", "link", "set", _IFB, "up"])
        _run(["tc", "qdisc", "add", "dev", _IFB, "root", *tbf_argv(download_bps)])
        _run(["tc", "qdisc", "add", "dev", iface, "handle", "ffff:", "ingress"])
        redirect = ["u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", _IFB]
        _run(["tc", "filter", "add", "dev", iface, "parent", "ffff:", "protocol", "all", *redirect])
    except ConfigError as exc:
        _run(["tc", "qdisc", "del", "dev", iface, "ingress"], check=False)
        _run(["ip", "link", "del", _IFB], check=False)
        raise ConfigError(
            "this kernel cannot cap a client's download from inside its namespace (needs ifb, cls_u32 "
            "and act_mirred); cap it at the bench's end or use --shape app"
        ) from exc
