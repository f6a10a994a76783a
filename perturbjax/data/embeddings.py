"""Precomputed node embeddings (PrimeKG++-style sequence/text vectors, MolFormer drug vectors,
BioBERT-style text vectors) read from common table formats and attached as node features.

Embedding tables come from many tools, so one reader accepts the usual containers and checks
them the same way (a NaN or a duplicate id in a 100k-row table otherwise surfaces much later as
a NaN loss or a silently wrong join). Conventions, by file suffix:

* `.npz`: arrays `ids` (1-D, strings or integers) and `vectors` (2-D float), same length.
* `.npy`: one 2-D float array; ids one per line in the sibling `<stem>.ids.txt`
  (`drug_molformer.npy` -> `drug_molformer.ids.txt`).
* `.parquet`: a column `id` plus either one list column `embedding` (every list the same length)
  or only numeric columns (one per dimension, in column order).
* `.csv`, `.tsv` (also `.gz`-compressed): first column the id, every other column numeric. The
  first line is a header if it has a non-numeric field after the id, its id field is `id` or
  empty, or its other fields are the column numbers 0..d-1 or 1..d (`DataFrame.to_csv`).

Errors name the file and where: the 1-based line for text files (header line included), the
1-based row for `.npz`, `.npy` and `.parquet`.
"""

from __future__ import annotations

import gzip
import os
import re
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from perturbjax.data.load_report import LoadReport
from perturbjax.graph.hetero import HeteroGraph, NodeSet

MISSING_POLICIES = ("zeros", "mean", "error")


