"""In-memory harness: one SecAggServer and N SecAggClients exchanging messages in a loop.

In the manner of h11's ``tests/helpers.py::ConnectionPair``: no sockets, no event loop. Dropouts are
injected per client at a stage (the client goes silent from that server stage on: the server notices
at the deadline, or at once when ``disconnect`` is set, as a driver that saw the socket close would);
deliveries can be shuffled; hooks can tamper with messages in either direction. Randomness is seeded,
so every run is reproducible. Identities are on by default: an operator key signs a roster of
per-client Ed25519 identities, as ``python -m clipfl.keys roster`` provisions a real deployment.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import nacl.signing
import numpy as np

from clipfl.secagg import Roster, RosterEntry, SecAggClient, SecAggConfig, SecAggServer, Stage
from clipfl.secagg.messages import ClientMessage, ServerMessage

ORDER = [
    Stage.ADVERTISE_KEYS,
    Stage.SHARE_KEYS,
    Stage.MASKED_INPUT,
    Stage.CONSISTENCY,
    Stage.UNMASKING,
    Stage.DONE,
    Stage.ABORTED,
]

ClientTamper = Callable[[int, ClientMessage], ClientMessage | None]
ServerTamper = Callable[[int, ServerMessage], ServerMessage | None]


def seeded(label: str) -> Callable[[int], bytes]:
    return random.Random(label).randbytes


def identities(ids: Sequence[int], seed: int = 0) -> dict[int, nacl.signing.SigningKey]:
    return {c: nacl.signing.SigningKey(seeded(f"identity-{seed}-{c}")(32)) for c in ids}


OPERATOR = nacl.signing.SigningKey(bytes(range(32)))


def signed_roster(keys: Mapping[int, nacl.signing.SigningKey]) -> Roster:
    entries = [RosterEntry(client_id=c, identity_key=bytes(k.verify_key)) for c, k in keys.items()]
    return Roster.sign(entries, OPERATOR)


@dataclass
class Federation:
    server: SecAggServer
    clients: dict[int, SecAggClient]
    inputs: dict[int, np.ndarray]
    server_inbox: list[tuple[int, ClientMessage]] = field(default_factory=list)
    client_inbox: list[tuple[int, ServerMessage]] = field(default_factory=list)
    dead: set[int] = field(default_factory=set)
    roster: Roster | None = None

    def expected_sum(self) -> np.ndarray:
        total = np.zeros_like(next(iter(self.inputs.values())))
        for c in self.server.survivors:
            np.add(total, self.inputs[c], out=total)
        return total


def make_federation(
    *,
    n: int,
    length: int,
    config: SecAggConfig,
    seed: int = 0,
    ids: Sequence[int] | None = None,
    round_: int = 1,
    trust_server: bool = False,
    server_has_roster: bool = True,
    instructions: Mapping[int, bytes] | None = None,
) -> Federation:
    """``trust_server``: no identities at all (the old, passive-only mode)."""
    ids = list(ids) if ids is not None else list(range(n))
    rng = np.random.default_rng(seed)
    inputs = {c: rng.integers(0, 2**32, length, dtype=np.uint32) for c in ids}
    keys = identities(ids, seed)
    roster = None if trust_server else signed_roster(keys)
    server = SecAggServer(
        round=round_,
        clients=ids,
        vector_length=length,
        config=config,
        roster=roster if server_has_roster else None,
    )
    clients = {
        c: SecAggClient(
            client_id=c,
            round=round_,
            config=config,
            random_bytes=seeded(f"client-{seed}-{c}"),
            roster=roster,
            signing_key=keys[c],
            trust_server=trust_server,
            instructions=(instructions or {}).get(c, b""),
        )
        for c in ids
    }
    return Federation(server, clients, inputs, roster=roster)


def run(
    fed: Federation,
    *,
    seed: int = 0,
    dropouts: Mapping[int, Stage] | None = None,
    disconnect: bool = False,
    reorder: bool = False,
    early_input: bool | None = None,
    to_server: ClientTamper | None = None,
    to_client: ServerTamper | None = None,
    max_steps: int = 200,
) -> Federation:
    """Run the round to DONE or ABORTED. ``early_input``: True gives every input before the round
    starts, False only when the server asks, None a random mix."""
    rng = random.Random(seed)
    dropouts = dict(dropouts or {})
    server, clients = fed.server, fed.clients
    late: set[int] = set()
    for c, client in clients.items():
        give_early = early_input if early_input is not None else rng.random() < 0.5
        if give_early:
            client.set_input(fed.inputs[c])
        else:
            late.add(c)

    def drops_now(c: int) -> bool:
        if c in fed.dead:
            return True
        if c in dropouts and ORDER.index(server.stage) >= ORDER.index(dropouts[c]):
            fed.dead.add(c)
            if disconnect:
                server.fail(c, "disconnected")
            return True
        return False

    server.start()
    for _ in range(max_steps):
        finished = server.done or server.aborted is not None
        progressed = False
        outgoing = server.data_to_send()
        if reorder:
            rng.shuffle(outgoing)
        for c, message in outgoing:
            if drops_now(c):
                continue
            delivered = to_client(c, message) if to_client else message
            if delivered is None:
                continue
            fed.client_inbox.append((c, delivered))
            clients[c].receive(delivered)
            progressed = True
            if c in late and clients[c].stage is Stage.MASKED_INPUT:
                late.discard(c)
                clients[c].set_input(fed.inputs[c])
        if finished:  # the last messages (Abort, relayed payloads) were delivered above
            return fed
        replies = [(c, m) for c in sorted(clients) if c not in fed.dead for m in clients[c].data_to_send()]
        if reorder:
            rng.shuffle(replies)
        for c, reply in replies:
            if drops_now(c):
                continue
            sent = to_server(c, reply) if to_server else reply
            if sent is None:
                continue
            fed.server_inbox.append((c, sent))
            server.receive(c, sent)
            progressed = True
        if not progressed and not (server.done or server.aborted):
            server.expire_stage()
    raise AssertionError("the round did not finish")


def run_round(
    *,
    n: int,
    length: int,
    config: SecAggConfig,
    seed: int = 0,
    ids: Sequence[int] | None = None,
    **kwargs: object,
) -> Federation:
    trust_server = bool(kwargs.pop("trust_server", False))
    fed = make_federation(n=n, length=length, config=config, seed=seed, ids=ids, trust_server=trust_server)
    return run(fed, seed=seed, **kwargs)  # type: ignore[arg-type]
