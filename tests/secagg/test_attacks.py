"""The attacks of issue 13, each driven against the real ``SecAggClient``/``SecAggServer`` objects by a
scripted malicious server (the harness's message hooks) or client, and each shown to fail now: no
input recovered, the victim refuses, or the round completes with the liar failed.

An attacker "recovers" client u's input when it can rebuild ``b_u`` and either ``s_u`` or the mask
secret ``s_w`` of every peer ``w`` that u masked with (Bonawitz et al., CCS 2017, section 4). The
accounting below counts, per secret, the shares the server was sent plus every share a colluding
client holds; ``t`` of them rebuild it.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable

import nacl.signing
import numpy as np
import pytest
from secagg_harness import Federation, identities, make_federation, run

from clipfl.errors import ConfigError
from clipfl.secagg import FixedPoint, SecAggConfig, SecAggServer, Stage
from clipfl.secagg import keys as K
from clipfl.secagg.messages import (
    AdvertiseKeys,
    ClientMessage,
    ConsistencyCheck,
    KeysBroadcast,
    MaskedInput,
    ServerMessage,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
)


def revealed(
    fed: Federation, colluders: Iterable[int] = ()
) -> tuple[dict[int, set[int]], dict[int, set[int]]]:
    """Holders whose share of each client's ``b`` and ``s`` the attacker has: sent to the server in
    ``UnmaskShares``, or held by a colluding client (which hands over everything it holds)."""
    b: dict[int, set[int]] = defaultdict(set)
    s: dict[int, set[int]] = defaultdict(set)
    for holder, m in fed.server_inbox:
        if isinstance(m, UnmaskShares):
            for dealer in m.b_shares:
                b[dealer].add(holder)
            for dealer in m.s_shares:
                s[dealer].add(holder)
    for c in colluders:
        client = fed.clients[c]
        for dealer in [*client._mask_peers, c]:
            b[dealer].add(c)
            s[dealer].add(c)
    return b, s


def exposed(fed: Federation, victim: int, threshold: int, colluders: Iterable[int] = ()) -> bool:
    """Whether the attacker can unmask ``victim``'s own masked input."""
    b, s = revealed(fed, colluders)
    if len(b[victim]) < threshold:
        return False
    if len(s[victim]) >= threshold:
        return True
    peers = fed.clients[victim]._mask_peers
    return bool(peers) and all(len(s[w]) >= threshold for w in peers)


def sent_by(fed: Federation, client: int, kind: type) -> list[ClientMessage]:
    return [m for c, m in fed.server_inbox if c == client and isinstance(m, kind)]


# -- attack 1: key substitution -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["secagg", "secagg+"])
def test_attack1_substituted_keys_make_the_victim_refuse_before_sealing_anything(mode: str) -> None:
    """The server replaces every peer's keys in the victim's broadcast by keys it holds, signed with a
    key of its own: the victim checks each against the roster and leaves before sealing a share."""
    fed = make_federation(n=8, length=64, config=SecAggConfig(mode=mode), seed=1)  # type: ignore[arg-type]
    victim = 3
    server_keys = K.RoundKeys.generate(lambda n: b"\x07" * n)
    forger = nacl.signing.SigningKey(b"f" * 32)

    def substitute(c: int, m: ServerMessage) -> ServerMessage:
        if c == victim and isinstance(m, KeysBroadcast):
            others = [v for v in m.c_publics if v != victim]
            fake = {
                v: K.sign_keys(
                    forger,
                    K.keys_statement(
                        round_=1,
                        client_id=v,
                        c_public=server_keys.c_public,
                        s_public=server_keys.s_public,
                        instructions=K.instructions_digest(b""),
                    ),
                )
                for v in others
            }
            return dataclasses.replace(
                m,
                c_publics={**m.c_publics, **dict.fromkeys(others, server_keys.c_public)},
                s_publics={**m.s_publics, **dict.fromkeys(others, server_keys.s_public)},
                signatures={**m.signatures, **fake},
            )
        return m

    run(fed, to_client=substitute)
    assert "not signed by its roster identity" in (fed.clients[victim].aborted or "")
    assert not sent_by(fed, victim, ShareKeys) and not sent_by(fed, victim, MaskedInput)
    assert victim in fed.server.failures and victim not in fed.server.survivors
    np.testing.assert_array_equal(fed.server.result(), fed.expected_sum())


