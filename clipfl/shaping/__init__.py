"""Bandwidth shaping for emulation: rates, network namespaces, tbf qdiscs.

This is not a transport: the transports (``transports/``) move bytes and, for ``--shape app``, pace
them with a token bucket; this package builds the emulated *network* that real traffic crosses for
``--shape tc``, with Linux traffic control. It sits above the transports and may use them (the tbf
burst is :func:`transports.ratelimit.default_burst_bytes`, shared with the app limiter so that a cap
means the same thing in both); nothing in ``transports/`` imports it.

    rates.py       tc rate strings, a link's caps (LinkSpec), the tbf qdisc of a cap
    commands.py    the ip and tc commands: run them, list namespaces and links, the root check
    ownership.py   owner records and the cross-process lock under /run/clipfl-netbench
    signals.py     interrupts held back during build and teardown; SIGTERM unwinds an open bench
    bench.py       a network bench: one namespace and capped veth pair per client, built and removed
    own_link.py    a client inside a clipfl namespace capping its own link (tbf, ifb for download)

Users: the launcher (``clipfl.launch``, a bench per federation), the client (``--shape tc`` alone),
the benchmarks (rates in scenario files, ``cleanup_stale`` after a killed run).
"""

from clipfl.shaping.bench import (
    BENCH_RANGE,
    Bench,
    ClientLink,
    allocate_subnet,
    cleanup_stale,
    network_bench,
    network_bench_async,
    new_run_id,
)
from clipfl.shaping.commands import (
    PREFIX,
    REQUIRE_MESSAGE,
    current_namespace,
    interface_towards,
    require_root_netns,
)
from clipfl.shaping.own_link import shape_own_interface
from clipfl.shaping.rates import LinkSpec, format_rate, parse_rate, tbf_argv

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
