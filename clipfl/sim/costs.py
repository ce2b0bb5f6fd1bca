"""What computing costs in virtual time: local fits, evaluation, and secure aggregation's cryptography.

The figures come from a ``CostModel``, measured once on a machine by ``python -m clipfl.sim.calibrate``
and stored as JSON (the package ships the one measured where clipfl was developed,
``clipfl/sim/cost_model.json``); a simulation's results name the model they used. The simulation
itself never reads a clock: it runs the real training and the real protocol and *charges* their cost
from these numbers, so two runs of one scenario give the same times on any machine, loaded or not.

* **A fit** costs its exact MACs (``clipfl.clip.flops``): the full model's forward MACs per sample x
  the sub-model's FLOP ratio (``FitJob.flop_ratio``) x samples x epochs x ``BACKWARD_FACTOR`` (3: the
  forward pass, then the backward pass's two products per weight: the gradients of the inputs and of
  the weights), plus a fixed cost per optimizer step (``step_overhead_macs``: the framework's and the
  interpreter's work, which does not shrink with the model; it dominates small models such as the
  digits CNN, where a half-width sub-model saves a third of the time, not two thirds), over the
  device's speed. A device's speed is in *training* MACs per second, which is what the calibration
  measures: one torch thread training the model, as one live client does, and the step overhead is
  expressed in the same MACs, so that a device F times slower is F times slower at both, as the live
  emulation (F x the measured CPU time) is.
* **Evaluation** costs the test set's forward MACs over the server's inference speed.
* **Secure aggregation** (DESIGN.md section 3) is charged per step from the measured primitives:
  key generation, X25519 agreements, sealing and opening shares, Shamir splitting (about shares x
  threshold multiplications) and reconstruction (threshold^2), mask expansion per element (the PRG),
  fixed-point encoding and modular addition per element.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from clipfl.errors import ConfigError

__all__ = ["BACKWARD_FACTOR", "DEFAULT_COST_MODEL", "CostModel", "load_cost_model"]

BACKWARD_FACTOR = 3
"""Training MACs per forward MAC: forward, input gradients, weight gradients (each one product per
weight). The live emulation needs no such factor (it stretches measured CPU time); the calibration
measures speeds in these same units, so the factor cancels when a fleet is made from a slowdown."""

DEFAULT_COST_MODEL = Path(__file__).resolve().parent / "cost_model.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class CostModel:
    """Seconds per primitive and MACs per second per model, as measured on one machine."""

    source: str
    """Where and when it was measured (for the results)."""
    train_macs_per_second: dict[str, float]
    """One torch thread training each model, in training MACs (forward x BACKWARD_FACTOR) per second."""
    eval_macs_per_second: dict[str, float]
    """The server evaluating each model, in forward MACs per second."""
    step_overhead_macs: dict[str, float]
    """Per model: the fixed cost of one optimizer step, in training MACs of the same machine."""
    keygen_s: float
    """One X25519 key pair."""
    agree_s: float
    """One X25519 agreement (a Box's shared key, or a mask seed)."""
    seal_s: float
    """Sealing one share ciphertext (a Box encryption of about 100 bytes)."""
    open_s: float
    """Opening one share ciphertext."""
    split_s_per_term: float
    """Shamir split: seconds per (share x threshold) term."""
    combine_s_per_term: float
    """Shamir reconstruction: seconds per threshold^2 term (Lagrange at zero)."""
    prg_s_per_element: float
    """Expanding a mask seed and adding it in: seconds per uint32 element."""
    encode_s_per_element: float
    """Fixed-point encoding of a float64 delta: seconds per element."""
    add_s_per_element: float
    """The server's modular sum of one masked vector: seconds per element."""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            is_seconds = f.name.endswith("_s") or "_s_per_" in f.name
            if is_seconds and not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"cost model: {f.name} must be a finite number >= 0, got {value!r}")
        for table in ("train_macs_per_second", "eval_macs_per_second", "step_overhead_macs"):
            for model, value in getattr(self, table).items():
                low_ok = value >= 0 if table == "step_overhead_macs" else value > 0
                if not (isinstance(value, int | float) and math.isfinite(value) and low_ok):
                    bound = ">= 0" if table == "step_overhead_macs" else "> 0"
                    raise ConfigError(f"cost model: {table}[{model!r}] must be {bound}, got {value!r}")

    # ------------------------------------------------------------------------------- learning

    def train_speed(self, model: str) -> float:
        try:
            return self.train_macs_per_second[model]
        except KeyError:
            raise ConfigError(
                f"cost model {self.source!r} has no training speed for model {model!r}; run "
                f"python -m clipfl.sim.calibrate --models {model}"
            ) from None

    def eval_seconds(self, model: str, forward_macs: int, samples: int) -> float:
        speed = self.eval_macs_per_second.get(model)
        if speed is None:
            raise ConfigError(
                f"cost model {self.source!r} has no evaluation speed for model {model!r}; run "
                f"python -m clipfl.sim.calibrate --models {model}"
            )
        return forward_macs * samples / speed

    def fit_macs(
        self, model: str, forward_macs: int, flop_ratio: float, *, samples: int, epochs: int, batch_size: int
    ) -> float:
        """Training MACs of a fit: forward MACs x FLOP ratio x samples x epochs x BACKWARD_FACTOR, plus
        the step overhead of each of its ``ceil(samples / batch_size) x epochs`` optimizer steps."""
        steps = math.ceil(samples / batch_size) * epochs
        overhead = self.step_overhead_macs.get(model, 0.0)
        return forward_macs * flop_ratio * samples * epochs * BACKWARD_FACTOR + steps * overhead

    # ----------------------------------------------------------------- secure aggregation, client

    def advertise_s(self) -> float:
        """Answering the round setup: two key pairs (``c`` and ``s``)."""
        return 2 * self.keygen_s

    def share_keys_s(self, peers: int, threshold: int) -> float:
        """Answering the keys: two agreements per peer, two Shamir splits, one sealed share per peer."""
        holders = peers + 1
        return peers * (2 * self.agree_s + self.seal_s) + 2 * holders * threshold * self.split_s_per_term

    def open_shares_s(self, count: int) -> float:
        return count * self.open_s

    def seal_s_many(self, count: int) -> float:
        return count * self.seal_s

    def encode_s(self, length: int) -> float:
        return length * self.encode_s_per_element

    def mask_s(self, length: int, peers: int) -> float:
        """Masking: the self mask and one pairwise mask per live neighbour, each ``length`` elements."""
        return (peers + 1) * length * self.prg_s_per_element

    # ----------------------------------------------------------------- secure aggregation, server

    def unmask_s(self, *, length: int, survivors: int, dropped: int, threshold: int, neighbors: int) -> float:
        """The server's last step: sum the masked inputs, rebuild the secrets, remove every mask.

        A survivor's self-mask seed and a dropped client's key are each rebuilt from ``threshold``
        shares; a dropped client's pairwise masks with its surviving neighbours are expanded again.
        """
        pairwise = dropped * min(neighbors, survivors)
        return (
            survivors * length * self.add_s_per_element
            + (survivors + dropped) * threshold * threshold * self.combine_s_per_term
            + survivors * length * self.prg_s_per_element
            + pairwise * (self.agree_s + length * self.prg_s_per_element)
        )

    # ---------------------------------------------------------------------------------- storage

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_cost_model(path: str | Path | None = None) -> CostModel:
    """The cost model at ``path`` (default: the one shipped with clipfl)."""
    path = Path(path) if path is not None else DEFAULT_COST_MODEL
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"cost model {str(path)!r} does not exist; make one with python -m clipfl.sim.calibrate"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"cost model {str(path)!r} is not valid JSON: {exc}") from None
    names = {f.name for f in fields(CostModel)}
    unknown = sorted(set(data) - names)
    missing = sorted(f.name for f in fields(CostModel) if f.name not in data and f.name != "extra")
    if unknown or missing:
        what = f"unknown key {unknown[0]!r}" if unknown else f"missing key {missing[0]!r}"
        raise ConfigError(f"cost model {str(path)!r}: {what}; make one with python -m clipfl.sim.calibrate")
    return CostModel(**data)