def test_attack1_the_victims_own_keys_cannot_be_swapped_either() -> None:
    """Swapping the victim's own keys in what the others receive is caught by their signature check."""
    fed = make_federation(n=6, length=16, config=SecAggConfig(mode="secagg"), seed=2, server_has_roster=False)

    def swap_own(c: int, m: ServerMessage) -> ServerMessage:
        if c != 0 and isinstance(m, KeysBroadcast):
            return dataclasses.replace(m, c_publics={**m.c_publics, 0: K.public_key_of(b"\x05" * 32)})
        return m

    run(fed, to_client=swap_own)
    assert all("client 0 are not signed" in (fed.clients[c].aborted or "") for c in range(1, 6))
    assert all(not sent_by(fed, c, ShareKeys) for c in range(1, 6))


# -- attack 2: the server sets the client's threshold ----------------------------------------------


def test_attack2_a_weak_threshold_from_the_server_is_refused_by_every_client() -> None:
    """The server runs SecAgg with t = 2 at n = 5 (to split clients into two groups of two); each
    client resolves its own t = 4 and refuses the round before advertising a key."""
    fed = make_federation(n=5, length=16, config=SecAggConfig(mode="secagg"), seed=3)
    fed.server = SecAggServer(
        round=1, clients=range(5), vector_length=16, config=SecAggConfig(mode="secagg", threshold=2)
    )
    run(fed)
    assert all("t>=4" in (c.aborted or "") for c in fed.clients.values())
    assert not [m for _, m in fed.server_inbox if isinstance(m, AdvertiseKeys)]
    assert fed.server.aborted is not None


def test_attack2_fewer_neighbours_or_a_smaller_round_are_refused() -> None:
    fed = make_federation(n=20, length=16, config=SecAggConfig(), seed=4)
    weak = SecAggConfig(neighbors=4, threshold=3)
    fed.server = SecAggServer(round=1, clients=range(20), vector_length=16, config=weak)
    run(fed)
    assert all("k>=16" in (c.aborted or "") for c in fed.clients.values())


# -- attack 3: no consistency check ----------------------------------------------------------------


def test_attack3_secagg_survived_dropped_split_fails_even_with_a_colluder() -> None:
    """n = 5, t = 4. Clients 0, 1, 2 hear that victim 2 survived, clients 3, 4 that it dropped; client 4
    colludes and signs both sets. Only one set can gather the 4 signatures an honest client needs
    (honest clients sign once): clients 0, 1, 2 reveal b_2 (2 survived in their set) and client 3
    refuses, so s_2 stays out of reach and client 2's input stays masked."""
    fed = make_federation(n=5, length=32, config=SecAggConfig(mode="secagg"), seed=5, server_has_roster=False)
    victim, colluder = 2, 4
    keys = identities(range(5), 5)

    def tamper(c: int, m: ServerMessage) -> ServerMessage:
        if c in (3, 4) and isinstance(m, ConsistencyCheck):
            return dataclasses.replace(m, survivors=[v for v in m.survivors if v != victim])
        if c in (0, 1, 2) and isinstance(m, UnmaskRequest):  # the colluder's signature on the other set
            statement = fed.clients[0]._statement
            return dataclasses.replace(
                m, signatures={**m.signatures, colluder: K.sign_keys(keys[colluder], statement)}
            )
        return m

    run(fed, to_client=tamper)
    t = fed.server.params.threshold
    b, s = revealed(fed, [colluder])
    assert len(b[victim]) >= t and len(s[victim]) < t
    assert not exposed(fed, victim, t, [colluder])
    assert "valid consistency signatures" in (fed.clients[3].aborted or "")
    assert all(sent_by(fed, c, UnmaskShares) for c in (0, 1, 2))
    assert fed.server.aborted is not None  # s_2 cannot be rebuilt, so neither can the sum


def test_attack3_secagg_plus_neighbour_trick_fails_even_with_weak_parameters() -> None:
    """SecAgg+ with k = 4, t = 3 (weak on purpose, the clients' own choice): the server tells the
    victim and its neighbours that everyone survived, and everyone else that the victim's neighbours
    dropped, to collect b_victim from the first group and every s_w from the second. Only one set can
    gather more than (n + n/3) / 2 signatures, so at most one group reveals, and the victim stays masked."""
    config = SecAggConfig(neighbors=4, threshold=3)
    fed = make_federation(n=20, length=32, config=config, seed=6, server_has_roster=False)
    victim = 0
    group_a: set[int] = set()

    def tamper(c: int, m: ServerMessage) -> ServerMessage:
        if isinstance(m, ConsistencyCheck):
            group_a.update(fed.clients[victim].neighbors | {victim})
            if c not in group_a:
                return dataclasses.replace(
                    m, survivors=[v for v in m.survivors if v not in group_a - {victim}]
                )
        return m

    run(fed, to_client=tamper)
    assert not exposed(fed, victim, 3)
    assert all("valid consistency signatures" in (fed.clients[c].aborted or "") for c in group_a)


