"""The simulator (issue 11): the live round engine on a virtual clock, with real training and real
secure aggregation. Small digits federations of a few clients and 2-3 rounds; every time asserted is
virtual, so the assertions are exact facts, not measurements of this machine."""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import harness
from benchmarks.scenario import parse_scenario
from benchmarks.simulated import run_config_of, scenario_fleet
from clipfl import RunConfig, federation_data
from clipfl.clip.flops import forward_macs
from clipfl.data import load_dataset
from clipfl.errors import ConfigError
from clipfl.messages import Receipt, RoundStart
from clipfl.models import build_model
from clipfl.rundir import RunDir, read_jsonl
from clipfl.secagg import FixedPoint
from clipfl.sim import DeviceProfile, load_cost_model, simulate, straggler_fleet
from clipfl.sim.devices import choose_stragglers, drawn_fleet
from clipfl.sim.events import EventQueue
from clipfl.sim.federation import Federation, SimulationError
from clipfl.sim.network import message_nbytes

COSTS = load_cost_model()
SPEED = COSTS.train_speed("digits_cnn")


def _config(**kw: object) -> RunConfig:
    values: dict[str, object] = {"clients": 4, "rounds": 3, "local_epochs": 1, "seed": 1}
    values.update(kw)
    return RunConfig(**values)  # type: ignore[arg-type]


def test_the_simulator_never_imports_asyncio_zmq_or_a_clock() -> None:
    """DESIGN.md section 1: the simulation layer knows no asyncio, no zmq, no real clock."""
    root = Path(__file__).resolve().parents[1] / "clipfl" / "sim"
    for path in sorted(root.glob("*.py")):
        if path.name == "calibrate.py":  # measures this machine: it must read a clock
            continue
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {
            n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
        }
        assert not names & {"asyncio", "zmq", "time", "datetime"}, path.name


def test_events_at_one_instant_run_in_the_order_they_were_scheduled() -> None:
    from clipfl.sim.events import ClientReady

    queue = EventQueue()
    for i in (3, 1, 2):
        queue.push(1.0, ClientReady(i))
    queue.push(0.5, ClientReady(9))
    assert [queue.pop()[1].client_id for _ in range(4)] == [9, 3, 1, 2]  # type: ignore[union-attr]


def test_same_scenario_and_seed_give_a_byte_identical_results_json(tmp_path: Path) -> None:
    toml = tmp_path / "tiny.toml"
    toml.write_text(
        'target_accuracy = 0.5\nsecagg = "secagg"\nstrategies = ["none", "clip"]\n'
        '[federation]\ndataset = "digits"\nclients = 4\nrounds = 3\nlocal_epochs = 1\n'
        "[devices]\nslowdown = 4.0\n[stragglers]\nids = [2]\nslowdown = 3.0\n"
    )
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert harness.main(["--scenario", str(toml), "--engine", "sim", "--out", str(out)]) == 0
    first, second = ((o / "results.json").read_bytes() for o in outs)
    assert first == second
    assert b'"engine": "sim"' in first
    for name in ("report.md", "accuracy_vs_time.png", "timing.json"):
        assert (outs[0] / name).exists()
    run = outs[0] / "runs" / "seed-0" / "clip"
    for name in ("metrics.jsonl", "client-0.jsonl", "summary.json", "config.json", "simulation.json"):
        assert (run / name).exists(), name


def _three_digit_clients(tmp_path: Path, *, rounds: int) -> Path:
    """A benchmark scenario of three digits clients in the clear, client 2 a 3x straggler."""
    toml = tmp_path / "three.toml"
    toml.write_text(
        'target_accuracy = 0.5\nsecagg = "off"\n'
        f'[federation]\ndataset = "digits"\nclients = 3\nrounds = {rounds}\nlocal_epochs = 1\n'
        "[devices]\nslowdown = 2.0\n[stragglers]\nids = [2]\nslowdown = 3.0\n"
    )
    return toml


