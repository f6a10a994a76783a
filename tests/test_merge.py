"""Merging LINCS drugs and cell lines into a KG, and the leakage guard."""

import numpy as np
import pandas as pd
import pytest

from perturbjax.data import leakage, merge
from perturbjax.graph.hetero import EdgeSet, EdgeType, HeteroGraph, NodeSet


def kg() -> HeteroGraph:
    nodes = {"compound": NodeSet(np.array(["DB1", "DB2", "DB3"]), {"fp": np.ones((3, 2))}),
             "gene": NodeSet(np.array(["10", "20", "30"]))}
    binds = EdgeType("compound", "binds", "gene")
    edges = {binds: EdgeSet(np.array([0, 1]), np.array([0, 1])),
             EdgeType("gene", "rev_binds", "compound"): EdgeSet(np.array([0, 1]), np.array([0, 1])),
             EdgeType("compound", "upregulates", "gene"): EdgeSet(np.array([2]), np.array([2])),
             EdgeType("gene", "regulates", "gene"): EdgeSet(np.array([0]), np.array([1]))}
    return HeteroGraph(nodes, edges)


def test_match_by_id_then_inchikey_then_name():
    kg_drugs = pd.DataFrame({"node_id": ["DB1", "DB2", "DB3", "DB4"],
                             "inchikey": ["InChIKey=AAA", "BBB", "", "DUP"],
                             "name": ["Aspirin", "Ibuprofen", "Caffeine", "x"]})
    query = pd.DataFrame({"drug_id": ["DB1", "BRD-1", "BRD-2", "BRD-3", "BRD-4"],
                          "inchikey": ["", "AAA", "", "ZZZ", "DUP"],
                          "name": ["", "", "CAFFEINE ", "unknown", ""]})
    matched, report = merge.match_drugs(query, kg_drugs)
    assert matched.tolist()[:3] == ["DB1", "DB1", "DB3"]
    assert matched.isna().tolist() == [False, False, False, True, False]
    assert report.kept == {"matched by drug_id": 1, "matched by inchikey": 2,
                           "matched by name": 1, "unmatched": 1}


def test_unmatched_drugs_join_with_their_targets():
    graph = kg()
    ids = pd.Series(["DB2", "NEW1", "NEW2"])
    matched = pd.Series(["DB2", np.nan, np.nan], dtype=object)
    targets = pd.DataFrame({"drug_id": ["NEW1", "NEW1", "NEW2", "DB2"],
                            "gene_id": ["20", "30", "99", "30"]})
    out, positions, report = merge.merge_drugs(graph, ids, matched, targets,
                                               drug_type="compound", gene_type="gene")
    assert list(out.nodes["compound"].names) == ["DB1", "DB2", "DB3", "NEW1", "NEW2"]
    np.testing.assert_array_equal(positions, [1, 3, 4])
    np.testing.assert_array_equal(out.nodes["compound"].features["fp"][3:], 0)
    binds = out.edges[EdgeType("compound", "binds", "gene")]
    pairs = set(zip(binds.senders.tolist(), binds.receivers.tolist()))
    assert pairs == {(0, 0), (1, 1), (3, 1), (3, 2)}  # matched DB2 keeps only the KG's edges
    rev = out.edges[EdgeType("gene", "rev_binds", "compound")]
    assert set(zip(rev.receivers.tolist(), rev.senders.tolist())) == pairs
    assert report.dropped["target gene not in the graph"] == 1
    assert report.kept["new drugs without a target in the graph"] == 1


def test_cell_lines_and_readout():
    graph, cells = merge.add_cell_lines(kg(), ["A375", "MCF7"], np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(cells, [0, 1])
    assert graph.nodes["cell_line"].features["basal_expression"].shape == (2, 3)
    np.testing.assert_array_equal(merge.readout_positions(graph, "gene", [30, "10"]), [2, 0])
    with pytest.raises(KeyError, match="not among 'gene'"):
        merge.readout_positions(graph, "gene", ["40"])


def test_leakage_guard_drops_l1000_edges_unless_kept():
    graph = kg()
    guarded, info = leakage.guard(graph)
    assert EdgeType("compound", "upregulates", "gene") not in guarded.edges
    assert EdgeType("gene", "regulates", "gene") not in guarded.edges
    assert EdgeType("compound", "binds", "gene") in guarded.edges
    assert info["leaky"] is False and len(info["dropped"]) == 2
    kept, info = leakage.guard(graph, keep_leaky=True)
    assert kept.num_edges == graph.num_edges
    assert info == {"leaky": True, "kept": ["compound--upregulates-->gene", "gene--regulates-->gene"],
                    "dropped": []}
