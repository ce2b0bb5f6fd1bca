"""Fixed-point encoding of weighted updates into 32-bit integers whose sum cannot wrap.

Secure aggregation adds vectors modulo 2^32, so floats must become integers first: clip each
coordinate to ``[-c, c]``, multiply by the client's weight ``w`` and a scale ``s``, round, and store the
result modulo 2^32 (two's complement). The sum of ``n`` such values is read back as a signed 32-bit
integer, which is exact as long as its magnitude stays below 2^31. ``FixedPoint.for_federation`` picks
the largest ``s`` that guarantees it for ``n`` clients of weight at most ``W``::

    n * (W * c * s + 2) <= 2^31 - 1

(each rounded term is at most ``W c s + 1``; one more unit absorbs float64 rounding of the product).

Weights are sample counts (``num_examples``, as Flower's FedAvg): a client encodes ``w * x``; the
server divides the decoded sum by the summed weights, which travel alongside as the exact integer
**coverage** vector (DESIGN section 4): one entry per prunable unit plus one for the rest, equal to
``w`` where the client trained that unit and 0 where it pruned it. Coverage uses scale 1, so its sum is
exact while ``n * W < 2^31``.

Error: round-to-nearest changes each encoded term by at most ``0.5 / s`` (in units of ``w * x``),
stochastic rounding by less than ``1 / s`` and is unbiased; the decoded sum of ``n`` terms is therefore
within ``n / s`` of the sum of the clipped weighted inputs. A configuration whose resolution would be
useless, fewer than ``MIN_LEVELS`` steps between 0 and ``W * c`` (with 32 bits: more than about 32,000
clients), is refused rather than silently producing noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from clipfl.errors import ConfigError

__all__ = ["MIN_LEVELS", "SUM_LIMIT", "FixedPoint", "UpdateLayout"]

SUM_LIMIT = 2**31 - 1
"""The largest magnitude a decoded sum may reach: the sum is read as a signed 32-bit integer."""

MIN_LEVELS = 2**16
"""Fewest quantisation steps of ``[0, W * c]`` we accept; coarser than 2^-16 of the range is useless."""


@dataclass(frozen=True, slots=True)
class FixedPoint:
    """Encoder of ``weight * clip(x)`` for a federation of ``n_clients`` weights up to ``max_weight``."""

    clip_range: float
    scale: float
    n_clients: int
    max_weight: float

    def __post_init__(self) -> None:
        for name in ("clip_range", "scale", "max_weight"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"FixedPoint {name} must be a positive finite number, got {value!r}")
        if type(self.n_clients) is not int or self.n_clients < 1:
            raise ConfigError(f"FixedPoint n_clients must be a positive integer, got {self.n_clients!r}")
        worst = self.n_clients * (self.max_weight * self.clip_range * self.scale + 2)
        if worst > SUM_LIMIT:
            raise ConfigError(
                f"fixed-point scale {self.scale:g} could wrap: {self.n_clients} clients of weight "
                f"{self.max_weight:g} clipped at {self.clip_range:g} reach {worst:.4g} > 2^31-1"
            )
        levels = self.max_weight * self.clip_range * self.scale
        if levels < MIN_LEVELS:
            raise ConfigError(
                f"fixed-point resolution too coarse: {levels:.0f} steps for the range of one client "
                f"(need >= {MIN_LEVELS}); 32-bit secure sums cannot serve {self.n_clients} clients"
            )

    @classmethod
    def for_federation(cls, n_clients: int, max_weight: float, clip_range: float) -> FixedPoint:
        """The largest scale with which ``n_clients`` weighted, clipped inputs cannot wrap the sum."""
        if type(n_clients) is not int or n_clients < 1:
            raise ConfigError(f"n_clients must be a positive integer, got {n_clients!r}")
        for name, value in (("max_weight", max_weight), ("clip_range", clip_range)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
        scale = (SUM_LIMIT / n_clients - 2) / (max_weight * clip_range)
        if not scale > 0:
            raise ConfigError(f"no fixed-point scale fits {n_clients} clients into a 32-bit sum")
        # Float rounding may leave the bound an ulp short: step down until the exact check passes.
        while n_clients * (max_weight * clip_range * scale + 2) > SUM_LIMIT:
            scale = math.nextafter(scale, 0.0)
        return cls(
            clip_range=float(clip_range), scale=scale, n_clients=n_clients, max_weight=float(max_weight)
        )

    @property
    def resolution(self) -> float:
        """The quantisation step of one encoded term, in units of ``weight * x``."""
        return 1.0 / self.scale

    def encode(
        self, x: np.ndarray, weight: float = 1.0, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """``round(weight * clip(x) * scale) mod 2^32`` as uint32; stochastic rounding given ``rng``."""
        self._check_weight(weight)
        x = np.asarray(x)
        if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"encode expects a 1-D float array, got {x.dtype} of shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("encode refuses non-finite values (NaN or inf): the local update diverged")
        y = np.clip(x, -self.clip_range, self.clip_range, dtype=np.float64)
        y *= float(weight) * self.scale
        if rng is None:
            np.rint(y, out=y)
        else:
            y += rng.random(y.shape[0])
            np.floor(y, out=y)
        # |y| <= W c s + 1 < 2^31: int32 holds it, and its bits are the two's complement residue.
        return y.astype(np.int32).view(np.uint32)

    def decode_sum(self, total: np.ndarray) -> np.ndarray:
        """The float64 sum of the weighted inputs, from the uint32 sum of their encodings."""
        total = np.asarray(total)
        if total.dtype != np.uint32:
            raise ValueError(f"decode_sum expects uint32, got {total.dtype}")
        return total.view(np.int32).astype(np.float64) / self.scale

    def error_bound(self, n_terms: int, *, stochastic: bool) -> float:
        """Worst-case absolute error of a decoded sum of ``n_terms`` encodings, per coordinate."""
        return n_terms * (1.0 if stochastic else 0.5) / self.scale

    def encode_coverage(self, trained: np.ndarray, weight: int) -> np.ndarray:
        """Coverage at scale 1: ``weight`` where ``trained`` is true, else 0; sums exactly."""
        self._check_weight(weight)
        if type(weight) is not int and not isinstance(weight, np.integer):
            raise ValueError(f"coverage needs an integer weight (a sample count), got {weight!r}")
        if self.n_clients * math.floor(self.max_weight) > SUM_LIMIT:
            raise ConfigError(
                f"coverage of {self.n_clients} clients of weight {self.max_weight:g} could wrap"
            )
        trained = np.asarray(trained)
        if trained.ndim != 1 or trained.dtype != np.bool_:
            raise ValueError(
                f"coverage expects a 1-D bool array, got {trained.dtype} of shape {trained.shape}"
            )
        return trained.astype(np.uint32) * np.uint32(weight)

    @staticmethod
    def decode_coverage(total: np.ndarray) -> np.ndarray:
        """The exact int64 sum of the coverage encodings."""
        total = np.asarray(total)
        if total.dtype != np.uint32:
            raise ValueError(f"decode_coverage expects uint32, got {total.dtype}")
        return total.view(np.int32).astype(np.int64)

    def _check_weight(self, weight: float) -> None:
        if not (math.isfinite(weight) and 0 <= weight <= self.max_weight):
            raise ValueError(f"weight {weight!r} outside [0, {self.max_weight:g}]: the sum could wrap")


@dataclass(frozen=True, slots=True)
class UpdateLayout:
    """One secure-aggregation vector: ``delta_size`` weighted delta coordinates, then the coverage.

    The driver encodes a client's (re-inflated) delta and its per-unit coverage into one uint32 vector,
    and splits the unmasked sum back into the weighted delta sum and the exact coverage counts.
    """

    delta_size: int
    coverage_size: int

    def __post_init__(self) -> None:
        if self.delta_size < 0 or self.coverage_size < 0 or self.delta_size + self.coverage_size == 0:
            raise ValueError(f"empty or negative layout: {self.delta_size} + {self.coverage_size}")

    @property
    def size(self) -> int:
        return self.delta_size + self.coverage_size

    def encode(
        self,
        codec: FixedPoint,
        delta: np.ndarray,
        trained: np.ndarray,
        weight: int,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """``[encode(delta, weight) | encode_coverage(trained, weight)]`` as one uint32 vector."""
        if delta.shape != (self.delta_size,) or trained.shape != (self.coverage_size,):
            raise ValueError(
                f"layout is {self.delta_size}+{self.coverage_size}, got {delta.shape} and {trained.shape}"
            )
        out = np.empty(self.size, dtype=np.uint32)
        out[: self.delta_size] = codec.encode(delta, weight, rng)
        out[self.delta_size :] = codec.encode_coverage(trained, weight)
        return out

    def decode(self, codec: FixedPoint, total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Split a unmasked uint32 sum into (float64 weighted delta sum, int64 coverage sum)."""
        if total.shape != (self.size,):
            raise ValueError(f"layout has {self.size} coordinates, the sum has shape {total.shape}")
        return codec.decode_sum(total[: self.delta_size]), codec.decode_coverage(total[self.delta_size :])
