"""Reading part of a GCTX without the whole matrix: `read_gctx_subset`, `read_gctx_meta` and the
`read_matrix_*` dispatchers, checked against `read_gctx` on small generated files.

Peak memory is measured by benchmarks/gctx_read.py, not here.
"""

import re

import h5py
import numpy as np
import pandas as pd
import pytest

from perturbjax.data.lincs import (read_gct, read_gctx, read_gctx_meta, read_gctx_subset,
                                   read_matrix_meta, read_matrix_subset)

N_SIGS, N_GENES = 41, 23


def write_gctx(path, *, chunks=None, dtype=np.float32, compression=None, ids_n1=False,
               seed=0) -> np.ndarray:
    """A GCTX of N_SIGS signatures x N_GENES genes with a few NaNs and typed metadata.

    Returns the stored matrix [signatures, genes].
    """
    rng = np.random.default_rng(seed)
    stored = rng.normal(size=(N_SIGS, N_GENES)).astype(dtype)
    stored[rng.random(stored.shape) < 0.03] = np.nan
    rids = np.array([str(1000 + 7 * i).encode() for i in range(N_GENES)])
    cids = np.array([f"PLATE{i % 3}:sig{i}".encode() for i in range(N_SIGS)])
    with h5py.File(path, "w") as f:
        f.create_dataset("0/DATA/0/matrix", data=stored, chunks=chunks, compression=compression)
        f["0/META/ROW/id"] = rids[:, None] if ids_n1 else rids
        f["0/META/COL/id"] = cids[:, None] if ids_n1 else cids
        f["0/META/ROW/pr_gene_symbol"] = np.array([f"G{i}".encode() for i in range(N_GENES)])
        f["0/META/ROW/pr_is_lm"] = (np.arange(N_GENES) % 2).astype(np.int64)
        dose = rng.choice([b"10", b"1.11", b"-666"], N_SIGS)
        f["0/META/COL/pert_dose"] = dose
        f["0/META/COL/cell_id"] = rng.choice([b"MCF7", b"PC3", b"NA"], N_SIGS)
        f.attrs["version"] = b"GCTX1.0"
    return stored


def assert_same_gct(got, want):
    np.testing.assert_array_equal(got.data, want.data)  # NaN == NaN here
    assert got.data.dtype == np.float32 and got.data.flags.c_contiguous
    pd.testing.assert_frame_equal(got.row_meta, want.row_meta)
    pd.testing.assert_frame_equal(got.col_meta, want.col_meta)
    assert got.version == want.version


