"""Where a simulation's fits train (issue 11, item 7): in this process, or as Ray tasks on every core,
with the same results bit for bit; and on the device the caller names, refused where torch has none."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clipfl import RunConfig
from clipfl.errors import ConfigError
from clipfl.rundir import read_jsonl
from clipfl.sim import fit_backend, load_cost_model, simulate, straggler_fleet

COSTS = load_cost_model()


def _run(run_dir: Path, backend: object) -> None:
    config = RunConfig(clients=5, rounds=3, local_epochs=1, seed=3, mitigation="clip", secagg="secagg")
    fleet = straggler_fleet(
        5, base_speed=COSTS.train_speed("digits_cnn"), slowdown=4.0, straggler_ids=[0], straggler_slowdown=6.0
    )
    simulate(config, fleet, run_dir=run_dir, cost_model=COSTS, backend=backend)  # type: ignore[arg-type]


def test_ray_and_local_backends_give_byte_identical_runs(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="Ray is the optional extra clipfl[ray]")
    _run(tmp_path / "local", "local")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        backend = fit_backend("ray")
        try:
            _run(tmp_path / "ray", backend)
        finally:
            backend.close()
    finally:
        ray.shutdown()
    names = ["metrics.jsonl", "summary.json", *(f"client-{i}.jsonl" for i in range(5))]
    for name in names:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    # the straggler pruned: sub-models trained on the Ray workers too, and the check covers them
    assert min(row["keep_ratio"] for row in read_jsonl(tmp_path / "ray" / "client-0.jsonl")) < 1.0


def test_an_unknown_backend_or_a_ray_address_without_ray_is_one_line() -> None:
    with pytest.raises(ConfigError, match="backend must be one of local, ray"):
        fit_backend("dask")
    with pytest.raises(ConfigError, match="a Ray address needs backend ray"):
        fit_backend("local", address="ray://10.0.0.1:10001")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_device_cuda_without_a_gpu_is_refused_before_anything_runs(tmp_path: Path) -> None:
    config = RunConfig(clients=2, rounds=1)
    fleet = straggler_fleet(2, base_speed=COSTS.train_speed("digits_cnn"))
    with pytest.raises(ConfigError, match="torch sees no CUDA device"):
        simulate(config, fleet, run_dir=tmp_path / "run", cost_model=COSTS, device="cuda")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    with pytest.raises(ConfigError, match="device must be one of cpu, cuda"):
        simulate(config, fleet, cost_model=COSTS, device="tpu")