def read_embedding_table(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reads an embedding table (format by suffix, see the module docstring).

    Returns:
      (ids, vectors): [n] str ids, unique and non-empty; [n, d] float32, all finite.

    Raises:
      ValueError: naming the file and line/row of a non-numeric or empty value, a row of the
        wrong width, a duplicate or empty id, or a NaN/infinite value; or an unknown suffix.
      FileNotFoundError: the file, or the `.ids.txt` beside a `.npy`, is missing.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: embedding table not found")
    name = path.lower().removesuffix(".gz")
    if name.endswith(".npz"):
        ids, vectors, where = _read_npz(path)
    elif name.endswith(".npy"):
        ids, vectors, where = _read_npy(path)
    elif name.endswith(".parquet"):
        ids, vectors, where = _read_parquet(path)
    elif name.endswith((".csv", ".tsv")):
        ids, vectors, where = _read_text(path, "\t" if name.endswith(".tsv") else ",")
    else:
        raise ValueError(f"{path}: unknown embedding table format; use .npz, .npy (+ .ids.txt), "
                         ".parquet, .csv or .tsv")
    _check_table(ids, vectors, where)
    return ids, vectors


class _Where:
    """Names a record of a file in messages: its line (text) or row (binary), both 1-based."""

    def __init__(self, path: str, unit: str = "row", first: int = 1, ids_path: str | None = None):
        self.path, self.unit, self.first, self.ids_path = path, unit, first, ids_path

    def __call__(self, i: int) -> str:
        return f"{self.path}: {self.unit} {int(i) + self.first}"

    def of_id(self, i: int) -> str:
        """Where the id of record i is written (the `.ids.txt` of a `.npy`)."""
        if self.ids_path is None:
            return self(i)
        return f"{self.ids_path}: line {int(i) + 1}"


def _check_table(ids: np.ndarray, vectors: np.ndarray, where: _Where) -> None:
    """The checks every format shares: finite values, non-empty unique ids."""
    finite = np.isfinite(vectors)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise ValueError(f"{where(row)}: value {col + 1} is {vectors[row, col]} "
                         "(embeddings must be finite)")
    empty = np.flatnonzero(ids == "")
    if empty.size:
        raise ValueError(f"{where.of_id(empty[0])}: empty id")
    repeated = pd.Index(ids).duplicated(keep="first")
    if repeated.any():
        row = int(np.flatnonzero(repeated)[0])
        first = int(np.flatnonzero(ids == ids[row])[0])
        raise ValueError(f"{where.of_id(row)}: duplicate id {str(ids[row])!r} "
                         f"(first at {where.of_id(first).split(': ', 1)[1]})")


def _as_ids(values, where: _Where) -> np.ndarray:
    ids = np.asarray(values)
    if ids.ndim != 1:
        raise ValueError(f"{where.path}: ids must be 1-D, got shape {ids.shape}")
    if ids.dtype.kind not in "USiu":
        raise ValueError(f"{where.path}: ids must be strings or integers, got {ids.dtype}")
    return ids.astype(str)


def _as_vectors(values, where: _Where) -> np.ndarray:
    vectors = np.asarray(values)
    if vectors.ndim != 2:
        raise ValueError(f"{where.path}: vectors must be 2-D [n, d], got shape {vectors.shape}")
    if vectors.dtype.kind not in "fiub":
        raise ValueError(f"{where.path}: vectors must be numeric, got {vectors.dtype}")
    return vectors.astype(np.float32, copy=False)


def _read_npz(path: str):
    where = _Where(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("ids", "vectors") if k not in z.files]
            if missing:
                raise ValueError(f"{path}: .npz lacks arrays {missing} (has {z.files}); an "
                                 "embedding .npz holds `ids` and `vectors`")
            ids, vectors = _as_ids(z["ids"], where), _as_vectors(z["vectors"], where)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise ValueError(f"{path}: ids are stored as Python objects; save them as a string "
                             "array (np.asarray(ids, dtype=str))") from None
        raise
    if len(ids) != len(vectors):
        raise ValueError(f"{path}: {len(ids)} ids but {len(vectors)} vectors")
    return ids, vectors, where


def _read_npy(path: str):
    stem = path[:-len(".npy")] if path.lower().endswith(".npy") else path
    ids_path = stem + ".ids.txt"
    if not os.path.exists(ids_path):
        raise FileNotFoundError(f"{path}: ids file {ids_path} not found; a .npy embedding table "
                                "keeps its ids one per line beside it")
    where = _Where(path, ids_path=ids_path)
    try:
        vectors = _as_vectors(np.load(path, allow_pickle=False), where)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise ValueError(f"{path}: holds Python objects; expected a 2-D float array") from None
        raise
    with open(ids_path, encoding="utf-8") as f:
        ids = np.asarray(f.read().splitlines(), dtype=str)
    if len(ids) != len(vectors):
        raise ValueError(f"{ids_path}: {len(ids)} ids (lines) but {path} has {len(vectors)} rows")
    return ids, vectors, where


def _read_parquet(path: str):
    where = _Where(path)
    table = pq.read_table(path)
    if "id" not in table.column_names:
        raise ValueError(f"{path}: no `id` column (columns are {table.column_names})")
    id_column = table.column("id")
    if id_column.null_count:
        row = int(np.flatnonzero(id_column.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"{where(row)}: empty id")
    ids = _as_ids(id_column.to_numpy(zero_copy_only=False).astype(str), where)
    others = [c for c in table.column_names if c != "id"]
    if "embedding" in others and _is_list(table.schema.field("embedding").type):
        if len(others) > 1:
            raise ValueError(f"{path}: besides `id` and the list column `embedding` there are "
                             f"columns {[c for c in others if c != 'embedding']}")
        return ids, _list_vectors(table.column("embedding"), where), where
    for c in others:
        kind = table.schema.field(c).type
        if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
            raise ValueError(f"{path}: column {c!r} is {kind}, expected a number per dimension "
                             "(or one list column `embedding`)")
        if table.column(c).null_count:
            row = int(np.flatnonzero(table.column(c).is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"{where(row)}: column {c!r} is empty")
    if not others:
        raise ValueError(f"{path}: no embedding columns besides `id`")
    vectors = np.column_stack([table.column(c).to_numpy().astype(np.float32) for c in others])
    return ids, vectors, where


def _is_list(kind: pa.DataType) -> bool:
    return (pa.types.is_list(kind) or pa.types.is_large_list(kind)
            or pa.types.is_fixed_size_list(kind))


def _list_vectors(column: pa.ChunkedArray, where: _Where) -> np.ndarray:
    """[n, d] from a list column, raising at the first null, ragged or non-numeric row."""
    column = column.combine_chunks()
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"{where(row)}: embedding is empty")
    value_type = column.type.value_type
    if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
        raise ValueError(f"{where.path}: embedding values are {value_type}, expected numbers")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        row = int(np.flatnonzero(lengths != lengths[0])[0])
        raise ValueError(f"{where(row)}: embedding has {lengths[row]} values, but row "
                         f"{where.first} has {lengths[0]}")
    values = column.flatten()
    if values.null_count:
        at = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"{where(at // lengths[0])}: value {at % lengths[0] + 1} is empty")
    width = int(lengths[0]) if len(lengths) else 0
    return values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(column), width)


