"""Every file format the project reads, corrupted in the usual ways, through the real command.

Each case writes a valid sample of the format (the head of the real file in ../shared/data, or
a small generated one), corrupts it, and runs `perturbjax data summary --format F --path P`
in-process. Expected: exit status 2 and one stderr line `perturbjax: error: ...` naming the
file, no traceback, nothing written anywhere. A few corruptions are tolerated by design (a
repeated id in a LINCS info table keeps the first row, a repeated edge joins the graph once):
those must show up, with their count, in the load report instead.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from perturbjax.cli import main
from perturbjax.data import registry
from perturbjax.data.lincs import SIGINFO_COLUMNS
from test_primekg import HEADER as PRIMEKG_HEADER, ROWS as PRIMEKG_ROWS

RNG_BYTES = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()


def head(name: str, n: int) -> list[str]:
    """The first n lines of a registered real file, decompressed."""
    raw = registry.path(name).read_bytes()
    text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8", "replace")
    return text.split("\n")[:n]


def gct_sample(rows: int = 20) -> list[str]:
    """A valid GCT 1.3: the real level-5 file's header and metadata with its first `rows` rows."""
    lines = head("l1000/modzs_n272x978.gct", 400)
    dims = lines[1].split("\t")
    start = 3 + int(dims[3])  # version, dims, column header, column-metadata lines
    return [lines[0], "\t".join([str(rows)] + dims[1:])] + lines[2:start + rows]


# format -> (file name, sample lines, separator,
#            (column, substring choosing the data row) that the row edits touch: the numeric
#            cell set to "abc", the row repeated or given an extra field (None: first data row),
#            numeric: whether that column holds numbers, header: whether line 1 names columns,
#            {corruption: reason the load report must give} for the tolerated ones,
#            corruptions that do not apply: a valid file of the format)
TEXT = {
    "primekg": ("kg.csv", lambda: [PRIMEKG_HEADER] + PRIMEKG_ROWS[:12], ",", ("x_index", None),
                True, True, {"duplicate": "duplicate"}, ()),
    "hetionet": ("edges.sif", lambda: head("hetionet/edges-10.sif", 40), "\t", ("source", None),
                 False, True, {"duplicate": "repeated edge"}, ()),
    "hetionet-nodes": ("nodes.tsv", lambda: head("hetionet/nodes.tsv", 60), "\t", ("id", None),
                       False, True, {}, ()),
    "hetionet-metaedges": ("metaedges.tsv", lambda: head("hetionet/metaedges.tsv", 30), "\t",
                           ("abbreviation", None), False, True, {}, ()),
    "compound-gene": ("CbG-binding.tsv", lambda: head("hetionet/CbG-binding.tsv", 40), "\t",
                      ("entrez_gene_id", None), True, True, {"duplicate": "repeated edge"}, ()),
    "disease-gene": ("DaG-association.tsv", lambda: head("hetionet/DaG-association.tsv", 40),
                     "\t", ("entrez_gene_id", None), True, True, {"duplicate": "repeated edge"},
                     ()),
    "ppi": ("protein-interactions.tsv", lambda: head("ppi/protein-interactions.txt.gz", 40), "\t",
            ("source_symbol", None), False, True, {"duplicate": "repeated interaction"}, ()),
    "pathways": ("pathways.tsv", lambda: head("pathways/pathways.tsv", 20), "\t",
                 ("genes", None), True, True, {}, ()),
    "gct": ("signatures.gct", gct_sample, "\t", (None, None), True, True, {}, ("duplicate",)),
    "pertinfo": ("pertinfo.tsv", lambda: head("lincs/pertinfo.tsv.gz", 40), "\t",
                 ("pubchem_cid", None), True, True,
                 {"duplicate": "duplicate pert_id", "non_numeric": "not an integer"}, ()),
    "siginfo": ("sig_info.txt", lambda: ["\t".join(SIGINFO_COLUMNS)] + [
        f"CPC006_A549_6H:BRD-A{i}:10\tBRD-A{i}\tdrug{i}\ttrt_cp\tA549\t10.0\tµM\t10 µM\t6\th"
        f"\t6 h\tCPC006_A549_6H_X1_B3:A{i}|CPC006_A549_6H_X2_B3:A{i}" for i in range(10, 16)],
        "\t", ("pert_dose", None), True, True, {"duplicate": "duplicate sig_id"}, ()),
    "cellinfo": ("cellinfo.tsv", lambda: head("lincs/cellinfo.tsv.gz", 40), "\t",
                 ("cell_id", None), False, True, {"duplicate": "duplicate cell_id"}, ()),
    "geneinfo": ("geneinfo.tsv", lambda: head("lincs/geneinfo.tsv.gz", 40), "\t",
                 ("pr_id", None), False, True, {"duplicate": "duplicate pr_id"}, ()),
    "landmark-genes": ("genes.tsv", lambda: head("lincs/genes.tsv", 40), "\t",
                       ("entrez_gene_id", "measured"), True, True,
                       {"duplicate": "duplicate entrez_gene_id"}, ()),
    "consensus": ("consensi.tsv", lambda: head("lincs/consensi-drugbank.tsv.gz", 6), "\t",
                  ("perturbagen", None), False, True, {}, ()),
    "basal": ("basal.tsv", lambda: head("l1000/transigen_basal.tsv", 6), "\t", ("cell_id", None),
              False, True, {}, ()),
    "smiles": ("drugbank_smiles.txt", lambda: head("drugbank/drugbank_smiles.txt", 30), "\t",
               (0, None), False, False, {"duplicate": "duplicate drug_id"}, ()),
    # A first line of names is a header whatever they are, so a "wrong" header is a valid one.
    "embeddings": ("drug_vectors.csv",
                   lambda: ["id,0,1,2"] + [f"DB0000{i},{i}.5,-1.0,2.0" for i in range(1, 8)], ",",
                   ("id", None), False, True, {}, ("wrong_header",)),
}
# Where the edited column holds ids, "non_numeric" edits the first value column of the row.


