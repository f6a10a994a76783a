"""Embedding tables in every supported format, their error messages, and attaching them."""

import gzip

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from perturbjax.data.embeddings import attach_embeddings, read_embedding_table

IDS = np.array(["DB00001", "DB00002", "DB00945"])
VECTORS = np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.25], [3.0, 1e-3, 7.0]], np.float32)


def _csv(ids, vectors, sep=",", header=True):
    lines = ([sep.join(["id"] + [f"dim_{j}" for j in range(vectors.shape[1])])] if header else [])
    lines += [sep.join([i] + [repr(float(v)) for v in row]) for i, row in zip(ids, vectors)]
    return "\n".join(lines) + "\n"


def write_npz(tmp_path):
    np.savez(tmp_path / "t.npz", ids=IDS, vectors=VECTORS)
    return tmp_path / "t.npz"


def write_npy(tmp_path):
    np.save(tmp_path / "drug_molformer.npy", VECTORS)
    (tmp_path / "drug_molformer.ids.txt").write_text("\n".join(IDS) + "\n")
    return tmp_path / "drug_molformer.npy"


def write_parquet_list(tmp_path):
    pq.write_table(pa.table({"id": IDS, "embedding": [list(map(float, r)) for r in VECTORS]}),
                   tmp_path / "t.parquet")
    return tmp_path / "t.parquet"


def write_parquet_columns(tmp_path):
    frame = pd.DataFrame(VECTORS, columns=["d0", "d1", "d2"]).assign(id=IDS)
    frame.to_parquet(tmp_path / "t.parquet")
    return tmp_path / "t.parquet"


def write_csv(tmp_path):
    (tmp_path / "t.csv").write_text(_csv(IDS, VECTORS))
    return tmp_path / "t.csv"


def write_csv_no_header(tmp_path):
    (tmp_path / "t.csv").write_text(_csv(IDS, VECTORS, header=False))
    return tmp_path / "t.csv"


def write_tsv(tmp_path):
    (tmp_path / "t.tsv").write_text(_csv(IDS, VECTORS, sep="\t"))
    return tmp_path / "t.tsv"


def write_csv_gz(tmp_path):
    with gzip.open(tmp_path / "t.csv.gz", "wt") as f:
        f.write(_csv(IDS, VECTORS))
    return tmp_path / "t.csv.gz"


@pytest.mark.parametrize("writer", [write_npz, write_npy, write_parquet_list,
                                    write_parquet_columns, write_csv, write_csv_no_header,
                                    write_tsv, write_csv_gz])
def test_every_format_reads_the_same_table(tmp_path, writer):
    ids, vectors = read_embedding_table(writer(tmp_path))
    assert ids.tolist() == IDS.tolist() and ids.dtype.kind == "U"
    assert vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, VECTORS)


def test_numeric_ids_stay_strings(tmp_path):
    (tmp_path / "genes.csv").write_text("id,a\n00123,1\n9796,2\n")
    ids, _ = read_embedding_table(tmp_path / "genes.csv")
    assert ids.tolist() == ["00123", "9796"]  # leading zeros kept: ids are keys, not numbers
    np.savez(tmp_path / "genes.npz", ids=np.array([9796, 56992]), vectors=np.ones((2, 4)))
    assert read_embedding_table(tmp_path / "genes.npz")[0].tolist() == ["9796", "56992"]


def test_pandas_style_headers_are_recognised(tmp_path):
    pd.DataFrame(VECTORS, index=IDS).to_csv(tmp_path / "a.csv")  # header ",0,1,2"
    pd.DataFrame(VECTORS, index=pd.Index(IDS, name="drug_id")).to_csv(tmp_path / "b.csv")
    for name in ("a.csv", "b.csv"):
        ids, vectors = read_embedding_table(tmp_path / name)
        assert ids.tolist() == IDS.tolist()
        np.testing.assert_array_equal(vectors, VECTORS)


