"""What one scale run asks for: the options value object, its command line, and the way back.

``build_parser`` and ``options_from_args`` turn ``argv`` into a validated ``ScaleOptions``;
``command_line`` spells the options out again, so that a report says exactly how to repeat its run.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from clipfl import ConfigError

MODELS = ("digits_mlp", "digits_mlp_wide", "digits_cnn")
"""The digits models a scale run may train: tiny by default; ``digits_mlp_wide`` has VGG-9's 1.47 M
coordinates, to time secure aggregation at that size without VGG-9's training."""

__all__ = ["MODELS", "ScaleOptions", "build_parser", "command_line", "options_from_args"]

_POSITIVE = (
    "registration_timeout",
    "round_timeout",
    "heartbeat_timeout",
    "timeout",
    "sample_interval",
    "http_interval",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleOptions:
    """One scale run. Timeouts are generous: on a shared 2-core machine 200 clients take a while to
    import, build and register, and the server must not give up on them before they do."""

    clients: int = 200
    rounds: int = 3
    workers: int = 4
    secagg: str = "secagg+"
    model: str = "digits_mlp"
    out: Path = Path("runs/scale")
    json_path: Path | None = None
    seed: int = 0
    registration_timeout: float = 600.0
    round_timeout: float = 600.0
    heartbeat_timeout: float = 30.0
    timeout: float = 1800.0
    sample_interval: float = 0.5
    http_interval: float = 0.2

    def __post_init__(self) -> None:
        if self.clients < 2:
            raise ConfigError(f"clients must be >= 2 (secure aggregation needs two), got {self.clients}")
        if not 1 <= self.workers <= self.clients:
            raise ConfigError(f"workers must be in 1..{self.clients}, got {self.workers}")
        if self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds}")
        if self.secagg not in ("off", "secagg", "secagg+"):
            raise ConfigError(f"secagg must be off, secagg or secagg+, got {self.secagg!r}")
        if self.model not in MODELS:
            raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        for name in _POSITIVE:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")

    @property
    def report_json(self) -> Path:
        return self.json_path or self.out / "scale.json"


def build_parser() -> argparse.ArgumentParser:
    d = ScaleOptions()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description="Many lightweight clients (digits, one local epoch) in a few worker processes "
        "against one server on loopback: round time, server memory and CPU, HTTP API latency.",
    )
    parser.add_argument("--clients", type=int, default=d.clients, help=f"(default: {d.clients})")
    parser.add_argument("--rounds", type=int, default=d.rounds, help=f"(default: {d.rounds})")
    parser.add_argument(
        "--workers", type=int, default=d.workers, help=f"client processes (default: {d.workers})"
    )
    parser.add_argument("--secagg", choices=("off", "secagg", "secagg+"), default=d.secagg)
    parser.add_argument("--model", choices=MODELS, default=d.model, help=f"(default: {d.model})")
    parser.add_argument("--json", type=Path, help="the JSON report (default: OUT/scale.json)")
    parser.add_argument("--out", type=Path, default=d.out, help=f"logs and reports (default: {d.out})")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--registration-timeout", type=float, default=d.registration_timeout)
    parser.add_argument("--round-timeout", type=float, default=d.round_timeout)
    parser.add_argument("--heartbeat-timeout", type=float, default=d.heartbeat_timeout)
    parser.add_argument(
        "--timeout", type=float, default=d.timeout, help=f"the whole run, seconds (default: {d.timeout:g})"
    )
    parser.add_argument("--sample-interval", type=float, default=d.sample_interval)
    parser.add_argument("--http-interval", type=float, default=d.http_interval)
    return parser


def options_from_args(args: argparse.Namespace) -> ScaleOptions:
    """The options ``build_parser`` parsed; raises ``ConfigError`` for an impossible run."""
    return ScaleOptions(
        clients=args.clients,
        rounds=args.rounds,
        workers=args.workers,
        secagg=args.secagg,
        model=args.model,
        out=args.out,
        json_path=args.json,
        seed=args.seed,
        registration_timeout=args.registration_timeout,
        round_timeout=args.round_timeout,
        heartbeat_timeout=args.heartbeat_timeout,
        timeout=args.timeout,
        sample_interval=args.sample_interval,
        http_interval=args.http_interval,
    )


def command_line(opts: ScaleOptions) -> str:
    """The command that repeats this run (every option spelled out, defaults included)."""
    argv = ["python -m benchmarks.scale"]
    for flag, value in (
        ("--clients", opts.clients),
        ("--rounds", opts.rounds),
        ("--workers", opts.workers),
        ("--secagg", opts.secagg),
        ("--model", opts.model),
        ("--seed", opts.seed),
        ("--out", opts.out),
        ("--json", opts.json_path),
        ("--timeout", opts.timeout),
    ):
        if value is not None:
            argv += [flag, str(value)]
    return " ".join(argv)
