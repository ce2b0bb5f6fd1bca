"""Rates as tc writes them, the caps of one link, and the tbf qdisc that enforces a cap.

The burst of every cap comes from :func:`transports.ratelimit.default_burst_bytes`, the same function
the app limiter (``--shape app``) uses, so that a cap means the same thing in tc and in the
transport. Shaping may import the transport layer (it sits above it); the transport layer never
imports shaping.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from clipfl.errors import ConfigError
from transports.ratelimit import default_burst_bytes

__all__ = ["LinkSpec", "check_rate", "format_rate", "parse_rate", "tbf_argv"]

_QUEUE_SECONDS = 0.1  # tbf queue: 100 ms of traffic at the rate, plus one burst

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


def check_rate(name: str, value: int | None) -> None:
    """Refuse a cap that is not a whole number of at least 8 bit/s (None, unlimited, is allowed)."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 8):
        raise ConfigError(f"{name} must be at least 8 bit/s or None (unlimited), got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkSpec:
    """The caps of one client's link, in bits per second; None means unlimited."""

    upload_bps: int | None = None
    download_bps: int | None = None

    def __post_init__(self) -> None:
        check_rate("upload_bps", self.upload_bps)
        check_rate("download_bps", self.download_bps)

    @classmethod
    def parse(cls, upload: str | None = None, download: str | None = None) -> LinkSpec:
        """From command-line rates such as ``--upload-rate 2mbit --download-rate 10mbit``."""
        return cls(
            upload_bps=None if upload is None else parse_rate(upload),
            download_bps=None if download is None else parse_rate(download),
        )