_NUMBER = re.compile(r"^\s*[-+]?((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|nan|inf|infinity)\s*$",
                     re.IGNORECASE)


def _read_text(path: str, delimiter: str):
    """CSV/TSV via pyarrow (threaded); on a parse error, re-read serially to learn the line."""
    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
            first = f.readline().rstrip("\r\n")
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise ValueError(f"{path}: line 1: not readable as UTF-8 text ({e}); expected an id "
                         f"and numbers") from e
    if not first:
        raise ValueError(f"{path}: line 1: empty; expected an id and numbers")
    fields = first.split(delimiter)
    header = (fields[0].strip().lower() in ("id", "")
              or not all(_NUMBER.match(v) for v in fields[1:])
              or _column_numbers(fields[1:]))
    if len(fields) < 2:
        raise ValueError(f"{path}: line 1: one field; expected an id and at least one number "
                         f"separated by {delimiter!r}")
    by_position = [f"column {i + 1}" for i in range(len(fields))]
    names = fields if header and len(set(fields)) == len(fields) else by_position
    skip = 1 if header else 0

    def read(use_threads: bool) -> pa.Table:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=use_threads, column_names=names,
                                           skip_rows=skip, block_size=16 << 20),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types={n: (pa.string() if i == 0 else pa.float32())
                              for i, n in enumerate(names)},
                null_values=[""], strings_can_be_null=False))

    where = _Where(path, unit="line", first=1 + skip)
    try:
        table = read(use_threads=True)
    except pa.ArrowInvalid as error:
        message = str(error)
        try:
            read(use_threads=False)  # the serial reader names the row
        except pa.ArrowInvalid as serial_error:
            message = str(serial_error)
        raise ValueError(_text_error(path, message, names)) from None
    ids = table.column(0).to_numpy(zero_copy_only=False).astype(str)
    columns = table.columns[1:]
    for name, column in zip(names[1:], columns):
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            blank = ids[row] == "" and all(not c[row].is_valid for c in columns)
            raise ValueError(f"{where(row)}: " + ("empty line" if blank else
                                                  f"{_column_label(name)} is empty"))
    vectors = np.column_stack([c.to_numpy() for c in columns]).astype(np.float32, copy=False)
    return ids, vectors, where


def _column_numbers(fields: list[str]) -> bool:
    """True for labels 0..d-1 or 1..d (d >= 3), as `DataFrame.to_csv` writes: a header, not data."""
    try:
        values = [float(v) for v in fields]
    except ValueError:
        return False
    d = len(values)
    return d >= 3 and values in (list(range(d)), list(range(1, d + 1)))


def _column_label(name: str) -> str:
    """`column 'dim_3'` for a header name, `column 4` for a file without a header."""
    return name if name.startswith("column ") else f"column {name!r}"


def _text_error(path: str, message: str, names: list[str]) -> str:
    """pyarrow's message restated as file, line and what was wrong."""
    row = re.search(r"Row #(\d+)", message)
    where = f"{path}: line {row.group(1)}" if row else path  # pyarrow counts skipped lines too
    width = re.search(r"Expected (\d+) columns, got (\d+)", message)
    if width:
        return f"{where}: {width.group(2)} fields, expected {width.group(1)} (ragged row)"
    value = re.search(r"In CSV column #(\d+).*invalid value '(.*)'$", message)
    if value:
        return (f"{where}: {_column_label(names[int(value.group(1))])} value {value.group(2)!r} "
                "is not a number")
    return f"{where}: {message}"


