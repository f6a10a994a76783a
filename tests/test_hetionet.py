"""Hetionet, PPI and pathway loaders on the real files in the data directory, and on bad input."""

import numpy as np
import pytest

from perturbjax.data import gene_tables, hetionet
from perturbjax.graph.hetero import EdgeType

# Counted with `cut -f3 nodes.tsv | sort | uniq -c` and `awk` over the files, not with this code.
NODE_COUNTS = {"anatomy": 402, "biological_process": 11381, "cellular_component": 1391,
               "compound": 1552, "disease": 137, "gene": 20945, "molecular_function": 2884,
               "pathway": 1822, "pharmacologic_class": 345, "side_effect": 5734, "symptom": 438}


@pytest.fixture(scope="module")
def metaedges(real_file):
    return hetionet.read_metaedges(real_file("hetionet/metaedges.tsv"))


def test_metaedges_mapped_to_edge_types(metaedges):
    assert len(metaedges) == 24
    assert metaedges["CbG"].edge_type == EdgeType("compound", "binds", "gene")
    assert metaedges["Gr>G"].directed and metaedges["Gr>G"].edge_type == EdgeType("gene", "regulates", "gene")
    assert metaedges["GpBP"].edge_type == EdgeType("gene", "participates", "biological_process")
    assert not metaedges["GiG"].directed


def test_ten_edges_per_metaedge(real_file, metaedges):
    graph, report = hetionet.load_hetionet(real_file("hetionet/nodes.tsv"),
                                           real_file("hetionet/edges-10.sif"),
                                           real_file("hetionet/metaedges.tsv"))
    assert graph.summary()["nodes"] == NODE_COUNTS
    edges = graph.summary()["edges"]
    # Directed or cross-kind metaedges: 10 edges each way; undirected same-kind ones: 20 in one type.
    assert edges["compound--binds-->gene"] == 10 and edges["gene--rev_binds-->compound"] == 10
    assert edges["gene--interacts-->gene"] == 20 and "gene--rev_interacts-->gene" not in edges
    assert edges["gene--regulates-->gene"] == 10 and edges["gene--rev_regulates-->gene"] == 10
    assert graph.num_edges == 2 * 240
    assert report.total_dropped == 0
    # Index of a known edge: Gene::1108 GiG Gene::5116 is the file's first GiG line.
    i, j = graph.index("gene", ["1108", "5116"])
    es = graph.edges[EdgeType("gene", "interacts", "gene")]
    assert {(i, j), (j, i)} <= set(zip(es.senders.tolist(), es.receivers.tolist()))


def test_full_tables_replace_samples(real_file):
    graph, report = hetionet.load_hetionet(
        real_file("hetionet/nodes.tsv"), real_file("hetionet/edges-10.sif"),
        real_file("hetionet/metaedges.tsv"),
        compound_gene_binding=real_file("hetionet/CbG-binding.tsv"),
        disease_gene_association=real_file("hetionet/DaG-association.tsv"),
        pathways=real_file("pathways/pathways.tsv"), exclude_metaedges=("CuG",))
    edges = graph.summary()["edges"]
    # CbG-binding.tsv has 24,687 rows; those whose compound is a Hetionet node are Hetionet's CbG.
    assert edges["compound--binds-->gene"] == 11571  # metaedges.tsv's full CbG count
    assert report.dropped["CbG: endpoint not among the nodes"] == 24687 - 11571
    assert edges["disease--associates-->gene"] == 12623
    assert "compound--upregulates-->gene" not in edges
    # pathways.tsv lists 1,862 pathways (40 more than Hetionet) and 85,296 memberships.
    assert graph.nodes["pathway"].count == 1862
    assert edges["gene--participates-->pathway"] + report.dropped["GpPW: endpoint not among the nodes"] == 85296


