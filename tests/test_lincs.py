"""LINCS L1000 readers on the real files, on malformed small files, and the plate collapse.

Expected numbers on real files were read off the files independently (awk, zcat, raw h5py),
not through the code under test.
"""

import gzip
import re

import h5py
import numpy as np
import pandas as pd
import pytest

from perturbjax.data import lincs
from perturbjax.data.lincs import (GCT, modz, plate_to_signatures, read_basal_expression,
                                   read_cellinfo, read_consensus, read_gct, read_gctx,
                                   read_geneinfo, read_landmark_genes, read_matrix,
                                   read_pertinfo, read_siginfo, read_transigen_pairs,
                                   robust_zscore)


@pytest.fixture(scope="module")
def plate(real_file):
    return read_gct(real_file("l1000/test_l1000.gct"))[0]


@pytest.fixture(scope="module")
def plate_level4(real_file):
    return read_gctx(real_file("l1000/test_l1000_highprecision.gctx"))[0]


def gct13(data, rids, cids, row_meta=None, col_meta=None, dims=None) -> str:
    """GCT 1.3 text of a small matrix; cells of `data` may be strings (to write odd tokens)."""
    row_meta, col_meta = row_meta or {}, col_meta or {}
    dims = dims or (len(rids), len(cids), len(row_meta), len(col_meta))
    out = ["#1.3", "\t".join(map(str, dims)), "\t".join(["id", *row_meta, *cids])]
    for field, values in col_meta.items():
        out.append("\t".join([field, *["na"] * len(row_meta), *map(str, values)]))
    for i, rid in enumerate(rids):
        meta = [str(v[i]) for v in row_meta.values()]
        out.append("\t".join([rid, *meta, *map(str, data[i])]))
    return "\n".join(out) + "\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def raises_at(path, line, fragment=""):
    """pytest.raises for a ValueError naming the file, the line, and `fragment`."""
    return pytest.raises(ValueError, match=re.escape(f"{path} line {line}: ") + f".*{fragment}")


# ------------------------------------------------------------------------------------ GCT

def test_real_level3_plate(real_file):
    gct, report = read_gct(real_file("l1000/test_l1000.gct"))
    assert gct.shape == (978, 377) and gct.version == "1.3" and gct.data.dtype == np.float32
    assert gct.row_ids[0] == "200814_at" and gct.col_ids[0] == "LJP005_A375_24H_X1_B19:A03"
    np.testing.assert_allclose(gct.data[0, :4], [11.3819, 11.3336, 11.4486, 11.3117], rtol=1e-6)
    assert gct.data[-1, -1] == np.float32(5.1256)
    assert gct.row_meta["pr_gene_symbol"].iloc[-1] == "LYRM1"
    assert gct.row_meta.shape == (978, 11) and gct.col_meta.shape == (377, 35)
    first = gct.row_meta.iloc[0]
    assert first["pr_gene_symbol"] == "PSME1" and first["pr_gene_id"] == 5720
    assert gct.col_meta["pert_type"].value_counts().to_dict() == {
        "trt_cp": 328, "ctl_vehicle": 26, "trt_poscon": 23}
    # pert_dose is numeric; the DMSO wells' -666 is missing
    dose = gct.col_meta["pert_dose"]
    assert dose.dtype == np.float64 and dose.isna().sum() == 26
    assert set(dose.dropna()) == {10, 3.33, 1.11, 0.37, 0.12, 0.04}
    assert (gct.col_meta["pert_time"] == 24).all()
    assert report.kept == {"rows": 978, "cols": 377} and report.notes["missing_values"] == 0


def test_real_level5_gct(real_file):
    gct, _ = read_gct(real_file("l1000/modzs_n272x978.gct"))
    assert gct.shape == (978, 272)
    assert gct.col_ids[0] == "CPC006_A549_6H:BRD-U88459701-000-01-8:10"
    np.testing.assert_allclose(gct.data[0, :3], [-0.5236, 0.4525, -0.1483], rtol=1e-6)
    assert list(gct.row_meta.columns) == ["id", "is_bing", "is_lm", "pr_gene_id",
                                          "pr_gene_symbol", "pr_gene_title"]
    assert gct.col_meta.shape[1] == 16
    assert gct.col_meta["distil_nsample"].iloc[:2].tolist() == [4, 5]
    assert gct.col_meta["pert_iname"].value_counts().to_dict() == {
        "vemurafenib": 140, "atorvastatin": 94, "venlafaxine": 38}
    assert gct.col_meta["cell_id"].nunique() == 65