@pytest.mark.parametrize("text, match", [
    ("id,a,b\nx,1,2\ny,3\n", r"t.csv: line 3: 2 fields, expected 3 \(ragged row\)"),
    ("x,1,2\ny,3,4,5\n", r"t.csv: line 2: 4 fields, expected 3"),
    ("id,a,b\nx,1,2\ny,3,abc\n", r"t.csv: line 3: column 'b' value 'abc' is not a number"),
    ("x,1,2\ny,3,abc\n", r"t.csv: line 2: column 3 value 'abc' is not a number"),
    ("id,a,b\nx,1,2\ny,nan,4\n", r"t.csv: line 3: value 1 is nan \(embeddings must be finite\)"),
    ("id,a,b\nx,1,2\ny,3,inf\n", r"t.csv: line 3: value 2 is inf"),
    ("id,a,b\nx,1,2\nz,0,0\nx,3,4\n", r"t.csv: line 4: duplicate id 'x' \(first at line 2\)"),
    ("id,a,b\nx,1,2\ny,,4\n", r"t.csv: line 3: column 'a' is empty"),
    ("id,a,b\nx,1,2\n\ny,3,4\n", r"t.csv: line 3: empty line"),
    ("id,a,b\nx,1,2\n,3,4\n", r"t.csv: line 3: empty id"),
    ("x\ny\n", r"t.csv: line 1: one field"),
])
def test_text_errors_name_file_and_line(tmp_path, text, match):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(ValueError, match=match):
        read_embedding_table(tmp_path / "t.csv")


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "a.npz", names=IDS, vectors=VECTORS)
    with pytest.raises(ValueError, match=r"a.npz: .npz lacks arrays \['ids'\]"):
        read_embedding_table(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", ids=np.array(IDS, dtype=object), vectors=VECTORS)
    with pytest.raises(ValueError, match="b.npz: ids are stored as Python objects"):
        read_embedding_table(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", ids=IDS[:2], vectors=VECTORS)
    with pytest.raises(ValueError, match="c.npz: 2 ids but 3 vectors"):
        read_embedding_table(tmp_path / "c.npz")
    bad = VECTORS.copy()
    bad[1, 2] = np.nan
    np.savez(tmp_path / "d.npz", ids=IDS, vectors=bad)
    with pytest.raises(ValueError, match="d.npz: row 2: value 3 is nan"):
        read_embedding_table(tmp_path / "d.npz")
    np.savez(tmp_path / "e.npz", ids=IDS, vectors=VECTORS[0])
    with pytest.raises(ValueError, match=r"e.npz: vectors must be 2-D"):
        read_embedding_table(tmp_path / "e.npz")


def test_npy_errors(tmp_path):
    np.save(tmp_path / "v.npy", VECTORS)
    with pytest.raises(FileNotFoundError, match=r"v.npy: ids file .*v.ids.txt not found"):
        read_embedding_table(tmp_path / "v.npy")
    (tmp_path / "v.ids.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match=r"v.ids.txt: 2 ids \(lines\) but .*v.npy has 3 rows"):
        read_embedding_table(tmp_path / "v.npy")
    (tmp_path / "v.ids.txt").write_text("a\nb\na\n")
    with pytest.raises(ValueError, match=r"ids.txt: line 3: duplicate id 'a' \(first at line 1\)"):
        read_embedding_table(tmp_path / "v.npy")


def test_parquet_errors(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "embedding": [[1.0, 2.0], [3.0, 4.0], [5.0]]}),
                   path)
    with pytest.raises(ValueError, match=r"t.parquet: row 3: embedding has 1 values, but row 1"):
        read_embedding_table(path)
    pq.write_table(pa.table({"id": ["a", "b"], "embedding": [[1.0, 2.0], None]}), path)
    with pytest.raises(ValueError, match=r"t.parquet: row 2: embedding is empty"):
        read_embedding_table(path)
    pq.write_table(pa.table({"id": ["a", "b"], "x": [1.0, float("nan")]}), path)
    with pytest.raises(ValueError, match=r"t.parquet: row 2: value 1 is nan"):
        read_embedding_table(path)
    pq.write_table(pa.table({"id": ["a", "b"], "x": [1.0, 2.0], "label": ["u", "v"]}), path)
    with pytest.raises(ValueError, match=r"t.parquet: column 'label' is string"):
        read_embedding_table(path)
    pq.write_table(pa.table({"id": ["a", "a"], "x": [1.0, 2.0]}), path)
    with pytest.raises(ValueError, match=r"t.parquet: row 2: duplicate id 'a' \(first at row 1\)"):
        read_embedding_table(path)
    pq.write_table(pa.table({"name": ["a"], "x": [1.0]}), path)
    with pytest.raises(ValueError, match=r"t.parquet: no `id` column"):
        read_embedding_table(path)


def test_unknown_or_missing_file(tmp_path):
    (tmp_path / "t.h5").write_text("")
    with pytest.raises(ValueError, match="t.h5: unknown embedding table format"):
        read_embedding_table(tmp_path / "t.h5")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_embedding_table(tmp_path / "nope.csv")


def test_attach_reports_coverage_and_marks_missing(graph, tmp_path):
    # graph (conftest): drug nodes d0, d1, d2 with a feature "fp"
    path = tmp_path / "drugs.csv"
    path.write_text(_csv(np.array(["d2", "d0", "unknown_drug"]), VECTORS))
    out, report = attach_embeddings(graph, "drug", path, feature="molformer")
    drug = out.nodes["drug"]
    np.testing.assert_array_equal(drug.features["molformer"], [VECTORS[1], np.zeros(3), VECTORS[0]])
    np.testing.assert_array_equal(drug.features["molformer_present"], [[1], [0], [1]])
    np.testing.assert_array_equal(drug.features["fp"], graph.nodes["drug"].features["fp"])
    assert "molformer" not in graph.nodes["drug"].features  # the input graph is unchanged
    assert out.edges.keys() == graph.edges.keys()
    assert report.source == str(path)
    assert report.kept == {"nodes with a vector": 2, "drug nodes": 3, "table rows": 3}
    assert report.notes["coverage"] == pytest.approx(2 / 3, abs=1e-6)
    assert report.notes["nodes without a vector"] == {"count": 1, "filled with": "zeros",
                                                       "examples": ["d1"]}
    assert report.dropped == {"table row matched no node": 1}
    assert report.examples["table row matched no node"] == ["unknown_drug"]


def test_attach_policies_keys_and_errors(graph):
    table = (np.array(["d0", "d2"]), VECTORS[:2])
    out, _ = attach_embeddings(graph, "drug", table, missing="mean")
    np.testing.assert_allclose(out.nodes["drug"].features["embedding"][1], VECTORS[:2].mean(0))
    with pytest.raises(ValueError, match=r"<table>: 1 of 3 'drug' nodes have no vector, e\.g\."):
        attach_embeddings(graph, "drug", table, missing="error")
    # join on other keys than the node names (e.g. PrimeKG ids where names are id#index)
    out, report = attach_embeddings(graph, "drug", table, keys=["d2", "d0", "x"])
    np.testing.assert_array_equal(out.nodes["drug"].features["embedding"][:2], VECTORS[[1, 0]])
    assert report.kept["nodes with a vector"] == 2
    with pytest.raises(ValueError, match="already has a feature 'fp'"):
        attach_embeddings(graph, "drug", table, feature="fp")
    with pytest.raises(KeyError, match="unknown node type 'protein'"):
        attach_embeddings(graph, "protein", table)
    with pytest.raises(ValueError, match="missing='drop'"):
        attach_embeddings(graph, "drug", table, missing="drop")
    with pytest.raises(ValueError, match="keys has 2 entries"):
        attach_embeddings(graph, "drug", table, keys=["d0", "d1"])


def test_attach_to_a_primekg_graph(tmp_path):
    from perturbjax.data.primekg import load_primekg
    from perturbjax.data.primekg_synthetic import synthetic_primekg

    written = synthetic_primekg(tmp_path / "kg.csv", n_nodes=500, n_edges=5_000, seed=0)
    graph, nodes, _ = load_primekg(written.path)
    drugs = nodes.of_type("drug")
    half = drugs.iloc[::2]
    np.savez(tmp_path / "drug_molformer.npz", ids=half["node_id"].to_numpy(str),
             vectors=np.random.default_rng(0).normal(size=(len(half), 8)))
    out, report = attach_embeddings(graph, "drug", tmp_path / "drug_molformer.npz",
                                    keys=drugs["node_id"])
    present = out.nodes["drug"].features["embedding_present"][:, 0]
    assert present.sum() == len(half) and present[::2].all()
    assert report.notes["coverage"] == pytest.approx(len(half) / len(drugs), abs=1e-6)
    assert out.nodes["drug"].stacked_features().shape == (len(drugs), 9)
