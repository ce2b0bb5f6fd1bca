"""The ``ip`` and ``tc`` commands of the network bench: running them, reading namespaces and links.

Every command runs with a timeout, and a failure becomes a one-line ``ConfigError`` that quotes the
command and its stderr; the readers (``check=False``) treat a failure as "nothing there", which is
what cleanup wants. Everything that names a namespace or a link starts with :data:`PREFIX`, so that
nothing here ever touches a name clipfl did not make.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence

from clipfl.errors import ConfigError
from clipfl.shaping.ownership import process_start

__all__ = [
    "PREFIX",
    "REQUIRE_MESSAGE",
    "current_namespace",
    "interface_towards",
    "namespaces",
    "remove_names",
    "require_root_netns",
    "root_links",
    "run",
    "used_networks",
]

PREFIX = "clipfl-"
REQUIRE_MESSAGE = "tc shaping needs root and network namespaces (ip netns); run as root or use --shape app"

_COMMAND_TIMEOUT = 15.0
_TERMINATE_GRACE = 1.0  # seconds between SIGTERM and SIGKILL for processes left in a namespace


def run(argv: Sequence[str], *, check: bool = True) -> str:
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


def namespaces() -> list[str]:
    """The named network namespaces (``ip netns list``)."""
    out = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def root_links() -> list[str]:
    """The interface names of this process's namespace."""
    out = run(["ip", "-j", "link", "show"], check=False)
    return [str(link["ifname"]) for link in json.loads(out or "[]")]


def used_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks this namespace already has addresses or routes in."""
    used = []
    for link in json.loads(run(["ip", "-j", "-4", "addr", "show"]) or "[]"):
        for addr in link.get("addr_info", []):
            used.append(ipaddress.IPv4Interface(f"{addr['local']}/{addr['prefixlen']}").network)
    for route in json.loads(run(["ip", "-j", "-4", "route", "show"]) or "[]"):
        with contextlib.suppress(ValueError):
            if route.get("dst") not in (None, "default"):
                used.append(ipaddress.IPv4Network(route["dst"], strict=False))
    return used


def current_namespace() -> str | None:
    """The name of this process's network namespace, or None for the root or an unnamed one."""
    name = run(["ip", "netns", "identify", str(os.getpid())], check=False).strip()
    return name or None


def interface_towards(address: str) -> str:
    """The interface this namespace uses to reach ``address`` (a client finds its own link with it)."""
    ipaddress.ip_address(address)  # refuse host names: a lookup could leave the bench
    routes = json.loads(run(["ip", "-j", "route", "get", address]) or "[]")
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
        run(["ip", "netns", "add", probe])
    except ConfigError as exc:
        raise ConfigError(REQUIRE_MESSAGE) from exc
    finally:
        run(["ip", "netns", "del", probe], check=False)


def _kill_namespace_processes(namespace: str) -> None:
    """End the processes still inside one of our namespaces (clients of an interrupted run)."""
    pids = [int(p) for p in run(["ip", "netns", "pids", namespace], check=False).split()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [pid for pid in pids if process_start(pid) is not None]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + _TERMINATE_GRACE
        while alive and time.monotonic() < deadline:
            time.sleep(0.02)
            alive = [pid for pid in alive if process_start(pid) is not None]
        if not alive:
            return


def remove_names(namespaces: Iterable[str], links: Iterable[str]) -> list[str]:
    """Delete namespaces (their processes first) and root links; returns what was there to remove."""
    removed = []
    for link in links:
        # Deleting one end of a veth pair deletes both at once, even while a process holds the
        # namespace; deleting the namespace first would leave the pair to the kernel's lazy cleanup.
        run(["ip", "link", "del", link], check=False)
        removed.append(link)
    for ns in namespaces:
        _kill_namespace_processes(ns)
        run(["ip", "netns", "del", ns], check=False)
        removed.append(ns)
    return removed