def test_attack3_the_graph_is_fixed_by_the_signed_keys_not_by_the_server() -> None:
    """The server has no seed to send; every client derives the same graph from the hash of all signed
    keys. Withholding one client's keys from the victim (to steer its graph) only cuts the victim off."""
    fed = make_federation(n=20, length=16, config=SecAggConfig(corrupted_fraction=0.05), seed=7)
    r = fed.server.params
    assert r.neighbors < 19  # a sparse graph
    run(fed)
    assert all(c.neighbors == fed.server.graph[c.client_id] for c in fed.clients.values())

    fed = make_federation(n=20, length=16, config=SecAggConfig(corrupted_fraction=0.05), seed=7)
    victim = 5

    def steer(c: int, m: ServerMessage) -> ServerMessage:
        if c == victim and isinstance(m, KeysBroadcast):
            drop = max(m.c_publics)
            return dataclasses.replace(
                m,
                c_publics={v: k for v, k in m.c_publics.items() if v != drop},
                s_publics={v: k for v, k in m.s_publics.items() if v != drop},
                signatures={v: k for v, k in m.signatures.items() if v != drop},
            )
        return m

    run(fed, to_client=steer)
    assert victim in fed.server.failures and victim not in fed.server.survivors
    assert not exposed(fed, victim, r.threshold)
    np.testing.assert_array_equal(fed.server.result(), fed.expected_sum())


# -- attack 4: accusations nobody checks -----------------------------------------------------------


def test_attack4_a_client_accusing_many_peers_is_failed_itself_and_the_round_completes() -> None:
    fed = make_federation(n=10, length=64, config=SecAggConfig(mode="secagg"), seed=8)
    liar = 6

    def accuse(c: int, m: ClientMessage) -> ClientMessage:
        if c == liar and isinstance(m, MaskedInput):
            return dataclasses.replace(m, rejected={v: "bad shares (a lie)" for v in (0, 1, 2, 3, 4)})
        return m

    run(fed, to_server=accuse)
    assert "more than the budget of 1" in fed.server.failures[liar]
    assert set(fed.server.failures) == {liar}
    np.testing.assert_array_equal(fed.server.result(), fed.expected_sum())


def test_attack4_an_accusation_within_budget_costs_one_peer_and_two_accusers_both_leave() -> None:
    fed = make_federation(n=10, length=64, config=SecAggConfig(mode="secagg"), seed=9)

    def accuse(c: int, m: ClientMessage) -> ClientMessage:
        if isinstance(m, ShareKeys) and c in (1, 2):
            other = 2 if c == 1 else 1
            ciphertexts = {v: x for v, x in m.ciphertexts.items() if v != other}
            commitments = {v: x for v, x in m.share_commitments.items() if v != other}
            return dataclasses.replace(
                m, ciphertexts=ciphertexts, share_commitments=commitments, rejected={other: "a dispute"}
            )
        return m

    run(fed, to_server=accuse)
    assert set(fed.server.failures) == {1, 2}  # a disputed pair: both leave
    np.testing.assert_array_equal(fed.server.result(), fed.expected_sum())


# -- attack 5: one lying share aborts a round -------------------------------------------------------


@pytest.mark.parametrize("n", [10, 16])
def test_attack5_a_liar_holding_the_smallest_share_index_is_failed_and_the_round_completes(n: int) -> None:
    """Client 0 holds x = 1, the first index of every subset the old search tried; it lies in every
    share it reveals. Each is checked against its dealer's commitment: the liar is failed, its shares
    skipped, and the sum (its own input included: it is a survivor) is exact."""
    fed = make_federation(n=n, length=64, config=SecAggConfig(mode="secagg"), seed=10)

    def lie(c: int, m: ClientMessage) -> ClientMessage:
        if c == 0 and isinstance(m, UnmaskShares):
            forged = {v: (int.from_bytes(x, "big") ^ 1).to_bytes(66, "big") for v, x in m.b_shares.items()}
            return dataclasses.replace(m, b_shares=forged)
        return m

    run(fed, to_server=lie)
    assert fed.server.done, fed.server.aborted
    assert "does not match its commitment" in fed.server.failures[0]
    assert 0 in fed.server.survivors
    np.testing.assert_array_equal(fed.server.result(), fed.expected_sum())


