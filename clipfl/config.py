"""Run settings as small validated value objects, and the command-line flags made from them.

``RunConfig`` is the federation as the server sees it; ``ClientConfig`` is what one client process
needs on top. Both are frozen dataclasses validated once in ``__post_init__`` (the httpx ``Timeout``
way): an impossible value raises ``ConfigError`` with one line naming the value and what is allowed.
Flags are generated from the fields (``--local-epochs`` for ``local_epochs``), so that the server,
the client and the launcher cannot drift apart; a TOML file gives the same keys, and flags win.
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from clipfl.clip import DEFAULT_MIN_KEEP_RATIO, DEFAULT_STRAGGLER_FRACTION
from clipfl.errors import ConfigError
from clipfl.secagg import SecAggConfig
from clipfl.settings import MITIGATIONS, OPTIMIZERS, WEIGHTINGS, RunSettings, TrainSettings

__all__ = [
    "MITIGATIONS",
    "SECAGG_MODES",
    "ClientConfig",
    "RunConfig",
    "add_flags",
    "config_from_flags",
    "load_toml",
    "run_config",
]

SECAGG_MODES = ("off", "secagg", "secagg+")
PARTITIONS = ("iid", "dirichlet", "natural")
DEFAULT_MODELS = {
    "digits": "digits_cnn",
    "cifar10": "vgg9",
    "femnist": "femnist_cnn",
    "shakespeare": "shakespeare_lstm",
}

C = TypeVar("C")


def _opt(help: str, *, choices: Sequence[str] | None = None, flag: bool = True) -> dict[str, Any]:
    return {"help": help, "choices": tuple(choices) if choices else None, "flag": flag}


@dataclass(frozen=True, slots=True, kw_only=True)
class RunConfig:
    """One federation: data, model, rounds, local training, secure aggregation, stragglers."""

    dataset: str = field(default="digits", metadata=_opt("dataset name (digits is embedded)"))
    data_dir: str | None = field(default=None, metadata=_opt("dataset directory (default: $CLIPFL_DATA)"))
    partition: str = field(default="iid", metadata=_opt("how the data is split", choices=PARTITIONS))
    alpha: float = field(default=0.5, metadata=_opt("Dirichlet concentration for --partition dirichlet"))
    clients: int = field(default=10, metadata=_opt("number of clients in the federation"))
    rounds: int = field(default=10, metadata=_opt("number of training rounds"))
    seed: int = field(default=0, metadata=_opt("seed for the partition, the model and the clients"))
    model: str | None = field(default=None, metadata=_opt("model name (default: the dataset's)"))
    local_epochs: int = field(default=1, metadata=_opt("local epochs per round"))
    batch_size: int = field(default=32, metadata=_opt("local batch size"))
    lr: float = field(default=0.05, metadata=_opt("local learning rate"))
    optimizer: str = field(default="sgd", metadata=_opt("local optimizer", choices=OPTIMIZERS))
    momentum: float = field(default=0.9, metadata=_opt("SGD momentum"))
    round_timeout: float = field(
        default=120.0, metadata=_opt("seconds a round may last before the server stops waiting")
    )
    secagg: str = field(default="off", metadata=_opt("secure aggregation", choices=SECAGG_MODES))
    secagg_threshold: int | None = field(
        default=None, metadata=_opt("shares needed to rebuild a secret (default: a majority of the holders)")
    )
    secagg_neighbors: int | None = field(
        default=None, metadata=_opt("SecAgg+ graph degree k (default: about log2 of the clients)")
    )
    secagg_min_coverage: int = field(
        default=3,
        metadata=_opt(
            "a pruning client withholds from the secure sum what fewer than this many clients' plans "
            "cover (1: off)"
        ),
    )
    clip_range: float = field(
        default=1.0, metadata=_opt("secure aggregation clips each delta coordinate to [-c, c]")
    )
    secagg_trust_server: bool = field(
        default=False,
        metadata=_opt(
            "run secure aggregation without identities: the server is TRUSTED not to substitute keys"
        ),
    )
    roster: str | None = field(
        default=None, metadata=_opt("secure aggregation: the operator-signed roster (python -m clipfl.keys)")
    )
    operator_key: str | None = field(
        default=None, metadata=_opt("secure aggregation: the operator's public key that signed the roster")
    )
    unmask_timeout: float = field(
        default=30.0, metadata=_opt("seconds the unmasking stage of secure aggregation may last")
    )
    eval_overlap: bool = field(
        default=False,
        metadata=_opt(
            "the server tests each round's model while the next round trains: the test leaves the "
            "rounds' critical path, and a round's time ends when its model is ready"
        ),
    )
    mitigation: str = field(default="none", metadata=_opt("straggler mitigation", choices=MITIGATIONS))
    straggler_fraction: float = field(
        default=DEFAULT_STRAGGLER_FRACTION,
        metadata=_opt("fraction f of clients treated as stragglers (deadline = the 1-f quantile)"),
    )
    min_keep_ratio: float = field(
        default=DEFAULT_MIN_KEEP_RATIO, metadata=_opt("smallest keep ratio a straggler may choose")
    )
    weighting: str = field(
        default="samples",
        metadata=_opt("a client's weight in the average: its sample count, or 1", choices=WEIGHTINGS),
    )
    max_weight: int = field(
        default=100_000,
        metadata=_opt("largest sample count a client may claim; larger claims are refused at registration"),
    )
    aggregation: str = field(
        default="coverage",
        metadata=_opt(
            "average each unit over its trainers, or zero-pad as CLIP published",
            choices=("coverage", "zero-pad"),
        ),
    )
    registration_timeout: float = field(
        default=120.0, metadata=_opt("seconds to wait for all clients to register")
    )
    preset: str | None = field(
        default=None, metadata=_opt("a workload preset (cifar10, femnist, shakespeare); flags override it")
    )
    target_accuracy: float | None = field(
        default=None, metadata=_opt("test accuracy that time-to-accuracy is measured against")
    )
    pick: str = field(
        default="largest",
        metadata=_opt(
            "natural partition: the largest writers/roles or a seeded sample", choices=("largest", "sample")
        ),
    )
    min_samples: int = field(default=10, metadata=_opt("fewest train samples a client may be given"))
    max_client_samples: int | None = field(
        default=None,
        metadata=_opt("cap on a client's local samples, its train and its own test split (seeded subsets)"),
    )
    max_test_samples: int | None = field(
        default=None, metadata=_opt("cap on the server's test samples (a seeded subset)")
    )

    def __post_init__(self) -> None:
        _positive(self, "clients", "rounds", "local_epochs", "batch_size")
        _positive(
            self, "lr", "alpha", "round_timeout", "registration_timeout", "clip_range", "unmask_timeout"
        )
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise ConfigError(f"target-accuracy must be in (0, 1], got {self.target_accuracy}")
        if self.min_samples < 1:
            raise ConfigError(f"min-samples must be >= 1, got {self.min_samples}")
        for name in ("max_client_samples", "max_test_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 1, got {value}")
        _choices(self)
        try:  # the settings that cross the wire validate themselves, once, in their constructors
            self.run_settings()
            self.train_settings()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def secagg_config(self) -> SecAggConfig | None:
        """Secure aggregation as configured here, or None for ``--secagg off``."""
        if self.secagg == "off":
            return None
        return SecAggConfig(
            mode="secagg" if self.secagg == "secagg" else "secagg+",
            threshold=self.secagg_threshold,
            neighbors=self.secagg_neighbors if self.secagg == "secagg+" else None,
            min_coverage=self.secagg_min_coverage,
            clip_range=self.clip_range,
            max_weight=float(self.max_weight),
        )

    def run_settings(self) -> RunSettings:
        """What every client must know of this run (``Welcome``)."""
        return RunSettings(
            model=self.model_name,
            rounds=self.rounds,
            mitigation=typing.cast(typing.Any, self.mitigation),
            straggler_fraction=self.straggler_fraction,
            min_keep_ratio=self.min_keep_ratio,
            weighting=typing.cast(typing.Any, self.weighting),
            max_weight=self.max_weight,
            secagg=self.secagg_config(),
        )

    def train_settings(self) -> TrainSettings:
        return TrainSettings(
            epochs=self.local_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
        )

    @property
    def model_name(self) -> str:
        return self.model or DEFAULT_MODELS.get(self.dataset, "digits_cnn")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """What one client process needs besides the federation's data settings."""

    client_id: int = field(default=0, metadata=_opt("this client's id, 0 .. clients-1"))
    identity: str | None = field(
        default=None, metadata=_opt("secure aggregation: this client's identity key (identity-ID.secret)")
    )
    server: str = field(default="tcp://127.0.0.1:7700", metadata=_opt("the server's address"))
    run_dir: str | None = field(default=None, metadata=_opt("where to write client-<id>.jsonl"))
    threads: int = field(default=1, metadata=_opt("torch threads for local training"))
    slowdown: float = field(default=1.0, metadata=_opt("emulated compute slowdown factor (>= 1)"))
    connect_timeout: float = field(
        default=60.0, metadata=_opt("seconds to keep retrying the server before giving up")
    )
    heartbeat_timeout: float = field(
        default=10.0, metadata=_opt("seconds of server silence before reconnecting")
    )
    upload_rate: str | None = field(default=None, metadata=_opt("upload cap, tc units (e.g. 2mbit)"))
    download_rate: str | None = field(default=None, metadata=_opt("download cap, tc units (e.g. 10mbit)"))
    shape: str = field(
        default="app",
        metadata=_opt(
            "how caps are applied: tc (Linux qdiscs, root, own namespace) or app (token bucket)",
            choices=("tc", "app"),
        ),
    )

    def __post_init__(self) -> None:
        _choices(self)
        if self.client_id < 0:
            raise ConfigError(f"client-id must be >= 0, got {self.client_id}")
        _positive(self, "threads", "connect_timeout", "heartbeat_timeout")
        if self.slowdown < 1:
            raise ConfigError(
                f"slowdown must be >= 1 (a factor on the measured fit time), got {self.slowdown}"
            )