LAYOUTS = {
    "contiguous": dict(),
    "chunked": dict(chunks=(4, 5)),
    "chunked_float64": dict(chunks=(4, 5), dtype=np.float64),
    "contiguous_float64": dict(dtype=np.float64),
    "one_signature_per_chunk": dict(chunks=(1, N_GENES)),
    "all_genes_per_chunk_gzip": dict(chunks=(6, N_GENES), compression="gzip"),
    "ids_n_by_1": dict(chunks=(5, 7), ids_n1=True),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("block_bytes", [1, 300, 1 << 20])
def test_subset_equals_read_gctx_subset(tmp_path, layout, block_bytes):
    path = tmp_path / "m.gctx"
    write_gctx(path, **LAYOUTS[layout])
    full, _ = read_gctx(path)
    rng = np.random.default_rng(1)
    rows = full.row_ids[rng.permutation(N_GENES)[:9]]  # unsorted, spread over the file
    cols = full.col_ids[rng.permutation(N_SIGS)[:17]]
    got, report = read_gctx_subset(path, rows, cols, block_bytes=block_bytes)
    want = full.subset(rows, cols)
    assert_same_gct(got, want)
    assert got.row_ids.tolist() == rows.tolist() and got.col_ids.tolist() == cols.tolist()
    assert report.kept == {"rows": 9, "cols": 17}
    assert report.notes["missing_values"] == int(np.isnan(want.data).sum())
    assert report.notes["file_shape"] == [N_GENES, N_SIGS]

    every, _ = read_gctx_subset(path, block_bytes=block_bytes)  # None = all, in file order
    assert_same_gct(every, full)
    contiguous_cols, _ = read_gctx_subset(path, cols=full.col_ids[5:30], block_bytes=block_bytes)
    assert_same_gct(contiguous_cols, full.subset(cols=full.col_ids[5:30]))


def test_meta_equals_read_gctx_without_reading_the_matrix(tmp_path):
    path = tmp_path / "m.gctx"
    write_gctx(path, chunks=(4, 5), compression="gzip")
    full, full_report = read_gctx(path)
    row_meta, col_meta, report = read_gctx_meta(path)
    pd.testing.assert_frame_equal(row_meta, full.row_meta)
    pd.testing.assert_frame_equal(col_meta, full.col_meta)
    assert report.kept == full_report.kept
    assert report.notes["missing_metadata_values"] == full_report.notes["missing_metadata_values"]
    assert report.notes["matrix_chunks"] == [4, 5] and report.notes["matrix_dtype"] == "float32"

    corrupt_chunk(path, (8, 0))  # the matrix no longer reads; its metadata still does
    with pytest.raises(OSError):
        read_gctx(path)
    row_meta, col_meta, _ = read_gctx_meta(path)
    pd.testing.assert_frame_equal(col_meta, full.col_meta)


def corrupt_chunk(path, offset):
    with h5py.File(path, "a") as f:
        f["0/DATA/0/matrix"].id.write_direct_chunk(offset, b"not gzip data", filter_mask=0)


def test_chunks_without_a_selected_entry_are_not_read(tmp_path):
    path = tmp_path / "m.gctx"
    write_gctx(path, chunks=(4, 5), compression="gzip")
    full, _ = read_gctx(path)
    corrupt_chunk(path, (8, 0))  # signatures 8-11, genes 0-4
    corrupt_chunk(path, (20, 10))  # signatures 20-23, genes 10-14
    rows = full.row_ids[[7, 17, 5]]  # gene chunk columns 1 and 3 only
    cols = full.col_ids[[30, 2, 21, 13]]  # signature chunk 5 is read, not genes 10-14
    got, report = read_gctx_subset(path, rows, cols)
    assert_same_gct(got, full.subset(rows, cols))
    # 4 chunk rows (0, 3, 5, 7) x genes 5-9 and 15-19: whole chunks of 4 x 5 float32
    assert report.notes["bytes_read"] == 4 * 2 * (4 * 5 * 4)
    with pytest.raises(OSError):
        read_gctx_subset(path, rows=full.row_ids[[0]], cols=full.col_ids[[9]])


def test_contiguous_file_reads_only_the_span_of_selected_genes(tmp_path):
    path = tmp_path / "m.gctx"
    write_gctx(path)
    full, _ = read_gctx(path)
    rows = full.row_ids[[12, 4, 9]]
    got, report = read_gctx_subset(path, rows, full.col_ids[[40, 3]])
    assert_same_gct(got, full.subset(rows, full.col_ids[[40, 3]]))
    assert report.notes["bytes_read"] == N_SIGS * (12 - 4 + 1) * 4  # one unit: all signatures


def test_ids_given_as_numbers_and_empty_selections(tmp_path):
    path = tmp_path / "m.gctx"
    write_gctx(path, chunks=(4, 5))
    full, _ = read_gctx(path)
    got, _ = read_gctx_subset(path, rows=[1014, 1000])  # Entrez ids as integers
    assert got.row_ids.tolist() == ["1014", "1000"]
    assert_same_gct(got, full.subset(rows=["1014", "1000"]))
    none, report = read_gctx_subset(path, rows=[], cols=full.col_ids[:3])
    assert none.shape == (0, 3) and report.notes["bytes_read"] == 0


def test_unknown_or_repeated_ids_name_the_file(tmp_path):
    path = tmp_path / "m.gctx"
    write_gctx(path, chunks=(4, 5))
    with pytest.raises(ValueError) as err:
        read_gctx_subset(path, cols=["PLATE0:sig0", "nope1", "nope2"])
    message = str(err.value)
    assert "\n" not in message
    assert message == (f"{path}: 2 of the 3 requested column ids are not in /0/META/COL/id, "
                       f"e.g. ['nope1', 'nope2']")
    with pytest.raises(ValueError, match=re.escape(f"{path}: 1 of the 1 requested row ids are "
                                                   f"not in /0/META/ROW/id, e.g. ['7']")):
        read_gctx_subset(path, rows=[7])
    with pytest.raises(ValueError, match=re.escape(f"{path}: requested row id '1000' repeats")):
        read_gctx_subset(path, rows=["1000", "1007", "1000"])
    with pytest.raises(ValueError, match=re.escape(f"{path}: expected a sequence of column ids, "
                                                   f"got a boolean mask")):
        read_gctx_subset(path, cols=np.ones(N_SIGS, bool))


def test_malformed_files_fail_as_read_gctx_does(tmp_path):
    path = tmp_path / "bad.gctx"
    with h5py.File(path, "w") as f:
        f["0/DATA/0/matrix"] = np.zeros((3, 2), np.float32)
        f["0/META/ROW/id"] = np.array([b"g1", b"g2"])
        f["0/META/COL/id"] = np.array([b"a", b"b", b"a"])
    for reader in (read_gctx, read_gctx_meta, read_gctx_subset):
        with pytest.raises(ValueError, match=re.escape(f"{path}: record /0/META/COL/id entry 2: "
                                                       f"id 'a' repeats")):
            reader(path)
    not_hdf5 = tmp_path / "text.gctx"
    not_hdf5.write_text("#1.3\n")
    for reader in (read_gctx_meta, read_gctx_subset):
        with pytest.raises(ValueError, match=re.escape(f"{not_hdf5}: expected an HDF5 (GCTX)")):
            reader(not_hdf5)


def test_progress_bar(tmp_path, capsys):
    path = tmp_path / "m.gctx"
    write_gctx(path, chunks=(4, 5))
    read_gctx_subset(path, cols=["PLATE1:sig1"], progress=True)
    assert "reading" in capsys.readouterr().err


def test_dispatch_by_extension(tmp_path):
    gctx = tmp_path / "m.gctx"
    write_gctx(gctx, chunks=(4, 5))
    full, _ = read_gctx(gctx)
    rows, cols = full.row_ids[[3, 1]], full.col_ids[[10, 0, 5]]
    got, _ = read_matrix_subset(gctx, rows, cols)
    assert_same_gct(got, full.subset(rows, cols))
    row_meta, col_meta, _ = read_matrix_meta(gctx)
    pd.testing.assert_frame_equal(col_meta, full.col_meta)

    gct = tmp_path / "m.gct"
    gct.write_text("#1.3\n3\t2\t1\t1\n"
                   "id\tsym\ta\tb\n"
                   "dose\t-666\t10\t1\n"
                   "g1\tX\t1\t2\n"
                   "g2\tY\tNA\t4\n"
                   "g3\tZ\t5\t6\n")
    text, _ = read_gct(gct)
    got, report = read_matrix_subset(gct, rows=["g3", "g2"], cols=["b"])
    assert_same_gct(got, text.subset(["g3", "g2"], ["b"]))
    assert report.kept == {"rows": 2, "cols": 1} and report.notes["missing_values"] == 0
    row_meta, col_meta, _ = read_matrix_meta(gct)
    pd.testing.assert_frame_equal(col_meta, text.col_meta)
    with pytest.raises(ValueError, match=re.escape(f"{gct}: 1 of the 2 requested row ids are not "
                                                   f"in the file's row ids, e.g. ['g9']")):
        read_matrix_subset(gct, rows=["g1", "g9"])
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'm.h5'}: expected a .gct")):
        read_matrix_subset(tmp_path / "m.h5")


