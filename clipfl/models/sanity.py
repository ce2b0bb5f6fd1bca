"""``python -m clipfl.models.sanity --preset NAME``: does the preset's model learn its task, and how fast?

Reports, as one JSON object, what a preset costs and whether it can work before a federation is
spent on it: the model's parameter count; the seconds of one local epoch of client 0 of the preset's
20-client partition on one torch thread (what a round costs each client); and the test accuracy
after each epoch of a short *centralized* training on the pooled data of all the preset's clients
(the same samples a federated round sees), with the preset's optimizer and learning rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from clipfl.data import load_dataset, make_partition, subsample, to_tensors
from clipfl.errors import ClipflError
from clipfl.models import build_model, count_parameters
from clipfl.presets import PRESETS, get_preset
from clipfl.settings import TrainSettings
from clipfl.training import evaluate, fit

__all__ = ["main", "sanity"]


def sanity(name: str, data_dir: str | None, *, epochs: int, threads: int, seed: int = 0) -> dict[str, Any]:
    """Measure preset ``name`` (see the module docstring)."""
    p = get_preset(name)
    ds = load_dataset(p.dataset, data_dir)
    part = make_partition(ds, p.partition, p.clients, seed=seed, alpha=p.alpha, pick=p.pick)
    clients = [subsample(idx, p.max_client_samples, seed=seed + k) for k, idx in enumerate(part.train)]
    test_idx = subsample(np.arange(len(ds.test)), p.max_test_samples, seed=seed)
    settings = TrainSettings(
        epochs=1, batch_size=p.batch_size, lr=p.lr, optimizer=p.optimizer, momentum=p.momentum
    )

    torch.manual_seed(seed)
    model = build_model(p.model, ds)
    torch.set_num_threads(1)
    x0, y0 = to_tensors(ds.train, clients[0])
    fit(model, x0[: p.batch_size * 4], y0[: p.batch_size * 4], settings, seed=seed)  # warm up the kernels
    start = time.perf_counter()
    fit(model, x0, y0, settings, seed=seed)
    local_epoch = time.perf_counter() - start

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build_model(p.model, ds)
    x, y = to_tensors(ds.train, np.concatenate(clients))
    xt, yt = to_tensors(ds.test, test_idx)
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        result = fit(model, x, y, settings, seed=seed + epoch)
        seconds = time.perf_counter() - start
        loss, acc = evaluate(model, xt, yt)
        history.append(
            {
                "epoch": epoch,
                "train_loss": round(result.loss, 4),
                "test_loss": round(loss, 4),
                "test_accuracy": round(acc, 4),
                "seconds": round(seconds, 1),
            }
        )
        print(json.dumps({"preset": name, **history[-1]}), file=sys.stderr, flush=True)
    return {
        "preset": name,
        "model": p.model,
        "parameters": count_parameters(model),
        "client0_samples": len(clients[0]),
        "seconds_per_local_epoch": round(local_epoch, 2),
        "centralized_train_samples": len(y),
        "test_samples": len(yt),
        "threads": threads,
        "history": history,
        "final_accuracy": history[-1]["test_accuracy"] if history else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clipfl.models.sanity", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", required=True, choices=sorted(PRESETS), help="workload to measure")
    ap.add_argument("--data-dir", default=None, help="dataset directory (default: $CLIPFL_DATA)")
    ap.add_argument("--epochs", type=int, default=3, help="centralized epochs (default 3)")
    ap.add_argument(
        "--threads", type=int, default=2, help="torch threads for the centralized part (default 2)"
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of partition, model and batches (default 0)")
    args = ap.parse_args(argv)
    try:
        out = sanity(args.preset, args.data_dir, epochs=args.epochs, threads=args.threads, seed=args.seed)
    except ClipflError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
