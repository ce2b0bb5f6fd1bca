"""Bandwidth caps with tc: rate parsing and planning everywhere; namespaces, caps, transfers and
teardown where this process is root and may create network namespaces (skipped otherwise, with the
reason). Traffic stays on loopback and on the bench's 198.18.0.0/15 subnet; every subprocess has a
timeout; every test uses its own random run id.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipfl.errors import ConfigError
from clipfl.shaping import (
    BENCH_RANGE,
    REQUIRE_MESSAGE,
    Bench,
    ClientLink,
    LinkSpec,
    allocate_subnet,
    cleanup_stale,
    commands,
    format_rate,
    network_bench,
    network_bench_async,
    new_run_id,
    ownership,
    parse_rate,
    require_root_netns,
    shape_own_interface,
    signals,
    tbf_argv,
)
from clipfl.shaping import bench as bench_mod
from transports.ratelimit import default_burst_bytes

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 60  # seconds, for every subprocess and socket of these tests
MB = 1_000_000
CAP = 4_000_000  # 4 mbit/s: 1 MB takes about 2 s

# ------------------------------------------------------------------------------------------ rates


@pytest.mark.parametrize(
    ("text", "bps"),
    [
        ("2mbit", 2_000_000),
        ("10Mbit", 10_000_000),
        ("1.5gbit", 1_500_000_000),
        ("500kbit", 500_000),
        ("8000", 8000),
        ("8000bit", 8000),
        ("125kbps", 1_000_000),  # bps is bytes per second in tc
        ("1mbps", 8_000_000),
        ("4mibit", 4 * 2**20),
        ("1kibps", 8 * 1024),
        ("2e6bit", 2_000_000),
        (" 3 MBIT ", 3_000_000),
    ],
)
def test_parse_rate_follows_tc_units(text: str, bps: int) -> None:
    assert parse_rate(text) == bps


@pytest.mark.parametrize(
    "text",
    ["", "fast", "2 megabits", "10%", "-1mbit", "0bit", "1bit", "nan", "infmbit", "2mbitx", "1e30tbit"],
)
def test_parse_rate_refuses_garbage_with_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="rate"):
        parse_rate(text)


def test_parse_rate_refuses_non_strings() -> None:
    with pytest.raises(ConfigError):
        parse_rate(2_000_000)  # type: ignore[arg-type]


@given(
    number=st.integers(min_value=1, max_value=10**6),
    unit=st.sampled_from(["bit", "kbit", "mbit", "gbit", "bps", "kbps", "mbps", "kibit", "mibit"]),
)
def test_parse_rate_multiplies_exactly(number: int, unit: str) -> None:
    scale = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "bps": 8, "kbps": 8000}
    scale |= {"mbps": 8 * 10**6, "kibit": 1024, "mibit": 2**20}
    expected = number * scale[unit]
    if expected >= 8:
        assert parse_rate(f"{number}{unit}") == parse_rate(f"{number}{unit.upper()}") == expected


@given(st.integers(min_value=8, max_value=10**13))
def test_format_rate_reads_back_to_about_the_same_rate(bps: int) -> None:
    assert parse_rate(format_rate(bps)) == pytest.approx(bps, rel=1e-5)


def test_format_rate_names_unlimited_and_round_numbers() -> None:
    assert [format_rate(r) for r in (None, 4_000_000, 1_500_000_000, 500)] == [
        "unlimited",
        "4mbit",
        "1.5gbit",
        "500bit",
    ]


def test_tbf_argv_has_the_exact_rate_the_shared_burst_and_100ms_of_queue() -> None:
    burst = default_burst_bytes(CAP)
    assert tbf_argv(CAP) == ["tbf", "rate", "4000000bit", "burst", str(burst), "limit", str(burst + 50_000)]


# ------------------------------------------------------------------------------------ planning


def test_allocate_subnet_takes_the_first_free_block_of_the_benchmark_range() -> None:
    net = ipaddress.IPv4Network
    assert allocate_subnet(20, []) == net("198.18.0.0/24")
    assert allocate_subnet(20, [net("198.18.0.7/32"), net("10.0.0.0/8")]) == net("198.18.1.0/24")
    assert allocate_subnet(20, [net("198.18.0.0/16")]) == net("198.19.0.0/24")
    assert allocate_subnet(300, []) == net("198.18.0.0/23")
    assert allocate_subnet(253, []).prefixlen == 24
    with pytest.raises(ConfigError, match="no free"):
        allocate_subnet(5, [BENCH_RANGE])


@given(
    n_clients=st.integers(min_value=1, max_value=1000),
    used=st.lists(st.integers(min_value=0, max_value=2**17 - 1), max_size=20),
)
def test_allocated_subnets_fit_the_clients_and_avoid_every_used_address(
    n_clients: int, used: list[int]
) -> None:
    taken = [ipaddress.IPv4Network(f"{BENCH_RANGE.network_address + offset}/32") for offset in used]
    subnet = allocate_subnet(n_clients, taken)
    assert subnet.subnet_of(BENCH_RANGE)
    assert subnet.num_addresses - 2 >= n_clients + 1
    assert not any(subnet.overlaps(t) for t in taken)


@pytest.mark.parametrize(
    ("run_id", "n_clients", "match"),
    [
        ("ABC", 1, "run id"),
        ("abcdef", 1, "run id"),
        ("a-b", 1, "run id"),
        ("abc", 0, "at least one"),
        ("abcde", 101, "15-character"),
    ],
)
def test_bad_benches_are_refused_before_anything_is_built(run_id: str, n_clients: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match), network_bench(run_id, [LinkSpec()] * n_clients):
        pass


def test_link_specs_validate_and_parse_command_line_rates() -> None:
    assert LinkSpec.parse("2mbit", None) == LinkSpec(upload_bps=2_000_000)
    assert LinkSpec.parse(download="10mbit").download_bps == 10_000_000
    with pytest.raises(ConfigError):
        LinkSpec(upload_bps=0)
    with pytest.raises(ConfigError):
        LinkSpec(download_bps=2.5)  # type: ignore[arg-type]


def test_exec_argv_runs_inside_the_clients_namespace() -> None:
    link = ClientLink(
        index=0,
        namespace="clipfl-ab12-c0",
        host_interface="clipfl-ab12-0",
        client_interface="clipfl-c0",
        client_address="198.18.0.2",
        server_address="198.18.0.1",
        upload_bps=None,
        download_bps=None,
    )
    bench = Bench(
        run_id="ab12",
        bridge="clipfl-ab12-br",
        network="198.18.0.0/24",
        server_address="198.18.0.1",
        clients=(link,),
    )
    assert bench.exec_argv(0, ["python", "-V"]) == ["ip", "netns", "exec", "clipfl-ab12-c0", "python", "-V"]
    assert bench.names() == ("clipfl-ab12-c0", "clipfl-ab12-0", "clipfl-ab12-br")


def test_new_run_ids_fit_a_thousand_clients() -> None:
    run_id = new_run_id()
    assert len(f"clipfl-{run_id}-999") <= 15


def test_cleanup_refuses_a_prefix_that_is_not_ours() -> None:
    with pytest.raises(ConfigError, match="clipfl-"):
        cleanup_stale("eth")


def test_shaping_ones_own_interface_is_refused_outside_a_clipfl_namespace() -> None:
    """Never shape the machine's real interfaces: here (the root namespace) it must refuse."""
    with pytest.raises(ConfigError, match="shape"):
        shape_own_interface("eth0", CAP, CAP)


