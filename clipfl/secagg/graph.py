"""SecAgg+ communication graph: a k-regular, connected graph on a random order drawn from a seed.

Bell et al. (CCS 2020) replace SecAgg's complete graph by a sparse graph of degree ``k`` so that each
client agrees masks and shares secrets only with its neighbours: O(k) work instead of O(n). Every party
rebuilds the same graph from the round's seed, which is the hash of every signed advertised key
(``keys.keys_digest``), so the server chooses nothing.

The graph is the Harary graph H(k, n) (a ring where each node links to its ``k / 2`` nearest on each
side, plus the opposite node when ``k`` is odd) laid on a uniformly random permutation of the clients.
What the security and correctness bounds of ``params.py`` use is that one client's ``k`` neighbours are
a uniformly random ``k``-subset of the others, independent of who is corrupted or drops: here that holds
exactly (the permutation places the others around it uniformly), and the graph is always connected and
takes O(n k) time even for the dense degrees that active security asks for (k = 549 at n = 1000),
where pairing-model samplers of uniform regular graphs stall. The permutation comes from
``random.Random`` seeded with the seed bytes (SHA-512 seeding, stable across platforms).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

__all__ = ["Graph", "is_connected", "regular_graph", "round_graph", "round_neighbors"]

Graph = Mapping[int, frozenset[int]]


def _check(order: Sequence[int], degree: int) -> None:
    n = len(order)
    if len(set(order)) != n:
        raise ValueError("graph nodes must be distinct")
    if degree < 0:
        raise ValueError(f"degree must be non-negative, got {degree}")
    if 0 < degree < n - 1 and (n * degree) % 2:
        raise ValueError(f"no {degree}-regular graph on {n} nodes: n * k is odd")
    if degree < 2 and n > 2:
        raise ValueError(f"a {degree}-regular graph on {n} nodes is disconnected")


def _ring(order: list[int], seed: bytes) -> list[int]:
    ring = list(order)
    random.Random(bytes(seed)).shuffle(ring)
    return ring


def _links(ring: Sequence[int], i: int, degree: int) -> frozenset[int]:
    n, half = len(ring), degree // 2
    links = [ring[(i + d) % n] for d in range(1, half + 1)] + [ring[(i - d) % n] for d in range(1, half + 1)]
    if degree % 2:  # n is even here: link the opposite node
        links.append(ring[(i + n // 2) % n])
    return frozenset(links)


def regular_graph(nodes: Sequence[int], degree: int, seed: bytes) -> dict[int, frozenset[int]]:
    """Neighbours of each node in a connected ``degree``-regular graph on ``nodes``, fixed by ``seed``.

    ``degree >= len(nodes) - 1`` gives the complete graph. ``len(nodes) * degree`` odd has no regular
    graph and raises ``ValueError`` (``round_graph`` raises ``k`` by one beforehand).
    """
    order = sorted(nodes)
    n = len(order)
    if degree >= n - 1:
        _check(order, max(len(order) - 1, 0))
        everyone = frozenset(order)
        return {u: everyone - {u} for u in order}
    _check(order, degree)
    ring = _ring(order, seed)
    return {u: _links(ring, i, degree) for i, u in enumerate(ring)}


def _round_degree(n: int, degree: int) -> int:
    k = min(degree, max(n - 1, 0))
    if k < n - 1 and (n * k) % 2:
        k += 1
    return min(k, max(n - 1, 0))


def round_graph(nodes: Sequence[int], degree: int, seed: bytes) -> dict[int, frozenset[int]]:
    """The graph of one round on the clients that advertised keys: ``degree`` raised by one when
    ``len(nodes) * degree`` is odd and capped at complete. Server and clients call this same function
    with the key-set digest as ``seed``, so they agree without the server choosing anything."""
    return regular_graph(nodes, _round_degree(len(nodes), degree), seed)


def round_neighbors(nodes: Sequence[int], degree: int, seed: bytes, node: int) -> frozenset[int]:
    """``round_graph(nodes, degree, seed)[node]`` in O(n + k) time: what one client needs."""
    order = sorted(nodes)
    k = _round_degree(len(order), degree)
    if k >= len(order) - 1:
        _check(order, max(len(order) - 1, 0))
        return frozenset(order) - {node}
    _check(order, k)
    ring = _ring(order, seed)
    return _links(ring, ring.index(node), k)


def is_connected(graph: Graph) -> bool:
    """Whether every node reaches every other (breadth-first search)."""
    if not graph:
        return True
    start = next(iter(graph))
    seen = {start}
    frontier = [start]
    while frontier:
        node = frontier.pop()
        for other in graph[node]:
            if other not in seen:
                seen.add(other)
                frontier.append(other)
    return len(seen) == len(graph)
