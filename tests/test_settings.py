"""Settings cross the wire as typed values: every one arrives as sent, zeros and range edges included,
and a setting the receiver does not know (or one left out) is the peer's error, never a default."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clipfl.clip import LatencyHistory, PlannerConfig, RoundTiming, TimingReport, plan_round
from clipfl.config import ClientConfig, RunConfig
from clipfl.errors import ConfigError, RemoteProtocolError
from clipfl.messages import FitIns, Welcome
from clipfl.secagg import SecAggConfig
from clipfl.settings import MITIGATIONS, CodecParams, RunSettings, TrainSettings
from clipfl.wire import decode, encode

unit_open = st.floats(0.0, 1.0, exclude_max=True)  # [0, 1)
keep = st.floats(0.0, 1.0, exclude_min=True)  # (0, 1]

secagg_configs = st.one_of(
    st.none(),
    st.builds(
        SecAggConfig,
        mode=st.just("secagg"),
        threshold=st.one_of(st.none(), st.integers(2, 1000)),
        clip_range=st.floats(1e-6, 1e6),
    ),
    st.builds(
        SecAggConfig,
        mode=st.just("secagg+"),
        threshold=st.one_of(st.none(), st.integers(2, 1000)),
        neighbors=st.one_of(st.none(), st.integers(2, 1000)),
        clip_range=st.floats(1e-6, 1e6),
        max_weight=st.floats(1.0, 1e9),
    ),
)


@st.composite
def run_settings(draw: st.DrawFn) -> RunSettings:
    secagg = draw(secagg_configs)
    mitigations = [m for m in MITIGATIONS if not (m == "fluid" and secagg is not None)]
    return RunSettings(
        model=draw(st.text(min_size=1, max_size=16)),
        rounds=draw(st.integers(1, 2**40)),
        mitigation=draw(st.sampled_from(mitigations)),
        straggler_fraction=draw(unit_open),
        min_keep_ratio=draw(keep),
        weighting=draw(st.sampled_from(["samples", "uniform"])),
        max_weight=draw(st.integers(1, 2**40)),
        secagg=secagg,
    )


train_settings = st.builds(
    TrainSettings,
    epochs=st.integers(1, 1000),
    batch_size=st.integers(1, 10**6),
    lr=st.floats(1e-12, 1e3),
    optimizer=st.sampled_from(["sgd", "adam"]),
    momentum=unit_open,
)


@given(settings=run_settings())
def test_every_run_setting_survives_the_wire(settings: RunSettings) -> None:
    back = decode(encode(Welcome(client_id=3, token=bytes(32), settings=settings)))
    assert back.settings == settings


@given(
    train=train_settings,
    seed=st.integers(0, 2**62),
    deadline=st.one_of(st.none(), st.floats(1e-9, 1e9)),
    keep_ratio=st.one_of(st.none(), keep),
    codec=st.one_of(
        st.none(),
        st.builds(
            CodecParams,
            clients=st.integers(2, 10**6),
            max_weight=st.integers(1, 10**9),
            clip_range=st.floats(1e-9, 1e9),
        ),
    ),
)
def test_every_fit_setting_survives_the_wire(
    train: TrainSettings,
    seed: int,
    deadline: float | None,
    keep_ratio: float | None,
    codec: CodecParams | None,
) -> None:
    msg = FitIns(
        round=1, weights={}, train=train, seed=seed, deadline=deadline, keep_ratio=keep_ratio, codec=codec
    )
    back = decode(encode(msg))
    assert (back.train, back.seed, back.deadline, back.keep_ratio, back.codec) == (
        train,
        seed,
        deadline,
        keep_ratio,
        codec,
    )


def _welcome_envelope(**changes: object) -> list[bytes]:
    frames = encode(
        Welcome(client_id=0, token=bytes(32), settings=RunConfig(secagg="secagg+").run_settings())
    )
    envelope = msgpack.unpackb(frames[0])
    envelope["f"]["settings"].update(changes)
    return [msgpack.packb(envelope)]


def test_a_setting_the_receiver_does_not_know_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="unknown RunSettings settings"):
        decode(_welcome_envelope(surprise=1))


def test_a_missing_setting_is_refused_not_defaulted() -> None:
    frames = encode(Welcome(client_id=0, token=bytes(32), settings=RunConfig().run_settings()))
    envelope = msgpack.unpackb(frames[0])
    del envelope["f"]["settings"]["straggler_fraction"]
    with pytest.raises(RemoteProtocolError, match="straggler_fraction"):
        decode([msgpack.packb(envelope)])


@pytest.mark.parametrize(
    "change",
    [
        {"straggler_fraction": 1.0},
        {"min_keep_ratio": 0.0},
        {"mitigation": "faster"},
        {"rounds": 0},
        {"secagg": {"mode": "secagg+", "threshold": 1}},
        {"max_weight": "many"},
    ],
)
def test_an_impossible_setting_from_the_peer_is_its_error(change: dict[str, object]) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(_welcome_envelope(**change))


def test_the_command_line_builds_the_settings_once() -> None:
    config = RunConfig(secagg="secagg+", secagg_neighbors=4, straggler_fraction=0.0, clip_range=2.0)
    settings = config.run_settings()
    assert settings.straggler_fraction == 0.0
    assert settings.secagg == SecAggConfig(mode="secagg+", neighbors=4, clip_range=2.0, max_weight=100_000)
    with pytest.raises(ConfigError, match="straggler-fraction"):
        RunConfig(straggler_fraction=1.0)


@pytest.mark.parametrize("cls", [RunConfig, ClientConfig])
def test_a_word_outside_a_settings_choices_is_refused_wherever_it_comes_from(cls: type) -> None:
    """argparse checks a flag's choices; a config file or a scenario reaches the dataclass directly, and
    an unknown word there must be an error, not a fall-through (``aggregation = "zeropad"`` ran
    coverage averaging)."""
    chosen = [f for f in dataclasses.fields(cls) if f.metadata.get("choices")]
    assert chosen  # aggregation, partition, secagg, ... / shape
    for f in chosen:
        with pytest.raises(ConfigError, match=f"^{f.name.replace('_', '-')} must be one of "):
            cls(**{f.name: "no-such-choice"})
        for allowed in f.metadata["choices"]:
            assert getattr(cls(**{f.name: allowed}), f.name) == allowed


def test_straggler_fraction_zero_means_nobody_is_a_straggler() -> None:
    """DESIGN 5.2-5.3: with f = 0 the round target is the slowest client's latency, so no client
    predicts itself above it (the bug: a zero arrived as 0.2 on every client)."""
    history = LatencyHistory()
    history.record(RoundTiming(round=1, download_s=1.0, fit_s=50.0, upload_s=1.0))
    peers = [
        TimingReport(round=1, download_s=1, fit_s=2, upload_s=1, predicted_fit_s=2, predicted_total_s=4)
        for _ in range(9)
    ]
    slow = plan_round(PlannerConfig(straggler_fraction=0.0), history, peers, lambda p: p * p)
    assert not slow.straggler and slow.keep_ratio == 1.0
    default = plan_round(PlannerConfig(), history, peers, lambda p: p * p)
    assert default.straggler  # the same client is a straggler at the default f = 0.2


def test_a_server_deadline_caps_the_round_target() -> None:
    """DESIGN 5.2: the server-announced deadline caps T*; a client slower than it prunes."""
    history = LatencyHistory()
    history.record(RoundTiming(round=1, download_s=1.0, fit_s=8.0, upload_s=1.0))
    peers = [
        TimingReport(round=1, download_s=1, fit_s=8, upload_s=1, predicted_fit_s=8, predicted_total_s=10)
        for _ in range(9)
    ]
    config = PlannerConfig(straggler_fraction=0.2)
    free = plan_round(config, history, peers, lambda p: p * p)
    capped = plan_round(config, history, peers, lambda p: p * p, deadline_s=6.0)
    assert not free.straggler
    assert capped.straggler and capped.target_s == 6.0 and capped.keep_ratio < 1.0
    assert capped.predicted_fit_s is not None and capped.predicted_fit_s + 2.0 <= 6.0