# ----------------------------------------------------------------------------- namespaces (root)


@pytest.fixture
def netns() -> None:
    try:
        require_root_netns()
    except ConfigError as exc:
        pytest.skip(f"{exc} [{exc.__cause__}]")


def leftovers(run_id: str) -> list[str]:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=TIMEOUT).stdout
    links = subprocess.run(
        ["ip", "-j", "link", "show"], capture_output=True, text=True, timeout=TIMEOUT
    ).stdout
    found = [line.split()[0] for line in names.splitlines() if line.strip()]
    found += [link["ifname"] for link in json.loads(links)]
    return [n for n in found if n.startswith(f"clipfl-{run_id}-")]


def qdiscs(namespace: str | None, dev: str) -> str:
    argv = ["tc", *(["-n", namespace] if namespace else []), "-s", "qdisc", "show", "dev", dev]
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=True).stdout


def sent_bytes(namespace: str | None, dev: str) -> int:
    """Bytes that went through the device's tbf qdisc, from tc's statistics."""
    stats = qdiscs(namespace, dev)
    assert "qdisc tbf" in stats, stats
    return int(stats.split("Sent ", 1)[1].split()[0])


@pytest.mark.netns
def test_a_bench_builds_namespaces_links_addresses_and_caps(netns: None) -> None:
    run_id = new_run_id()
    specs = [LinkSpec(upload_bps=CAP), LinkSpec(download_bps=2 * CAP), LinkSpec()]
    with network_bench(run_id, specs) as bench:
        assert set(leftovers(run_id)) == set(bench.names())
        net = ipaddress.IPv4Network(bench.network)
        assert net.subnet_of(BENCH_RANGE)
        assert bench.server_address == str(net.network_address + 1)
        assert [c.client_address for c in bench.clients] == [str(net.network_address + i) for i in (2, 3, 4)]
        assert "rate 4Mbit" in qdiscs(bench.clients[0].namespace, bench.clients[0].client_interface)
        assert "tbf" not in qdiscs(None, bench.clients[0].host_interface)
        assert "rate 8Mbit" in qdiscs(None, bench.clients[1].host_interface)
        assert "tbf" not in qdiscs(bench.clients[1].namespace, bench.clients[1].client_interface)
        assert "tbf" not in qdiscs(None, bench.clients[2].host_interface)
        # Inside: loopback and the bench's link only, no default route: nothing else is reachable.
        routes = subprocess.run(
            bench.exec_argv(2, ["ip", "-j", "route", "show"]),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=True,
        ).stdout
        assert [r["dst"] for r in json.loads(routes)] == [bench.network]
    assert leftovers(run_id) == []
    assert not (ownership.STATE_DIR / f"{run_id}.owner").exists()