def test_real_gctx_matches_the_gct_plate(plate, real_file):
    gctx, report = read_matrix(real_file("l1000/test_l1000_highprecision.gctx"))
    assert gctx.shape == (978, 377) and gctx.version == "GCTX1.0"
    # /0/DATA/0/matrix[0, :4] read with h5py: column 0, rows 0..3
    np.testing.assert_allclose(gctx.data[:4, 0], [0.3473286, 1.3524287, 0.83922863, 1.2042286],
                               rtol=1e-6)
    np.testing.assert_array_equal(gctx.row_ids, plate.row_ids)
    np.testing.assert_array_equal(gctx.col_ids, plate.col_ids)
    # string-stored metadata ("-666", "10.0") is parsed the same way as in the text file
    pd.testing.assert_series_equal(gctx.col_meta["pert_dose"], plate.col_meta["pert_dose"])
    assert gctx.col_meta["pert_iname"].equals(plate.col_meta["pert_iname"])
    assert gctx.row_meta["pr_gene_symbol"].iloc[0] == "PSME1"
    assert report.kept == {"rows": 978, "cols": 377}


@pytest.mark.parametrize("token", ["NULL", "None", "#N/A", "#N/A!", "#VALUE!", "-nan", "-NaN",
                                   "#NA", "N/A", "-666"])
def test_gct_reads_cmappys_missing_value_spellings_and_unquotes_ids(tmp_path, token):
    text = gct13([["1", token], ["2", "3"]], ['"g1"', "g2"], ['"s1"', "s2"],
                 row_meta={"symbol": ['"A"', "B"]}, col_meta={"pert_type": ["trt_cp", token]})
    gct, report = read_gct(write(tmp_path, "tokens.gct", text))
    np.testing.assert_array_equal(gct.data, np.array([[1, np.nan], [2, 3]], np.float32))
    assert report.notes["missing_values"] == 1
    assert gct.row_ids.tolist() == ["g1", "g2"] and gct.col_ids.tolist() == ["s1", "s2"]
    assert gct.row_meta["symbol"].tolist() == ["A", "B"]
    assert gct.col_meta["pert_type"].isna().tolist() == [False, True]