def attach_embeddings(graph: HeteroGraph, node_type: str,
                      path_or_table: str | os.PathLike | tuple[np.ndarray, np.ndarray], *,
                      feature: str = "embedding", missing: str = "zeros",
                      keys: Sequence[str] | None = None) -> tuple[HeteroGraph, LoadReport]:
    """Adds an embedding table as feature `feature` of `node_type`, joined on node names.

    Nodes without a vector get zeros (or the mean vector) and an indicator feature
    `<feature>_present` [n, 1] (1 where a vector was found), so a model can tell "no vector"
    from "a vector near zero".

    Args:
      graph: the graph; it is not modified.
      node_type: the node type to receive the feature.
      path_or_table: a file `read_embedding_table` reads, or its (ids, vectors) result.
      feature: feature name; must not exist already on that node type.
      missing: "zeros" or "mean" (fill, with the indicator), or "error" (every node must match).
      keys: per-node join keys aligned with the node set, used instead of the node names (e.g.
        PrimeKG ids where the graph names are `id#index`, or display names).

    Returns:
      (graph with the feature, report): the report keeps the coverage (nodes with a vector /
      nodes), counts table rows that matched no node, and gives examples of both.
    """
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing={missing!r}; expected one of {MISSING_POLICIES}")
    if node_type not in graph.nodes:
        raise KeyError(f"unknown node type {node_type!r}; known types are {graph.node_types}")
    node_set = graph.nodes[node_type]
    for name in (feature, f"{feature}_present"):
        if name in node_set.features:
            raise ValueError(f"node type {node_type!r} already has a feature {name!r}")
    if isinstance(path_or_table, (str, os.PathLike)):
        source = os.fspath(path_or_table)
        ids, vectors = read_embedding_table(source)
    else:
        source = "<table>"
        ids, vectors = path_or_table
        ids = np.asarray(ids).astype(str)
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2 or len(ids) != len(vectors):
            raise ValueError(f"table: {len(ids)} ids and vectors of shape {vectors.shape}; "
                             "expected [n] and [n, d]")
    node_keys = np.asarray(node_set.names if keys is None else keys).astype(str)
    if len(node_keys) != node_set.count:
        raise ValueError(f"keys has {len(node_keys)} entries, {node_type!r} has "
                         f"{node_set.count} nodes")

    table_index = pd.Index(ids)
    if not table_index.is_unique:
        raise ValueError(f"{source}: ids are not unique")
    row = table_index.get_indexer(node_keys)
    found = row >= 0
    n_found, n_nodes = int(found.sum()), node_set.count

    report = LoadReport(source)
    report.kept.update({"nodes with a vector": n_found, f"{node_type} nodes": n_nodes,
                        "table rows": len(ids)})
    report.notes["coverage"] = round(n_found / n_nodes, 6) if n_nodes else 0.0
    report.notes["width"] = int(vectors.shape[1])
    if n_found < n_nodes:
        report.notes["nodes without a vector"] = {
            "count": n_nodes - n_found,
            "filled with": missing,
            "examples": node_keys[~found][:report.max_examples].tolist()}
    matched = np.zeros(len(ids), bool)
    matched[row[found]] = True
    report.drop("table row matched no node", int((~matched).sum()),
                ids[~matched][:report.max_examples])

    if missing == "error" and n_found < n_nodes:
        raise ValueError(f"{source}: {n_nodes - n_found} of {n_nodes} {node_type!r} nodes have no "
                         f"vector, e.g. {node_keys[~found][:5].tolist()}")
    values = np.zeros((n_nodes, vectors.shape[1]), np.float32)
    values[found] = vectors[row[found]]
    if missing == "mean" and n_found and n_found < n_nodes:
        values[~found] = values[found].mean(axis=0)
    features = dict(node_set.features)
    features[feature] = values
    features[f"{feature}_present"] = found.astype(np.float32)[:, None]
    nodes = dict(graph.nodes)
    nodes[node_type] = NodeSet(node_set.names, features)
    return HeteroGraph(nodes, graph.edges), report
