"""Measure this machine once, for the simulator: ``python -m clipfl.sim.calibrate --out costs.json``.

What it measures, each on one thread with the thread's CPU clock (``time.thread_time``), so that time
spent waiting for a core does not count, and with the very functions the live federation calls. Other
work still slows the thread while it runs (shared caches, a sibling hyperthread): it refuses to measure
a busy machine. A figure is the median of repeated calls, as a call now and then takes far longer.
It measures:

* per model, the speed of local training (``clipfl.training.fit``, one torch thread, as one live
  client trains) in training MACs per second, and of evaluation in forward MACs per second;
* secure aggregation's primitives: X25519 key pairs and agreements, sealing and opening a share
  (``clipfl.secagg.keys``), Shamir splitting and reconstruction (``clipfl.secagg.shamir``), mask
  expansion (``clipfl.secagg.prg.MaskStream``), fixed-point encoding and the modular sum.

This module reads clocks; the simulation (every other module of ``clipfl.sim``) never does.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import secrets
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from clipfl.clip import UnitLayout, build_submodel, flop_ratio, forward_macs, select_ordered
from clipfl.config import DEFAULT_MODELS
from clipfl.data import load_dataset, to_tensors
from clipfl.errors import ClipflError, ConfigError
from clipfl.models import build_model
from clipfl.secagg import REAL, FixedPoint, shamir
from clipfl.secagg import keys as K
from clipfl.secagg.prg import MaskStream
from clipfl.settings import TrainSettings
from clipfl.sim.costs import BACKWARD_FACTOR, DEFAULT_COST_MODEL, CostModel
from clipfl.training import evaluate, fit

__all__ = ["calibrate", "main"]

_DATASET_OF = {model: dataset for dataset, model in DEFAULT_MODELS.items()}


def busy_cores(seconds: float = 1.0) -> float:
    """How many cores the machine's processes kept busy over the next ``seconds`` (from /proc/stat;
    the one-minute load average where there is none)."""

    def busy_and_total() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
        idle = ticks[3] + ticks[4]  # idle and iowait
        return sum(ticks) - idle, sum(ticks)

    try:
        busy0, total0 = busy_and_total()
    except OSError:
        return os.getloadavg()[0]
    time.sleep(seconds)
    busy1, total1 = busy_and_total()
    return (os.cpu_count() or 1) * (busy1 - busy0) / max(total1 - total0, 1)


def _per_call(fn: Callable[[], object], *, repeat: int) -> float:
    """Median CPU seconds of one call of ``fn`` over ``repeat`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return float(np.median(times))


KEEP_RATIOS = (1.0, 0.8, 0.6, 0.45, 0.3)
"""The sub-models timed to separate the per-MAC cost from the per-step overhead."""
REPEATS = 7
"""Fits of each sub-model; the median counts."""
BUSY_LOAD = 0.5
"""Cores in use by other work above which the measurement is refused (``--busy-ok`` overrides): a
busy machine's contention shows in the thread clock too. The model shipped on 2026-12-01 timed
FEMNIST's fits 1.6x slower than an idle machine does (``benchmarks/results/calibration``)."""


def _model_speeds(model_name: str, data_dir: str | None, samples: int) -> tuple[float, float, float, float]:
    """(training MACs per second, step overhead in training MACs, evaluation MACs per second, the
    line's worst relative error over the timed sizes).

    A fit's CPU time is ``a x MACs + b x steps``: the full model and sub-models of it (built by CLIP's
    own ``build_submodel``) train the same samples in the same steps, so a least-squares line through
    their (MACs, time) points gives ``a`` (the speed is ``1 / a``) and ``b`` (``b / a`` in MACs).
    """
    dataset = load_dataset(_DATASET_OF.get(model_name, "digits"), data_dir)
    torch.manual_seed(0)
    model = build_model(model_name, dataset)
    macs = forward_macs(model, dataset.input_shape)
    layout = UnitLayout.of(model, dataset.input_shape)
    n = min(samples, len(dataset.train))
    x, y = to_tensors(dataset.train, np.arange(n))
    batch = 32
    settings = TrainSettings(epochs=1, batch_size=batch, lr=0.01, optimizer="sgd", momentum=0.9)
    subs = [
        model if p == 1.0 else build_submodel(model, layout, select_ordered(layout, p).kept).module
        for p in KEEP_RATIOS
    ]
    for m in subs:
        fit(m, x[:64], y[:64], settings, seed=0)  # torch's one-time set-up
    cpu: dict[float, list[float]] = {p: [] for p in KEEP_RATIOS}
    for r in range(REPEATS):  # interleaved, so that drift of a shared machine hits every size alike
        for p, m in zip(KEEP_RATIOS, subs, strict=True):
            cpu[p].append(fit(m, x, y, settings, seed=r).cpu_seconds)
    # The median fit of each size: a fit now and then takes far longer (a burst of other work, page
    # faults), and a least-squares line through such points tilts with them.
    xs = np.array([macs * n * BACKWARD_FACTOR * flop_ratio(layout, p) for p in KEEP_RATIOS])
    ys = np.array([float(np.median(cpu[p])) for p in KEEP_RATIOS])
    per_mac, intercept = (float(v) for v in np.polyfit(xs, ys, deg=1))
    per_step = max(float(intercept), 0.0) / math.ceil(n / batch)
    worst = float(np.max(np.abs(per_mac * xs + intercept - ys) / ys))
    infer = macs * n / max(_per_call(lambda: evaluate(model, x, y), repeat=3), 1e-9)
    return 1 / float(per_mac), per_step / float(per_mac), infer, worst


def calibrate(
    models: Sequence[str], *, data_dir: str | None = None, samples: int = 512, busy_ok: bool = False
) -> CostModel:
    """Measure every figure of a ``CostModel`` on this machine; ``ConfigError`` when other work keeps
    more than ``BUSY_LOAD`` cores busy, unless ``busy_ok``."""
    load = busy_cores()
    if load > BUSY_LOAD and not busy_ok:
        raise ConfigError(
            f"the machine is busy ({load:.2f} cores in use by other work): it slows the measured CPU "
            "time too, and every simulation made with this cost model would run too slow; measure on "
            "an idle machine, or pass --busy-ok"
        )
    torch.set_num_threads(1)
    train, overhead, infer, error = {}, {}, {}, {}
    for name in models:
        train[name], overhead[name], infer[name], error[name] = _model_speeds(name, data_dir, samples)
        print(
            f"{name}: train {train[name]:.3g} MAC/s + {overhead[name]:.3g} MACs per step "
            f"(within {error[name]:.0%} of every timed size), evaluate {infer[name]:.3g} MAC/s",
            file=sys.stderr,
        )

    a, b = K.RoundKeys.generate(secrets.token_bytes), K.RoundKeys.generate(secrets.token_bytes)
    channel = REAL.channel(a, b.c_public)
    plain = bytes(K.SHARE_PLAINTEXT_BYTES)
    sealed = channel.seal(plain, secrets.token_bytes)
    s_private = a.s_private
    n, t = 64, 33
    xs = list(range(1, n + 1))
    shares = shamir.split(
        secrets.token_bytes(shamir.SECRET_BYTES), threshold=t, xs=xs, random_bytes=secrets.token_bytes
    )
    some = {x: shares[x] for x in xs[:t]}
    length = 1 << 20
    stream = MaskStream(length)
    target = np.zeros(length, dtype=np.uint32)
    seed = secrets.token_bytes(32)
    codec = FixedPoint.for_federation(100, 1000.0, 1.0)
    delta = np.random.default_rng(0).standard_normal(length)

    def combine_fresh() -> None:
        shamir._lagrange_at_zero.cache_clear()  # the first reconstruction of a round pays for them
        shamir.combine(some, t)

    return CostModel(
        source=f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}",
        train_macs_per_second=train,
        eval_macs_per_second=infer,
        step_overhead_macs=overhead,
        keygen_s=_per_call(lambda: K.RoundKeys.generate(secrets.token_bytes), repeat=200) / 2,
        agree_s=_per_call(lambda: K.mask_seed(s_private, b.s_public, round_=1, u=0, v=1), repeat=200),
        seal_s=_per_call(lambda: channel.seal(plain, secrets.token_bytes), repeat=500),
        open_s=_per_call(lambda: channel.open(sealed), repeat=500),
        split_s_per_term=_per_call(
            lambda: shamir.split(s_private, threshold=t, xs=xs, random_bytes=secrets.token_bytes), repeat=50
        )
        / (n * t),
        combine_s_per_term=_per_call(combine_fresh, repeat=20) / (t * t),
        prg_s_per_element=_per_call(lambda: stream.add(target, seed), repeat=20) / length,
        encode_s_per_element=_per_call(lambda: codec.encode(delta, 10.0), repeat=10) / length,
        add_s_per_element=_per_call(lambda: np.add(target, target, out=target), repeat=20) / length,
        extra={
            "calibration_samples": samples,
            "fit_time_line_error": error,
            "busy_cores_at_start": round(load, 2),
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clipfl.sim.calibrate", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--models",
        default="digits_cnn,femnist_cnn,vgg9,shakespeare_lstm",
        help="comma-separated models to time (their datasets must be loadable; default: %(default)s)",
    )
    parser.add_argument("--data-dir", help="dataset directory (default: $CLIPFL_DATA)")
    parser.add_argument("--samples", type=int, default=512, help="training samples per timed fit")
    parser.add_argument(
        "--out", default=str(DEFAULT_COST_MODEL), help="where to write (default: %(default)s)"
    )
    parser.add_argument(
        "--busy-ok", action="store_true", help="measure even when other work keeps the machine busy"
    )
    args = parser.parse_args(argv)
    try:
        model = calibrate(
            [m for m in args.models.split(",") if m],
            data_dir=args.data_dir,
            samples=args.samples,
            busy_ok=args.busy_ok,
        )
    except ClipflError as exc:
        print(f"clipfl.sim.calibrate: error: {exc}", file=sys.stderr)
        return 2
    model.save(args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