# -- attack 6: claimed weights -----------------------------------------------------------------------


def test_attack6_a_client_refuses_an_encoding_range_above_its_own_cap() -> None:
    """A claim of 10^6 samples (or a server that says so) widens the fixed-point range so much that
    honest deltas round to zero; the client refuses the codec and sends nothing."""
    fed = make_federation(n=5, length=16, config=SecAggConfig(mode="secagg", max_weight=1000), seed=11)
    client = fed.clients[0]
    fed.server.start()
    for c, m in fed.server.data_to_send():
        if c == 0:
            client.receive(m)
    assert client.accept_codec(FixedPoint.for_federation(5, 1000, 1.0))
    inflated = FixedPoint.for_federation(5, 1_000_000, 1.0)
    honest = FixedPoint.for_federation(5, 1000, 1.0)
    delta = np.full(16, 1e-5)
    assert np.all(inflated.encode(delta, weight=100) == 0)  # what the attack does to an honest delta
    assert np.all(honest.encode(delta, weight=100) != 0)
    client.data_to_send()
    assert not client.accept_codec(inflated)
    assert "exceeds this client's cap" in (client.aborted or "")
    assert client.data_to_send() == []


def test_attack6_a_codec_for_more_clients_than_the_round_is_refused() -> None:
    fed = make_federation(n=5, length=16, config=SecAggConfig(mode="secagg"), seed=12)
    fed.server.start()
    for c, m in fed.server.data_to_send():
        if c == 1:
            fed.clients[1].receive(m)
    assert not fed.clients[1].accept_codec(FixedPoint.for_federation(500, 1000, 1.0))
    assert "the round has 5" in (fed.clients[1].aborted or "")


def test_attack6_a_weight_above_the_cap_cannot_be_encoded() -> None:
    codec = FixedPoint.for_federation(5, 1000, 1.0)
    with pytest.raises(ValueError, match="outside"):
        codec.encode(np.zeros(4), weight=1001)


# -- attack 8: instructions that single a client out ------------------------------------------------


def test_attack8_a_client_given_other_instructions_is_left_out_by_an_honest_server() -> None:
    instructions = {c: b"round=4;keep=p_min 0.5;deadline=30" for c in range(8)}
    instructions[3] = b"round=4;keep=0.05;deadline=1"  # singled out
    fed = make_federation(n=8, length=32, config=SecAggConfig(), seed=13, instructions=instructions)
    fed.server = SecAggServer(
        round=1,
        clients=range(8),
        vector_length=32,
        config=SecAggConfig(),
        roster=fed.roster,
        instructions=instructions[0],
    )
    run(fed)
    assert "wrong identity or instructions" in fed.server.failures[3]
    assert 3 not in fed.server.survivors
    np.testing.assert_array_equal(fed.server.result(), fed.expected_sum())


def test_attack8_a_malicious_server_cannot_make_the_singled_out_client_contribute() -> None:
    """The server gives client 3 a per-client deadline and forwards whatever is signed: client 3 finds
    that no peer's keys are signed under its instructions and refuses; it never uploads its update."""
    instructions = {c: b"deadline=30" for c in range(8)}
    instructions[3] = b"deadline=1"
    fed = make_federation(
        n=8, length=32, config=SecAggConfig(), seed=14, instructions=instructions, server_has_roster=False
    )
    run(fed)
    assert "instructions differ" in (fed.clients[3].aborted or "")
    assert not sent_by(fed, 3, MaskedInput) and not sent_by(fed, 3, ShareKeys)


def test_refusals_are_config_errors_for_a_client_without_a_roster_entry() -> None:
    fed = make_federation(n=4, length=8, config=SecAggConfig(), seed=15)
    roster = fed.roster
    from clipfl.secagg import SecAggClient

    with pytest.raises(ConfigError, match="does not list this identity"):
        SecAggClient(
            client_id=0,
            round=1,
            config=SecAggConfig(),
            roster=roster,
            signing_key=nacl.signing.SigningKey.generate(),
        )
    assert Stage.CONSISTENCY.value == "consistency"
