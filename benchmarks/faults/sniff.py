"""Reading clients' ZeroMQ routing ids off the loopback wire, as an on-path attacker would.

Without CurveZMQ the ZMTP 3 handshake is plain text: each DEALER's ``READY`` command carries its
routing id as the ``Identity`` property (a one-byte name length, the name, a four-byte big-endian
value length, the value). An ``AF_PACKET`` socket on ``lo`` sees every such handshake. That needs
``CAP_NET_RAW``; without it the campaign says so and falls back to guessing ids.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

__all__ = ["IdentitySniffer", "identities_in"]

_ETH_P_ALL = 0x0003
_MARK = b"\x08Identity"


def identities_in(payload: bytes) -> list[bytes]:
    """Every non-empty ``Identity`` property value in a captured byte string."""
    found = []
    start = 0
    while (at := payload.find(_MARK, start)) >= 0:
        head = at + len(_MARK)
        start = head
        if head + 4 > len(payload):
            break
        size = int.from_bytes(payload[head : head + 4], "big")
        value = payload[head + 4 : head + 4 + size]
        if 0 < size <= 255 and len(value) == size:
            found.append(value)
    return found


class IdentitySniffer:
    """Capture routing ids sent to ``port`` on ``lo`` in a background thread, until ``stop``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ids: list[bytes] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def start(self) -> bool:
        """Open the capture socket; False (with ``error`` saying why) when this process may not."""
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
            sock.bind(("lo", 0))
        except (OSError, AttributeError) as exc:
            self.error = f"cannot capture on lo ({exc}); needs CAP_NET_RAW"
            return False
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._capture, name="sniffer", daemon=True)
        self._thread.start()
        return True

    def _capture(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                frame = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            payload = _tcp_payload_to(frame, self.port)
            if payload:
                for ident in identities_in(payload):
                    if ident not in self.ids:
                        self.ids.append(ident)

    def wait_for(self, count: int, timeout: float) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.ids) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.ids)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()


def _tcp_payload_to(frame: bytes, port: int) -> bytes | None:
    """The TCP payload of an Ethernet/IPv4 frame sent to ``port``, else None."""
    if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[9] != 6 or len(ip) < ihl + 20:
        return None
    tcp = ip[ihl:]
    if int.from_bytes(tcp[2:4], "big") != port:
        return None
    offset = (tcp[12] >> 4) * 4
    total = int.from_bytes(ip[2:4], "big")
    return bytes(tcp[offset : total - ihl])
