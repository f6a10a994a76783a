"""LINCS L1000 readers: GCT/GCTX matrices, plate-to-signature collapse, and the LINCS tables.

Every reader returns its result together with a `LoadReport` that says what was kept and what was
dropped and why, so a silent loss of rows never goes unnoticed. Malformed input raises
`ValueError` naming the file and the 1-based line (or HDF5 record) and what was expected there,
because a message that says where to look is what makes a bad download fixable.

Conventions, chosen to match how CMap writes these files and cmapPy reads them
(cmapPy/pandasGEXpress/parse_gct.py and parse_gctx.py, `convert_neg_666=True`, the default):
  * GCT text, every cell: "-666", "", and cmapPy's `nan_values` ("#N/A", "N/A", "NA", "#NA",
    "NULL", "NaN", "-NaN", "nan", "-nan", "#N/A!", "na", "None", "#VALUE!") are missing: NaN,
    counted in the report. A field in double quotes loses them (`"g1"` is the id g1), as
    pandas' CSV reader gives cmapPy.
  * GCTX: in metadata -666 (number or text) is missing; in the matrix every number is a value,
    -666 included (cmapPy reads the HDF5 matrix as it is), and only NaN is missing.
  * Metadata columns whose present values are all numbers are stored as numbers (CMap writes
    e.g. `pert_dose` and `pert_time` as numbers); "-666.0" is missing there too.
  * Gene identifiers are Entrez ids kept as strings, so they join with graph node ids without
    int/str mismatches.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import warnings
from typing import Sequence

import h5py
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from perturbjax.data.load_report import LoadReport
from perturbjax.data.tables import (Table, check_field_counts, drop_bad_ids, field_counts,
                                    read_lines, read_table, to_bool, to_numeric)

CMAPPY_NAN_VALUES = ("#N/A", "N/A", "NA", "#NA", "NULL", "NaN", "-NaN", "nan", "-nan", "#N/A!",
                     "na", "None", "#VALUE!")
"""The strings cmapPy's GCT parser reads as NaN (`nan_values` in parse_gct.py)."""

DATA_MISSING_TOKENS = ("", "-666") + CMAPPY_NAN_VALUES
"""Spellings of a missing value in a GCT text matrix (cmapPy adds "-666" by default)."""

MISSING_TOKENS = DATA_MISSING_TOKENS + ("-666.0", "-666.00", "-666.000")
"""Spellings of a missing value in CMap metadata and tables (CMap's own marker is -666)."""

CMAP_MISSING = -666.0
MAD_SCALE = 1.4826
"""Makes the median absolute deviation a consistent estimate of the standard deviation."""

DEFAULT_GROUP_BY = ("pert_iname", "pert_dose", "pert_time", "cell_id")

_LEADING_ZERO = r"^[+-]?0\d"  # "007" is an identifier, not the number 7


# --------------------------------------------------------------------------------------------
# Cells and values
# --------------------------------------------------------------------------------------------

def _parse_cells(lines: Sequence[str], n_fields: int) -> np.ndarray:
    """Object array [len(lines), n_fields] of the raw strings of tab-separated lines whose
    field counts were checked before."""
    if not len(lines):
        return np.empty((0, n_fields), dtype=object)
    frame = pd.read_csv(io.StringIO("\n".join(lines)), sep="\t", header=None, dtype=str,
                        na_filter=False, skip_blank_lines=False, engine="c",
                        quoting=csv.QUOTE_NONE)
    return frame.to_numpy(dtype=object)


def _unquote(cells: np.ndarray) -> np.ndarray:
    """Fields written in double quotes -> their text (`"g1"` -> g1, `""` inside -> `"`)."""
    s = pd.Series(cells.ravel(), dtype=object)
    quoted = (s.str.len() >= 2) & s.str.startswith('"') & s.str.endswith('"')
    if quoted.any():
        s[quoted] = s[quoted].str.slice(1, -1).str.replace('""', '"', regex=False)
    return s.to_numpy(dtype=object).reshape(cells.shape)


def _to_float(cells: np.ndarray, lineno: np.ndarray, col_labels: Sequence[str],
              name: str) -> tuple[np.ndarray, int]:
    """Parses a block of numeric strings -> (float32 array, number of missing values)."""
    shape = cells.shape
    s = pd.Series(cells.ravel(), dtype=object).str.strip()
    missing = s.isin(DATA_MISSING_TOKENS).to_numpy()
    num = np.array(pd.to_numeric(s.mask(missing), errors="coerce"), dtype=np.float64)
    bad = np.flatnonzero(np.isnan(num) & ~missing)
    if bad.size:
        r, c = divmod(int(bad[0]), shape[1])
        raise ValueError(f"{name} line {lineno[r]}: expected a number in column "
                         f"{col_labels[c]!r}, got {s.iloc[bad[0]]!r}")
    return num.reshape(shape).astype(np.float32), int(missing.sum())


