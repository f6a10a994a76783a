"""The OmniCellTOSG-layout loader, donor splits and the converter (perturbjax/data/tosg*.py)."""

from __future__ import annotations

import csv
import json
import os
import warnings

import numpy as np
import pandas as pd
import pytest

from perturbjax.cli import main
from perturbjax.data import registry
from perturbjax.data.splits import (Split, assert_groups_disjoint, donor_split,
                                    stratified_split)
from perturbjax.data.tosg import TOSGDataset, TOSGError
from perturbjax.data.tosg_build import build_from_anndata, name_embedding, read_network
from tosg_data import tree_digest, write_dataset, write_published_dataset

# The data directory the commands read ($PERTURBJAX_DATA_DIR; CI points it at ../shared/data).
SHARED = str(registry.data_dir())
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


def test_the_layout_tosg_build_wrote_before_still_reads(dataset):
    """Roots written by earlier `tosg build`s: shard paths `expression_matrix/part-N.npy`, a
    gene index `gene,columns`, s_name.csv `node,name`."""
    root, w = dataset
    pd.DataFrame({"node": range(40), "name": [f"G{i}" for i in range(40)]}).to_csv(
        root / "s_name.csv", index=False)
    d = TOSGDataset(str(root))
    assert d.graph.node_names[5] == "G5"
    np.testing.assert_array_equal(d.graph.gene_index["GENE2"], [2, 32])
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
                                                                     "phase"], shard_rows=300,
                                allow_negative=True)  # X is scaled: a root for perturbjax only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        adata = anndata.read_h5ad(PBMC)
    assert report["samples"] == 700 and report["genes"] == 765
    assert report["layer"] == "X" and not report["integer_values"]
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
    build = ["tosg", "build", "--h5ad", PBMC, "--network", SIGNALING, "--label-columns",
             "bulk_labels=CMT_name", "--out", str(out)]
    # pbmc68k_reduced's X is scaled (negative values): not counts, refused in one line.
    with pytest.raises(SystemExit) as e:
        main(build)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert ("pbmc68k_reduced.h5ad: adata.X holds negative values (scaled data, not counts), "
            "first -0.326 at cell 'AAAGCCTGGCTAAC-1' (row 0), gene 'HES4' (column 0)") in err
    assert "--layer raw|NAME (it has: X, raw)" in err and not out.exists()
    # Its adata.raw holds non-negative, log-normalised values (no counts): written, with a
    # warning that they are not integers.
    main(build + ["--layer", "raw"])
    captured = capsys.readouterr()
    assert "interactions matched" in captured.out
    assert "adata.raw.X holds non-integer values (not raw counts)" in captured.err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import anndata
        raw = anndata.read_h5ad(PBMC).raw.X
    np.testing.assert_array_equal(TOSGDataset(str(out)).expression(np.arange(700)),
                                  raw.toarray() if hasattr(raw, "toarray") else raw)
    main(["tosg", "summary", "--root", str(out), "--label-column", "cell_type"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["labels"]["CMT_name"]["Dendritic"] == 240 and summary["donors"] is None
    with pytest.raises(SystemExit) as e:
        main(["tosg", "build", "--h5ad", PBMC, "--network", SIGNALING, "--label-columns",
              "no_such_column", "--out", str(tmp_path / "other")])
    assert e.value.code == 2
    assert "--label-columns 'no_such_column' is not an obs column" in capsys.readouterr().err


# ---- OmniCellTOSG's own loader, as far as its files and columns go -----------------------------
# A minimal re-implementation (nothing copied) of what CellTOSG_Loader opens and reads, at
# github.com/FuhaiLiAiLab/OmniCellTOSG commit 77ad47c; each step cites the lines it mirrors. It
# stops where the loader's work no longer depends on file or column names (balancing, the
# splits' donor choice, ComBat-seq, the 121,419 protein columns extract.py pads).
OMNICELL_FIELD_ALIAS = {"cell_type": "CMT_name", "disease": "disease_BMG_name",
                        "development_stage": "development_stage_category",
                        "sex": "sex_normalized"}  # subset_builder.py 8-13
OMNICELL_TASKS = {  # subset_builder.py 15-28 (TASK_CONFIG)
    "disease": ("disease_BMG_name", ["CMT_id", "sex_normalized", "development_stage_category"]),
    "sex": ("sex_normalized", ["CMT_id", "development_stage_category"])}
OMNICELL_LABEL_ZERO = {"sex": {"female"}, "disease": {"normal", "unclassified", "unknown"},
                       "cell_type": {"unknown", "unclassified"}}  # dataset.py 11-15


def omnicell_load(root, task: str, label_column: str, conditions=None) -> dict:
    """What OmniCellTOSG's CellTOSGDataLoader(root, conditions, task, label_column,
    extract_mode="train") reads from `root`; raises where it would."""
    # subset_builder.py 31-37: fixed paths; the metadata is read from the parquet file only.
    meta = pd.read_parquet(os.path.join(root, "cell_metadata_with_mappings.parquet"))
    matrix_root = os.path.join(root, "expression_matrix")
    bmg_gene_index_csv = os.path.join(root, "bmg_gene_index.csv")
    # subset_builder.py 40-47 and 93-110: condition keys through FIELD_ALIAS, each a column.
    for key, value in (conditions or {}).items():
        key = OMNICELL_FIELD_ALIAS.get(key, key)
        if key not in meta.columns:
            raise KeyError(f"Column '{key}' not found in metadata.")
        meta = meta[meta[key].str.lower().fillna("") == value.lower()]
    # extract.py 371-392: the cell-type task keeps rows whose CMT_name is set and not one of its
    # uninformative names; disease and sex (their balanced path, 434-466) drop blank and
    # unknown-like values of the task's column, and match on TASK_CONFIG's keys.
    if task == "cell_type":
        column = meta["CMT_name"]
        keep = (column.notna() & (column.astype(str).str.strip() != "")
                & ~column.astype(str).str.lower().isin(
                    ["unannoted", "unannotated", "unknown", "miscellaneous", "splatter", "cell"]))
    else:
        field, match_keys = OMNICELL_TASKS[task]
        missing = [k for k in match_keys if k not in meta.columns]
        if missing:
            raise KeyError(f"match keys {missing} not in metadata")
        column = meta[field]
        keep = (column.notna() & (column.astype(str).str.strip() != "")
                & ~column.astype(str).str.lower().isin({"unknown", "unannotated", "unannoted",
                                                        "none", ""}))
    meta = meta[keep].copy()
    # split.py 256-261 and 402-404: the donor-wise splits need dataset_id and donor_id.
    for c in ("dataset_id", "donor_id"):
        if c not in meta.columns:
            raise KeyError(f"Column '{c}' not found in reference_df.")
    meta["sample_index"] = np.arange(len(meta))  # extract.py 29-30
    # data_loader.py 29-52: each shard at os.path.join(expression_matrix, matrix_file_path),
    # memory-mapped, its rows by matrix_row_idx, back in sample order.
    parts, order = [], []
    for name in meta["matrix_file_path"].unique():
        group = meta[meta["matrix_file_path"] == name]
        matrix = np.load(os.path.join(matrix_root, name), mmap_mode="r")
        parts.append(matrix[group["matrix_row_idx"].values, :])
        order.extend(group["sample_index"].values)
    x = np.vstack(parts)[np.argsort(order)].astype(np.float64)
    # data_loader.py 54-72 (l1_normalize_log1p, extract.py 83-91): counts to 1e4 per sample,
    # then log1p; negative values raise.
    if np.any(x < 0):
        raise ValueError("Input matrices must be non-negative for L1 normalize -> log1p.")
    x = np.log1p(x * (1e4 / np.maximum(x.sum(axis=1, keepdims=True), 1e-12)))
    # dataset.py 141-190 (build_split_labels): FIELD_ALIAS's column; the label-zero values all
    # code 0, the others from 1 (0 when none) in stripped, case-insensitive order.
    label = OMNICELL_FIELD_ALIAS.get(label_column, label_column)
    if label not in meta.columns:
        raise ValueError(f"Label column '{label}' not found in train metadata.")
    values = meta[label].dropna().unique().tolist()
    zero = {v.strip().lower() for v in OMNICELL_LABEL_ZERO.get(label_column, set())}
    zeros = [v for v in values if str(v).strip().lower() in zero]
    others = sorted({v for v in values if v not in zeros}, key=lambda v: str(v).strip().lower())
    mapping = dict.fromkeys(zeros, 0) | {v: i for i, v in enumerate(others, start=bool(zeros))}
    y = meta[label].map(mapping).fillna(-1).astype(int).values
    # data_loader.py 471-499 (load_bmg_gene_index, used by extract.py 287-292): a DictReader
    # that needs the columns gene_name and indices; indices split on ';'.
    with open(bmg_gene_index_csv, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if "gene_name" not in reader.fieldnames or "indices" not in reader.fieldnames:
            raise ValueError("bmg_gene_index.csv must have columns: gene_name, indices")
        genes = {row["gene_name"].strip(): [int(p) for p in row["indices"].split(";") if p]
                 for row in reader if row["gene_name"] and row["indices"]}
    # dataset.py 118-136 and 229-235: np.load / pd.read_csv of each file, None when missing;
    # train.py 630-638 turns the arrays into tensors (None fails there).
    arrays = {}
    for name in ("edge_index", "internal_edge_index", "ppi_edge_index", "x_name_emb",
                 "x_desc_emb", "x_bio_emb"):
        path = os.path.join(root, f"{name}.npy")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: CellTOSGDataLoader leaves it None")
        arrays[name] = np.load(path)
    # train.py 113-136 (pre_embed_text, also pretrain.py 79-102): the texts' columns.
    texts = {name: pd.read_csv(os.path.join(root, f"{name}.csv"))
             for name in ("s_name", "s_desc", "s_bio")}
    names = texts["s_name"]["Name"].tolist()
    descriptions = texts["s_desc"]["Description"].tolist()
    s_bio = texts["s_bio"]
    sequences = (s_bio[s_bio["Type"] == "Transcript"]["Sequence"].tolist()
                 + s_bio[s_bio["Type"] == "Protein"]["Sequence"].tolist())
    # Its README: edges are COO [2, E]; the embeddings align row-wise with the texts.
    for name in ("edge_index", "internal_edge_index", "ppi_edge_index"):
        e = arrays[name]
        assert e.ndim == 2 and e.shape[0] == 2 and np.issubdtype(e.dtype, np.integer), name
    for name in ("x_name_emb", "x_desc_emb", "x_bio_emb"):
        assert arrays[name].ndim == 2 and len(arrays[name]) == len(names), name
    assert len(descriptions) == len(sequences) == len(names)
    return {"meta": meta, "x": x, "y": y, "mapping": mapping, "genes": genes, "names": names,
            **arrays}


def test_published_layout_reads_with_its_mapped_labels(tmp_path):
    """A root in OmniCellTOSG's published layout (written from its code's names, not by
    perturbjax): perturbjax reads it, `cell_type` is its mapped CMT_name (`raw:cell_type` the
    raw column), and its uninformative classes get the codes OmniCellTOSG's loader gives."""
    root = tmp_path / "omnicell"
    w = write_published_dataset(root)
    d = TOSGDataset(str(root))
    assert d.metadata_file.endswith(".parquet") and d.graph.num_nodes == w["num_nodes"] == 32
    assert sorted(d._shards) == sorted(w["shards"])  # bare names under expression_matrix/
    assert {k: v.shape[1] for k, v in d.graph.edges.items()} == {
        "edge_index": 55, "internal_edge_index": 8, "ppi_edge_index": 7}
    assert d.graph.node_names[:2] == ["GENE0", "GENE1"] and d.graph.node_names[-1] == "PROT7"
    np.testing.assert_array_equal(d.graph.gene_index["GENE1"], [1, 13])
    x = d.expression(np.arange(90))
    np.testing.assert_array_equal(x[:, :24], w["x"])
    assert not x[:, 24:].any()  # protein nodes: no expression
    assert d.column("cell_type") == "CMT_name" and d.column("raw:cell_type") == "cell_type"
    assert d.column("disease") == "disease_BMG_name" and d.column("raw:Disease") == "disease"
    assert d.column("sex") == "sex_normalized"
    assert d.column("development_stage") == "development_stage_category"
    codes, classes, known = d.labels("cell_type")
    assert classes == ["unclassified", "B cell", "Monocyte", "T cell"]
    meta = w["meta"]
    left_out = meta.CMT_name.isin(["miscellaneous", "unknown", "cell", ""]).to_numpy()
    np.testing.assert_array_equal(known, ~left_out)
    _, raw_classes, raw_known = d.labels("raw:cell_type")
    assert "miscellaneous" in raw_classes and "CD4-positive, alpha-beta T cell" in raw_classes
    assert (~raw_known).sum() == 1  # only the generic "Unknown"
    _, disease_classes, disease_known = d.labels("disease")
    assert disease_classes == ["normal / unclassified", "COVID-19"]
    np.testing.assert_array_equal(disease_known, meta.disease_BMG_name != "unknown")
    assert d.labels("sex")[1] == ["female", "male"]
    # The same codes as OmniCellTOSG's loader, sample by sample, for each of its tasks.
    for task in ("cell_type", "disease", "sex"):
        theirs = omnicell_load(str(root), task, task)
        codes, _, known = d.labels(task)
        np.testing.assert_array_equal(np.flatnonzero(known), theirs["meta"].index)
        np.testing.assert_array_equal(codes[known], theirs["y"])
    # Conditions go through the same names; the raw column is reachable too.
    t_cells = TOSGDataset(str(root), {"cell_type": "t cell"})
    assert set(t_cells.metadata.cell_type) == {"CD4-positive, alpha-beta T cell",
                                               "CD8-positive, alpha-beta T cell"}
    cd4 = TOSGDataset(str(root), {"raw:cell_type": "CD4-positive, alpha-beta T cell"})
    assert set(cd4.metadata.CMT_name) == {"T cell"} and cd4.num_samples < t_cells.num_samples
    with pytest.raises(TOSGError, match="no column 'organism' \\('raw:organism' asks for"):
        d.labels("raw:organism")


def test_the_loader_mirror_rejects_what_omnicell_cannot_read(tmp_path):
    """The re-implementation above is not vacuous: perturbjax's earlier layout (shard paths
    under expression_matrix/, gene index `gene,columns`) fails in it where OmniCellTOSG does."""
    root = tmp_path / "old"
    write_dataset(root)
    with pytest.raises(FileNotFoundError, match="expression_matrix/expression_matrix/shard"):
        omnicell_load(str(root), "cell_type", "cell_type")
    meta = pd.read_parquet(root / "cell_metadata_with_mappings.parquet")
    meta["matrix_file_path"] = meta["matrix_file_path"].str.replace("expression_matrix/", "")
    meta.to_parquet(root / "cell_metadata_with_mappings.parquet", index=False)
    with pytest.raises(ValueError, match="must have columns: gene_name, indices"):
        omnicell_load(str(root), "cell_type", "cell_type")


def _counts_h5ad(path, rng):
    """A small AnnData whose X is scaled (negative values) and layers['counts'] holds counts."""
    import anndata

    genes = ["CD3E", "CD4", "CD8A", "MS4A1", "CD19", "CD14", "LYZ", "NKG7", "GNLY", "CD3E"]
    counts = rng.poisson(3.0, (60, len(genes))).astype(np.float32)
    kind = rng.choice(["T cell", "B cell", "Monocyte", "unknown"], 60)
    counts[kind == "B cell", 3:5] += 15
    scaled = (counts - counts.mean(0)) / (counts.std(0) + 1e-6)
    obs = pd.DataFrame({"cell_type": kind, "donor": [f"p{i % 4}" for i in range(60)]},
                       index=[f"c{i}" for i in range(60)])
    adata = anndata.AnnData(scaled, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in
                                                                     range(len(genes))]),
                            layers={"counts": counts})
    adata.var["symbol"] = genes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_h5ad(path)
    return counts


def test_a_built_root_is_what_omnicell_loader_reads(tmp_path):
    """`tosg build` from counts writes every file and column OmniCellTOSG's loader opens, and
    both loaders read the same expression and labels from it."""
    rng = np.random.default_rng(0)
    h5ad = tmp_path / "cells.h5ad"
    counts = _counts_h5ad(h5ad, rng)
    network = tmp_path / "edges.csv"
    network.write_text("a,b\nCD3E,CD4\nCD4,CD8A\nMS4A1,CD19\nCD14,LYZ\nNKG7,GNLY\n")
    out = tmp_path / "root"
    kwargs = {"label_columns": ["cell_type=CMT_name"], "donor_column": "donor",
              "gene_column": "symbol", "shard_rows": 25}
    with pytest.raises(TOSGError) as e:  # X is scaled
        build_from_anndata(str(h5ad), str(network), str(out), **kwargs)
    assert "cells.h5ad: adata.X holds negative values" in str(e.value)
    assert "\n" not in str(e.value) and not out.exists()
    out.mkdir()  # an empty --out is allowed, and left empty by a failed build
    with pytest.raises(TOSGError, match="no layer 'spliced' \\(it has: X, counts\\)"):
        build_from_anndata(str(h5ad), str(network), str(out), layer="spliced", **kwargs)
    assert out.is_dir() and not os.listdir(out)

    report = build_from_anndata(str(h5ad), str(network), str(out), layer="counts", **kwargs)
    assert report["layer"] == "counts" and report["integer_values"]
    assert sorted(os.listdir(out)) == sorted([
        "build_report.json", "cell_metadata_with_mappings.parquet", "expression_matrix",
        "bmg_gene_index.csv", "edge_index.npy", "internal_edge_index.npy", "ppi_edge_index.npy",
        "x_name_emb.npy", "x_desc_emb.npy", "x_bio_emb.npy", "s_name.csv", "s_desc.csv",
        "s_bio.csv"])
    assert sorted(os.listdir(out / "expression_matrix")) == [
        "part-00000.npy", "part-00001.npy", "part-00002.npy"]
    theirs = omnicell_load(str(out), "cell_type", "cell_type")
    kept = counts[theirs["meta"].index]
    np.testing.assert_allclose(theirs["x"], np.log1p(kept * 1e4 / kept.sum(1, keepdims=True)),
                               rtol=1e-6)
    assert theirs["genes"]["CD3E"] == [0, 9]  # a symbol listed twice: both columns
    assert theirs["names"][:2] == ["CD3E", "CD4"] and theirs["edge_index"].shape == (2, 5)
    assert theirs["internal_edge_index"].shape == theirs["ppi_edge_index"].shape == (2, 0)
    ours = TOSGDataset(str(out))
    np.testing.assert_array_equal(ours.expression(np.arange(60)), counts)
    codes, classes, known = ours.labels("cell_type")
    assert classes == ["B cell", "Monocyte", "T cell"]
    np.testing.assert_array_equal(codes[known], theirs["y"])
    assert list(ours.graph.embeddings) == ["x_name_emb"]  # the zero stand-ins carry nothing
    assert ours.donors() is not None