def _lines(fmt: str) -> list[str]:
    lines = TEXT[fmt][1]()
    return [line for line in lines if line.strip()]  # a sample ends at a whole line


def _row_and_column(fmt: str, lines: list[str]) -> tuple[int, int, int]:
    """(first data line, the edited data line, the edited column's position)."""
    _, _, sep, (column, choose), numeric, header, _, _ = TEXT[fmt]
    body = (3 + int(lines[1].split(sep)[3])) if fmt == "gct" else int(header)
    row = body if choose is None else next(i for i in range(body, len(lines)) if choose in lines[i])
    if fmt == "gct":
        col = len(lines[2].split(sep)) - int(lines[1].split(sep)[1])  # the first data column
    else:
        col = column if isinstance(column, int) else lines[0].split(sep).index(column)
        col = col if numeric else col + 1
    return body, row, col


def corrupt_text(fmt: str, corruption: str) -> bytes | None:
    """The sample with one corruption, or None where it does not apply to the format."""
    _, _, sep, _, numeric, header, _, not_applicable = TEXT[fmt]
    if corruption in not_applicable:
        return None
    lines = _lines(fmt)
    body, row, col = _row_and_column(fmt, lines)
    if corruption == "empty":
        return b""
    if corruption == "garbage":
        return RNG_BYTES
    if corruption == "truncated":  # cut inside a line's first field, as an interrupted copy
        mid = (body + len(lines)) // 2
        first = lines[mid].split(sep)[0]
        return ("\n".join(lines[:mid]) + "\n" + first[:max(1, len(first) // 2)]).encode()
    if corruption == "wrong_header":
        if not header:
            return None
        if fmt == "gct":
            lines[0] = "#9.9"
        else:
            lines[0] = sep.join(f"bogus_{i}" for i in range(len(lines[0].split(sep))))
    elif corruption == "field_count":
        lines[row] += sep + "extra"
    elif corruption == "non_numeric":
        if not numeric and fmt in ("hetionet", "hetionet-nodes", "hetionet-metaedges", "ppi",
                                   "cellinfo", "geneinfo", "smiles"):
            return None  # no numeric column
        fields = lines[row].split(sep)
        fields[col] = "abc"
        lines[row] = sep.join(fields)
    elif corruption == "duplicate":
        lines.insert(row + 1, lines[row])
    elif corruption == "wrong_dimension":
        if fmt != "gct":
            return None
        dims = lines[1].split("\t")
        lines[1] = "\t".join([str(int(dims[0]) + 5)] + dims[1:])
    return ("\n".join(lines) + "\n").encode()


TEXT_CORRUPTIONS = ("empty", "garbage", "truncated", "wrong_header", "field_count",
                    "non_numeric", "duplicate", "wrong_dimension")
TEXT_CASES = [(f, c) for f in TEXT for c in TEXT_CORRUPTIONS if corrupt_text(f, c) is not None]


def run_summary(capsys, fmt: str, path, folder: Path):
    """Runs `data summary`; returns (exit code, stderr lines), checking nothing was written."""
    before = sorted(folder.rglob("*")), sorted(os.listdir("."))
    code = 0
    try:
        main(["data", "summary", "--format", fmt, "--path", str(path)])
    except SystemExit as e:
        code = e.code
    assert (sorted(folder.rglob("*")), sorted(os.listdir("."))) == before, "a file was written"
    return code, capsys.readouterr().err.strip().splitlines()


def assert_one_line_naming(code, err, path):
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("perturbjax: error: "), err
    assert str(path) in err[0] and "Traceback" not in err[0], err[0]


def assert_rejected_or_reported(code, err, path, tolerated: str | None):
    """One line naming the file, or (a tolerated corruption) success with `tolerated` among
    the load report's reasons."""
    if tolerated is None:
        assert_one_line_naming(code, err, path)
    else:
        assert code == 0 and any(tolerated in line for line in err), err


def write_hetionet_folder(folder: Path, sif: bytes) -> Path:
    for name in ("nodes.tsv", "metaedges.tsv"):
        (folder / name).write_bytes(registry.path(f"hetionet/{name}").read_bytes())
    (folder / "edges.sif").write_bytes(sif)
    return folder / "edges.sif"


@pytest.mark.parametrize("fmt, corruption", TEXT_CASES, ids=[f"{f}-{c}" for f, c in TEXT_CASES])
def test_corrupted_text_file_is_one_line_or_reported(tmp_path, capsys, fmt, corruption):
    data = corrupt_text(fmt, corruption)
    if fmt == "hetionet":
        path = write_hetionet_folder(tmp_path, data)
    else:
        path = tmp_path / TEXT[fmt][0]
        path.write_bytes(data)
    code, err = run_summary(capsys, fmt, path, tmp_path)
    assert_rejected_or_reported(code, err, path, TEXT[fmt][6].get(corruption))


@pytest.mark.parametrize("fmt", sorted(TEXT))
def test_every_valid_sample_reads(tmp_path, capsys, fmt):
    """The samples themselves are valid: the corruptions above are what the readers reject."""
    data = ("\n".join(_lines(fmt)) + "\n").encode()
    path = (write_hetionet_folder(tmp_path, data) if fmt == "hetionet"
            else tmp_path / TEXT[fmt][0])
    path.write_bytes(data)
    code, err = run_summary(capsys, fmt, path, tmp_path)
    assert code == 0, err
    assert json.loads(capsys.readouterr().out or "{}") is not None


@pytest.mark.parametrize("fmt", ["ppi", "consensus"])
def test_broken_gzip_is_one_line(tmp_path, capsys, fmt):
    data = gzip.compress(("\n".join(_lines(fmt)) + "\n").encode())
    path = tmp_path / (TEXT[fmt][0] + ".gz")
    path.write_bytes(data[: len(data) // 2])
    assert_one_line_naming(*run_summary(capsys, fmt, path, tmp_path), path)
    path.write_bytes(b"\x1f\x8b" + RNG_BYTES)
    assert_one_line_naming(*run_summary(capsys, fmt, path, tmp_path), path)


@pytest.mark.parametrize("fmt", ["primekg", "gct", "embeddings", "transigen-pairs"])
def test_missing_file_and_directory_are_one_line(tmp_path, capsys, fmt):
    missing = tmp_path / "nowhere" / "file.csv"
    assert_one_line_naming(*run_summary(capsys, fmt, missing, tmp_path), missing)
    folder = tmp_path / "a_folder.gct"
    folder.mkdir()
    assert_one_line_naming(*run_summary(capsys, fmt, folder, tmp_path), folder)


# --------------------------------------------------------------------------------------------
# Binary formats: GCTX and TranSiGen's HDF5, embedding arrays
# --------------------------------------------------------------------------------------------

def _copy(tmp_path, name, target):
    path = tmp_path / target
    path.write_bytes(registry.path(name).read_bytes())
    return path


def _gctx_edit(corruption):
    def edit(f):
        matrix = f["0/DATA/0/matrix"]
        if corruption == "wrong_dimension":
            del f["0/META/COL/id"]
            f["0/META/COL/id"] = np.array([b"a", b"b"])
        elif corruption == "wrong_type":
            del f["0/DATA/0/matrix"]
            f["0/DATA/0/matrix"] = np.full(matrix.shape, b"x")
        elif corruption == "missing_record":
            del f["0/META/ROW/id"]
        elif corruption == "duplicate":
            ids = f["0/META/COL/id"][()]
            ids[1] = ids[0]
            f["0/META/COL/id"][...] = ids
    return edit


def _pairs_edit(corruption):
    def edit(f):
        if corruption == "wrong_dimension":
            x2 = f["x2"][()]
            del f["x2"]
            f["x2"] = x2[:, :-3]
        elif corruption == "wrong_type":
            shape = f["x1"].shape
            del f["x1"]
            f["x1"] = np.full(shape, b"x")
        elif corruption == "missing_record":
            del f["sig"]
        elif corruption == "duplicate":
            sig = f["sig"][()]
            sig[1] = sig[0]
            f["sig"][...] = sig
    return edit


HDF5 = {"gct": ("l1000/test_l1000_highprecision.gctx", "plate.gctx", _gctx_edit),
        "transigen-pairs": ("l1000/transigen_pairs.h5", "pairs.h5", _pairs_edit)}
HDF5_CASES = [(f, c) for f in HDF5 for c in ("empty", "garbage", "truncated", "wrong_dimension",
                                             "wrong_type", "missing_record", "duplicate")]
HDF5_TOLERATED = {("transigen-pairs", "duplicate"): "duplicate sig (kept the first)"}


@pytest.mark.parametrize("fmt, corruption", HDF5_CASES, ids=[f"{f}-{c}" for f, c in HDF5_CASES])
def test_corrupted_hdf5_is_one_line_or_reported(tmp_path, capsys, fmt, corruption):
    name, target, editor = HDF5[fmt]
    path = _copy(tmp_path, name, target)
    if corruption == "empty":
        path.write_bytes(b"")
    elif corruption == "garbage":
        path.write_bytes(RNG_BYTES)
    elif corruption == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        with h5py.File(path, "a") as f:
            editor(corruption)(f)
    code, err = run_summary(capsys, fmt, path, tmp_path)
    assert_rejected_or_reported(code, err, path, HDF5_TOLERATED.get((fmt, corruption)))


EMBEDDING_CASES = {
    "npz_wrong_dimension": lambda p: np.savez(p / "e.npz", ids=np.array(["a", "b", "c"]),
                                              vectors=np.ones((2, 4))),
    "npz_wrong_type": lambda p: np.savez(p / "e.npz", ids=np.array(["a", "b"]),
                                         vectors=np.array([["x", "y"], ["z", "w"]])),
    "npz_missing_record": lambda p: np.savez(p / "e.npz", vectors=np.ones((2, 4))),
    "npz_duplicate": lambda p: np.savez(p / "e.npz", ids=np.array(["a", "a"]),
                                        vectors=np.ones((2, 4))),
    "npz_nan": lambda p: np.savez(p / "e.npz", ids=np.array(["a", "b"]),
                                  vectors=np.array([[1.0, np.nan], [0.0, 1.0]])),
    "npz_garbage": lambda p: (p / "e.npz").write_bytes(RNG_BYTES),
    "npy_one_dimensional": lambda p: (np.save(p / "e.npy", np.ones(3)),
                                      (p / "e.ids.txt").write_text("a\nb\nc\n")),
    "npy_ids_mismatch": lambda p: (np.save(p / "e.npy", np.ones((3, 2))),
                                   (p / "e.ids.txt").write_text("a\nb\n")),
    "npy_garbage": lambda p: ((p / "e.npy").write_bytes(RNG_BYTES),
                              (p / "e.ids.txt").write_text("a\n")),
    "parquet_garbage": lambda p: (p / "e.parquet").write_bytes(RNG_BYTES),
}


@pytest.mark.parametrize("case", sorted(EMBEDDING_CASES))
def test_corrupted_embedding_arrays_are_one_line(tmp_path, capsys, case):
    EMBEDDING_CASES[case](tmp_path)
    path = next(p for p in tmp_path.iterdir() if not p.name.endswith(".ids.txt"))
    assert_one_line_naming(*run_summary(capsys, "embeddings", path, tmp_path), path)


# --------------------------------------------------------------------------------------------
# Run directories
# --------------------------------------------------------------------------------------------

RUN_SUMMARY_CASES = {
    "empty": b"",
    "garbage": RNG_BYTES,
    "truncated": b'{"model": "hetero_gat", "test": {"pearson": 0.',
    "wrong_type": b"[1, 2, 3]",
    "missing_record": b'{"model": "hetero_gat"}',
    "non_numeric": b'{"model": "m", "test": {"pearson": "high"}, "baselines": {}}',
}


@pytest.mark.parametrize("case", sorted(RUN_SUMMARY_CASES))
def test_compare_on_a_corrupted_summary_is_one_line(tmp_path, capsys, case):
    run = tmp_path / "runs" / "seed0"
    run.mkdir(parents=True)
    (run / "summary.json").write_bytes(RUN_SUMMARY_CASES[case])
    code = 0
    try:
        main(["compare", str(tmp_path / "runs"), "--metrics", "pearson"])
    except SystemExit as e:
        code = e.code
    assert_one_line_naming(code, capsys.readouterr().err.strip().splitlines(),
                           run / "summary.json")
