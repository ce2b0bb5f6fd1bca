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
            partition="iid",  # label skew slows VGG-9 several-fold; IID keeps a CPU run in tens of minutes
            clients=20,  # the paper's federation size
            local_epochs=2,  # 2 x 1,000 images: ~5 s per client per round on one core, 63 local steps
            batch_size=32,
            optimizer="sgd",
            lr=0.02,  # with momentum 0.9; 0.05 stays at chance for epochs (VGG-9 has no BatchNorm)
            momentum=0.9,
            rounds=40,  # ~50 s rounds on 2 cores (20 clients x 5 s / 2): about half an hour
            target_accuracy=0.45,  # an estimate from centralized runs, not yet from a federated one
            max_client_samples=1000,  # 20 x 1,000 = 20,000 of the 50,000 images per round
            max_test_samples=2000,  # a fixed 2,000-image test subset: evaluation in a few seconds
        ),
        "femnist": Preset(
            name="femnist",
            dataset="femnist",
            model="femnist_cnn",  # LEAF's CNN shape as CLIP uses it (410,022 parameters)
            partition="natural",  # one writer per client: FEMNIST's point is its natural non-IID split
            clients=20,
            pick="largest",  # the 20 writers with most samples (162-320 each): a fixed choice
            local_epochs=2,  # a writer has ~180 samples; two passes make a round's update worth sending
            batch_size=16,  # ~11 steps per pass per writer
            optimizer="sgd",
            lr=0.01,  # with momentum 0.9; centrally 0.01/16 peaked at 73 %, 0.03/32 oscillated more
            momentum=0.9,
            rounds=60,  # rounds take ~1 s of compute per client: the run is dominated by protocol cost
            target_accuracy=0.65,  # the test set holds all 300 writers, 280 of them unseen in training
            max_client_samples=None,
            max_test_samples=None,  # 4,755 test images evaluate in about a second
        ),
        "shakespeare": Preset(
            name="shakespeare",
            dataset="shakespeare",
            model="shakespeare_lstm",  # LEAF's and CLIP's LSTM (213,849 parameters)
            partition="natural",  # one play-and-role per client
            clients=20,
            pick="largest",  # the roles with the most text; capped below so every client has similar work
            local_epochs=1,
            batch_size=32,
            optimizer="sgd",
            lr=1.0,  # plain SGD as in LEAF (lr 0.8); centrally 10,000 windows x 4 epochs reach 35 %
            momentum=0.0,  # momentum with a learning rate near 1 is unstable for this LSTM
            rounds=50,  # ~25 s rounds on 2 cores (20 clients x 2.5 s / 2)
            target_accuracy=0.35,  # LEAF reports ~50 % after far longer training
            max_client_samples=2000,  # 2,000 windows: ~2.5 s per local epoch on one core
            max_test_samples=4000,  # a fixed 4,000-window subset of the 284,498: seconds per evaluation
        ),
    }
)


def get_preset(name: str) -> Preset:
    """The preset ``name``, or a ``ConfigError`` listing the presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}") from None
