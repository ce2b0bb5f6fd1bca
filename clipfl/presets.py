"""The paper's three workloads as ready-made settings: ``--preset cifar10|femnist|shakespeare``.

Each preset fixes the data, the model, the partition and local training so that a 20-client
federation *converges on a 2-core CPU machine in tens of minutes*, and names the test accuracy that
time-to-accuracy is measured against. The figures behind each choice (seconds per local epoch,
centralized sanity accuracy) come from ``python -m clipfl.models.sanity --preset NAME`` and are in
the comments. The paper trains on GPUs for hundreds of rounds; where a preset departs from it, the
comment says so and why.

``max_client_samples`` and ``max_test_samples`` cap a client's local data and the server's test set
by a seeded subset (``clipfl.data.subsample``): without them one Shakespeare client with 68,000
windows would take 80 s per local epoch and one evaluation of the 284,498 test windows over a minute.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from clipfl.errors import ConfigError

__all__ = ["PRESETS", "Preset", "get_preset"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Preset:
    """One workload: dataset, model, partition, local training, rounds and the accuracy to reach."""

    name: str
    dataset: str
    model: str
    partition: str
    clients: int = 20
    local_epochs: int = 1
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    rounds: int = 50
    target_accuracy: float = 0.5
    alpha: float = 0.5
    pick: str = "largest"
    max_client_samples: int | None = None
    max_test_samples: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.target_accuracy <= 1:
            raise ConfigError(
                f"preset {self.name}: target_accuracy must be in (0, 1], got {self.target_accuracy}"
            )
        if self.clients < 1 or self.rounds < 1 or self.local_epochs < 1 or self.batch_size < 1:
            raise ConfigError(
                f"preset {self.name}: clients, rounds, local_epochs and batch_size must be positive"
            )


PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        "cifar10": Preset(
            name="cifar10",
            dataset="cifar10",
            model="vgg9",  # the paper's model for CIFAR-10 (1,469,994 parameters)
            partition="iid",  # label skew slows VGG-9 convergence several-fold; IID keeps the run short
            clients=20,  # the paper's federation size
            local_epochs=1,  # one pass over 1,000 samples: ~2.6 s per client on one core
            batch_size=32,
            optimizer="sgd",
            lr=0.02,  # SGD + momentum 0.9; 0.05 diverges in the first rounds without BatchNorm
            momentum=0.9,
            rounds=60,
            target_accuracy=0.5,  # reached well before the end with this budget; the lossy JPEGs cost ~1 point
            max_client_samples=1000,  # 20 x 1,000 = 20,000 images per round: ~30 s rounds on 2 cores
            max_test_samples=2000,  # evaluation under 5 s per round
        ),
        "femnist": Preset(
            name="femnist",
            dataset="femnist",
            model="femnist_cnn",  # LEAF's CNN shape as CLIP uses it (410,022 parameters)
            partition="natural",  # one writer per client: FEMNIST's point is its natural non-IID split
            clients=20,
            pick="largest",  # the 20 writers with most samples (162-320 each), a fixed choice
            local_epochs=2,  # each writer has only ~200 samples: two passes make a round worth sending
            batch_size=16,  # ~12 steps per epoch per writer
            optimizer="sgd",
            lr=0.03,
            momentum=0.9,
            rounds=60,
            target_accuracy=0.65,  # test set covers all 300 writers, most unseen in training
            max_client_samples=None,
            max_test_samples=None,  # 4,755 test images evaluate in about a second
        ),
        "shakespeare": Preset(
            name="shakespeare",
            dataset="shakespeare",
            model="shakespeare_lstm",  # LEAF's and CLIP's LSTM (213,849 parameters)
            partition="natural",  # one play-and-role per client
            clients=20,
            pick="largest",  # roles with the most text; capped below so every client has similar work
            local_epochs=1,
            batch_size=32,
            optimizer="sgd",
            lr=1.0,  # LEAF trains this LSTM with plain SGD at lr 0.8; see momentum
            momentum=0.0,  # momentum 0.9 with lr ~1 diverges; plain SGD as in LEAF
            rounds=40,
            target_accuracy=0.4,  # LEAF reports ~0.5 after thousands of steps; 0.4 is reached in tens of rounds
            max_client_samples=2000,  # 2,000 windows: ~2.5 s per local epoch on one core
            max_test_samples=4000,  # a fixed 4,000-window subset of the 284,498: ~2 s per evaluation
        ),
    }
)


def get_preset(name: str) -> Preset:
    """The preset ``name``, or a ``ConfigError`` listing the presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}") from None
