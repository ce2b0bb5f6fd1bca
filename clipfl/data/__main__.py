"""``python -m clipfl.data``: a dataset's and a federated partition's statistics.

    python -m clipfl.data --dataset femnist --data-dir ../shared/data --partition natural --clients 20 --json

prints one JSON object with ``train_samples``, ``test_samples``, ``classes``, ``natural_clients`` (the
number of writers or roles; null without a natural partition) and, with ``--partition``, a
``partition`` object with samples per client (``min``, ``median``, ``max``). Errors are one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from clipfl.data.load import DATASETS, FORMATS, load_dataset
from clipfl.data.partition import DEFAULT_MIN_SAMPLES, SCHEMES, make_partition, partition_stats
from clipfl.errors import ClipflError

__all__ = ["main", "statistics"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m clipfl.data",
        description="Load a dataset (decoding it into the cache on first use) and print its statistics "
        "and those of a federated partition.",
    )
    p.add_argument("--dataset", required=True, choices=DATASETS, help="dataset name")
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory holding the dataset (or its <name>/ subdirectory); default: $CLIPFL_DATA",
    )
    fmts = sorted({f for fs in FORMATS.values() for f in fs})
    p.add_argument("--format", default=None, choices=fmts, help="pick one format when several are present")
    p.add_argument("--partition", default=None, choices=SCHEMES, help="partition scheme to describe")
    p.add_argument("--clients", type=int, default=20, help="number of clients (default 20)")
    p.add_argument("--seed", type=int, default=0, help="partition seed (default 0)")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (default 0.5)")
    p.add_argument(
        "--min-samples",
        type=int,
        default=DEFAULT_MIN_SAMPLES,
        help=f"minimum train samples per client (default {DEFAULT_MIN_SAMPLES})",
    )
    p.add_argument(
        "--pick",
        default="largest",
        choices=("largest", "sample"),
        help="natural partition: the N largest writers/roles, or a seeded sample of N (default largest)",
    )
    cache = p.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache-dir", default=None, help="decode cache; default $CLIPFL_CACHE or ~/.cache/clipfl"
    )
    cache.add_argument("--no-cache", action="store_true", help="decode the source every time")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p


def statistics(args: argparse.Namespace) -> dict[str, Any]:
    """The statistics ``main`` prints, as a JSON-ready dict."""
    cache_dir = False if args.no_cache else args.cache_dir
    ds = load_dataset(args.dataset, args.data_dir, cache_dir=cache_dir, fmt=args.format)
    out: dict[str, Any] = {
        "dataset": ds.name,
        "source": ds.source,
        "train_samples": len(ds.train),
        "test_samples": len(ds.test),
        "classes": ds.num_classes,
        "natural_clients": ds.natural_clients,
        "input_shape": list(ds.input_shape),
    }
    if args.partition is not None:
        part = make_partition(
            ds,
            args.partition,
            args.clients,
            seed=args.seed,
            alpha=args.alpha,
            min_samples=args.min_samples,
            pick=args.pick,
        )
        stats: dict[str, Any] = {"scheme": part.scheme, "seed": args.seed, **partition_stats(part)}
        if args.partition == "dirichlet":
            stats["alpha"] = args.alpha
        labels = [len(np.unique(np.asarray(ds.train.y)[idx])) for idx in part.train]
        stats["classes_per_client"] = {
            "min": min(labels),
            "median": float(np.median(labels)),
            "max": max(labels),
        }
        if part.test is not None:
            t = np.array([len(i) for i in part.test])
            stats["test_per_client"] = {
                "min": int(t.min()),
                "median": float(np.median(t)),
                "max": int(t.max()),
            }
        out["partition"] = stats
    return out


def _text(s: dict[str, Any]) -> str:
    lines = [
        f"dataset          {s['dataset']}  ({s['source']})",
        f"train samples    {s['train_samples']}",
        f"test samples     {s['test_samples']}",
        f"classes          {s['classes']}",
        f"natural clients  {s['natural_clients'] if s['natural_clients'] is not None else '-'}",
        f"input shape      {tuple(s['input_shape'])}",
    ]
    p = s.get("partition")
    if p is not None:
        lines.append(
            f"partition        {p['scheme']}, {p['clients']} clients: samples per client "
            f"min {p['min']}, median {p['median']:g}, max {p['max']} (total {p['total']})"
        )
        c = p["classes_per_client"]
        lines.append(f"classes/client   min {c['min']}, median {c['median']:g}, max {c['max']}")
        if "test_per_client" in p:
            t = p["test_per_client"]
            lines.append(f"local test       min {t['min']}, median {t['median']:g}, max {t['max']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        stats = statistics(args)
    except ClipflError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(stats) if args.json else _text(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
