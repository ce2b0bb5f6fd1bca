"""The launcher's device profiles: which clients straggle, and how."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipfl.config import RunConfig
from clipfl.errors import ConfigError
from clipfl.launch import LaunchOptions, config_flags


def test_seeded_stragglers_are_deterministic_and_counted() -> None:
    config = RunConfig(clients=10, seed=4)
    options = LaunchOptions(run_dir=Path("x"), stragglers=3, straggler_slowdown=4, slowdown=2)
    slow = options.straggler_set(config)
    assert len(slow) == 3 and slow == options.straggler_set(config)
    assert options.slowdowns(config) == [8.0 if i in slow else 2.0 for i in range(10)]


def test_explicit_straggler_ids_and_their_links() -> None:
    config = RunConfig(clients=4)
    options = LaunchOptions(
        run_dir=Path("x"),
        straggler_ids=(1, 3),
        upload_rate="20mbit",
        straggler_upload_rate="2mbit",
        straggler_download_rate="5mbit",
    )
    assert options.straggler_set(config) == {1, 3}
    assert options.links(config) == [
        ("20mbit", None),
        ("2mbit", "5mbit"),
        ("20mbit", None),
        ("2mbit", "5mbit"),
    ]


@pytest.mark.parametrize(
    "kwargs", [{"stragglers": -1}, {"straggler_slowdown": 0.5}, {"upload_rate": "fast"}, {"shape": "magic"}]
)
def test_impossible_options_are_refused(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        LaunchOptions(run_dir=Path("x"), **kwargs)


def test_straggler_ids_outside_the_federation_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"outside 0\.\.3"):
        LaunchOptions(run_dir=Path("x"), straggler_ids=(4,)).straggler_set(RunConfig(clients=4))


def test_config_flags_reproduce_the_config() -> None:
    import argparse

    from clipfl.config import add_flags, run_config

    config = RunConfig(clients=3, rounds=7, lr=0.1, secagg="secagg+", target_accuracy=0.8)
    parser = argparse.ArgumentParser()
    add_flags(parser, RunConfig)
    assert run_config(parser.parse_args(config_flags(config))) == config


def test_a_preset_fills_in_and_flags_override() -> None:
    import argparse

    from clipfl.config import add_flags, run_config

    parser = argparse.ArgumentParser()
    add_flags(parser, RunConfig)
    config = run_config(parser.parse_args(["--preset", "femnist", "--rounds", "3"]))
    assert (config.dataset, config.model_name, config.partition, config.rounds) == (
        "femnist",
        "femnist_cnn",
        "natural",
        3,
    )
    with pytest.raises(ConfigError, match="unknown preset"):
        run_config(parser.parse_args(["--preset", "imagenet"]))


def test_a_mixed_fleet_caps_other_clients_than_it_slows() -> None:
    config = RunConfig(clients=5)
    options = LaunchOptions(
        run_dir=Path("x"),
        straggler_ids=(1,),
        network_straggler_ids=(3,),
        slowdown=2,
        straggler_slowdown=3,
        straggler_upload_rate="1mbit",
    )
    assert options.slowdowns(config) == [2.0, 6.0, 2.0, 2.0, 2.0]
    assert options.links(config) == [(None, None)] * 3 + [("1mbit", None), (None, None)]
