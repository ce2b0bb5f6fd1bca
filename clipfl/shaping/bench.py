"""A network bench: a network namespace per client, a bridge for the server, tbf caps on both ends.

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
htb's classes and borrowing add nothing here (see :mod:`clipfl.shaping.rates` for burst and queue).

**Naming and cleanup**: every namespace and link starts with ``clipfl-<run>-``; Linux limits interface
names to 15 characters, so run ids are at most 5 characters of ``[a-z0-9]``. A bench records its
owner (:mod:`clipfl.shaping.ownership`) *before* it creates anything, and removes everything in a
``finally`` (:mod:`clipfl.shaping.signals` makes SIGTERM and interrupts reach it).
:func:`cleanup_stale` removes what a crashed run (SIGKILL, power loss) left behind: only names with
the prefix whose owner is gone, so it never touches a live bench of another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from clipfl.errors import ConfigError
from clipfl.shaping.commands import (
    PREFIX,
    namespaces,
    remove_names,
    require_root_netns,
    root_links,
    run,
    used_networks,
)
from clipfl.shaping.ownership import STATE_DIR, owner_alive, owner_path, state_lock, write_owner
from clipfl.shaping.rates import LinkSpec, tbf_argv
from clipfl.shaping.signals import signals_deferred, sigterm_raises_system_exit

__all__ = [
    "BENCH_RANGE",
    "Bench",
    "ClientLink",
    "allocate_subnet",
    "cleanup_stale",
    "network_bench",
    "network_bench_async",
    "new_run_id",
]

log = logging.getLogger("clipfl.shaping")

BENCH_RANGE = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544 benchmarking range, never routed

_IFNAMSIZ = 15  # longest Linux interface name (IFNAMSIZ - 1)
_RUN_ID = re.compile(r"[a-z0-9]{1,5}")


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


# ------------------------------------------------------------------------------------------ planning


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


# ---------------------------------------------------------------------------------- build, teardown


def _leftovers(prefix: str) -> list[str]:
    return sorted(n for n in (*namespaces(), *root_links()) if n.startswith(prefix))


def _teardown(bench: Bench) -> None:
    prefix = _run_prefix(bench.run_id)
    owned_namespaces = [n for n in namespaces() if n.startswith(prefix)]
    links = [n for n in root_links() if n.startswith(prefix)]
    links.sort(key=lambda n: n == bench.bridge)  # ports first, the bridge last
    remove_names(owned_namespaces, links)
    left = _leftovers(prefix)
    if left:
        log.warning("network bench %s: could not remove %s", bench.run_id, ", ".join(left))
    else:
        owner_path(bench.run_id).unlink(missing_ok=True)


def _build(run_id: str, specs: Sequence[LinkSpec]) -> Bench:
    _validate(run_id, specs)
    require_root_netns()
    with state_lock():
        if owner_alive(run_id):
            raise ConfigError(f"network bench run id {run_id!r} is in use by a live process")
        remove_names(*_split_by_kind(_leftovers(_run_prefix(run_id))))  # a crashed run with our id
        write_owner(run_id)  # before anything exists, so cleanup_stale never takes us for a leftover
        bench = _plan(run_id, specs, allocate_subnet(len(specs), used_networks()))
        try:
            _create(bench)
        except BaseException:
            _teardown(bench)
            raise
    return bench


def _create(bench: Bench) -> None:
    plen = ipaddress.IPv4Network(bench.network).prefixlen
    run(["ip", "link", "add", bench.bridge, "type", "bridge", "forward_delay", "0"])
    run(["ip", "addr", "add", f"{bench.server_address}/{plen}", "dev", bench.bridge])
    run(["ip", "link", "set", bench.bridge, "up"])
    for c in bench.clients:
        ns = ["ip", "-n", c.namespace]
        run(["ip", "netns", "add", c.namespace])
        veth = ["type", "veth", "peer", "name", c.client_interface, "netns", c.namespace]
        run(["ip", "link", "add", c.host_interface, *veth])
        run(["ip", "link", "set", c.host_interface, "master", bench.bridge, "up"])
        run([*ns, "link", "set", "lo", "up"])
        run([*ns, "addr", "add", f"{c.client_address}/{plen}", "dev", c.client_interface])
        run([*ns, "link", "set", c.client_interface, "up"])
        if c.upload_bps is not None:
            upload = tbf_argv(c.upload_bps)
            run(["tc", "-n", c.namespace, "qdisc", "add", "dev", c.client_interface, "root", *upload])
        if c.download_bps is not None:
            run(["tc", "qdisc", "add", "dev", c.host_interface, "root", *tbf_argv(c.download_bps)])


def _split_by_kind(names: Iterable[str]) -> tuple[list[str], list[str]]:
    existing = set(namespaces())
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
    with state_lock():
        owned_namespaces = [n for n in namespaces() if n.startswith(prefix)]
        links = [n for n in root_links() if n.startswith(prefix)]
        runs = {_run_of(n) for n in (*owned_namespaces, *links)}
        runs |= {p.stem for p in STATE_DIR.glob("*.owner") if _run_prefix(p.stem).startswith(prefix)}
        dead = {run_id for run_id in runs if not owner_alive(run_id)}
        removed = remove_names(
            [n for n in owned_namespaces if _run_of(n) in dead],
            sorted((n for n in links if _run_of(n) in dead), key=lambda n: n.endswith("-br")),
        )
        for run_id in dead:
            if not _leftovers(_run_prefix(run_id)):
                owner_path(run_id).unlink(missing_ok=True)
    return removed


def _run_of(name: str) -> str:
    return name[len(PREFIX) :].partition("-")[0]


# ----------------------------------------------------------------------------- context managers


@contextlib.contextmanager
def network_bench(
    run_id: str, clients: Sequence[LinkSpec], *, handle_sigterm: bool = True
) -> Iterator[Bench]:
    """Build a bench (one namespace and capped veth pair per client), yield it, always tear it down.

    Needs root (see :func:`clipfl.shaping.require_root_netns`). Teardown runs when the body returns
    or raises, on KeyboardInterrupt, and on SIGTERM (see ``handle_sigterm``); interrupts that arrive
    while the bench is being built or torn down are held until that step is complete. Teardown also
    ends the processes left inside the namespaces. After a SIGKILL, :func:`cleanup_stale` removes the
    remains.
    """
    bench: Bench | None = None
    with sigterm_raises_system_exit(handle_sigterm):
        try:
            with signals_deferred():
                bench = _build(run_id, list(clients))
            yield bench
        finally:
            if bench is not None:
                with signals_deferred():
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
    with sigterm_raises_system_exit(handle_sigterm):
        try:
            with signals_deferred():
                built, cancelled = await _to_thread_to_completion(_build, run_id, list(clients))
                bench = built
            if cancelled:
                raise asyncio.CancelledError
            yield built
        finally:
            if bench is not None:
                with signals_deferred():
                    _, cancelled = await _to_thread_to_completion(_teardown, bench)
                if cancelled:
                    raise asyncio.CancelledError
