"""SecAgg+ communication graph: a random k-regular, connected graph drawn from a public seed.

Bell et al. (CCS 2020) replace SecAgg's complete graph by a random sparse graph of degree
``k = O(log n)``: each client agrees masks and shares secrets only with its neighbours, so its work is
O(k) instead of O(n). Every party rebuilds the same graph from the round's public seed, so the server
does not have to send neighbour lists, only the seed.

The sampler is the pairing model with the Steger-Wormald refinement (pair random free "stubs", reject
loops and repeated edges, restart when stuck), as in networkx's ``random_regular_graph``; a graph that
comes out disconnected is redrawn, so the result is uniform-ish over connected k-regular graphs. It is
driven by ``random.Random`` seeded with the seed bytes (SHA-512 seeding, stable across platforms).
"""

from __future__ import annotations

import functools
import random
import types
from collections import defaultdict
from collections.abc import Mapping, Sequence

__all__ = ["Graph", "is_connected", "regular_graph"]

Graph = Mapping[int, frozenset[int]]

_MAX_DRAWS = 1000


def regular_graph(nodes: Sequence[int], degree: int, seed: bytes) -> Graph:
    """Neighbours of each node in a connected ``degree``-regular graph on ``nodes``, fixed by ``seed``.

    ``degree >= len(nodes) - 1`` gives the complete graph. ``len(nodes) * degree`` odd has no regular
    graph and raises ``ValueError`` (``SecAggConfig.resolved`` raises ``k`` by one beforehand).

    The result is read-only and the last few are cached: drawing is O(n k), and a process that runs
    many parties of one round (tests, the simulator, ``clipfl.sim``) would otherwise draw the same
    graph once per client, O(n^2 k) in all.
    """
    return _regular_graph(tuple(nodes), degree, bytes(seed))


@functools.lru_cache(maxsize=4)
def _regular_graph(nodes: tuple[int, ...], degree: int, seed: bytes) -> Graph:
    return types.MappingProxyType(_draw(nodes, degree, seed))


def _draw(nodes: tuple[int, ...], degree: int, seed: bytes) -> dict[int, frozenset[int]]:
    order = sorted(nodes)
    n = len(order)
    if len(set(order)) != n:
        raise ValueError("graph nodes must be distinct")
    if degree < 0:
        raise ValueError(f"degree must be non-negative, got {degree}")
    if n == 0:
        return {}
    if degree >= n - 1:
        everyone = frozenset(order)
        return {u: everyone - {u} for u in order}
    if (n * degree) % 2:
        raise ValueError(f"no {degree}-regular graph on {n} nodes: n * k is odd")
    if degree < 2 and n > 2:
        raise ValueError(f"a {degree}-regular graph on {n} nodes is disconnected")
    rng = random.Random(bytes(seed))
    for _ in range(_MAX_DRAWS):
        edges = _try_pairing(n, degree, rng)
        if edges is None:
            continue
        adjacency: dict[int, set[int]] = {i: set() for i in range(n)}
        for a, b in edges:
            adjacency[a].add(b)
            adjacency[b].add(a)
        graph = {order[i]: frozenset(order[j] for j in adjacency[i]) for i in range(n)}
        if is_connected(graph):
            return graph
    raise RuntimeError(f"could not draw a connected {degree}-regular graph on {n} nodes")


def _try_pairing(n: int, degree: int, rng: random.Random) -> set[tuple[int, int]] | None:
    """One Steger-Wormald attempt on node indices; ``None`` when it gets stuck."""
    edges: set[tuple[int, int]] = set()
    stubs = [i for i in range(n) for _ in range(degree)]
    while stubs:
        leftover: dict[int, int] = defaultdict(int)
        rng.shuffle(stubs)
        pairs = iter(stubs)
        for a, b in zip(pairs, pairs, strict=False):
            if a > b:
                a, b = b, a
            if a != b and (a, b) not in edges:
                edges.add((a, b))
            else:
                leftover[a] += 1
                leftover[b] += 1
        if not _can_continue(edges, leftover):
            return None
        stubs = [i for i, count in leftover.items() for _ in range(count)]
    return edges


def _can_continue(edges: set[tuple[int, int]], leftover: Mapping[int, int]) -> bool:
    """Whether two distinct leftover nodes are still unconnected (else the attempt is stuck)."""
    if not leftover:
        return True
    ordered = sorted(leftover)
    return any((a, b) not in edges for i, a in enumerate(ordered) for b in ordered[i + 1 :])


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