def test_gct_round_trip_with_missing_values_and_typed_metadata(tmp_path):
    data = [["1.5", "-666", "2"], ["NA", "", "3.25"]]
    text = gct13(data, ["g1", "g2"], ["s1", "s2", "s3"],
                 row_meta={"pr_gene_id": ["7", "0042"], "symbol": ["A", "B"]},
                 col_meta={"pert_dose": ["10", "-666", "0.5"], "pert_type": ["trt_cp", "ctl", "x"]})
    gct, report = read_gct(write(tmp_path, "small.gct", text))
    # In a GCT text matrix -666, NA and empty cells are missing (cmapPy's default).
    expected = np.array([[1.5, np.nan, 2.0], [np.nan, np.nan, 3.25]], np.float32)
    np.testing.assert_array_equal(gct.data, expected)
    assert report.notes["missing_values"] == 3
    assert gct.col_meta["pert_dose"].tolist()[::2] == [10.0, 0.5]
    assert np.isnan(gct.col_meta["pert_dose"].iloc[1])
    assert gct.row_meta["pr_gene_id"].tolist() == ["7", "0042"]  # zero-padded ids stay strings
    assert gct.row_meta.index.name == "rid" and gct.col_meta.index.name == "cid"
    # gzip and GCT 1.2
    gz = tmp_path / "small.gct.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    np.testing.assert_array_equal(read_matrix(gz)[0].data, expected)
    v12 = "#1.2\n2\t2\nName\tDescription\ta\tb\nr1\tfirst\t1\t2\nr2\tsecond\t3\t4\n"
    g12, _ = read_gct(write(tmp_path, "v12.gct", v12))
    assert g12.version == "1.2" and g12.row_meta["Description"].tolist() == ["first", "second"]
    np.testing.assert_array_equal(g12.data, [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="expected a .gct"):
        read_matrix(tmp_path / "x.tsv")


GOOD = gct13([[1, 2], [3, 4]], ["g1", "g2"], ["s1", "s2"], row_meta={"sym": ["A", "B"]},
             col_meta={"dose": [1, 2]})  # lines: 1 version, 2 dims, 3 header, 4 meta, 5-6 rows


@pytest.mark.parametrize("edit, line, fragment", [
    (lambda t: t.replace("#1.3", "#2.0"), 1, "expected a version line"),
    (lambda t: t.replace("2\t2\t1\t1", "2\ttwo\t1\t1"), 2, "expected 4 non-negative integers"),
    (lambda t: t.replace("2\t2\t1\t1", "2\t3\t1\t1"), 3, "expected 5 tab-separated fields"),
    (lambda t: t.replace("g2\tB\t3\t4", "g2\tB\t3"), 6, "expected 4 tab-separated fields.*got 3"),
    (lambda t: t.replace("g2\tB\t3\t4", "g2\tB\t3\tabc"), 6, "expected a number in column 's2'"),
    (lambda t: t.replace("g2\tB", "g1\tB"), 6, "row id 'g1' repeats \\(first at line 5\\)"),
    (lambda t: t.replace("2\t2\t1\t1", "3\t2\t1\t1"), 7,
     "expected 3 data rows \\(as line 2 declares\\), got 2 before the file ends"),
    (lambda t: t + "g3\tC\t5\t6\n", 7, "expected the end of the file after 2 data rows"),
    (lambda t: t.replace("s2", "s1"), 3, "column ids must be unique"),
])
def test_malformed_gct_names_file_and_line(tmp_path, edit, line, fragment):
    path = write(tmp_path, "bad.gct", edit(GOOD))
    with raises_at(path, line, fragment):
        read_gct(path)


def test_gct_with_a_repeated_row_metadata_field_names_file_and_line(tmp_path):
    text = "#1.3\n1\t1\t2\t0\nid\tsym\tsym\ts1\ng1\tA\tB\t1.0\n"
    path = write(tmp_path, "dup.gct", text)
    with pytest.raises(ValueError, match=re.escape(f"{path} line 3: row-metadata field names "
                                                   f"must be unique, 'sym' repeats")):
        read_gct(path)


def test_gctx_variants_other_writers_produce(tmp_path):
    path = tmp_path / "v.gctx"
    with h5py.File(path, "w") as f:
        f["0/DATA/0/matrix"] = np.array([[1.0, -666.0], [2.0, 3.0]], np.float32)
        f["0/META/ROW/id"] = np.array([[b"g1"], [b"g2"]])  # (n, 1) ids
        f["0/META/COL/id"] = np.array([b"a", b"b"])
        f.attrs["version"] = np.array([b"GCTX1.0"])  # the version as an array
    gct, report = read_gctx(path)
    assert gct.row_ids.tolist() == ["g1", "g2"] and gct.version == "GCTX1.0"
    assert gct.data[1, 0] == -666.0 and report.notes["missing_values"] == 0  # a data value
    with h5py.File(path, "a") as f:
        del f["0/DATA/0/matrix"]
        f["0/DATA/0/matrix"] = np.array([[b"x", b"y"], [b"z", b"w"]])
    with pytest.raises(ValueError, match=re.escape(f"{path}: record /0/DATA/0/matrix holds")):
        read_gctx(path)
    with h5py.File(path, "a") as f:
        del f["0/META/ROW/id"]
        f["0/META/ROW/id"] = np.zeros((2, 2), "S2")
    with pytest.raises(ValueError, match=re.escape(f"{path}: record /0/META/ROW/id has shape")):
        read_gctx(path)


def test_malformed_gctx_names_the_record(tmp_path):
    path = tmp_path / "bad.gctx"
    with h5py.File(path, "w") as f:
        f["0/DATA/0/matrix"] = np.zeros((3, 2), np.float32)  # 3 cols x 2 rows
        f["0/META/ROW/id"] = np.array([b"g1", b"g2"])
        f["0/META/COL/id"] = np.array([b"a", b"b", b"c"])
        f["0/META/COL/dose"] = np.array([b"1", b"2"])
    with pytest.raises(ValueError, match=re.escape(f"{path}: record /0/META/COL/dose")):
        read_gctx(path)
    with h5py.File(path, "a") as f:
        del f["0/META/COL/dose"]
        f["0/META/COL/dose"] = np.array([b"1", b"-666", b"2.5"])
        f["0/META/COL/flag"] = np.array([True, False, True])
        f["0/META/ROW/entrez"] = np.array([7, -666])
    gct, report = read_gctx(path)
    assert gct.shape == (2, 3) and np.isnan(gct.col_meta["dose"].iloc[1])
    assert gct.col_meta["flag"].tolist() == [True, False, True]
    assert gct.row_meta["entrez"].iloc[0] == 7 and np.isnan(gct.row_meta["entrez"].iloc[1])
    assert report.notes["missing_metadata_values"] == 2
    with h5py.File(path, "a") as f:
        del f["0/META/ROW/id"]
    with pytest.raises(ValueError, match=re.escape(f"{path}: record /0/META/ROW/id is missing")):
        read_gctx(path)


def test_subset_by_ids_mask_and_positions(plate):
    sub = plate.subset(rows=["218597_s_at", "200814_at"],
                       cols=plate.col_meta["pert_iname"] == "DMSO")
    assert sub.shape == (2, 26) and sub.row_ids.tolist() == ["218597_s_at", "200814_at"]
    dmso = (plate.col_meta["pert_iname"] == "DMSO").to_numpy()
    np.testing.assert_array_equal(sub.data[1], plate.data[0, dmso])
    assert plate.subset(cols=[2, 0]).col_ids.tolist() == plate.col_ids[[2, 0]].tolist()
    with pytest.raises(KeyError, match="not in the GCT"):
        plate.subset(rows=["nope"])


# ------------------------------------------------------------------ plate -> signatures

def handmade_plate(values, pert_type, dose):
    n_genes, n_wells = np.asarray(values).shape
    return GCT(np.asarray(values, np.float32),
               pd.DataFrame(index=[f"g{i}" for i in range(n_genes)]),
               pd.DataFrame({"pert_type": pert_type, "pert_iname": ["drug"] * n_wells,
                             "pert_dose": dose, "pert_time": 24, "cell_id": "A375"},
                            index=[f"w{i}" for i in range(n_wells)]))


def test_robust_zscore_known_numbers():
    # gene 0: controls 1, 2, 4 -> median 2, MAD 1 -> scale 1.4826
    # gene 1: controls all 3 -> MAD 0 -> floored at 0.1
    plate = handmade_plate([[1, 2, 4, 5, 0], [3, 3, 3, 3.5, 2]],
                           ["ctl_vehicle"] * 3 + ["trt_cp"] * 2, [np.nan] * 3 + [1.0, 10.0])
    sig, report = plate_to_signatures(plate)
    np.testing.assert_allclose(sig.data, [[3 / 1.4826, -2 / 1.4826], [5.0, -10.0]], rtol=1e-6)
    assert sig.col_ids.tolist() == ["drug|1.0|24|A375", "drug|10.0|24|A375"]
    assert sig.col_meta["n_replicates"].tolist() == [1, 1]
    assert report.kept["control_wells"] == 3 and report.notes["genes_at_mad_floor"] == 1
    z = robust_zscore(plate.data, plate.col_meta["pert_type"] == "ctl_vehicle")
    np.testing.assert_allclose(z[0, :3], [-1 / 1.4826, 0, 2 / 1.4826], rtol=1e-6)


def test_identical_replicates_collapse_to_themselves():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    plate = handmade_plate(np.stack([a, a, a, b, b], 1), ["trt_cp"] * 5, [1.0] * 3 + [2.0] * 2)
    sig, report = plate_to_signatures(plate, zscored=True)
    assert sig.shape == (50, 2) and sig.col_meta["n_replicates"].tolist() == [3, 2]
    assert sig.col_meta["replicate_ids"].tolist() == ["w0|w1|w2", "w3|w4"]
    np.testing.assert_allclose(sig.data, np.stack([a, b], 1), rtol=1e-6)
    assert report.notes["replicates_per_signature"] == {2: 1, 3: 1}


def test_modz_weights_follow_spearman_agreement():
    rng = np.random.default_rng(1)
    v = rng.normal(size=200)
    z = np.stack([v + rng.normal(scale=s, size=200) for s in (0.2, 0.5, 1.0)] + [-v], 1)
    sig, w = modz(z, np.zeros(4, int))
    ranks = z.argsort(0).argsort(0)  # continuous values: no ties
    corr = np.corrcoef(ranks.T)
    mean_other = (corr.sum(1) - 1) / 3
    expected_w = np.clip(mean_other, 0.01, None) / np.clip(mean_other, 0.01, None).sum()
    np.testing.assert_allclose(w, expected_w, rtol=1e-10)
    assert mean_other[3] < 0 and w[3] == w.min()  # the anti-correlated one is clipped
    np.testing.assert_allclose(sig[:, 0], z @ expected_w, rtol=1e-5)
    # a missing value is skipped: the other replicates' weights are renormalised
    z[0, 0] = np.nan
    sig_nan, w_nan = modz(z, np.zeros(4, int))
    np.testing.assert_allclose(sig_nan[0, 0], z[0, 1:] @ w_nan[1:] / w_nan[1:].sum(), rtol=1e-5)
    np.testing.assert_allclose(sig_nan[1:, 0], z[1:] @ w_nan, rtol=1e-5)


def test_real_plate_signatures(plate, plate_level4):
    controls = (plate.col_meta["pert_type"] == "ctl_vehicle").to_numpy()
    z = robust_zscore(plate.data, controls)
    ctl_z = z[:, controls]
    assert np.abs(np.median(ctl_z, axis=1)).max() < 1e-5  # controls centred per gene
    sig, report = plate_to_signatures(plate)
    assert sig.shape == (978, 351)  # 351 treated wells, each its own (drug, dose) group
    assert report.kept["control_wells"] == 26 and report.kept["signatures"] == 351
    assert (sig.col_meta["n_replicates"] == 1).all()
    assert "DMSO" not in set(sig.col_meta["pert_iname"])
    assert list(sig.col_meta.columns) == ["pert_iname", "pert_dose", "pert_time", "cell_id",
                                          "n_replicates", "replicate_ids"]
    # CMap's level-4 z-scores of the same wells (population reference) agree with our
    # DMSO-referenced ones
    lvl4, _ = plate_to_signatures(plate_level4, zscored=True)
    np.testing.assert_array_equal(lvl4.col_ids, sig.col_ids)
    assert np.corrcoef(sig.data.ravel(), lvl4.data.ravel())[0, 1] > 0.8
    # a lone replicate is returned unchanged
    np.testing.assert_array_equal(lvl4.data, plate_level4.data[:, ~controls])


def test_plate_without_controls_is_an_error(plate):
    with pytest.raises(ValueError, match="no control wells.*ctl_vehicle.*trt_poscon"):
        plate_to_signatures(plate.subset(cols=plate.col_meta["pert_type"] != "ctl_vehicle"))
    with pytest.raises(ValueError, match="lacks the fields \\['dose_um'\\]"):
        plate_to_signatures(plate, group_by=("pert_iname", "dose_um"))


# --------------------------------------------------------------------------- tables

def test_real_pertinfo(real_file):
    df, report = read_pertinfo(real_file("lincs/pertinfo.tsv.gz"))
    assert len(df) == 51385 and df["pert_id"].is_unique
    assert (df["pert_type"] == "trt_cp").sum() == 20413
    row = df.set_index("pert_id").loc["BRD-A05457250"]
    assert row["pert_iname"] == "BAY-K8644" and row["pubchem_cid"] == 2303
    assert row["canonical_smiles"] == "COC(=O)C1=C(C)NC(=C(C1c2ccccc2C(F)(F)F)[N+](=O)[O-])C"
    assert row["inchi_key"] == "InChIKey=ZFLWDHHVRRZMEI-UHFFFAOYSA-N"
    # 29 perturbagens have -666 (missing) and one has "MLS003116075" (line 13614)
    assert report.dropped == {"pubchem_cid not an integer (value set to missing)": 1}
    assert "line 13614" in report.examples["pubchem_cid not an integer (value set to missing)"][0]
    text = df.select_dtypes(exclude=["number", "bool"]).stack().dropna()
    assert (text == text.str.strip()).all()  # the file has 45 cells with edge spaces


def test_real_cellinfo_and_geneinfo(real_file):
    cells, report = read_cellinfo(real_file("lincs/cellinfo.tsv.gz"))
    assert len(cells) == 2539 and report.dropped == {"blank cell_id": 2}
    a375 = cells.set_index("cell_id").loc["A375"]
    assert (a375["cell_histology"], a375["cell_lineage"], a375["cell_source_id"]) == (
        "melanoma", "skin", "CRL-1619")
    genes, report = read_geneinfo(real_file("lincs/geneinfo.tsv.gz"))
    assert len(genes) == 22268 and report.total_dropped == 36590 - 22268
    assert genes["is_lm"].dtype == bool and genes["is_lm"].sum() == 1171
    aars = genes.set_index("pr_id").loc["201000_at"]
    assert aars["pr_gene_id"] == "16" and aars["pr_gene_symbol"] == "AARS" and aars["is_bing"]


SIGINFO = ("sig_id\tpert_id\tpert_iname\tpert_type\tcell_id\tpert_dose\tpert_dose_unit\t"
           "pert_idose\tpert_time\tpert_time_unit\tpert_itime\tdistil_id\n"
           "S1\tBRD-1\tdrugA\ttrt_cp\tA375\t10.0\tum\t10 um\t24\th\t24 h\tD1|D2|D3\n"
           " S2 \tBRD-2\tdrugB\ttrt_cp\tMCF7\t-666\t-666\t-666\t6\th\t6 h\tD4\n"
           "S1\tBRD-1\tdrugA\ttrt_cp\tA375\t10.0\tum\t10 um\t24\th\t24 h\tD1\n"
           "\tBRD-3\tdrugC\ttrt_cp\tPC3\t1\tum\t1 um\t24\th\t24 h\tD9\n")


def test_siginfo_small_file(tmp_path):
    df, report = read_siginfo(write(tmp_path, "sig_info.txt", SIGINFO))
    assert df["sig_id"].tolist() == ["S1", "S2"]
    assert df["pert_dose"].iloc[0] == 10.0 and np.isnan(df["pert_dose"].iloc[1])
    assert df["pert_time"].tolist() == [24, 6] and df["n_replicates"].tolist() == [3, 1]
    assert report.dropped == {"duplicate sig_id (kept the first)": 1, "blank sig_id": 1}
    assert report.examples["duplicate sig_id (kept the first)"] == ["S1 (line 4, first at line 2)"]


def test_malformed_tables_name_file_line_and_columns(tmp_path):
    path = write(tmp_path, "sig_info.txt", SIGINFO.replace("\tdistil_id", "\tdistil"))
    with pytest.raises(ValueError, match=re.escape(f"{path} line 1: missing required columns "
                                                   f"['distil_id']")):
        read_siginfo(path)
    path = write(tmp_path, "sig2.txt", SIGINFO.replace("\t6\th\t6 h", "\tsix\th\t6 h"))
    with raises_at(path, 3, "expected a number in column 'pert_time', got 'six'"):
        read_siginfo(path)
    path = write(tmp_path, "cells.tsv", "cell_id\tlineage\nA375\tskin\nMCF7\tbreast\textra\n")
    with raises_at(path, 3, "expected 2 tab-separated fields.*got 3"):
        read_cellinfo(path)
    path = write(tmp_path, "genes.tsv",
                 "pr_id\tpr_gene_id\tpr_gene_symbol\tis_lm\np1\t1\tA\tmaybe\n")
    with raises_at(path, 2, "expected True or False in column 'is_lm'"):
        read_geneinfo(path)


def test_landmark_genes_from_both_files(real_file, tmp_path):
    tsv, report = read_landmark_genes(real_file("lincs/genes.tsv"))
    csv, _ = read_landmark_genes(real_file("l1000/landmark_geneinfo.csv"))
    for genes in (tsv, csv):
        assert list(genes.columns) == ["entrez_id", "symbol"] and len(genes) == 978
        assert genes.iloc[0].tolist() == ["10007", "GNPDA1"]
        assert genes.iloc[-1].tolist() == ["9988", "DMTF1"]
    assert report.dropped == {"status is not 'measured' (not a landmark)": 6489}
    assert tsv["entrez_id"].tolist() == csv["entrez_id"].tolist()  # same order in both files
    # quoted commas in the CSV's gene titles do not shift fields
    assert csv.set_index("entrez_id").loc["10610", "symbol"] == "ST6GALNAC2"
    path = write(tmp_path, "g.csv", "gene,name\n1,A\n")
    with raises_at(path, 1, "expected columns"):
        read_landmark_genes(path)
    path = write(tmp_path, "g2.csv", "gene_id,gene_symbol\n1,A\nABC,B\n")
    with raises_at(path, 3, "expected an Entrez gene id"):
        read_landmark_genes(path)


def test_real_consensus_matches_landmarks(real_file):
    cons, report = read_consensus(real_file("lincs/consensi-drugbank.tsv.gz"))
    assert cons.values.shape == (1170, 978) and cons.values.dtype == np.float32
    assert cons.perturbagens[0] == "DB00014" and cons.perturbagens[-1] == "DB09023"
    np.testing.assert_allclose(cons.values[0, [0, 1, -1]], [0.649, -1.952, -0.128], rtol=1e-6)
    np.testing.assert_allclose(cons.values[-1, [0, -1]], [-1.620, -0.845], rtol=1e-6)
    landmarks, _ = read_landmark_genes(real_file("lincs/genes.tsv"))
    assert cons.genes.tolist() == landmarks["entrez_id"].tolist()
    assert report.kept == {"perturbagens": 1170, "genes": 978} and report.total_dropped == 0


def test_consensus_malformed(tmp_path):
    head = "perturbagen\t1\t2\n"
    cons, report = read_consensus(write(tmp_path, "c.tsv", head + "DB1\t0.5\t1\nDB2\tNA\t2\n"
                                        "DB3\tinf\t0\n"))
    assert cons.perturbagens.tolist() == ["DB1"] and cons.genes.tolist() == ["1", "2"]
    assert report.dropped == {"row with a missing or non-finite value": 2}
    assert report.examples["row with a missing or non-finite value"] == ["DB2 (line 3)",
                                                                         "DB3 (line 4)"]
    path = write(tmp_path, "d.tsv", head + "DB1\t0.5\t1\nDB1\t0\t2\n")
    with raises_at(path, 3, "perturbagen 'DB1' repeats \\(first at line 2\\)"):
        read_consensus(path)
    path = write(tmp_path, "e.tsv", head + "DB1\t0.5\tx\n")
    with raises_at(path, 2, "expected a number in column '2', got 'x'"):
        read_consensus(path)
    path = write(tmp_path, "f.tsv", "drug\t1\t2\nDB1\t0\t1\n")
    with raises_at(path, 1, "expected the first column to be 'perturbagen'"):
        read_consensus(path)


def test_real_basal_expression(real_file):
    basal, report = read_basal_expression(real_file("l1000/transigen_basal.tsv"))
    cells, genes, values = basal
    assert values.shape == (165, 978) and values.dtype == np.float32
    assert cells[0] == "HIMG002" and cells[-1] == "averaged"
    np.testing.assert_allclose(values[0, [0, 1, -1]], [11.51089, 6.04087, 7.86097], rtol=1e-6)
    np.testing.assert_allclose(values[-1, [0, -1]], [9.77526, 7.94659], rtol=1e-6)
    landmarks, _ = read_landmark_genes(real_file("l1000/landmark_geneinfo.csv"))
    assert genes.tolist() == landmarks["entrez_id"].tolist()
    assert report.kept == {"cell_lines": 165, "genes": 978}


def test_real_transigen_pairs(real_file, tmp_path):
    pairs, report = read_transigen_pairs(real_file("l1000/transigen_pairs.h5"))
    assert pairs.control.shape == pairs.treated.shape == (100, 978)
    assert pairs.meta["cell_id"].tolist()[:3] == ["A549", "ASC", "MCF7"]
    assert pairs.meta["sig"].tolist()[:3] == ["A549_0", "ASC_0", "MCF7_0"]
    assert pairs.meta["canonical_smiles"].iloc[0] == "BrC1C(Br)C(Br)C(Br)C(Br)C1Br"
    np.testing.assert_allclose(pairs.control[0, :2], [9.533199, 4.79235], rtol=1e-6)
    np.testing.assert_allclose(pairs.treated[0, :2], [9.4455, 6.92005], rtol=1e-6)
    assert report.notes == {"cell_lines": 43, "compounds": 14} and pairs.genes is None
    path = tmp_path / "pairs.h5"
    with h5py.File(path, "w") as f:
        f["x1"] = np.array([[1.0, 2.0], [np.nan, 1.0]])
        f["x2"] = np.ones((2, 2))
        for key in ("canonical_smiles", "cid", "sig"):
            f[key] = np.array([b"a", b"b"])
    pairs, report = read_transigen_pairs(path, genes=["5", "7"])
    assert len(pairs.meta) == 1 and pairs.genes.tolist() == ["5", "7"]
    assert report.dropped == {"row with a non-finite value": 1}
    with h5py.File(path, "a") as f:
        del f["sig"]
    with pytest.raises(ValueError, match=re.escape(f"{path}: records ['sig'] are missing")):
        read_transigen_pairs(path)


def test_missing_tokens_documented():
    assert {"-666", "NA", ""} <= set(lincs.MISSING_TOKENS)
