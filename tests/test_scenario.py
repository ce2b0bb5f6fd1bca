"""Benchmark scenarios (issue 6, item 2): the shipped files parse at both sizes and describe what the
issue asks (20 clients with 4 stragglers for the paper workloads; 6 for the 2-minute digits-quick); a bad file
fails with one ``ConfigError`` line that names the scenario and the key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.scenario import (
    FEDERATION_KEYS,
    STRATEGIES,
    available_scenarios,
    load_scenario,
    parse_scenario,
)
from clipfl.errors import ConfigError

PAPER = ("paper-cifar10", "paper-femnist", "paper-shakespeare")


def minimal() -> dict[str, Any]:
    return {
        "target_accuracy": 0.8,
        "federation": {"dataset": "digits", "clients": 10, "rounds": 5},
        "devices": {"slowdown": 5.0},
        "stragglers": {"count": 2, "slowdown": 4.0},
    }


def test_every_issue_scenario_is_shipped() -> None:
    assert {"digits-quick", *PAPER} <= set(available_scenarios())


@pytest.mark.parametrize("name", ["digits-quick", *PAPER])
@pytest.mark.parametrize("quick", [False, True])
def test_shipped_scenarios_parse(name: str, quick: bool) -> None:
    s = load_scenario(name, quick=quick)
    assert s.name == name and s.quick is quick
    assert s.warmup_rounds < s.rounds
    assert s.stragglers.count >= 1
    assert s.devices.slowdown >= s.clients / 2, "base slowdown below clients per core on 2 cores"
    assert s.strategies == STRATEGIES


@pytest.mark.parametrize("name", PAPER)
def test_paper_scenarios_have_20_clients_4_mixed_stragglers(name: str) -> None:
    s = load_scenario(name)
    assert s.clients == 20 and s.stragglers.count == 4
    assert s.stragglers.ids == (3, 7) and s.stragglers.network_ids == (11, 15), "mixed: compute and network"
    assert s.stragglers.all_ids == (3, 7, 11, 15)
    assert s.stragglers.slowdown > 1 and s.stragglers.has_network
    assert s.secagg != "off"
    quick = load_scenario(name, quick=True)
    assert quick.rounds < s.rounds and quick.seeds == 1
    assert quick.stragglers.all_ids is not None and max(quick.stragglers.all_ids) < quick.clients


def test_digits_quick_is_six_clients_one_straggler() -> None:
    s = load_scenario("digits-quick")
    assert (s.clients, s.stragglers.count) == (6, 1)


def test_preset_target_is_the_default(tmp_path: Path) -> None:
    from clipfl.presets import get_preset

    data = minimal()
    del data["target_accuracy"]
    data["federation"] = {"preset": "femnist", "clients": 20, "rounds": 3}
    assert parse_scenario(data, "x").target_accuracy == get_preset("femnist").target_accuracy


def test_quick_merges_tables_key_by_key() -> None:
    data = minimal()
    data["quick"] = {"seeds": 1, "federation": {"rounds": 3}, "stragglers": {"slowdown": 2.0}}
    data["seeds"] = 4
    full, quick = parse_scenario(data, "m"), parse_scenario(data, "m", quick=True)
    assert (full.rounds, full.seeds, full.stragglers.slowdown) == (5, 4, 4.0)
    assert (quick.rounds, quick.seeds, quick.stragglers.slowdown) == (3, 1, 2.0)
    assert dict(quick.federation)["dataset"] == "digits" and quick.stragglers.count == 2


def test_federation_keeps_file_order_for_the_launcher() -> None:
    s = parse_scenario(minimal(), "m")
    assert s.federation == (("dataset", "digits"), ("clients", 10), ("rounds", 5))


def test_federation_keys_follow_the_launcher_and_exclude_harness_keys() -> None:
    assert {"preset", "clients", "rounds", "max_client_samples", "heartbeat_timeout"} <= FEDERATION_KEYS
    assert not {"seed", "mitigation", "secagg", "target_accuracy", "slowdown", "shape"} & FEDERATION_KEYS


def _set(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    *tables, key = path.split(".")
    node = data
    for t in tables:
        node = node.setdefault(t, {})
    if value is _DELETE:
        del node[key]
    else:
        node[key] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        ("bogus", 1, "unknown key 'bogus'"),
        ("federation", _DELETE, "[federation] table is missing"),
        ("federation.dataset", _DELETE, "needs a preset or a dataset"),
        ("federation.clients", _DELETE, "federation.clients is required"),
        ("federation.clients", 1, "federation.clients must be >= 2"),
        ("federation.rounds", "five", "federation.rounds must be an integer"),
        ("federation.rounds", 2.5, "federation.rounds must be an integer"),
        ("federation.lr", [0.1], "federation.lr must be a string or a number"),
        ("federation.lr", True, "federation.lr is not a switch"),
        ("federation.seed", 3, "federation.seed is set by the harness; use seeds"),
        ("federation.mitigation", "clip", "use strategies"),
        ("federation.slowdown", 3.0, "use [devices]"),
        ("federation.colour", "red", "unknown key 'colour' in [federation]"),
        ("devices.slowdown", 0.5, "devices.slowdown must be >= 1"),
        ("devices.slowdown", True, "devices.slowdown must be a number"),
        ("devices.upload_rate", "fast", "devices.upload_rate: bad rate 'fast'"),
        ("devices.cores", 2, "unknown key 'cores' in [devices]"),
        ("stragglers.count", 10, "leaves nobody fast"),
        ("stragglers.count", -1, "stragglers.count must be >= 0"),
        ("stragglers.ids", [1, 2], "takes ids or count, not both"),
        ("stragglers.slowdown", 1.0, "neither slower"),
        ("stragglers.download_rate", "10 furlongs", "stragglers.download_rate: bad rate"),
        ("target_accuracy", _DELETE, "target_accuracy is required"),
        ("target_accuracy", 1.5, "target_accuracy must be in (0, 1]"),
        ("target_accuracy", 0, "target_accuracy must be in (0, 1]"),
        ("warmup_rounds", 5, "warmup_rounds (5) must be fewer than federation.rounds (5)"),
        ("seeds", 0, "seeds must be >= 1"),
        ("run_timeout", 0, "run_timeout must be >= 1"),
        ("secagg", "maybe", "secagg must be one of off, secagg, secagg+"),
        ("strategies", ["none", "magic"], "unknown strategy 'magic'"),
        ("strategies", [], "strategies must be a non-empty list"),
        ("strategies", ["clip", "clip"], "duplicates"),
        ("description", 3, "description must be a string"),
        ("quick.federation.rounds", 0, "federation.rounds must be >= 1"),
        ("quick.quick", {}, "unknown key 'quick' in [quick]"),
    ],
)
def test_bad_scenarios_raise_one_line_config_errors(path: str, value: Any, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_scenario(_set(minimal(), path, value), "bad")
    message = str(info.value)
    assert message.startswith("scenario bad: ") and words in message
    assert "\n" not in message


def test_bad_straggler_ids() -> None:
    base = _set(minimal(), "stragglers.count", _DELETE)
    for ids, words in [
        ([1, 10], "must lie in 0..9"),
        ([-1], "must lie in 0..9"),
        ([2, 2], "duplicates"),
        ("1,2", "list of client ids"),
        ([True], "list of client ids"),
    ]:
        with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
            parse_scenario(_set(base, "stragglers.ids", ids), "bad")


def test_unknown_preset_names_the_key() -> None:
    data = _set(minimal(), "target_accuracy", _DELETE)
    data["federation"] = {"preset": "mnist", "clients": 4, "rounds": 3}
    with pytest.raises(ConfigError, match=r"federation\.preset: unknown preset 'mnist'"):
        parse_scenario(data, "bad")


def test_load_by_path_and_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "mine.toml"
    good.write_text('target_accuracy = 0.5\n[federation]\ndataset = "digits"\nclients = 4\nrounds = 3\n')
    assert load_scenario(good).name == "mine"
    broken = tmp_path / "broken.toml"
    broken.write_text("target_accuracy = \n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_scenario(broken)
    with pytest.raises(ConfigError, match="does not exist"):
        load_scenario(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match=r"unknown scenario 'nope'; shipped: .*digits-quick"):
        load_scenario("nope")


def test_overrides() -> None:
    s = parse_scenario(minimal(), "m")
    assert s.with_rounds(3).rounds == 3 and s.with_seeds(4).seeds == 4
    with pytest.raises(ConfigError, match="must exceed warmup_rounds"):
        s.with_rounds(1)
    with pytest.raises(ConfigError, match="seeds must be >= 1"):
        s.with_seeds(0)


@given(
    clients=st.integers(2, 40),
    data=st.data(),
    slowdown=st.floats(1.0, 50.0),
    rounds=st.integers(2, 100),
)
def test_any_valid_straggler_choice_parses_sorted(
    clients: int, data: st.DataObject, slowdown: float, rounds: int
) -> None:
    ids = data.draw(st.lists(st.integers(0, clients - 1), unique=True, max_size=clients - 1))
    raw = {
        "target_accuracy": 0.5,
        "federation": {"dataset": "digits", "clients": clients, "rounds": rounds},
        "devices": {"slowdown": slowdown},
        "stragglers": {"ids": ids, "slowdown": 2.0},
    }
    s = parse_scenario(raw, "h")
    assert s.stragglers.ids == tuple(sorted(ids)) and s.stragglers.count == len(ids)
    assert s.devices.slowdown == slowdown and s.clients == clients and s.rounds == rounds