# A client that runs inside a namespace: upload sends N bytes and waits for the server's one-byte
# receipt; download reads N bytes. It prints its own elapsed seconds (interpreter start excluded).
CLIENT = textwrap.dedent(
    """
    import socket, sys, time
    mode, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    shape = sys.argv[5:]
    if shape:
        from clipfl.shaping import interface_towards, shape_own_interface
        shape_own_interface(interface_towards(host), int(shape[0]) or None, int(shape[1]) or None)
    s = socket.create_connection((host, port), timeout=60)
    t0 = time.monotonic()
    if mode == "up":
        s.sendall(bytes(n))
        assert s.recv(1) == b"k"
    else:
        got = 0
        while got < n:
            chunk = s.recv(65536)
            assert chunk
            got += len(chunk)
    print(time.monotonic() - t0)
    """
)


class Peer:
    """The server side of one transfer, in this (root) namespace, bound to the bench's address."""

    def __init__(self, address: str, mode: str, nbytes: int) -> None:
        self.listener = socket.create_server((address, 0))
        self.listener.settimeout(TIMEOUT)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, args=(mode, nbytes), daemon=True)
        self.thread.start()

    def _serve(self, mode: str, nbytes: int) -> None:
        conn, _ = self.listener.accept()
        with conn, self.listener:
            conn.settimeout(TIMEOUT)
            if mode == "up":
                got = 0
                while got < nbytes:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    got += len(chunk)
                conn.sendall(b"k")
            else:
                conn.sendall(bytes(nbytes))
                conn.shutdown(socket.SHUT_WR)
                conn.recv(1)  # wait for the client to close