def test_benchmarks_over_disjoint_strategies_share_one_timing_file(tmp_path: Path) -> None:
    """Two invocations, each running part of the strategies into one --out (two cores, two processes),
    then a resuming one: timing.json keeps every run's wall time, none overwritten by the other."""
    toml = _three_digit_clients(tmp_path, rounds=2)
    out = tmp_path / "out"
    for strategies in ("none", "clip", "none,clip"):
        argv = ["--scenario", str(toml), "--strategies", strategies, "--out", str(out)]
        assert harness.main([*argv, "--resume"] if "," in strategies else argv) == 0
        walls = harness.recorded_wall_seconds(out)
        assert set(walls) >= {(0, s) for s in strategies.split(",")}
    assert set(walls) == {(0, "none"), (0, "clip")} and all(w > 0 for w in walls.values())


def test_an_interrupted_benchmark_keeps_the_wall_time_of_each_run_it_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """timing.json is written as each run ends, not when the benchmark does: a benchmark killed during
    its second run (SIGKILL, no cleanup) has already recorded the first."""
    toml = _three_digit_clients(tmp_path, rounds=2)
    real = harness.run_simulated
    calls = []
    out = tmp_path / "out"
    on_disk_when_the_second_started = {}

    async def second_is_interrupted(plan: harness.RunPlan, *args: object) -> harness.RunOutcome:
        calls.append(plan.strategy)
        if len(calls) == 2:
            on_disk_when_the_second_started.update(harness.recorded_wall_seconds(out))
            raise KeyboardInterrupt
        return await real(plan, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(harness, "run_simulated", second_is_interrupted)
    assert harness.main(["--scenario", str(toml), "--strategies", "none,clip", "--out", str(out)]) == 130
    assert calls == ["none", "clip"]
    assert list(on_disk_when_the_second_started) == [(0, "none")]
    assert harness.recorded_wall_seconds(out) == on_disk_when_the_second_started
    assert on_disk_when_the_second_started[(0, "none")] > 0


@pytest.mark.timeout(180)
def test_ctrl_c_stops_a_simulated_benchmark_at_the_next_round_not_at_the_end_of_the_run(
    tmp_path: Path,
) -> None:
    """SIGINT during a long simulated run: the benchmark exits 130 within a round, leaving that run
    unfinished (no summary.json, fewer rounds than planned) for a resumed benchmark to make again."""
    toml = _three_digit_clients(tmp_path, rounds=2000)
    out = tmp_path / "out"
    argv = ["--scenario", str(toml), "--strategies", "none", "--out", str(out)]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.harness", *argv], cwd=root, stderr=subprocess.DEVNULL
    )
    metrics = out / "runs" / "seed-0" / "none" / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 120
        while not (metrics.exists() and read_jsonl(metrics)):
            assert proc.poll() is None and time.monotonic() < deadline, "the run never got going"
            time.sleep(0.05)  # a test's bounded wait for the first round's record
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert 1 <= len(read_jsonl(metrics)) < 2000
    assert not (metrics.parent / "summary.json").exists()


