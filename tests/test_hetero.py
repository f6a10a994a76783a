import numpy as np
import pytest

from perturbjax.graph.hetero import EdgeSet, EdgeType, HeteroGraph, NodeSet


def test_counts_offsets_and_summary(graph):
    assert graph.num_nodes == 11 and graph.num_edges == 14
    assert graph.node_types == ["drug", "gene", "pathway"]
    assert graph.node_offsets() == {"drug": 0, "gene": 3, "pathway": 9}
    assert graph.nodes["gene"].feature_width == 4
    assert graph.summary()["edges"]["gene--interacts-->gene"] == 4


def test_stacked_features_sorted_by_name(graph):
    g = graph.nodes["gene"]
    np.testing.assert_array_equal(g.stacked_features(), np.c_[g.features["emb"], g.features["x"]])


def test_index_by_name(graph):
    np.testing.assert_array_equal(graph.index("gene", ["g4", "g0"]), [4, 0])
    with pytest.raises(KeyError, match="not among 'gene'"):
        graph.index("gene", ["nope"])
    with pytest.raises(KeyError, match="unknown node type"):
        graph.index("protein", ["g0"])


@pytest.mark.parametrize("senders, receivers, error, match", [
    ([0, 3], [0, 1], IndexError, r"senders\[1\] = 3 is out of range for 3 'drug' nodes"),
    ([0, 1], [0, 6], IndexError, r"receivers\[1\] = 6 is out of range for 6 'gene' nodes"),
    ([0, -1], [0, 1], IndexError, "out of range"),
    ([0, 1, 2], [0, 1], ValueError, "equal length"),
    ([0.0, 1.0], [0, 1], ValueError, "must be integers"),
])
def test_bad_edges_rejected(graph, senders, receivers, error, match):
    edges = {EdgeType("drug", "targets", "gene"): EdgeSet(np.array(senders), np.array(receivers))}
    with pytest.raises(error, match=match):
        HeteroGraph(graph.nodes, edges)


def test_unknown_node_type_and_bad_features(graph):
    with pytest.raises(KeyError, match="unknown target node type 'protein'"):
        HeteroGraph(graph.nodes, {EdgeType("drug", "binds", "protein"): EdgeSet(np.array([0]), np.array([0]))})
    with pytest.raises(ValueError, match=r"feature 'fp' has shape \(2, 5\), expected \(3, width\)"):
        HeteroGraph({"drug": NodeSet(np.array(["a", "b", "c"]), {"fp": np.zeros((2, 5))})}, {})
    with pytest.raises(ValueError, match="not unique"):
        HeteroGraph({"drug": NodeSet(np.array(["a", "a"]))}, {})
    with pytest.raises(ValueError, match="non-finite"):
        HeteroGraph({"drug": NodeSet(np.array(["a"]), {"fp": np.array([[np.nan]])})}, {})


def test_drop_edge_types_by_relation_or_key(graph):
    dropped = graph.drop_edge_types(["interacts"])
    assert EdgeType("gene", "interacts", "gene") not in dropped.edges
    assert len(dropped.edges) == 3 and len(graph.edges) == 4  # the original is untouched
    key = EdgeType("pathway", "contains", "gene")
    assert key not in graph.drop_edge_types([key]).edges
    assert key not in graph.drop_edge_types([str(key)]).edges
    with pytest.raises(KeyError, match="'interact' is not in the graph"):
        graph.drop_edge_types(["interact"])  # a typo must not silently keep the edges


def test_reverse_edges_and_feature_ablation(graph):
    both = graph.with_reverse_edges(skip=("interacts",))
    rev = both.edges[EdgeType("gene", "rev_targets", "drug")]
    fwd = graph.edges[EdgeType("drug", "targets", "gene")]
    np.testing.assert_array_equal(rev.senders, fwd.receivers)
    np.testing.assert_array_equal(rev.receivers, fwd.senders)
    assert EdgeType("gene", "rev_interacts", "gene") not in both.edges
    bare = graph.without_features(["drug"])
    assert bare.nodes["drug"].feature_width == 0 and bare.nodes["gene"].feature_width == 4


def test_save_load_round_trip_without_pickle(tmp_path, graph):
    graph.save(str(tmp_path / "g"))
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["arrays.npz", "graph.json"]
    loaded = HeteroGraph.load(str(tmp_path / "g"))
    assert loaded.summary() == graph.summary()
    for t in graph.node_types:
        np.testing.assert_array_equal(loaded.nodes[t].names, graph.nodes[t].names)
        np.testing.assert_array_equal(loaded.nodes[t].stacked_features(), graph.nodes[t].stacked_features())
    for k in graph.edge_types:
        np.testing.assert_array_equal(loaded.edges[k].senders, graph.edges[k].senders)
        np.testing.assert_array_equal(loaded.edges[k].receivers, graph.edges[k].receivers)


def test_edge_type_string_round_trip():
    k = EdgeType("drug", "targets", "gene")
    assert EdgeType.parse(str(k)) == k
    with pytest.raises(ValueError, match="not of the form"):
        EdgeType.parse("drug-targets-gene")



def test_with_nodes_appends_and_keeps_indices(graph):
    g = graph.with_nodes("drug", ["d3"], {"fp": np.ones((1, 5))})
    assert list(g.nodes["drug"].names) == ["d0", "d1", "d2", "d3"]
    np.testing.assert_array_equal(g.nodes["drug"].features["fp"][:3], graph.nodes["drug"].features["fp"])
    assert g.num_edges == graph.num_edges
    new = graph.with_nodes("cell_line", ["c0", "c1"], {"basal": np.zeros((2, 4))})
    assert new.nodes["cell_line"].count == 2 and new.nodes["cell_line"].feature_width == 4
    with pytest.raises(ValueError, match="has features \\['fp'\\]"):
        graph.with_nodes("drug", ["d3"])
    with pytest.raises(ValueError, match="not unique"):
        graph.with_nodes("drug", ["d0"], {"fp": np.ones((1, 5))})


def test_with_edges_adds_once(graph):
    key = EdgeType("drug", "targets", "gene")
    g = graph.with_edges(key, [0, 0], [5, 0])  # (0, 0) already exists
    assert g.edges[key].count == graph.edges[key].count + 1
    g = graph.with_edges(EdgeType("drug", "treats", "pathway"), [1], [0])
    assert g.summary()["edges"]["drug--treats-->pathway"] == 1
    with pytest.raises(IndexError):
        graph.with_edges(key, [9], [0])


def test_with_features_adds_and_replaces(graph):
    g = graph.with_features("pathway", {"emb": np.ones((2, 3))})
    assert g.nodes["pathway"].feature_width == 3 and g.nodes["gene"].feature_width == 4
    g = graph.with_features("gene", {"x": np.zeros((6, 2))})
    assert sorted(g.nodes["gene"].features) == ["emb", "x"] and g.nodes["gene"].feature_width == 5
    with pytest.raises(ValueError, match="feature 'x' has shape"):
        graph.with_features("gene", {"x": np.zeros((5, 2))})
