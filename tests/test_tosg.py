"""The OmniCellTOSG-layout loader, donor splits and the converter (perturbjax/data/tosg*.py)."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pandas as pd
import pytest

from perturbjax.cli import main
from perturbjax.data.splits import (Split, assert_groups_disjoint, donor_split,
                                    stratified_split)
from perturbjax.data.tosg import TOSGDataset, TOSGError
from perturbjax.data.tosg_build import build_from_anndata, name_embedding, read_network
from tosg_data import tree_digest, write_dataset

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
PBMC = os.path.join(SHARED, "singlecell", "pbmc68k_reduced.h5ad")
PPI = os.path.join(SHARED, "ppi", "protein-interactions.txt.gz")
SIGNALING = os.path.join(SHARED, "signaling", "pkn_edges.tsv")


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "tosg"
    written = write_dataset(root)
    return root, written


@pytest.mark.parametrize("metadata_format", ["parquet", "csv"])
def test_loader_reads_the_layout_and_selected_rows_only(tmp_path, metadata_format):
    root = tmp_path / "tosg"
    w = write_dataset(root, metadata_format=metadata_format)
    before = tree_digest(root)
    d = TOSGDataset(str(root))
    assert d.num_samples == 120 and d.graph.num_nodes == 40
    assert d.graph.edges["edge_index"].shape == (2, 120)
    assert d.graph.edges["internal_edge_index"].shape == (2, 0)  # empty files are kept empty
    assert d.graph.embeddings["x_desc_emb"].shape == (40, 1)
    assert d.graph.node_names[3] == "GENE3"
    np.testing.assert_array_equal(d.graph.gene_index["GENE2"], [2, 32])
    # Shards are memory maps; a read returns just the asked rows, with the nodes beyond the
    # shard's 30 columns at 0.
    assert all(isinstance(s, np.memmap) for s in d._shards.values())
    rows = np.array([7, 0, 119, 7])
    x = d.expression(rows)
    np.testing.assert_array_equal(x[:, :30], w["x"][rows])
    assert x.shape == (4, 40) and not x[:, 30:].any()
    codes, classes, known = d.labels("cell_type")  # an alias of CMT_name
    assert classes == ["B cell", "Monocyte", "T cell"] and known.sum() == 117
    assert (codes[~known] == -1).all()
    assert tree_digest(root) == before  # the loader never writes into the root


def test_layout_variants_shard_paths_and_no_embeddings(dataset):
    """Shard paths relative to expression_matrix/ or written on another machine resolve; with
    no embeddings or node texts, N is what the edges and shards need."""
    root, w = dataset
    meta = pd.read_parquet(root / "cell_metadata_with_mappings.parquet")
    meta["matrix_file_path"] = [("shard0.npy" if "shard0" in p
                                 else "/home/someone/OmniCellTOSG/expression_matrix/shard1.npy")
                                for p in meta["matrix_file_path"]]
    meta.to_parquet(root / "cell_metadata_with_mappings.parquet", index=False)
    for name in ("x_name_emb.npy", "x_desc_emb.npy", "s_name.csv", "bmg_gene_index.csv"):
        os.remove(root / name)
    d = TOSGDataset(str(root))
    assert d.graph.num_nodes == max(30, int(d.graph.edges["edge_index"].max()) + 1)
    assert d.graph.node_names is None and not d.graph.embeddings
    np.testing.assert_array_equal(d.expression(np.arange(120))[:, :30], w["x"])


def test_condition_filters_are_case_insensitive_with_aliases(dataset):
    root, w = dataset
    d = TOSGDataset(str(root), {"tissue": "blood", "sex": ["FEMALE"]})
    meta = w["meta"]
    expected = np.flatnonzero((meta.tissue_general == "Blood") & (meta.sex_normalized == "female"))
    np.testing.assert_array_equal(d.metadata_rows, expected)
    np.testing.assert_array_equal(d.expression(np.arange(3))[:, :30], w["x"][expected[:3]])
    with pytest.raises(TOSGError, match="no sample matches"):
        TOSGDataset(str(root), {"disease": "influenza"})
    with pytest.raises(TOSGError, match="no column 'organism'"):
        TOSGDataset(str(root), {"organism": "human"})


def _corrupt(root, what):
    meta_path = root / "cell_metadata_with_mappings.parquet"
    if what == "row past the shard":
        meta = pd.read_parquet(meta_path)
        meta.loc[5, "matrix_row_idx"] = 10_000
        meta.to_parquet(meta_path, index=False)
        return "record 5 has matrix_row_idx 10000"
    if what == "edge past N":
        np.save(root / "ppi_edge_index.npy", np.array([[0, 1], [2, 40]]))
        return "ppi_edge_index.npy: edge 1 is \\[1, 40\\]"
    if what == "short embeddings":
        np.save(root / "x_desc_emb.npy", np.zeros((39, 1), np.float32))
        return "x_desc_emb.npy: 39 rows; expected one per node, 40"
    if what == "missing shard":
        os.remove(root / "expression_matrix" / "shard1.npy")
        return "matrix_file_path 'expression_matrix/shard1.npy' is not a file"
    if what == "no metadata":
        os.remove(meta_path)
        return "no cell_metadata_with_mappings.parquet or cell_metadata_with_mappings.csv"
    if what == "bad row index":
        meta = pd.read_parquet(meta_path)
        meta["matrix_row_idx"] = meta["matrix_row_idx"].astype(str)
        meta.loc[2, "matrix_row_idx"] = "x"
        meta.to_parquet(meta_path, index=False)
        return "record 2 has matrix_row_idx 'x'"
    if what == "truncated shard":
        with open(root / "expression_matrix" / "shard0.npy", "wb") as f:
            f.write(b"\x93NUMPY")
        return "shard0.npy: not a readable .npy array"
    if what == "too many columns":
        np.save(root / "expression_matrix" / "shard0.npy", np.zeros((200, 41), np.float32))
        return "shard0.npy: 41 columns; expected at most one per node \\(40\\)"
    if what == "gene index past N":
        pd.DataFrame({"gene": ["A"], "columns": ["1;99"]}).to_csv(root / "bmg_gene_index.csv",
                                                                  index=False)
        return "bmg_gene_index.csv:2: gene 'A' points at node 99"
    raise AssertionError(what)


@pytest.mark.parametrize("what", ["row past the shard", "edge past N", "short embeddings",
                                  "missing shard", "no metadata", "bad row index",
                                  "truncated shard", "too many columns", "gene index past N"])
def test_bad_files_are_one_line_errors_naming_the_file(dataset, what):
    root, _ = dataset
    expected = _corrupt(root, what)
    with pytest.raises(TOSGError, match=expected) as e:
        TOSGDataset(str(root))
    assert "\n" not in str(e.value)


def test_donor_split_keeps_donors_whole_and_the_assertion_catches_leaks(dataset):
    root, _ = dataset
    d = TOSGDataset(str(root))
    donors = d.donors()
    assert donors is not None and len(set(donors)) == 8  # dataset_id|donor_id
    split = donor_split(donors, seed=0)
    parts = split.parts()
    assert sum(len(p) for p in parts.values()) == d.num_samples
    for a in parts:
        for b in parts:
            if a < b:
                assert not set(donors[parts[a]]) & set(donors[parts[b]])
    leaky = Split("donor", split.train, np.concatenate([split.validation, split.train[:1]]),
                  split.test)
    with pytest.raises(AssertionError, match="share"):
        assert_groups_disjoint(leaky, donors, "donors")


def test_unknown_donors_fall_back_to_a_stratified_split(tmp_path):
    root = tmp_path / "tosg"
    write_dataset(root)
    meta = pd.read_parquet(root / "cell_metadata_with_mappings.parquet")
    meta["donor_id"] = "unknown"
    meta.to_parquet(root / "cell_metadata_with_mappings.parquet", index=False)
    d = TOSGDataset(str(root))
    assert d.donors() is None
    codes, _, known = d.labels("CMT_name")
    split = stratified_split(codes[known], seed=0)
    for c in range(3):  # every class in every part, in about the asked proportions
        sizes = [np.sum(codes[known][p] == c) for p in split.parts().values()]
        assert min(sizes) >= 1 and sizes[0] > sizes[1] + sizes[2]


def test_network_formats_are_read_as_gene_symbol_pairs(tmp_path):
    ppi, fmt = read_network(PPI)
    assert fmt == "ppi" and len(ppi) == 98187 and ppi.iloc[0].tolist() == ["A1BG", "ANXA7"]
    sig, fmt = read_network(SIGNALING)
    assert fmt == "signaling" and len(sig) == 12899 and sig["source"].notna().mean() > 0.99
    path = tmp_path / "edges.csv"
    path.write_text("gene_a,gene_b\nCD3E,CD4\nMS4A1,CD19\n")
    pairs, fmt = read_network(str(path))
    assert fmt == "edgelist" and pairs.values.tolist()[-1] == ["MS4A1", "CD19"]
    np.testing.assert_array_equal(name_embedding(["CD4"], 8), name_embedding(["CD4"], 8))


def test_converter_round_trip_on_the_pbmc68k_file(tmp_path):
    import anndata

    out = tmp_path / "pbmc"
    report = build_from_anndata(PBMC, PPI, str(out), label_columns=["bulk_labels=CMT_name",
                                                                     "phase"], shard_rows=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        adata = anndata.read_h5ad(PBMC)
    assert report["samples"] == 700 and report["genes"] == 765
    assert 0 < report["edges_matched"] <= report["network_edges"]
    d = TOSGDataset(str(out))
    assert len(d._shards) == 3 and d.graph.num_nodes == 765  # 300 + 300 + 100 rows
    np.testing.assert_array_equal(d.expression(np.arange(700)), np.asarray(adata.X))
    codes, classes, _ = d.labels("cell_type")
    assert [classes[c] for c in codes[:5]] == adata.obs["bulk_labels"].astype(str).tolist()[:5]
    # Every edge joins two genes that interact in the PPI file.
    ppi, _ = read_network(PPI)
    known = set(zip(ppi.source.str.upper(), ppi.target.str.upper()))
    genes = [g.upper() for g in adata.var_names]
    e = d.graph.edges["edge_index"]
    assert all((genes[a], genes[b]) in known for a, b in e.T)
    assert d.donors() is None  # pbmc68k_reduced names no donors
    with pytest.raises(TOSGError, match="exists and is not empty"):
        build_from_anndata(PBMC, PPI, str(out))
    with pytest.raises(TOSGError, match="--text-dim 0"):
        build_from_anndata(PBMC, PPI, str(tmp_path / "other"), text_dim=0)
    assert not (tmp_path / "other").exists()


def test_tosg_cli_builds_summarises_and_fails_in_one_line(tmp_path, capsys):
    out = tmp_path / "pbmc"
    main(["tosg", "build", "--h5ad", PBMC, "--network", SIGNALING, "--label-columns",
          "bulk_labels=CMT_name", "--out", str(out)])
    assert "interactions matched" in capsys.readouterr().out
    main(["tosg", "summary", "--root", str(out), "--label-column", "cell_type"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["labels"]["CMT_name"]["Dendritic"] == 240 and summary["donors"] is None
    with pytest.raises(SystemExit) as e:
        main(["tosg", "build", "--h5ad", PBMC, "--network", SIGNALING, "--label-columns",
              "no_such_column", "--out", str(tmp_path / "other")])
    assert e.value.code == 2
    assert "--label-columns 'no_such_column' is not an obs column" in capsys.readouterr().err