def test_a_resumed_benchmark_refuses_a_run_made_with_other_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kept run must be the run the benchmark would make now: one made with fewer samples or slower
    devices is refused in one line before anything runs, never mixed into the table."""
    toml = tmp_path / "tiny.toml"
    body = (
        'target_accuracy = 0.5\nsecagg = "off"\n'
        '[federation]\ndataset = "digits"\nclients = 3\nrounds = 2\nlocal_epochs = 1\n{extra}'
        "[devices]\nslowdown = {slowdown}\n[stragglers]\nids = [2]\nslowdown = 3.0\n"
    )
    out = tmp_path / "out"
    argv = ["--scenario", str(toml), "--strategies", "none", "--out", str(out)]
    toml.write_text(body.format(extra="", slowdown=2.0))
    assert harness.main(argv) == 0
    assert harness.main([*argv, "--resume"]) == 0  # the same settings: kept
    assert "kept from an earlier run" in capsys.readouterr().out
    before = (out / "runs" / "seed-0" / "none" / "metrics.jsonl").read_bytes()
    for extra, slowdown, says in [
        ("max_client_samples = 50\n", 2.0, "config.max_client_samples was None, this benchmark's is 50"),
        ("", 4.0, "devices.0.macs_per_second was"),
    ]:
        toml.write_text(body.format(extra=extra, slowdown=slowdown))
        assert harness.main([*argv, "--resume"]) == 2
        err = capsys.readouterr().err
        assert "holds a run made with other settings" in err and says in err, err
    assert (out / "runs" / "seed-0" / "none" / "metrics.jsonl").read_bytes() == before  # nothing lost


def test_a_slow_device_prunes_under_clip(tmp_path: Path) -> None:
    """DESIGN.md section 5: the client whose device is 6x slower finds itself a straggler and prunes."""
    config = _config(clients=5, mitigation="clip", secagg="secagg")
    fleet = straggler_fleet(5, base_speed=SPEED, slowdown=4.0, straggler_ids=[0], straggler_slowdown=6.0)
    simulate(config, fleet, run_dir=tmp_path, cost_model=COSTS)
    slow = read_jsonl(tmp_path / "client-0.jsonl")
    fast = read_jsonl(tmp_path / "client-1.jsonl")
    assert [row["round"] for row in slow] == [1, 2, 3]
    assert slow[-1]["straggler"] and slow[-1]["keep_ratio"] < 1.0
    assert slow[-1]["slowdown"] == pytest.approx(24.0) and fast[-1]["slowdown"] == pytest.approx(4.0)
    assert not any(row["straggler"] for row in fast)
    rounds = read_jsonl(tmp_path / "metrics.jsonl")
    assert rounds[-1]["mean_keep_ratio"] < 1.0 and rounds[-1]["round_seconds"] < rounds[0]["round_seconds"]
    # the straggler's fit is its sub-model's MACs on its device: the FLOP ratio times the full fit
    assert slow[-1]["fit_seconds"] < slow[0]["fit_seconds"]


@pytest.mark.parametrize("secagg", ["secagg", "secagg+"])
def test_under_secure_aggregation_pruning_starts_in_round_two(secagg: str, tmp_path: Path) -> None:
    """Round 1 measures; round 2's plan already holds every peer's round-1 report: the reports travel
    sealed as soon as a client's upload is receipted (in the round they describe), not with the next
    round's keys, which come after that round's plan."""
    config = _config(clients=5, mitigation="clip", secagg=secagg)
    fleet = straggler_fleet(5, base_speed=SPEED, slowdown=4.0, straggler_ids=[0], straggler_slowdown=6.0)
    simulate(config, fleet, run_dir=tmp_path, cost_model=COSTS)
    slow = read_jsonl(tmp_path / "client-0.jsonl")
    assert [row["straggler"] for row in slow] == [False, True, True]
    assert [row["keep_ratio"] < 1.0 for row in slow] == [False, True, True]


def test_a_network_stragglers_transfers_take_size_over_rate_plus_latency(tmp_path: Path) -> None:
    up, down, latency = 2e6, 8e6, 0.01
    fleet = straggler_fleet(3, base_speed=SPEED)
    fleet[1] = DeviceProfile(macs_per_second=SPEED, upload_bps=up, download_bps=down, latency_s=latency)
    simulate(_config(clients=3, rounds=2), fleet, run_dir=tmp_path, cost_model=COSTS)
    for row in read_jsonl(tmp_path / "client-1.jsonl"):
        start = message_nbytes(RoundStart(round=row["round"]))
        receipt = message_nbytes(Receipt(round=row["round"]))
        # the model follows the announcement on the same link: only its own bytes separate the two
        assert row["download_seconds"] == pytest.approx(8 * (row["bytes_down"] - start) / down)
        assert row["upload_seconds"] == pytest.approx(
            8 * row["bytes_up"] / up + 8 * receipt / down + 2 * latency
        )
    for row in read_jsonl(tmp_path / "client-0.jsonl"):  # not capped, no latency
        assert row["download_seconds"] == 0.0 and row["upload_seconds"] == 0.0


def test_a_capped_server_link_is_shared_by_every_client() -> None:
    config = _config(clients=3, rounds=1)
    shares = federation_data(config)
    fleet = straggler_fleet(3, base_speed=SPEED)
    fed = Federation(config, fleet, shares, costs=COSTS, server_bps=1e7)
    fed.run()
    model_bytes = fed.network.bytes_from_server / 3  # a round start, the model, a receipt per client
    # three copies of the model leave one after the other over the server's link
    assert fed.records[0].round_seconds > 3 * 8 * model_bytes / 1e7 * 0.9


@pytest.mark.parametrize("mode", ["secagg", "secagg+"])
def test_the_secure_sum_moves_the_model_as_the_plain_sum_does(mode: str) -> None:
    """DESIGN.md section 3: the unmasked sum is exact; only the fixed-point codec's rounding differs."""
    config = _config(clients=4, rounds=1)
    shares = federation_data(config)
    fleet = straggler_fleet(4, base_speed=SPEED, slowdown=2.0, straggler_ids=[3], straggler_slowdown=2.0)
    plain = Federation(config, fleet, shares, costs=COSTS)
    plain.run()
    secure_config = _config(clients=4, rounds=1, secagg=mode)
    secure = Federation(secure_config, fleet, federation_data(secure_config), costs=COSTS)
    secure.run()
    assert secure.records[0].participants == [0, 1, 2, 3]
    assert set(secure.records[0].stage_seconds) >= {"advertise_keys", "share_keys", "masked_input"}
    weight_sum = sum(s.num_samples for s in shares.values())
    codec = FixedPoint.for_federation(
        4, float(max(s.num_samples for s in shares.values())), config.clip_range
    )
    bound = codec.error_bound(4, stochastic=False) / weight_sum
    diff = np.abs(secure.weights.astype(np.float64) - plain.weights.astype(np.float64))
    assert 0 < diff.max() <= bound + 1e-6
    # secure aggregation's cryptography costs virtual time, charged from the cost model
    assert secure.records[0].round_seconds > plain.records[0].round_seconds


