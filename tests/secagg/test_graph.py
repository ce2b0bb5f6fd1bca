"""SecAgg+ graph (Bell et al. 2020): regular, connected, deterministic from the public seed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipfl.secagg import SecAggConfig
from clipfl.secagg.graph import is_connected, regular_graph, round_graph, round_neighbors


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 120), seed=st.binary(min_size=32, max_size=32), data=st.data())
def test_resolved_graph_is_regular_connected_and_deterministic(
    n: int, seed: bytes, data: st.DataObject
) -> None:
    k = SecAggConfig(neighbors=data.draw(st.integers(2, 12))).resolved(n).neighbors
    nodes = data.draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n, unique=True))
    graph = regular_graph(nodes, k, seed)
    assert set(graph) == set(nodes)
    assert all(len(graph[u]) == k for u in nodes)
    assert all(u not in graph[u] for u in nodes)  # no loops
    assert all(u in graph[v] for u in nodes for v in graph[u])  # undirected
    assert is_connected(graph)
    assert regular_graph(list(reversed(nodes)), k, seed) == graph  # order of ids does not matter


def test_different_seeds_give_different_graphs() -> None:
    graphs = {tuple(sorted(regular_graph(range(50), 6, bytes([i]) * 32)[0])) for i in range(10)}
    assert len(graphs) > 5


@pytest.mark.parametrize("k", [9, 10, 50])
def test_degree_at_least_n_minus_one_is_the_complete_graph(k: int) -> None:
    graph = regular_graph(range(10), k, b"s" * 32)
    assert all(graph[u] == frozenset(range(10)) - {u} for u in range(10))


def test_impossible_degrees_are_refused() -> None:
    with pytest.raises(ValueError, match="odd"):
        regular_graph(range(9), 3, b"s" * 32)
    with pytest.raises(ValueError, match="disconnected"):
        regular_graph(range(10), 1, b"s" * 32)


@given(n=st.integers(2, 300), k=st.integers(2, 300), seed=st.binary(min_size=32, max_size=32))
def test_one_clients_neighbours_match_the_whole_round_graph(n: int, k: int, seed: bytes) -> None:
    graph = round_graph(range(n), k, seed)
    assert all(round_neighbors(range(n), k, seed, u) == graph[u] for u in (0, n // 2, n - 1))
    assert is_connected(graph) and len({len(v) for v in graph.values()}) == 1


def test_each_clients_neighbours_are_a_uniform_subset() -> None:
    """What params.py's bounds assume: over seeds, client 0's neighbours are spread uniformly."""
    counts = [0] * 40
    for i in range(2000):
        for v in round_neighbors(range(40), 6, i.to_bytes(32, "big"), 0):
            counts[v] += 1
    expected = 2000 * 6 / 39
    assert counts[0] == 0 and all(abs(c - expected) < 0.25 * expected for c in counts[1:])