def transfer(bench: Bench, index: int, mode: str, nbytes: int, shape: tuple[int, int] | None = None) -> float:
    peer = Peer(bench.server_address, mode, nbytes)
    argv = [sys.executable, "-c", CLIENT, mode, bench.server_address, str(peer.port), str(nbytes)]
    argv += [str(x) for x in shape] if shape else []
    done = subprocess.run(
        bench.exec_argv(index, argv), capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    peer.thread.join(TIMEOUT)
    return float(done.stdout)


def expected_seconds(nbytes: int, rate_bps: int) -> float:
    return (nbytes - default_burst_bytes(rate_bps)) * 8 / rate_bps


@pytest.mark.netns
@pytest.mark.slow
def test_transfers_through_the_caps_are_slowed_to_about_the_rate(netns: None) -> None:
    """1 MB through a 4 mbit/s cap needs about 2 s; it must take at least half of that (a wide band:
    this checks that the cap acts, it is no benchmark), in each direction, and the tbf counted it."""
    run_id = new_run_id()
    with network_bench(run_id, [LinkSpec(upload_bps=CAP), LinkSpec(download_bps=CAP), LinkSpec()]) as bench:
        results: dict[str, float] = {}
        jobs = {"up": (0, "up"), "down": (1, "down"), "free": (2, "up")}
        threads = [
            threading.Thread(target=lambda k=k, i=i, m=m: results.__setitem__(k, transfer(bench, i, m, MB)))
            for k, (i, m) in jobs.items()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        assert results.keys() == jobs.keys()
        assert results["up"] >= 0.5 * expected_seconds(MB, CAP)
        assert results["down"] >= 0.5 * expected_seconds(MB, CAP)
        assert results["free"] < results["up"]  # the same transfer, uncapped, is faster
        assert sent_bytes(bench.clients[0].namespace, bench.clients[0].client_interface) >= MB
        assert sent_bytes(None, bench.clients[1].host_interface) >= MB
    assert leftovers(run_id) == []


@pytest.mark.netns
@pytest.mark.slow
def test_a_client_can_cap_its_own_link_from_inside_its_namespace(netns: None) -> None:
    """``--shape tc``: tbf on the own interface for upload, ifb redirect for download."""
    run_id = new_run_id()
    with network_bench(run_id, [LinkSpec()]) as bench:
        seconds = transfer(bench, 0, "down", MB, shape=(CAP, CAP))
        assert seconds >= 0.5 * expected_seconds(MB, CAP)
        link = bench.clients[0]
        assert "rate 4Mbit" in qdiscs(link.namespace, link.client_interface)
        assert sent_bytes(link.namespace, "clipfl-ifb") >= MB
    assert leftovers(run_id) == []


@pytest.mark.netns
def test_teardown_happens_when_the_body_raises(netns: None) -> None:
    run_id = new_run_id()
    with pytest.raises(RuntimeError, match="boom"), network_bench(run_id, [LinkSpec(upload_bps=CAP)] * 2):
        assert len(leftovers(run_id)) == 5
        raise RuntimeError("boom")
    assert leftovers(run_id) == []


@pytest.mark.netns
def test_a_run_id_in_use_is_refused_and_left_alone(netns: None) -> None:
    run_id = new_run_id()
    with network_bench(run_id, [LinkSpec()]) as bench:
        with pytest.raises(ConfigError, match="in use"), network_bench(run_id, [LinkSpec()]):
            pass
        assert cleanup_stale(f"clipfl-{run_id}-") == []  # its owner (this process) is alive
        assert set(leftovers(run_id)) == set(bench.names())
    assert leftovers(run_id) == []


@pytest.mark.netns
def test_two_open_benches_get_disjoint_subnets(netns: None) -> None:
    with (
        network_bench(new_run_id(), [LinkSpec()]) as first,
        network_bench(new_run_id(), [LinkSpec()]) as second,
    ):
        assert not ipaddress.IPv4Network(first.network).overlaps(ipaddress.IPv4Network(second.network))


@pytest.mark.netns
def test_cleanup_stale_removes_a_planted_leftover(netns: None) -> None:
    run_id = new_run_id()
    ns, link = f"clipfl-{run_id}-c0", f"clipfl-{run_id}-0"
    for argv in (
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", link, "type", "veth", "peer", "name", "clipfl-c0", "netns", ns],
    ):
        subprocess.run(argv, check=True, timeout=TIMEOUT)
    assert sorted(leftovers(run_id)) == [link, ns]
    assert sorted(cleanup_stale(f"clipfl-{run_id}-")) == [link, ns]
    assert leftovers(run_id) == []


@pytest.mark.netns
async def test_the_async_bench_tears_down_on_exit_and_on_cancellation(netns: None) -> None:
    import asyncio

    run_id = new_run_id()
    async with network_bench_async(run_id, [LinkSpec(download_bps=CAP)]) as bench:
        assert set(leftovers(run_id)) == set(bench.names())
    assert leftovers(run_id) == []

    entered = asyncio.Event()

    async def hold() -> None:
        async with network_bench_async(run_id, [LinkSpec()] * 2):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold())
    await asyncio.wait_for(entered.wait(), TIMEOUT)
    assert len(leftovers(run_id)) == 5
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leftovers(run_id) == []


def test_interrupts_during_a_build_or_teardown_step_are_held_until_the_step_is_done() -> None:
    steps = []
    with pytest.raises(KeyboardInterrupt), signals.signals_deferred():
        signal.raise_signal(signal.SIGINT)
        steps.append("finished the step")
    assert steps == ["finished the step"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_becomes_system_exit_once_while_a_bench_is_open() -> None:
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("this test runner handles SIGTERM itself")
    with signals.sigterm_raises_system_exit(True):
        with pytest.raises(SystemExit) as exit_info:
            signal.raise_signal(signal.SIGTERM)
        assert exit_info.value.code == 128 + signal.SIGTERM
        signal.raise_signal(signal.SIGTERM)  # a second one must not abort the teardown
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.netns
def test_an_interrupt_in_the_middle_of_the_build_still_tears_everything_down(
    netns: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C between two ip commands: the build completes, then the interrupt unwinds through the
    teardown instead of leaving half a bench behind."""
    real_tbf_argv = bench_mod.tbf_argv

    def interrupted(rate_bps: int) -> list[str]:
        signal.raise_signal(signal.SIGINT)
        return real_tbf_argv(rate_bps)

    monkeypatch.setattr(bench_mod, "tbf_argv", interrupted)
    run_id = new_run_id()
    entered = False
    with pytest.raises(KeyboardInterrupt), network_bench(run_id, [LinkSpec(upload_bps=CAP)] * 3):
        entered = True
    assert not entered
    assert leftovers(run_id) == []


HOLDER = textwrap.dedent(
    """
    import subprocess, sys, time, asyncio
    from clipfl.shaping import LinkSpec, network_bench, network_bench_async
    run_id, kind = sys.argv[1], sys.argv[2]

    def start(bench):
        sleeper = subprocess.Popen(bench.exec_argv(0, ["sleep", "60"]))
        print(sleeper.pid, flush=True)

    if kind == "sync":
        with network_bench(run_id, [LinkSpec(upload_bps=4_000_000)]) as bench:
            start(bench)
            time.sleep(60)
    else:
        async def main():
            async with network_bench_async(run_id, [LinkSpec(upload_bps=4_000_000)]) as bench:
                start(bench)
                await asyncio.sleep(60)
        asyncio.run(main())
    """
)


@pytest.mark.netns
@pytest.mark.parametrize(
    ("kind", "sig"), [("sync", signal.SIGTERM), ("sync", signal.SIGINT), ("async", signal.SIGTERM)]
)
def test_an_interrupted_holder_still_tears_down_and_ends_its_namespaces_processes(
    netns: None, kind: str, sig: signal.Signals
) -> None:
    run_id = new_run_id()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, run_id, kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None
        sleeper = int(holder.stdout.readline())
        assert leftovers(run_id)
        holder.send_signal(sig)
        holder.wait(TIMEOUT)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(TIMEOUT)
    assert holder.returncode != 0
    assert leftovers(run_id) == []
    assert not (ownership.STATE_DIR / f"{run_id}.owner").exists()
    assert _gone(sleeper)


def _gone(pid: int) -> bool:
    """True once a process no longer runs (reaped, or a zombie waiting for its parent)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(autouse=True)
def _no_stray_probes() -> Iterator[None]:
    yield
    assert not any(n.startswith(f"clipfl-probe{os.getpid()}") for n in commands.namespaces())


def test_without_root_the_bench_and_own_shaping_are_refused_with_the_one_line_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(commands.os, "geteuid", lambda: 1000)
    for attempt in (
        require_root_netns,
        lambda: network_bench(new_run_id(), [LinkSpec()]).__enter__(),
        lambda: shape_own_interface("clipfl-c0", CAP),
    ):
        with pytest.raises(ConfigError) as info:
            attempt()
        assert str(info.value) == REQUIRE_MESSAGE


def test_require_message_is_one_line() -> None:
    assert "\n" not in REQUIRE_MESSAGE and "--shape app" in REQUIRE_MESSAGE