def test_an_impossible_fixed_deadline_is_reported_not_looped() -> None:
    config = _config(clients=3, rounds=5, round_timeout=0.001, local_epochs=2)
    fleet = straggler_fleet(3, base_speed=SPEED, slowdown=50.0)
    with pytest.raises(SimulationError, match=r"round 1: no update survived .* raise round_timeout") as exc:
        simulate(config, fleet, cost_model=COSTS)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"macs_per_second": 0.0}, "macs_per_second must be a finite number > 0, got 0.0"),
        ({"macs_per_second": 1e9, "upload_bps": -5.0}, "upload_bps must be a finite number > 0, got -5.0"),
        ({"macs_per_second": 1e9, "download_bps": 0}, "download_bps must be a finite number > 0, got 0"),
        ({"macs_per_second": 1e9, "latency_s": -0.1}, "latency_s must be a finite number >= 0, got -0.1"),
        ({"macs_per_second": float("inf")}, "macs_per_second must be a finite number > 0, got inf"),
    ],
)
def test_a_bad_device_profile_is_one_line_naming_the_field(kw: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        DeviceProfile(**kw)
    assert str(exc.value) == f"device profile: {message}"


def test_bad_fleets_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match=r"^4 stragglers of 4 clients leaves nobody fast to compare with$"):
        straggler_fleet(4, base_speed=SPEED, straggler_ids=[0, 1], network_ids=[2, 3])
    with pytest.raises(ConfigError, match=r"^straggler_ids: ids \[7\] are outside 0..3$"):
        straggler_fleet(4, base_speed=SPEED, straggler_ids=[7])
    with pytest.raises(ConfigError, match=r"^straggler_slowdown must be a finite number >= 1"):
        straggler_fleet(4, base_speed=SPEED, straggler_ids=[1], straggler_slowdown=0.5)
    with pytest.raises(ConfigError, match=r"^stragglers must be in 0..4 \(the number of clients\), got 5$"):
        choose_stragglers(4, 5, seed=0)
    with pytest.raises(ConfigError, match=r"^devices: expected one device profile per client id 0..3"):
        simulate(_config(), straggler_fleet(3, base_speed=SPEED), cost_model=COSTS)
    with pytest.raises(ConfigError, match=r"^device profile: median_speed must be a finite number > 0"):
        drawn_fleet(4, seed=0, median_speed=0.0)


