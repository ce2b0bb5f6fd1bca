"""The client's round engine driven by hand: messages in with the time, fits run for real, messages out.

No event loop and no socket: what the asyncio client and a simulator both run."""

from __future__ import annotations

import numpy as np
import pytest

from clipfl.clip import TimingReport
from clipfl.config import RunConfig
from clipfl.engine.client_round import ClientEngine, MustRegister, RunFinished
from clipfl.engine.instructions import instructions_of
from clipfl.engine.pruning import encode_report
from clipfl.errors import ConfigError
from clipfl.messages import FitIns, FitRes, Receipt, Reject, RoundStart, Shutdown, TimingRelay, Welcome
from clipfl.params import ParamSpec, state_of
from clipfl.settings import CodecParams
from clipfl.trainer import LocalTrainer, federation_data
from clipfl.wire import decode, encode


def _engine(config: RunConfig, client_id: int = 0) -> ClientEngine:
    share = federation_data(config, [client_id])[client_id]
    return ClientEngine(client_id, config, LocalTrainer(share, config.model_name))


def _peer_report(rnd: int, total: float) -> bytes:
    fit = total - 2.0
    return encode_report(
        TimingReport(
            round=rnd, download_s=1.0, fit_s=fit, upload_s=1.0, predicted_fit_s=fit, predicted_total_s=total
        )
    )


def _round(
    engine: ClientEngine, config: RunConfig, rnd: int, t0: float, fit_s: float, deadline: float | None
):
    """One round at times t0 (announced), t0+1 (model), fit_s of fitting, 1 s of upload."""
    engine.receive(RoundStart(round=rnd), t0)
    for peer in (1, 2, 3, 4):
        engine.receive(TimingRelay(round=rnd, sender=peer, payload=_peer_report(rnd - 1, 10.0)), t0)
    spec = ParamSpec.of(engine.trainer.model)
    weights = spec.unflatten(spec.flatten(state_of(engine.trainer.model)))
    fit = FitIns(
        round=rnd,
        weights=weights,
        train=config.train_settings(),
        seed=rnd,
        deadline=deadline,
        keep_ratio=None,
        codec=None,
    )
    engine.receive(fit, t0 + 1.0)
    job = engine.take_fit()
    assert job is not None and engine.take_fit() is None
    out = engine.trainer.train(job.weights, job.sub, job.train, job.seed, job.coverage_size)
    engine.fit_finished(job, out, fit_s, {})
    sent = engine.data_to_send(t0 + 1.0 + fit_s)
    assert [type(m) for m in sent if not isinstance(m, TimingRelay)] == [FitRes]
    engine.receive(Receipt(round=rnd), t0 + 2.0 + fit_s)
    (row,) = engine.take_rows()
    return job, row


def test_the_round_is_timed_from_the_messages_times() -> None:
    config = RunConfig(clients=5, mitigation="clip")
    engine = _engine(config)
    engine.receive(Welcome(client_id=0, token=bytes(32), settings=config.run_settings()), 0.0)
    _, row = _round(engine, config, 1, 100.0, 5.0, None)
    assert (row["download_seconds"], row["fit_seconds"], row["upload_seconds"]) == (1.0, 5.0, 1.0)
    assert row["round"] == 1 and row["bytes_down"] == 0


def test_a_deadline_announced_by_the_server_caps_the_round_target() -> None:
    """DESIGN 5.2: T* is capped by the server's deadline (the bug: nothing wired it)."""
    config = RunConfig(clients=5, mitigation="clip")
    engine = _engine(config)
    engine.receive(Welcome(client_id=0, token=bytes(32), settings=config.run_settings()), 0.0)
    _round(engine, config, 1, 0.0, 8.0, None)  # 10 s in total, as fast as its peers
    job, row = _round(engine, config, 2, 20.0, 8.0, None)
    assert job.sub is None and not row["straggler"] and row["target_seconds"] == 10.0
    job, row = _round(engine, config, 3, 40.0, 8.0, 6.0)  # the server waits 6 s only
    assert job.sub is not None and row["straggler"] and row["target_seconds"] == 6.0
    assert row["keep_ratio"] < 1.0


@pytest.mark.parametrize("fraction", [0.0, 0.2])
def test_straggler_fraction_zero_reaches_the_planner(fraction: float) -> None:
    """f = 0: a client 3x slower than every peer never prunes; at f = 0.2 (the control) it does."""
    config = RunConfig(clients=5, mitigation="clip", straggler_fraction=fraction)
    engine = _engine(config)
    engine.receive(Welcome(client_id=0, token=bytes(32), settings=config.run_settings()), 0.0)
    pruned = []
    for rnd in (1, 2, 3):
        job, row = _round(engine, config, rnd, 20.0 * rnd, 30.0, None)  # 3x slower than every peer
        pruned.append(job.sub is not None and row["straggler"])
    assert pruned == ([False, False, False] if fraction == 0.0 else [False, True, True])


def test_a_server_announcing_other_secure_aggregation_is_refused() -> None:
    mine = RunConfig(clients=5, secagg="secagg+", secagg_trust_server=True)
    engine = _engine(mine)
    weaker = RunConfig(clients=5, secagg="secagg+", secagg_threshold=3).run_settings()
    with pytest.raises(ConfigError, match="secure aggregation"):
        engine.receive(Welcome(client_id=0, token=bytes(32), settings=weaker), 0.0)
    with pytest.raises(ConfigError, match="secure aggregation"):
        engine.receive(
            Welcome(client_id=0, token=bytes(32), settings=RunConfig(clients=5).run_settings()), 0.0
        )


def test_shutdown_ends_the_run() -> None:
    config = RunConfig(clients=2)
    engine = _engine(config)
    with pytest.raises(RunFinished):
        engine.receive(Shutdown(reason="done"), 0.0)


def test_instructions_are_the_same_bytes_on_both_ends_of_the_wire() -> None:
    """A float setting given as an int (round_timeout=60) must hash as the float the client reads."""
    config = RunConfig(round_timeout=60, lr=1)
    fit = FitIns(
        round=2,
        weights={"w": np.arange(4, dtype=np.float32)},
        train=config.train_settings(),
        seed=3,
        deadline=config.round_timeout,
        keep_ratio=None,
        codec=CodecParams(clients=5, max_weight=10, clip_range=1),
    )
    assert instructions_of(decode(encode(fit))) == instructions_of(fit)
    other = FitIns(**{**{f: getattr(fit, f) for f in fit.__dataclass_fields__}, "deadline": 59.0})
    assert instructions_of(other) != instructions_of(fit)


def test_a_refusal_that_may_pass_makes_the_client_register_again_not_exit() -> None:
    """A restarted client whose old connection the server still holds is refused for now: retry."""
    engine = _engine(RunConfig(clients=2))
    with pytest.raises(MustRegister):
        engine.receive(Reject(reason="connected on another connection", retryable=True), 0.0)
    with pytest.raises(ConfigError):
        engine.receive(Reject(reason="client id 7 is outside 0..1"), 0.0)