def test_readahead_is_advice_covering_the_chunks_read(tmp_path, monkeypatch):
    path = tmp_path / "m.gctx"
    write_gctx(path, chunks=(4, 5))
    full, _ = read_gctx(path)
    rows, cols = full.row_ids[[7, 17]], full.col_ids[[30, 2, 21]]
    with h5py.File(path) as f:
        info = f["0/DATA/0/matrix"].id.get_chunk_info_by_coord
        read = [info((s, g)) for s in (0, 20, 28) for g in (5, 15)]
    advised = []
    monkeypatch.setattr("os.posix_fadvise", lambda fd, start, size, advice: advised.append(
        (start, start + size)))
    got, _ = read_gctx_subset(path, rows, cols, block_bytes=1)
    assert_same_gct(got, full.subset(rows, cols))
    for chunk in read:
        assert any(a <= chunk.byte_offset and chunk.byte_offset + chunk.size <= b
                   for a, b in advised), chunk
    monkeypatch.delattr("os.posix_fadvise")  # where the platform has none
    got, _ = read_gctx_subset(path, rows, cols, block_bytes=1)
    assert_same_gct(got, full.subset(rows, cols))


@pytest.mark.parametrize("layout", ["contiguous", "chunked_float64"])
def test_selected_entries_copied_in_small_pieces(tmp_path, monkeypatch, layout):
    path = tmp_path / "m.gctx"
    write_gctx(path, **LAYOUTS[layout])
    full, _ = read_gctx(path)
    monkeypatch.setattr("perturbjax.data.lincs._COPY_BYTES", 3 * 8 * 2)  # 2 signatures a piece
    rows, cols = full.row_ids[[20, 0, 11]], full.col_ids[::-3]
    got, report = read_gctx_subset(path, rows, cols)
    assert_same_gct(got, full.subset(rows, cols))
    assert report.notes["missing_values"] == int(np.isnan(got.data).sum())