def test_scenarios_map_to_the_live_harness_fleet() -> None:
    """The launcher's emulation, device for device: slowdowns divide this machine's speed, caps apply."""
    s = parse_scenario(
        {
            "secagg": "secagg+",
            "target_accuracy": 0.5,
            "federation": {"dataset": "digits", "clients": 6, "rounds": 3, "heartbeat_timeout": 5},
            "devices": {"slowdown": 4.0, "upload_rate": "50mbit"},
            "stragglers": {"ids": [1], "network_ids": [4], "slowdown": 3.0, "upload_rate": "2mbit"},
        },
        "unit",
    )
    config = run_config_of(s, "clip", 2)
    assert (config.seed, config.mitigation, config.secagg, config.clients) == (2, "clip", "secagg+", 6)
    assert run_config_of(s, "fluid", 0).secagg == "off" and run_config_of(s, "ideal", 0).mitigation == "none"
    fleet = scenario_fleet(s, "clip", config, COSTS)
    assert fleet[1].macs_per_second == pytest.approx(SPEED / 12) and fleet[1].upload_bps == 50e6
    assert fleet[4].macs_per_second == pytest.approx(SPEED / 4) and fleet[4].upload_bps == 2e6
    assert fleet[0].macs_per_second == pytest.approx(SPEED / 4) and fleet[0].download_bps is None
    ideal = scenario_fleet(s, "ideal", config, COSTS)
    assert {d.macs_per_second for d in ideal.values()} == {SPEED / 4}
    assert {d.upload_bps for d in ideal.values()} == {50e6}
    with pytest.raises(ConfigError, match=r"^scenario unit: unknown strategy 'magic'; known: none, "):
        parse_scenario(
            {
                "strategies": ["magic"],
                "target_accuracy": 0.5,
                "federation": {"dataset": "digits", "clients": 3, "rounds": 2},
            },
            "unit",
        )


def test_drawn_fleets_are_seeded() -> None:
    a = drawn_fleet(50, seed=3, median_speed=1e9, speed_sigma=0.5)
    assert a == drawn_fleet(50, seed=3, median_speed=1e9, speed_sigma=0.5)
    assert a != drawn_fleet(50, seed=4, median_speed=1e9, speed_sigma=0.5)
    speeds = np.array([d.macs_per_second for d in a.values()])
    assert 0.5e9 < np.median(speeds) < 2e9 and speeds.min() < speeds.max()


def test_a_simulated_run_refuses_a_used_run_directory(tmp_path: Path) -> None:
    RunDir(tmp_path).append_metrics({"round": 1})
    with pytest.raises(ConfigError, match="already holds a run"):
        simulate(_config(), straggler_fleet(4, base_speed=SPEED), run_dir=tmp_path, cost_model=COSTS)


def test_a_sim_table_draws_the_fleet_and_caps_the_server_link() -> None:
    data = {
        "target_accuracy": 0.5,
        "federation": {"dataset": "digits", "clients": 8, "rounds": 2},
        "devices": {"slowdown": 2.0},
        "sim": {
            "server_rate": "1gbit",
            "latency": 0.02,
            "fleet": "drawn",
            "speed_sigma": 0.8,
            "bandwidth": [
                {"upload_rate": "5mbit", "download_rate": "20mbit", "latency": 0.05, "weight": 1},
                {"upload_rate": "50mbit", "weight": 3},
            ],
        },
    }
    s = parse_scenario(data, "unit")
    assert s.sim.server_rate == "1gbit" and len(s.sim.bandwidth) == 2
    config = run_config_of(s, "clip", 0)
    fleet = scenario_fleet(s, "clip", config, COSTS)
    assert fleet == scenario_fleet(s, "clip", config, COSTS)  # seeded by the run's seed
    assert {d.upload_bps for d in fleet.values()} <= {5e6, 50e6}
    assert {d.latency_s for d in fleet.values()} <= {0.05, 0.02}
    assert len({d.macs_per_second for d in fleet.values()}) == 8
    ideal = scenario_fleet(s, "ideal", config, COSTS)
    assert {d.macs_per_second for d in ideal.values()} == {SPEED / 2}
    bad = {**data, "sim": {"fleet": "phones"}}
    with pytest.raises(ConfigError, match=r"^scenario unit: sim.fleet must be one of stragglers, drawn"):
        parse_scenario(bad, "unit")
    bad = {**data, "sim": {"bandwidth": [{"upload_rate": "-3mbit"}], "fleet": "drawn"}}
    with pytest.raises(ConfigError, match=r"^scenario unit: sim.bandwidth\[0\].upload_rate: bad rate"):
        parse_scenario(bad, "unit")