def _coerce_meta(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Missing tokens -> NaN; columns whose present values all parse become numeric.

    Returns the converted frame and the number of missing metadata values.
    """
    out, n_missing = {}, 0
    for col in frame.columns:
        s = frame[col]
        if pd.api.types.is_bool_dtype(s):
            out[col] = s
            continue
        if pd.api.types.is_numeric_dtype(s):
            sentinel = s == CMAP_MISSING
            n_missing += int(sentinel.sum() + s.isna().sum())
            out[col] = s.mask(sentinel) if sentinel.any() else s
            continue
        s = s.astype(object)
        stripped = s.str.strip()  # NaN for non-string cells, which are kept as they are
        s = stripped.where(stripped.notna(), s)
        missing = s.isna() | s.isin(MISSING_TOKENS)
        n_missing += int(missing.sum())
        s = s.mask(missing)
        present = s[~missing]
        if len(present) and not present.str.match(_LEADING_ZERO, na=False).any():
            num = pd.to_numeric(present, errors="coerce")
            if num.notna().all():
                s = pd.to_numeric(s)
        out[col] = s
    return pd.DataFrame(out, index=frame.index), n_missing


def _first_duplicate(values: pd.Series) -> int | None:
    dup = np.flatnonzero(values.duplicated().to_numpy())
    return int(dup[0]) if dup.size else None


# --------------------------------------------------------------------------------------------
# GCT / GCTX
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GCT:
    """An expression matrix with its row (gene/probe) and column (sample) annotations.

    Attributes:
      data: float32 [n_rows, n_cols]; NaN where the file had a missing value.
      row_meta: one row per matrix row, indexed by row id (index name `rid`).
      col_meta: one row per matrix column, indexed by column id (index name `cid`).
      version: the file's format version ("1.2", "1.3", "GCTX1.0").
    """

    data: np.ndarray
    row_meta: pd.DataFrame
    col_meta: pd.DataFrame
    version: str = "1.3"

    def __post_init__(self):
        data = np.asarray(self.data, dtype=np.float32)
        if data.ndim != 2:
            raise ValueError(f"GCT data must be 2-D, got shape {data.shape}")
        for attr, n, idx_name in (("row_meta", data.shape[0], "rid"),
                                  ("col_meta", data.shape[1], "cid")):
            meta = getattr(self, attr)
            if len(meta) != n:
                raise ValueError(f"GCT {attr} has {len(meta)} entries for {n} matrix {idx_name}s")
            index = pd.Index(meta.index.astype(str), name=idx_name)
            if not index.is_unique:
                raise ValueError(f"GCT {attr} ids are not unique, e.g. "
                                 f"{index[index.duplicated()][:3].tolist()}")
            meta = meta.copy()
            meta.index = index
            object.__setattr__(self, attr, meta)
        object.__setattr__(self, "data", data)

    @property
    def row_ids(self) -> np.ndarray:
        return self.row_meta.index.to_numpy(dtype=str)

    @property
    def col_ids(self) -> np.ndarray:
        return self.col_meta.index.to_numpy(dtype=str)

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape

    def subset(self, rows=None, cols=None) -> "GCT":
        """A GCT of the chosen rows and columns, in the order given.

        Args:
          rows, cols: None (all), ids, integer positions, or a boolean mask.
        """
        r = _positions(self.row_meta.index, rows, "row")
        c = _positions(self.col_meta.index, cols, "column")
        return GCT(self.data[np.ix_(r, c)], self.row_meta.iloc[r], self.col_meta.iloc[c],
                   self.version)


def _positions(index: pd.Index, sel, what: str) -> np.ndarray:
    if sel is None:
        return np.arange(len(index))
    arr = np.asarray(sel)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.dtype == bool:
        if arr.shape != (len(index),):
            raise ValueError(f"{what} mask has length {arr.size}, expected {len(index)}")
        return np.flatnonzero(arr)
    if arr.size and np.issubdtype(arr.dtype, np.integer):
        if arr.min() < -len(index) or arr.max() >= len(index):
            raise IndexError(f"{what} positions out of range for {len(index)} {what}s")
        return arr
    pos = index.get_indexer(arr.astype(str))
    if (pos < 0).any():
        unknown = arr[pos < 0]
        raise KeyError(f"{unknown.size} {what} ids are not in the GCT, e.g. {unknown[:3].tolist()}")
    return pos


def read_gct(path) -> tuple[GCT, LoadReport]:
    """Reads a GCT 1.2 or 1.3 text file (optionally gzipped).

    The dimension line is checked against the file's content, so a truncated download fails
    loudly instead of yielding a smaller matrix.
    """
    name = str(path)
    report = LoadReport(name)
    lines = read_lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f"{name} line 1: expected a version line '#1.2' or '#1.3', "
                         f"the file is empty")
    version = lines[0].strip()
    if version not in ("#1.2", "#1.3"):
        raise ValueError(f"{name} line 1: expected a version line '#1.2' or '#1.3', "
                         f"got {lines[0][:40]!r}")
    version = version[1:]
    if len(lines) < 3:
        raise ValueError(f"{name} line {len(lines) + 1}: expected a "
                         f"{'dimension' if len(lines) == 1 else 'header'} line, the file ends")
    dims = lines[1].split()
    layout = "n_rows n_cols" + (" n_row_meta n_col_meta" if version == "1.3" else "")
    if len(dims) != len(layout.split()) or not all(d.isdigit() for d in dims):
        raise ValueError(f"{name} line 2: expected {len(layout.split())} non-negative integers "
                         f"({layout}), got {lines[1][:60]!r}")
    if version == "1.3":
        n_rows, n_cols, n_rmeta, n_cmeta = map(int, dims)
    else:
        (n_rows, n_cols), n_rmeta, n_cmeta = map(int, dims), 1, 0  # 1.2: Name, Description
    width = 1 + n_rmeta + n_cols

    header = lines[2].split("\t")
    if len(header) != width:
        raise ValueError(f"{name} line 3: expected {width} tab-separated fields (id, {n_rmeta} "
                         f"row-metadata fields and {n_cols} column ids, as line 2 declares), "
                         f"got {len(header)}")
    header = list(_unquote(np.array([h.strip() for h in header], dtype=object)))
    rmeta_names, cids = header[1:1 + n_rmeta], header[1 + n_rmeta:]
    dup = _first_duplicate(pd.Series(rmeta_names, dtype=object))
    if dup is not None:
        raise ValueError(f"{name} line 3: row-metadata field names must be unique, "
                         f"{rmeta_names[dup]!r} repeats")
    dup = _first_duplicate(pd.Series(cids))
    if dup is not None:
        raise ValueError(f"{name} line 3: column ids must be unique, {cids[dup]!r} repeats")
    if "" in cids:
        raise ValueError(f"{name} line 3: column {1 + n_rmeta + cids.index('') + 1} has an "
                         f"empty column id")

    block = lines[3:]
    if len(block) < n_cmeta + n_rows:
        got = len(block) - n_cmeta
        what = (f"{n_cmeta} column-metadata lines (as line 2 declares), got {len(block)}"
                if got < 0 else f"{n_rows} data rows (as line 2 declares), got {got}")
        raise ValueError(f"{name} line {len(lines) + 1}: expected {what} before the file ends")
    if len(block) > n_cmeta + n_rows:
        raise ValueError(f"{name} line {4 + n_cmeta + n_rows}: expected the end of the file "
                         f"after {n_rows} data rows (as line 2 declares), got "
                         f"{len(block) - n_cmeta - n_rows} more lines")
    lineno = np.arange(4, 4 + len(block))
    check_field_counts(field_counts(block, "\t"), width, lineno, name, "\t",
                       f" (id, {n_rmeta} row-metadata fields, {n_cols} values)")
    cells = _parse_cells(block, width)
    if any('"' in line for line in block):
        cells = _unquote(cells)

    cm = cells[:n_cmeta]
    cmeta_names = pd.Series(cm[:, 0], dtype=object).str.strip()
    dup = _first_duplicate(cmeta_names)
    if dup is not None:
        raise ValueError(f"{name} line {lineno[dup]}: column-metadata field "
                         f"{cmeta_names[dup]!r} repeats")
    col_meta = pd.DataFrame(cm[:, 1 + n_rmeta:].T, index=pd.Index(cids, name="cid"),
                            columns=cmeta_names.tolist())

    rows = cells[n_cmeta:]
    rows_lineno = lineno[n_cmeta:]
    rids = pd.Series(rows[:, 0], dtype=object).str.strip()
    if (rids == "").any():
        raise ValueError(f"{name} line {rows_lineno[np.flatnonzero(rids == '')[0]]}: "
                         f"expected a row id in the first field, got an empty one")
    dup = _first_duplicate(rids)
    if dup is not None:
        first = rows_lineno[np.flatnonzero(rids.to_numpy() == rids[dup])[0]]
        raise ValueError(f"{name} line {rows_lineno[dup]}: row id {rids[dup]!r} repeats "
                         f"(first at line {first})")
    row_meta = pd.DataFrame(rows[:, 1:1 + n_rmeta], index=pd.Index(rids.tolist(), name="rid"),
                            columns=rmeta_names)
    data, n_missing = _to_float(rows[:, 1 + n_rmeta:], rows_lineno, cids, name)

    row_meta, rm_missing = _coerce_meta(row_meta)
    col_meta, cm_missing = _coerce_meta(col_meta)
    report.kept["rows"], report.kept["cols"] = n_rows, n_cols
    report.notes["version"] = version
    report.notes["missing_values"] = n_missing
    report.notes["missing_metadata_values"] = rm_missing + cm_missing
    return GCT(data, row_meta, col_meta, version), report


def _decode(values: np.ndarray) -> np.ndarray:
    """Bytes from HDF5 -> str (UTF-8, else Latin-1); other arrays unchanged."""
    if values.dtype.kind == "S":
        try:
            return np.char.decode(values, "utf-8").astype(object)
        except UnicodeDecodeError:
            return np.char.decode(values, "latin-1").astype(object)
    if values.dtype.kind == "O":
        s = pd.Series(values, dtype=object)
        is_bytes = s.map(lambda v: isinstance(v, bytes)).to_numpy(bool)  # h5py vlen strings
        if is_bytes.any():
            s[is_bytes] = s[is_bytes].str.decode("utf-8", errors="replace")
        return s.to_numpy(dtype=object)
    return values


def _gctx_meta(group: h5py.Group, ids: np.ndarray, where: str, name: str,
               index_name: str) -> pd.DataFrame:
    """One column per 1-D dataset of a GCTX metadata group, indexed by the group's `id`."""
    fields = {}
    for key, ds in group.items():
        if key == "id":
            continue
        if not isinstance(ds, h5py.Dataset) or ds.shape != (len(ids),):
            shape = getattr(ds, "shape", "a group")
            raise ValueError(f"{name}: record {where}/{key} has shape {shape}, expected "
                             f"({len(ids)},), one value per id in {where}/id")
        fields[key] = _decode(ds[()])
    return pd.DataFrame(fields, index=pd.Index(ids, name=index_name))


def _gctx_ids(ds, rec: str, name: str) -> np.ndarray:
    """A GCTX id record as strings: `[n]`, or `[n, 1]` / `[1, n]` as some writers store it."""
    shape = getattr(ds, "shape", None)
    if shape is None or len(shape) > 2 or (len(shape) == 2 and 1 not in shape):
        raise ValueError(f"{name}: record /{rec} has shape {shape or 'a group'}, expected "
                         f"(n,) ids")
    return _decode(np.asarray(ds[()]).ravel()).astype(str)


GCTX_MATRIX = "0/DATA/0/matrix"
GCTX_ROW_IDS = "0/META/ROW/id"
GCTX_COL_IDS = "0/META/COL/id"

DEFAULT_BLOCK_BYTES = 64 << 20
"""Read buffer of `read_gctx_subset`, in bytes of the stored matrix: a fixed cost beside the
output. 256 MiB blocks did not read faster, 1.6 MiB ones were slower (docs/gctx_read.md)."""

CONTIGUOUS_UNIT_BYTES = 256 << 10
"""An unchunked matrix is read in units of about this many bytes of consecutive signatures: one
h5py read call costs tens of microseconds, about the time a disk takes to read this much, so a
shorter gap between selected signatures is read through rather than skipped."""


def _open_gctx(path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: expected an HDF5 (GCTX) file: {e}") from e


def _gctx_layout(f: h5py.File, name: str) -> tuple[np.ndarray, np.ndarray, h5py.Dataset]:
    """Checks a GCTX's records -> (row ids, column ids, the matrix dataset, not read)."""
    for rec in (GCTX_MATRIX, GCTX_ROW_IDS, GCTX_COL_IDS):
        if rec not in f:
            raise ValueError(f"{name}: record /{rec} is missing; expected the GCTX layout "
                             f"/{GCTX_MATRIX}, /{GCTX_ROW_IDS}, /{GCTX_COL_IDS}")
    rids, cids = (_gctx_ids(f[rec], rec, name) for rec in (GCTX_ROW_IDS, GCTX_COL_IDS))
    matrix = f[GCTX_MATRIX]
    if matrix.dtype.kind not in "fiub":
        raise ValueError(f"{name}: record /{GCTX_MATRIX} holds {matrix.dtype} values, "
                         f"expected numbers")
    if matrix.shape != (len(cids), len(rids)):
        raise ValueError(f"{name}: record /{GCTX_MATRIX} has shape {matrix.shape}, "
                         f"expected (n_cols, n_rows) = ({len(cids)}, {len(rids)}) from "
                         f"/{GCTX_COL_IDS} and /{GCTX_ROW_IDS}")
    for what, ids in ((f"/{GCTX_ROW_IDS}", rids), (f"/{GCTX_COL_IDS}", cids)):
        dup = _first_duplicate(pd.Series(ids))
        if dup is not None:
            raise ValueError(f"{name}: record {what} entry {dup}: id {str(ids[dup])!r} repeats")
    return rids, cids, matrix


def _gctx_annotations(f: h5py.File, rids: np.ndarray, cids: np.ndarray,
                      name: str) -> tuple[pd.DataFrame, pd.DataFrame, str, int]:
    """(row metadata, column metadata, version, number of missing metadata values)."""
    row_meta = _gctx_meta(f["0/META/ROW"], rids, "/0/META/ROW", name, "rid")
    col_meta = _gctx_meta(f["0/META/COL"], cids, "/0/META/COL", name, "cid")
    version = f.attrs.get("version", b"GCTX1.0")
    if isinstance(version, np.ndarray):  # some writers store ["GCTX1.0"]
        version = version.ravel()[0] if version.size else b"GCTX1.0"
    version = version.decode() if isinstance(version, bytes) else str(version)
    row_meta, rm_missing = _coerce_meta(row_meta)
    col_meta, cm_missing = _coerce_meta(col_meta)
    return row_meta, col_meta, version, rm_missing + cm_missing


def read_gctx(path) -> tuple[GCT, LoadReport]:
    """Reads a CMap GCTX (HDF5) file: `/0/DATA/0/matrix` [n_cols, n_rows] plus `/0/META`.

    The whole matrix is read (and briefly held twice, stored and transposed): for part of a large
    file use `read_gctx_subset`.
    """
    name = str(path)
    report = LoadReport(name)
    with _open_gctx(path) as f:
        rids, cids, matrix = _gctx_layout(f, name)
        row_meta, col_meta, version, meta_missing = _gctx_annotations(f, rids, cids, name)
        data = np.ascontiguousarray(np.asarray(matrix[()], dtype=np.float32).T)
    report.kept["rows"], report.kept["cols"] = data.shape
    report.notes["version"] = version
    report.notes["missing_values"] = int(np.isnan(data).sum())
    report.notes["missing_metadata_values"] = meta_missing
    return GCT(data, row_meta, col_meta, version), report


def read_gctx_meta(path) -> tuple[pd.DataFrame, pd.DataFrame, LoadReport]:
    """A GCTX's row and column metadata, as `read_gctx` builds them, without reading the matrix.

    The file is validated as `read_gctx` validates it (records present, ids unique, the matrix's
    shape and type), so a file that passes here reads there.

    Returns:
      row_meta (indexed by `rid`), col_meta (indexed by `cid`), and a report whose notes give the
      stored matrix's dtype and HDF5 chunk shape ([signatures, genes]; None when contiguous).
    """
    name = str(path)
    report = LoadReport(name)
    with _open_gctx(path) as f:
        rids, cids, matrix = _gctx_layout(f, name)
        row_meta, col_meta, version, meta_missing = _gctx_annotations(f, rids, cids, name)
        report.notes["matrix_dtype"] = str(matrix.dtype)
        report.notes["matrix_chunks"] = list(matrix.chunks) if matrix.chunks else None
    report.kept["rows"], report.kept["cols"] = len(rids), len(cids)
    report.notes["version"] = version
    report.notes["missing_metadata_values"] = meta_missing
    return row_meta, col_meta, report


def _select_ids(index: pd.Index, ids, what: str, record: str, name: str) -> np.ndarray:
    """Positions in `index` of the requested ids, in the order given (None: all)."""
    if ids is None:
        return np.arange(len(index))
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or arr.dtype == bool:
        kind = "a boolean mask" if arr.dtype == bool else f"an array of shape {arr.shape}"
        raise ValueError(f"{name}: expected a sequence of {what} ids, got {kind}")
    arr = arr.astype(str)
    pos = index.get_indexer(arr)
    unknown = arr[pos < 0]
    if unknown.size:
        raise ValueError(f"{name}: {unknown.size} of the {arr.size} requested {what} ids are not "
                         f"in {record}, e.g. {unknown[:5].tolist()}")
    dup = _first_duplicate(pd.Series(arr))
    if dup is not None:
        raise ValueError(f"{name}: requested {what} id {str(arr[dup])!r} repeats (entry {dup} "
                         f"of the request); expected each id once")
    return pos


def _runs(units: np.ndarray, longest: int) -> list[tuple[int, int]]:
    """Sorted unique integers -> [start, stop) runs of consecutive ones, each <= `longest`."""
    if not units.size:
        return []
    breaks = np.flatnonzero(np.diff(units) != 1) + 1
    out = []
    for s, e in zip(units[np.r_[0, breaks]], units[np.r_[breaks - 1, units.size - 1]] + 1):
        out.extend((a, min(a + longest, int(e))) for a in range(int(s), int(e), longest))
    return out


@dataclasses.dataclass(frozen=True)
class _ReadPlan:
    """Rectangles of the stored matrix [signatures, genes] to read, aligned to its chunks.

    Attributes:
      gene_spans: (g0, g1, out_rows, local) per span of genes read: the output rows it fills
        and their offsets in the span.
      sig_blocks: (lo, hi, a, b) per block of signatures read: the sorted selection's entries
        a..b-1 lie in [lo, hi).
      buffer_items: elements of the largest rectangle.
    """

    gene_spans: list
    sig_blocks: list
    buffer_items: int

    def items(self) -> int:
        """Elements read in all."""
        return (sum(hi - lo for lo, hi, _, _ in self.sig_blocks)
                * sum(g1 - g0 for g0, g1, _, _ in self.gene_spans))


def _plan_reads(shape: tuple[int, int], chunks: tuple[int, int] | None, itemsize: int,
                sig_sorted: np.ndarray, gene_pos: np.ndarray, block_bytes: int) -> _ReadPlan:
    """Which parts of the stored matrix to read for these signatures and genes.

    Chunked: whole chunks only, so each chunk is read (and decompressed) once and none without
    a selected entry is touched; along genes, the runs of chunk columns holding a selected gene.
    Contiguous: the span from the first to the last selected gene, in units of consecutive
    signatures of about `CONTIGUOUS_UNIT_BYTES`. Units without a selected signature are skipped;
    adjacent ones are read together, up to `block_bytes` a rectangle (at least one unit high).
    """
    n_sigs, n_genes = shape
    if chunks:
        cs, cg = chunks
        origin, limit = 0, n_genes
    else:
        origin, limit = int(gene_pos.min()), int(gene_pos.max()) + 1
        cg = limit - origin
        cs = max(1, min(CONTIGUOUS_UNIT_BYTES, block_bytes) // (cg * itemsize))
        if cg * itemsize > block_bytes:  # one signature's span exceeds a block: split it
            cg = max(1, block_bytes // itemsize)
    cols = np.unique((gene_pos - origin) // cg)
    gene_spans = []
    for s, e in _runs(cols, max(1, block_bytes // (cs * cg * itemsize))):
        g0, g1 = origin + s * cg, min(origin + e * cg, limit)
        out_rows = np.flatnonzero((gene_pos >= g0) & (gene_pos < g1))
        out_rows = out_rows[np.argsort(gene_pos[out_rows], kind="stable")]  # gathers in order
        gene_spans.append((g0, g1, out_rows, gene_pos[out_rows] - g0))
    width = max(g1 - g0 for g0, g1, _, _ in gene_spans)
    units = np.unique(sig_sorted // cs)
    sig_blocks = []
    for s, e in _runs(units, max(1, block_bytes // (cs * width * itemsize))):
        lo, hi = s * cs, min(e * cs, n_sigs)
        a, b = np.searchsorted(sig_sorted, [lo, hi])
        sig_blocks.append((lo, hi, int(a), int(b)))
    height = max(hi - lo for lo, hi, _, _ in sig_blocks)
    return _ReadPlan(gene_spans, sig_blocks, height * width)


_COPY_BYTES = 4 << 20


class _Readahead:
    """Asks the kernel to fetch a block's bytes (posix_fadvise WILLNEED) before HDF5 reads them,
    so the disk reads the next block while the current one is copied.

    Advice only: it cannot change what is read, and it is skipped where posix_fadvise, the
    chunk index (h5py's chunk_iter) or the data's file offset is unavailable.
    """

    GAP = 1 << 20
    """Chunks less than this apart on disk are fetched as one range."""

    def __init__(self, path, matrix: h5py.Dataset):
        self.fd, self.matrix, self.offset = None, matrix, None
        if not hasattr(os, "posix_fadvise") or not isinstance(path, (str, os.PathLike)):
            return
        try:
            if matrix.chunks:
                (cs, cg), (n, m) = matrix.chunks, matrix.shape
                self.start = np.full((-(-n // cs), -(-m // cg)), -1, dtype=np.int64)
                self.size = np.zeros_like(self.start)  # file offset and bytes of each chunk

                def visit(chunk):
                    at = (chunk.chunk_offset[0] // cs, chunk.chunk_offset[1] // cg)
                    self.start[at], self.size[at] = chunk.byte_offset, chunk.size

                matrix.id.chunk_iter(visit)
            else:
                self.offset = matrix.id.get_offset()
                if self.offset is None:  # not written yet: nothing to fetch
                    return
            self.fd = os.open(path, os.O_RDONLY)
        except (AttributeError, NotImplementedError, OSError, RuntimeError, ValueError):
            self.fd = None

    def __call__(self, lo: int, hi: int, spans) -> None:
        if self.fd is None:
            return
        item = self.matrix.dtype.itemsize
        if self.offset is not None:
            row = self.matrix.shape[1] * item
            g0, g1 = min(s[0] for s in spans) * item, max(s[1] for s in spans) * item
            starts = np.array([self.offset + lo * row + g0])
            ends = np.array([self.offset + (hi - 1) * row + g1])
        else:
            cs, cg = self.matrix.chunks
            rows = np.arange(lo // cs, -(-hi // cs))
            cols = np.concatenate([np.arange(g0 // cg, -(-g1 // cg)) for g0, g1, _, _ in spans])
            starts = self.start[np.ix_(rows, cols)].ravel()
            ends = starts + self.size[np.ix_(rows, cols)].ravel()
            order = np.argsort(starts[starts >= 0])
            starts, ends = starts[starts >= 0][order], ends[starts >= 0][order]
            if not starts.size:
                return
            first = np.flatnonzero(np.r_[True, starts[1:] > np.maximum.accumulate(ends)[:-1]
                                         + self.GAP])
            starts, ends = starts[first], np.maximum.reduceat(ends, first)
        for start, end in zip(starts.tolist(), ends.tolist()):
            try:
                os.posix_fadvise(self.fd, start, end - start, os.POSIX_FADV_WILLNEED)
            except OSError:
                return

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _read_into(out: np.ndarray, path, matrix: h5py.Dataset, r: np.ndarray, c: np.ndarray,
               block_bytes: int, progress: bool, name: str) -> dict:
    """Fills out[i, j] = matrix[c[j], r[i]] block by block.

    Returns counts for the report: bytes read, read calls, read buffer bytes, missing values.
    """
    counts = {"bytes_read": 0, "read_calls": 0, "buffer_bytes": 0, "missing_values": 0}
    if not (r.size and c.size):
        return counts
    order = np.argsort(c, kind="stable")
    sig_sorted = c[order]
    itemsize = matrix.dtype.itemsize
    plan = _plan_reads(matrix.shape, matrix.chunks, itemsize, sig_sorted, r, max(1, block_bytes))
    buf = np.empty(plan.buffer_items, dtype=matrix.dtype)  # reused by every block
    counts["buffer_bytes"] = buf.nbytes
    blocks, spans = plan.sig_blocks, plan.gene_spans
    readahead = _Readahead(path, matrix)
    try:
        with tqdm(total=plan.items() * itemsize, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=f"reading {name}", disable=not progress) as bar:
            readahead(*blocks[0][:2], spans)
            for i, (lo, hi, a, b) in enumerate(blocks):
                if i + 1 < len(blocks):
                    readahead(*blocks[i + 1][:2], spans)
                for g0, g1, out_rows, local_genes in spans:
                    block = buf[:(hi - lo) * (g1 - g0)].reshape(hi - lo, g1 - g0)
                    matrix.read_direct(block, np.s_[lo:hi, g0:g1])
                    # the selected entries, a few MiB at a time, so the copy stays small
                    step = max(1, _COPY_BYTES // (block.itemsize * local_genes.size))
                    for k in range(a, b, step):
                        part = block[np.ix_(sig_sorted[k:min(k + step, b)] - lo, local_genes)]
                        out[np.ix_(out_rows, order[k:min(k + step, b)])] = part.T
                        # counted here: np.isnan(out) would allocate a quarter of the output
                        counts["missing_values"] += int(np.count_nonzero(part != part))
                    counts["bytes_read"] += block.nbytes
                    counts["read_calls"] += 1
                    bar.update(block.nbytes)
    finally:
        readahead.close()
    return counts


def read_gctx_subset(path, rows=None, cols=None, *, progress: bool = False,
                     block_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[GCT, LoadReport]:
    """Reads the chosen rows (genes) and columns (signatures) of a GCTX, in blocks.

    Equal to `read_gctx(path)[0].subset(rows, cols)` (metadata typed over the whole file, so
    column dtypes do not depend on the selection), without reading the whole matrix: the
    stored matrix [signatures, genes] is read in rectangles aligned to its HDF5 chunks (whole
    chunks, each read once; chunks and runs of signatures without a selected entry are
    skipped), and each rectangle's selected entries are copied into the float32 output. While
    one block is copied the kernel is asked to fetch the next (posix_fadvise WILLNEED).

    Memory: the output [len(rows), len(cols)] float32 plus one block: a reusable read buffer of
    at most `block_bytes` (more only if one chunk row of the selected gene span is larger), from
    which the selected entries are copied a few MiB at a time. The bound is output + one block
    (+ the ids and metadata, and HDF5's own buffers), so for the landmark rows of LINCS's files
    (an output of 1 GB and more) the peak stays close to the output; docs/gctx_read.md has the
    measurement and its command.

    Args:
      path: a `.gctx` file.
      rows: row ids (genes) to read, in the order wanted; None reads all.
      cols: column ids (signatures) to read, in the order wanted; None reads all.
      progress: show a progress bar over the bytes read.
      block_bytes: size of the read buffer, in bytes of the stored type.

    Returns:
      The GCT of the selection and a report: rows and columns kept, missing values in the
      selection, the file's shape and chunks, the bytes read, the number of read calls and
      the read buffer's size.

    Raises:
      ValueError: naming the file and record, for a malformed file (as `read_gctx`), ids that
        are not in the file (the first few are listed) or ids requested twice.
    """
    name = str(path)
    report = LoadReport(name)
    with _open_gctx(path) as f:
        rids, cids, matrix = _gctx_layout(f, name)
        r = _select_ids(pd.Index(rids), rows, "row", f"/{GCTX_ROW_IDS}", name)
        c = _select_ids(pd.Index(cids), cols, "column", f"/{GCTX_COL_IDS}", name)
        row_meta, col_meta, version, _ = _gctx_annotations(f, rids, cids, name)
        out = np.empty((r.size, c.size), dtype=np.float32)
        counts = _read_into(out, path, matrix, r, c, block_bytes, progress, name)
        chunks = list(matrix.chunks) if matrix.chunks else None
        file_shape = [len(rids), len(cids)]
    row_meta, col_meta = row_meta.iloc[r], col_meta.iloc[c]
    report.kept["rows"], report.kept["cols"] = out.shape
    report.notes["version"] = version
    report.notes["missing_values"] = counts["missing_values"]
    report.notes["missing_metadata_values"] = int(row_meta.isna().to_numpy().sum()
                                                  + col_meta.isna().to_numpy().sum())
    report.notes["file_shape"] = file_shape
    report.notes["matrix_chunks"] = chunks
    report.notes["bytes_read"] = counts["bytes_read"]
    report.notes["read_calls"] = counts["read_calls"]
    report.notes["buffer_bytes"] = counts["buffer_bytes"]
    return GCT(out, row_meta, col_meta, version), report


def _matrix_format(path) -> str:
    lower = str(path).lower()
    if lower.endswith(".gctx"):
        return "gctx"
    if lower.endswith((".gct", ".gct.gz")):
        return "gct"
    raise ValueError(f"{path}: expected a .gct, .gct.gz or .gctx file")


def read_matrix(path) -> tuple[GCT, LoadReport]:
    """Reads a `.gct`, `.gct.gz` or `.gctx` file, chosen by its extension."""
    return read_gctx(path) if _matrix_format(path) == "gctx" else read_gct(path)


def read_matrix_meta(path) -> tuple[pd.DataFrame, pd.DataFrame, LoadReport]:
    """(row metadata, column metadata, report) of a `.gct`, `.gct.gz` or `.gctx` file.

    A GCTX's matrix is not read (`read_gctx_meta`); a GCT text file is read whole (text files
    are small enough).
    """
    if _matrix_format(path) == "gctx":
        return read_gctx_meta(path)
    gct, report = read_gct(path)
    return gct.row_meta, gct.col_meta, report


def read_matrix_subset(path, rows=None, cols=None, *, progress: bool = False,
                       block_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[GCT, LoadReport]:
    """The chosen rows and columns (ids, in the order given) of a `.gct`, `.gct.gz` or `.gctx`.

    A GCTX is read in blocks (`read_gctx_subset`); a GCT text file is read whole and subset.
    Unknown or repeated ids raise `ValueError` naming the file, for either format.
    """
    if _matrix_format(path) == "gctx":
        return read_gctx_subset(path, rows, cols, progress=progress, block_bytes=block_bytes)
    name = str(path)
    gct, report = read_gct(path)
    r = _select_ids(gct.row_meta.index, rows, "row", "the file's row ids", name)
    c = _select_ids(gct.col_meta.index, cols, "column", "the file's column ids", name)
    sub = gct.subset(r, c)
    report.kept["rows"], report.kept["cols"] = sub.shape
    report.notes["missing_values"] = int(np.isnan(sub.data).sum())
    report.notes["file_shape"] = list(gct.shape)
    return sub, report
# --------------------------------------------------------------------------------------------
# Level 3 -> level 5: robust z-scores against vehicle controls, MODZ replicate collapse
# --------------------------------------------------------------------------------------------

def _control_stats(x: np.ndarray, is_control: np.ndarray,
                   mad_floor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row median and floored, scaled MAD of the control columns."""
    ctl = x[:, is_control]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN genes stay NaN, reported
        med = np.nanmedian(ctl, axis=1)
        mad = np.nanmedian(np.abs(ctl - med[:, None]), axis=1) * MAD_SCALE
    floored = mad < mad_floor
    return med, np.where(floored, mad_floor, mad), floored


def robust_zscore(x: np.ndarray, is_control: np.ndarray, *, mad_floor: float = 0.1) -> np.ndarray:
    """Robust z-score of every column of `x` [genes, wells] against its control columns.

    z = (x - median(controls)) / max(1.4826 * MAD(controls), mad_floor), per gene. Median and
    MAD resist the odd failed control well; the floor keeps genes whose controls barely vary
    from turning noise into huge z-scores.
    """
    x = np.asarray(x, dtype=np.float64)
    is_control = np.asarray(is_control, dtype=bool)
    if x.ndim != 2 or is_control.shape != (x.shape[1],):
        raise ValueError(f"expected x [genes, wells] and a control mask of length x.shape[1], "
                         f"got {x.shape} and {is_control.shape}")
    if not is_control.any():
        raise ValueError("robust_zscore needs at least one control column")
    med, scale, _ = _control_stats(x, is_control, mad_floor)
    return ((x - med[:, None]) / scale[:, None]).astype(np.float32)


def modz(z: np.ndarray, groups: np.ndarray, *,
         min_weight: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Collapses replicate columns into one moderated z-score (MODZ) signature per group.

    Each replicate is weighted by its mean Spearman correlation (over genes) with the other
    replicates of its group, clipped below at `min_weight` and normalised to sum to 1, so a
    replicate that disagrees with the rest barely counts. A lone replicate has weight 1. Missing
    values are skipped (the weights of the present replicates are renormalised).

    Args:
      z: [genes, n] z-scores.
      groups: [n] integer group codes 0..n_groups-1.

    Returns:
      signatures float32 [genes, n_groups] and the weight of each column [n].
    """
    z = np.asarray(z)
    groups = np.asarray(groups, dtype=np.int64)
    n_genes, n = z.shape
    if groups.shape != (n,) or (n and groups.min() < 0):
        raise ValueError(f"expected {n} non-negative group codes, got shape {groups.shape}")
    n_groups = int(groups.max()) + 1 if n else 0
    # Replicates sorted by group: each group's sums are one np.add.reduceat, so the cost is
    # linear in the replicates (pairwise correlations would be quadratic in a group's size,
    # and a drug can have thousands of signatures).
    order = np.argsort(groups, kind="stable")
    counts = np.bincount(groups, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)

    def group_sums(x):  # [genes, n] in `order` -> [genes, n_groups]
        out = np.zeros((x.shape[0], n_groups), np.float64)
        present = counts > 0
        if n:
            out[:, present] = np.add.reduceat(x, starts[present], axis=1)
        return out

    unit = np.empty((n_genes, n), np.float64)  # Spearman: centred, unit-norm ranks per column
    for lo in range(0, n, 4096):
        block = z[:, order[lo:lo + 4096]].astype(np.float64)
        ranks = pd.DataFrame(block).rank(axis=0, method="average").to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            col_mean = np.nanmean(ranks, axis=0)
        ranks = np.where(np.isnan(ranks), np.nan_to_num(col_mean)[None, :], ranks)
        centred = ranks - ranks.mean(axis=0)
        norm = np.linalg.norm(centred, axis=0)
        unit[:, lo:lo + 4096] = np.divide(centred, norm, out=np.zeros_like(centred),
                                          where=norm > 0)
    sorted_groups = groups[order]
    totals = group_sums(unit)
    # sum over the group's others j != i of r_ij = unit_i . (sum of the group) - unit_i . unit_i
    others = np.einsum("gi,gi->i", unit, totals[:, sorted_groups]) - np.einsum(
        "gi,gi->i", unit, unit)
    n_others = counts[sorted_groups] - 1
    raw_sorted = np.where(n_others > 0, np.maximum(others / np.maximum(n_others, 1), min_weight),
                          1.0)
    raw = np.empty(n)
    raw[order] = raw_sorted
    weights = raw / np.bincount(groups, weights=raw, minlength=n_groups)[groups]

    zs = z[:, order].astype(np.float64)
    finite = np.isfinite(zs)
    w = weights[order]
    num = group_sums(np.where(finite, zs, 0.0) * w)
    den = group_sums(finite * w)
    sig = np.divide(num, den, out=np.full_like(num, np.nan), where=den > 0).T
    return sig.T.astype(np.float32), weights


def plate_to_signatures(gct: GCT, *, control: str = "ctl_vehicle",
                        group_by: Sequence[str] = DEFAULT_GROUP_BY,
                        control_field: str = "pert_type", include: Sequence[str] | None = None,
                        zscored: bool = False, mad_floor: float = 0.1, min_weight: float = 0.01,
                        source: str = "plate") -> tuple[GCT, LoadReport]:
    """Turns one L1000 plate into level-5-like signatures: one MODZ z-score vector per group.

    Level 3 input (log2 expression) is first robust-z-scored per gene against the plate's vehicle
    control wells (`col_meta[control_field] == control`; on CMap plates `pert_type ==
    "ctl_vehicle"`, the DMSO wells), so each signature says how the treatment moved a gene
    relative to untreated cells on the same plate. With `zscored=True` the input is taken as
    level 4 z-scores and only collapsed. Replicates sharing all `group_by` values are then
    collapsed with `modz`.

    Args:
      gct: the plate, genes x wells.
      control: value of `control_field` that marks control wells.
      group_by: column-metadata fields that identify one signature.
      include: `control_field` values of the wells to collapse; None means every non-control well.
      zscored: the input already holds z-scores (level 4); skip the z-scoring.
      mad_floor: smallest scale (scaled MAD) a gene may have, in the data's units.
      min_weight: lower clip of a replicate's MODZ weight.
      source: name used in the report and in errors.

    Returns:
      (signatures GCT [genes, groups] whose col_meta holds the `group_by` fields,
      `n_replicates` and `replicate_ids` ("|"-joined well ids), LoadReport).
    """
    meta = gct.col_meta
    group_by = list(group_by)
    missing = [f for f in dict.fromkeys([control_field, *group_by]) if f not in meta.columns]
    if missing:
        raise ValueError(f"{source}: column metadata lacks the fields {missing}; it has "
                         f"{list(meta.columns)}")
    report = LoadReport(source)
    kinds = meta[control_field]
    is_control = np.asarray((kinds == control).fillna(False), dtype=bool)
    if zscored:
        z = gct.data
    else:
        if not is_control.any():
            present = sorted(map(str, kinds.dropna().unique()))
            raise ValueError(f"{source}: the plate has no control wells: no column has "
                             f"{control_field} == {control!r} (values present: {present}); "
                             f"choose `control`, or pass zscored=True for level-4 input")
        med, scale, floored = _control_stats(gct.data.astype(np.float64), is_control, mad_floor)
        z = (gct.data - med[:, None]) / scale[:, None]
        report.kept["control_wells"] = int(is_control.sum())
        report.notes["genes_at_mad_floor"] = int(floored.sum())
        report.notes["genes_without_control_values"] = int(np.isnan(med).sum())
        if is_control.sum() < 3:
            report.notes["warning"] = (f"only {int(is_control.sum())} control wells: the MAD is "
                                       f"unreliable")

    selected = ~is_control if include is None else kinds.isin(list(include)).to_numpy()
    skipped = ~selected & ~is_control
    report.drop(f"{control_field} not in include", int(skipped.sum()),
                gct.col_ids[skipped][:5])
    if not selected.any():
        raise ValueError(f"{source}: no wells to collapse (include={include!r}, "
                         f"{control_field} values present: "
                         f"{sorted(map(str, kinds.dropna().unique()))})")

    sel_meta = meta.loc[selected, group_by]
    parts = [np.where(sel_meta[f].isna(), "NA", sel_meta[f].astype(object).to_numpy()).astype(str)
             for f in group_by]
    key = pd.Series(parts[0], dtype=object)
    for p in parts[1:]:
        key = key + "|" + p
    codes, uniques = pd.factorize(key, sort=False)
    signatures, _ = modz(np.asarray(z)[:, selected], codes, min_weight=min_weight)

    first = np.unique(codes, return_index=True)[1]
    out_meta = sel_meta.iloc[first].copy()
    out_meta.index = pd.Index(np.asarray(uniques, dtype=str), name="cid")
    n_rep = np.bincount(codes)
    out_meta["n_replicates"] = n_rep
    out_meta["replicate_ids"] = (pd.Series(gct.col_ids[selected]).groupby(codes).agg("|".join)
                                 .to_numpy())
    report.kept["treated_wells"] = int(selected.sum())
    report.kept["signatures"] = len(uniques)
    report.kept["genes"] = gct.shape[0]
    report.notes["replicates_per_signature"] = {int(k): int(v) for k, v in
                                                zip(*np.unique(n_rep, return_counts=True))}
    return GCT(signatures, gct.row_meta, out_meta, gct.version), report


# --------------------------------------------------------------------------------------------
# LINCS tables
# --------------------------------------------------------------------------------------------

def _read_lincs_table(path, required: Sequence[str], report: LoadReport) -> Table:
    return read_table(path, required, strip=True, missing=MISSING_TOKENS, report=report)


def read_pertinfo(path) -> tuple[pd.DataFrame, LoadReport]:
    """LINCS perturbagen table (pert_id, pert_iname, pert_type, SMILES, InChIKey, PubChem CID).

    `pubchem_cid` becomes a nullable integer; values that are not integers are set to missing
    and reported. Count and weight columns become numbers; `in_summly` becomes bool.
    """
    report = LoadReport(str(path))
    table = _read_lincs_table(path, ("pert_id", "pert_iname", "pert_type"), report)
    table = drop_bad_ids(table, "pert_id", report)
    for col in ("pubchem_cid", "num_gold", "num_inst", "num_sig"):
        if col in table.frame:
            to_numeric(table, col, report, strict=False, integer=True)
    if "molecular_wt" in table.frame:
        to_numeric(table, "molecular_wt", report, strict=False)
    if "in_summly" in table.frame:
        to_bool(table, "in_summly", report)
    report.kept["perturbagens"] = len(table.frame)
    return table.frame, report


def read_cellinfo(path) -> tuple[pd.DataFrame, LoadReport]:
    """LINCS cell-line table (cell_id, histology, lineage, source, ...); strings, NaN if blank."""
    report = LoadReport(str(path))
    table = drop_bad_ids(_read_lincs_table(path, ("cell_id",), report), "cell_id", report)
    report.kept["cell_lines"] = len(table.frame)
    return table.frame, report


def read_geneinfo(path) -> tuple[pd.DataFrame, LoadReport]:
    """L1000 probe table (pr_id, pr_gene_id, pr_gene_symbol, is_lm, ...).

    `is_lm` and the other `is_*` flags become bool (a blank flag means False, counted in the
    report's notes). `pr_gene_id` stays a string: some probes map to several genes ("a///b").
    """
    report = LoadReport(str(path))
    table = _read_lincs_table(path, ("pr_id", "pr_gene_id", "pr_gene_symbol", "is_lm"), report)
    # dhimmel's table also lists genes that have no L1000 probe (blank pr_id): not probes.
    table = drop_bad_ids(table, "pr_id", report, "blank pr_id (a gene without an L1000 probe)")
    for col in [c for c in table.frame.columns if c.startswith("is_")]:
        to_bool(table, col, report)
    report.kept["probes"] = len(table.frame)
    report.kept["landmark_probes"] = int(table.frame["is_lm"].sum())
    return table.frame, report


SIGINFO_COLUMNS = ("sig_id", "pert_id", "pert_iname", "pert_type", "cell_id", "pert_dose",
                   "pert_dose_unit", "pert_idose", "pert_time", "pert_time_unit", "pert_itime",
                   "distil_id")


def read_siginfo(path) -> tuple[pd.DataFrame, LoadReport]:
    """LINCS signature table (GSE92742/GSE70138 `sig_info.txt`).

    `pert_dose` and `pert_time` become numbers (-666 -> NaN); a value that is not a number is
    malformed input and raises. `distil_id` stays the "|"-joined list of replicate ids; the
    replicate count is added as `n_replicates`.
    """
    report = LoadReport(str(path))
    table = drop_bad_ids(_read_lincs_table(path, SIGINFO_COLUMNS, report), "sig_id", report)
    for col in ("pert_dose", "pert_time"):
        to_numeric(table, col, report, strict=True)
    distil = table.frame["distil_id"]
    table.frame["n_replicates"] = (distil.str.count(r"\|") + 1).where(distil.notna(), 0).astype(
        np.int64)
    report.kept["signatures"] = len(table.frame)
    return table.frame, report


def read_landmark_genes(path) -> tuple[pd.DataFrame, LoadReport]:
    """The 978 L1000 landmark genes as DataFrame(entrez_id: str, symbol), in file order.

    Accepts dhimmel/lincs `genes.tsv` (entrez_gene_id, status, symbol; landmarks have
    status == "measured") or TranSiGen's `landmark_geneinfo.csv` (gene_id, gene_symbol; every
    row is a landmark), chosen by the header.
    """
    report = LoadReport(str(path))
    table = _read_lincs_table(path, (), report)
    header = list(table.frame.columns)
    if {"entrez_gene_id", "status", "symbol"} <= set(header):
        cols = dict(id="entrez_gene_id", symbol="symbol", status="status")
    elif {"gene_id", "gene_symbol"} <= set(header):
        cols = dict(id="gene_id", symbol="gene_symbol")
    else:
        raise ValueError(f"{table.name} line 1: expected columns (entrez_gene_id, status, "
                         f"symbol) or (gene_id, gene_symbol), found {header}")
    if "status" in cols:
        measured = (table.frame[cols["status"]] == "measured").to_numpy()
        report.drop("status is not 'measured' (not a landmark)", int((~measured).sum()))
        table = table.take(measured)
    ids = table.frame[cols["id"]]
    bad = ~ids.fillna("").str.fullmatch(r"\d+").to_numpy(bool)
    if bad.any():
        k = np.flatnonzero(bad)[0]
        raise ValueError(f"{table.line(k)}: expected an Entrez gene id (digits) in column "
                         f"{cols['id']!r}, got {ids.iloc[k]!r}")
    table = drop_bad_ids(table, cols["id"], report)
    out = pd.DataFrame({"entrez_id": table.frame[cols["id"]].astype(str).to_numpy(dtype=object),
                        "symbol": table.frame[cols["symbol"]].to_numpy(dtype=object)})
    report.kept["landmark_genes"] = len(out)
    return out, report


# --------------------------------------------------------------------------------------------
# Wide id x gene matrices: consensus signatures, basal expression
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ConsensusSignatures:
    """Drug-level consensus signatures.

    Attributes:
      perturbagens: [n] str perturbagen ids (DrugBank ids in dhimmel/lincs).
      genes: [978] str Entrez ids.
      values: float32 [n, n_genes] moderated z-scores.
    """

    perturbagens: np.ndarray
    genes: np.ndarray
    values: np.ndarray


@dataclasses.dataclass(frozen=True)
class BasalExpression:
    """Control (basal) expression per cell line; unpacks as (cell_ids, genes, values).

    Attributes:
      cell_ids: [n] str.
      genes: [n_genes] str Entrez ids.
      values: float32 [n, n_genes].
    """

    cell_ids: np.ndarray
    genes: np.ndarray
    values: np.ndarray

    def __iter__(self):
        return iter((self.cell_ids, self.genes, self.values))


def _read_id_matrix(path, id_col: str, report: LoadReport,
                    what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tab-separated `id_col` + Entrez-id columns -> (ids, genes, float32 values).

    Rows holding a missing or non-finite value are dropped and reported; repeated or blank ids
    raise, since either would make a row's identity ambiguous.
    """
    table = read_table(path, sep="\t", report=report)
    name, lineno, header = table.name, table.lineno, list(table.frame.columns)
    if header[0] != id_col:
        raise ValueError(f"{name} line 1: expected the first column to be {id_col!r}, "
                         f"got {header[0]!r}")
    genes = np.asarray(header[1:], dtype=str)
    bad = np.flatnonzero(~pd.Series(genes, dtype=object).str.fullmatch(r"\d+").to_numpy(bool))
    if bad.size:
        raise ValueError(f"{name} line 1: expected Entrez gene ids (digits) as column names, "
                         f"column {bad[0] + 2} is {genes[bad[0]]!r}")
    cells = table.frame.to_numpy(dtype=object)
    ids = pd.Series(cells[:, 0], dtype=object).str.strip()
    if (ids == "").any():
        k = np.flatnonzero((ids == "").to_numpy())[0]
        raise ValueError(f"{name} line {lineno[k]}: expected a {id_col} in the first field, "
                         f"got an empty one")
    dup = _first_duplicate(ids)
    if dup is not None:
        first = lineno[np.flatnonzero(ids.to_numpy() == ids[dup])[0]]
        raise ValueError(f"{name} line {lineno[dup]}: {id_col} {ids[dup]!r} repeats "
                         f"(first at line {first}); expected one row per {what}")
    values, _ = _to_float(cells[:, 1:], lineno, genes.tolist(), name)
    finite = np.isfinite(values).all(axis=1)
    report.drop("row with a missing or non-finite value", int((~finite).sum()),
                [f"{i} (line {n})" for i, n in zip(ids[~finite][:5], lineno[~finite][:5])])
    report.kept[f"{what}s"] = int(finite.sum())
    report.kept["genes"] = len(genes)
    return ids.to_numpy(dtype=str)[finite], genes, values[finite]


def read_consensus(path) -> tuple[ConsensusSignatures, LoadReport]:
    """dhimmel/lincs consensus signatures: rows are perturbagens (`perturbagen`), columns genes."""
    report = LoadReport(str(path))
    ids, genes, values = _read_id_matrix(path, "perturbagen", report, "perturbagen")
    return ConsensusSignatures(ids, genes, values), report


def read_basal_expression(path) -> tuple[BasalExpression, LoadReport]:
    """Basal (control) expression per cell line: `cell_id` + one column per Entrez id."""
    report = LoadReport(str(path))
    ids, genes, values = _read_id_matrix(path, "cell_id", report, "cell_line")
    return BasalExpression(ids, genes, values), report


# --------------------------------------------------------------------------------------------
# TranSiGen control/treated pairs
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ProfilePairs:
    """Control and treated expression profiles of the same signatures.

    Attributes:
      meta: one row per signature: `sig`, `cell_id`, `canonical_smiles`.
      control: float32 [n, n_genes] profile before treatment (`x1`).
      treated: float32 [n, n_genes] profile after treatment (`x2`).
      genes: [n_genes] str Entrez ids when given to the reader (the file holds none; TranSiGen
        orders genes as l1000/landmark_geneinfo.csv), else None.
    """

    meta: pd.DataFrame
    control: np.ndarray
    treated: np.ndarray
    genes: np.ndarray | None = None


_PAIR_RECORDS = ("x1", "x2", "canonical_smiles", "cid", "sig")


def read_transigen_pairs(path, genes: Sequence[str] | None = None) -> tuple[ProfilePairs,
                                                                             LoadReport]:
    """TranSiGen's processed HDF5: `x1` control and `x2` treated profiles with SMILES and cell.

    Rows with a non-finite value in either profile are dropped and reported, as are repeats of
    a `sig` id (the first is kept).

    Args:
      path: the .h5 file.
      genes: optional Entrez ids of the profile columns (the file does not store them).
    """
    name = str(path)
    report = LoadReport(name)
    try:
        handle = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{name}: expected an HDF5 file: {e}") from e
    with handle as f:
        missing = [r for r in _PAIR_RECORDS if r not in f]
        if missing:
            raise ValueError(f"{name}: records {missing} are missing; expected {_PAIR_RECORDS}")
        x1, x2 = f["x1"][()], f["x2"][()]
        if x1.ndim != 2 or x1.shape != x2.shape:
            raise ValueError(f"{name}: records x1 {x1.shape} and x2 {x2.shape} must be 2-D "
                             f"[signatures, genes] of the same shape")
        for rec, values in (("x1", x1), ("x2", x2)):
            if not np.issubdtype(values.dtype, np.number):
                raise ValueError(f"{name}: record {rec} holds {values.dtype}, expected numbers")
        fields = {}
        for rec, col in (("sig", "sig"), ("cid", "cell_id"), ("canonical_smiles",
                                                              "canonical_smiles")):
            values = f[rec][()]
            if values.shape != (x1.shape[0],):
                raise ValueError(f"{name}: record {rec} has shape {values.shape}, expected "
                                 f"({x1.shape[0]},), one per row of x1")
            fields[col] = _decode(values)
    if genes is not None:
        genes = np.asarray(genes, dtype=str)
        if genes.shape != (x1.shape[1],):
            raise ValueError(f"{name}: {genes.size} gene ids given for {x1.shape[1]} columns")
    meta = pd.DataFrame(fields)
    finite = np.isfinite(x1).all(axis=1) & np.isfinite(x2).all(axis=1)
    report.drop("row with a non-finite value", int((~finite).sum()), meta["sig"][~finite][:5])
    dup = meta["sig"].duplicated().to_numpy() & finite
    report.drop("duplicate sig (kept the first)", int(dup.sum()), meta["sig"][dup][:5])
    keep = finite & ~dup
    meta = meta[keep].reset_index(drop=True)
    report.kept["pairs"] = int(keep.sum())
    report.kept["genes"] = x1.shape[1]
    report.notes["cell_lines"] = int(meta["cell_id"].nunique())
    report.notes["compounds"] = int(meta["canonical_smiles"].nunique())
    return ProfilePairs(meta, x1[keep].astype(np.float32), x2[keep].astype(np.float32),
                        genes), report