def test_ppi_mapped_to_entrez(real_file):
    nodes = hetionet.read_nodes(real_file("hetionet/nodes.tsv"))
    genes = nodes[nodes["node_type"] == "gene"]
    pairs, report = gene_tables.read_ppi(real_file("ppi/protein-interactions.txt.gz"),
                                         gene_tables.symbol_to_entrez(genes["name"], genes["node_id"]))
    assert (pairs["source_id"] < pairs["target_id"]).all()  # undirected, each pair once
    assert not pairs.duplicated().any()
    total = report.kept["interactions"] + sum(report.dropped.values())
    assert total <= 98187 and report.kept["interactions"] > 95000
    # HGNC:5 A1BG - HGNC:545 ANXA7 is the file's first line; A1BG is Entrez 1, ANXA7 is 310.
    assert ((pairs["source_id"] == "1") & (pairs["target_id"] == "310")).any()


def test_pathways(real_file):
    pathways, members, report = gene_tables.read_pathways(real_file("pathways/pathways.tsv"))
    assert len(pathways) == 1862 and len(members) == 85296
    first = members[members["pathway_id"] == "PC7_10399"]["gene_id"]
    assert sorted(first) == sorted("3676|3688|3695|387|5747|5829|7412|8174".split("|"))


@pytest.mark.parametrize("line, match", [
    ("Gene::1\tXyZ\tGene::2", "line 3: unknown metaedge 'XyZ'"),
    ("Gene::1\tCbG\tGene::2", "line 3: source 'Gene::1' is not a 'compound' node"),
    ("Compound::DB1\tCbG\tGene", "line 3: target 'Gene' is not a 'gene' node"),
    ("Compound::DB1\tCbG\tGene::2\textra", "line 3: expected 3 tab-separated fields.*got 4"),
])
def test_bad_sif_names_file_and_line(tmp_path, metaedges, line, match):
    path = tmp_path / "bad.sif"
    path.write_text(f"source\tmetaedge\ttarget\nCompound::DB1\tCbG\tGene::2\n{line}\n")
    with pytest.raises(ValueError, match=match) as e:
        hetionet.read_sif(path, metaedges)
    assert "bad.sif" in str(e.value)


def test_bad_nodes_name_file_and_line(tmp_path):
    path = tmp_path / "nodes.tsv"
    path.write_text("id\tname\tkind\nGene::1\tA1BG\tGene\nGene::1\tagain\tGene\n")
    with pytest.raises(ValueError, match=r"nodes.tsv line 3: duplicate node id 'Gene::1'"):
        hetionet.read_nodes(path)
    path.write_text("id\tname\tkind\nGene::1\tA1BG\tCompound\n")
    with pytest.raises(ValueError, match="line 2: id 'Gene::1' does not match its kind"):
        hetionet.read_nodes(path)
    path.write_text("id\tkind\nGene::1\tGene\n")
    with pytest.raises(ValueError, match=r"nodes.tsv line 1: missing required columns \['name'\]"):
        hetionet.read_nodes(path)


def test_edges_to_unknown_nodes_are_reported(tmp_path, real_file):
    sif = tmp_path / "e.sif"
    sif.write_text("source\tmetaedge\ttarget\nCompound::DB00014\tCbG\tGene::2147\n"
                   "Compound::DBXXXXX\tCbG\tGene::2147\nCompound::DB00014\tCbG\tGene::2147\n")
    graph, report = hetionet.load_hetionet(real_file("hetionet/nodes.tsv"), sif,
                                           real_file("hetionet/metaedges.tsv"))
    assert graph.edges[EdgeType("compound", "binds", "gene")].count == 1
    assert report.dropped["CbG: endpoint not among the nodes"] == 1
    assert report.examples["CbG: endpoint not among the nodes"] == ["DBXXXXX -> 2147"]
    assert report.dropped["CbG: repeated edge"] == 1
    np.testing.assert_array_equal(graph.index("compound", ["DB00014"]),
                                  graph.edges[EdgeType("compound", "binds", "gene")].senders)