def test_live_refuses_a_drawn_fleet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = tmp_path / "drawn.toml"
    toml.write_text(
        'target_accuracy = 0.5\n[federation]\ndataset = "digits"\nclients = 3\nrounds = 2\n'
        '[sim]\nfleet = "drawn"\n'
    )
    assert harness.main(["--scenario", str(toml), "--engine", "live", "--out", str(tmp_path / "o")]) == 2
    assert "has no live emulation; use --engine sim" in capsys.readouterr().err


def test_a_protocol_only_run_trains_nothing_but_runs_secure_aggregation(tmp_path: Path) -> None:
    """No training, every update zero: the model stays, the real SecAgg+ rounds and their costs run."""
    from clipfl.clip import forward_macs
    from clipfl.models import build_model
    from clipfl.sim.run import protocol_shares

    config = _config(clients=24, rounds=2, secagg="secagg+", max_weight=1000)
    fleet = straggler_fleet(24, base_speed=SPEED, slowdown=3.0)
    shares = protocol_shares(config, samples=50)
    summary = simulate(config, fleet, run_dir=tmp_path, cost_model=COSTS, shares=shares, train=False)
    assert summary["trained"] is False and summary["rounds"] == 2
    rounds = read_jsonl(tmp_path / "metrics.jsonl")
    assert [len(r["participants"]) for r in rounds] == [24, 24]
    assert rounds[0]["test_accuracy"] == rounds[1]["test_accuracy"]  # zero updates leave the model
    fit = read_jsonl(tmp_path / "client-0.jsonl")[0]["fit_seconds"]
    dataset = shares[0].dataset
    forward = forward_macs(build_model("digits_cnn", dataset), dataset.input_shape)
    expected = COSTS.fit_macs(
        "digits_cnn", forward, 1.0, samples=50, epochs=1, batch_size=config.batch_size
    ) / (SPEED / 3.0)
    assert fit == pytest.approx(expected)


def test_testing_beside_the_next_round_shortens_each_round_by_the_test_and_changes_nothing_else(
    tmp_path: Path,
) -> None:
    """``eval_overlap``: the server's test of round r runs while round r+1 trains. Every decision and
    every model is the same; each round ends its test's duration earlier (the cost model's charge)."""
    fleet = straggler_fleet(5, base_speed=SPEED, slowdown=4.0, straggler_ids=[0], straggler_slowdown=6.0)
    runs = {}
    for overlap in (False, True):
        config = _config(clients=5, rounds=4, mitigation="clip", secagg="secagg", eval_overlap=overlap)
        summary = simulate(config, fleet, run_dir=tmp_path / str(overlap), cost_model=COSTS)
        runs[overlap] = (summary, read_jsonl(tmp_path / str(overlap) / "metrics.jsonl"))
    (off_summary, off), (on_summary, on) = runs[False], runs[True]
    test_samples = len(load_dataset("digits").test)
    test_s = COSTS.eval_seconds(
        "digits_cnn", forward_macs(build_model("digits_cnn"), (1, 8, 8)), test_samples
    )
    assert [r["test_accuracy"] for r in on] == [r["test_accuracy"] for r in off]
    assert [r["mean_keep_ratio"] for r in on] == [r["mean_keep_ratio"] for r in off]
    for a, b in zip(on, off, strict=True):
        assert a["round_seconds"] == pytest.approx(b["round_seconds"] - test_s, abs=1e-9)
    rounds = len(off)
    assert on_summary["total_seconds"] == pytest.approx(off_summary["total_seconds"] - (rounds - 1) * test_s)
    for i in range(5):  # the clients trained the same sub-models
        keep = [[r["keep_ratio"] for r in read_jsonl(tmp_path / str(o) / f"client-{i}.jsonl")] for o in runs]
        assert keep[0] == keep[1]