def _positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise ConfigError(f"{name.replace('_', '-')} must be positive, got {value}")


def _choices(obj: object) -> None:
    """Every field with a list of choices holds one of them (a flag's are checked by argparse, a config
    file's or a scenario's only here: an unknown word must not fall through to some default)."""
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        allowed = f.metadata.get("choices")
        value = getattr(obj, f.name)
        if allowed and value is not None and value not in allowed:
            raise ConfigError(
                f"{f.name.replace('_', '-')} must be one of {', '.join(allowed)}; got {value!r}"
            )


# --------------------------------------------------------------------------------------------- flags


def _scalar(tp: Any) -> type:
    """The scalar type behind ``X`` or ``X | None``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return typing.cast(type, inner)
    return typing.cast(type, tp)


def add_flags(parser: argparse.ArgumentParser, cls: type, *, title: str | None = None) -> None:
    """Add one ``--flag`` per field of dataclass ``cls``; defaults stay unset (None) to detect use."""
    group = parser.add_argument_group(title or cls.__name__)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("flag", True):
            continue
        kind = _scalar(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        if kind is bool:  # --name / --no-name; unset stays None, so TOML and defaults still apply
            group.add_argument(
                "--" + f.name.replace("_", "-"),
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{meta.get('help', '')} (default: {'on' if default else 'off'})",
            )
            continue
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=kind,
            default=None,
            choices=meta.get("choices"),
            metavar=None if meta.get("choices") else kind.__name__.upper(),
            help=f"{meta.get('help', '')} (default: {default})",
        )


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML configuration file; keys are field names (``local_epochs`` or ``local-epochs``)."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    return {k.replace("-", "_"): v for k, v in data.items()}


def config_from_flags(cls: type[C], args: argparse.Namespace, base: Mapping[str, Any] | None = None) -> C:
    """Build ``cls`` from a TOML mapping ``base`` overridden by the flags that were given."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in (base or {}).items() if k in names}
    values.update({n: getattr(args, n) for n in names if getattr(args, n, None) is not None})
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        kind = _scalar(hints[name])
        if value is not None and not isinstance(value, kind):
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                values[name] = float(value)
            else:
                raise ConfigError(f"{name.replace('_', '-')} must be a {kind.__name__}, got {value!r}")
    return cls(**values)


def run_config(args: argparse.Namespace, base: Mapping[str, Any] | None = None) -> RunConfig:
    """``RunConfig`` from, in rising order of precedence: the preset, the TOML mapping, the flags."""
    base = dict(base or {})
    preset_name = getattr(args, "preset", None) or base.get("preset")
    if preset_name:
        from clipfl.presets import get_preset

        preset = get_preset(str(preset_name))
        names = {f.name for f in dataclasses.fields(RunConfig)}
        defaults = {k: v for k, v in dataclasses.asdict(preset).items() if k in names and k != "name"}
        base = {**defaults, **base, "preset": preset.name}
    return config_from_flags(RunConfig, args, base)


def unknown_keys(mapping: Mapping[str, Any], *classes: type) -> list[str]:
    """Keys of ``mapping`` that no field of ``classes`` takes."""
    known = {f.name for cls in classes for f in dataclasses.fields(cls)}
    return sorted(k for k in mapping if k not in known)
