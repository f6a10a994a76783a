"""PrimeKG (Chandak et al. 2023, Harvard Dataverse doi:10.7910/DVN/IXA7BM) `kg.csv` -> HeteroGraph.

`kg.csv` has one directed edge per row and stores every undirected edge in both directions, so the
graph keeps both rows (messages then flow both ways without `with_reverse_edges`). A node is
identified by its global `x_index`/`y_index`; its source id (`x_id`) is unique only within a type,
so graph node names are the ids, made unique per type where PrimeKG repeats one.

The loader is vectorised end to end (pyarrow CSV reader, dictionary-encoded string columns, int32
indices, numpy scatter/gather), because the full file has 8.1 million rows: it reads the 11 columns
it needs once and never builds a Python object per row. `perturbjax.data.primekg_synthetic` writes
files of the same format and scale, to test and benchmark the loader without the 1 GB download.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import re
import time
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from perturbjax.data.load_report import LoadReport
from perturbjax.graph.hetero import EdgeSet, EdgeType, HeteroGraph, NodeSet

log = logging.getLogger(__name__)

COLUMNS = ("relation", "display_relation", "x_index", "x_id", "x_type", "x_name", "x_source",
           "y_index", "y_id", "y_type", "y_name", "y_source")
"""The header of `kg.csv`, in order."""

NODE_TYPES: dict[str, tuple[int, str]] = {
    "biological_process": (28_642, "GO"),
    "gene/protein": (27_671, "NCBI"),
    "disease": (17_080, "MONDO"),
    "effect/phenotype": (15_311, "HPO"),
    "anatomy": (14_035, "UBERON"),
    "molecular_function": (11_169, "GO"),
    "drug": (7_957, "DrugBank"),
    "cellular_component": (4_176, "GO"),
    "pathway": (2_516, "REACTOME"),
    "exposure": (818, "CTD"),
}
"""PrimeKG's node types -> (node count in kg.csv, source database); 129,375 nodes in all."""

RELATIONS: dict[str, tuple[str, str, tuple[str, ...], int]] = {
    "anatomy_protein_present": ("anatomy", "gene/protein", ("expression present",), 3_036_406),
    "drug_drug": ("drug", "drug", ("synergistic interaction",), 2_672_628),
    "protein_protein": ("gene/protein", "gene/protein", ("ppi",), 642_150),
    "disease_phenotype_positive": ("disease", "effect/phenotype", ("phenotype present",), 300_634),
    "bioprocess_protein": ("biological_process", "gene/protein", ("interacts with",), 289_610),
    "cellcomp_protein": ("cellular_component", "gene/protein", ("interacts with",), 166_804),
    "disease_protein": ("disease", "gene/protein", ("associated with",), 160_822),
    "molfunc_protein": ("molecular_function", "gene/protein", ("interacts with",), 139_060),
    "drug_effect": ("drug", "effect/phenotype", ("side effect",), 129_568),
    "bioprocess_bioprocess": ("biological_process", "biological_process", ("parent-child",),
                              105_772),
    "pathway_protein": ("pathway", "gene/protein", ("interacts with",), 85_292),
    "disease_disease": ("disease", "disease", ("parent-child",), 64_388),
    "contraindication": ("drug", "disease", ("contraindication",), 61_350),
    "drug_protein": ("drug", "gene/protein", ("target", "enzyme", "transporter", "carrier"),
                     51_306),
    "anatomy_protein_absent": ("anatomy", "gene/protein", ("expression absent",), 39_774),
    "phenotype_phenotype": ("effect/phenotype", "effect/phenotype", ("parent-child",), 37_472),
    "anatomy_anatomy": ("anatomy", "anatomy", ("parent-child",), 28_064),
    "molfunc_molfunc": ("molecular_function", "molecular_function", ("parent-child",), 27_148),
    "indication": ("drug", "disease", ("indication",), 18_776),
    "cellcomp_cellcomp": ("cellular_component", "cellular_component", ("parent-child",), 9_690),
    "phenotype_protein": ("effect/phenotype", "gene/protein", ("associated with",), 6_660),
    "off-label use": ("drug", "disease", ("off-label use",), 5_136),
    "pathway_pathway": ("pathway", "pathway", ("parent-child",), 5_070),
    "exposure_disease": ("exposure", "disease", ("linked to",), 4_608),
    "exposure_exposure": ("exposure", "exposure", ("parent-child",), 4_140),
    "exposure_bioprocess": ("exposure", "biological_process", ("interacts with",), 3_250),
    "exposure_protein": ("exposure", "gene/protein", ("interacts with",), 2_424),
    "disease_phenotype_negative": ("disease", "effect/phenotype", ("phenotype absent",), 2_386),
    "exposure_molfunc": ("exposure", "molecular_function", ("interacts with",), 90),
    "exposure_cellcomp": ("exposure", "cellular_component", ("interacts with",), 20),
}
"""PrimeKG's relations -> (one end's type, other end's type, display relations, rows in kg.csv).

Row counts are directed rows (each undirected edge twice); they sum to 8,100,498.
"""

# The columns the loader reads; display_relation is not needed for the graph.
_READ = ("relation", "x_index", "x_id", "x_type", "x_name", "x_source",
         "y_index", "y_id", "y_type", "y_name", "y_source")
_DICT = pa.dictionary(pa.int32(), pa.string())
_BLOCK_SIZE = 16 << 20  # bigger blocks -> fewer per-block dictionaries to unify


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PrimeKGNodes:
    """Every node of a loaded PrimeKG graph, aligned with the graph's node sets.

    Attributes:
      frame: one row per node, sorted by `node_type` then `position`, with columns
        `node_index` (PrimeKG's global index), `node_type`, `node_id` (source database id),
        `node_name` (display name), `node_source`, `name` (the node's name in the graph:
        `node_id`, or `node_id#node_index` where several indices share a (type, id)), and
        `position` (row of the node within `graph.nodes[node_type]`).
    """

    frame: pd.DataFrame

    def of_type(self, node_type: str) -> pd.DataFrame:
        """Rows of one type in graph order: row i describes `graph.nodes[node_type].names[i]`."""
        rows = self.frame[self.frame["node_type"] == node_type]
        if rows.empty and node_type not in set(self.frame["node_type"]):
            raise KeyError(f"unknown node type {node_type!r}; known types are "
                           f"{sorted(set(self.frame['node_type']))}")
        return rows.reset_index(drop=True)

    def locate(self, node_index: Iterable[int]) -> pd.DataFrame:
        """Type and graph position of PrimeKG global indices; raises KeyError for unknown ones."""
        wanted = pd.Index(np.asarray(list(node_index), np.int64))
        at = pd.Index(self.frame["node_index"].to_numpy(np.int64)).get_indexer(wanted)
        if (at < 0).any():
            raise KeyError(f"{int((at < 0).sum())} node indices are not in the graph, "
                           f"e.g. {wanted[at < 0][:5].tolist()}")
        return self.frame.iloc[at][["node_index", "node_type", "position", "name"]].reset_index(
            drop=True)


def load_primekg(path: str | os.PathLike, *, relations: Iterable[str] | None = None,
                 node_types: Iterable[str] | None = None, report_every: int | None = None,
                 ) -> tuple[HeteroGraph, PrimeKGNodes, LoadReport]:
    """Reads PrimeKG's `kg.csv` into a HeteroGraph, one edge type per (x_type, relation, y_type).

    Both directions of each undirected edge are kept, as separate rows of the same edge type for
    same-type relations (`protein_protein`) and as two edge types otherwise
    (`anatomy--anatomy_protein_present-->gene/protein` and its mirror).

    Args:
      path: the CSV file.
      relations: relations to keep (default all); the rest are dropped and counted in the report.
      node_types: node types to keep (default all); rows touching any other type are dropped and
        counted, and nodes of other types are left out.
      report_every: log progress (logger `perturbjax.data.primekg`, level INFO) about every this
        many rows; None reads silently and fastest.

    Returns:
      (graph, nodes, report): `nodes` maps each graph node to its PrimeKG index, id and display
      name; `report` counts kept rows, nodes and edge types and what was dropped and why (rows
      with an empty id, duplicate directed edges, filters) and notes ids shared by indices.

    Raises:
      ValueError: naming the file, for a header that is not PrimeKG's, and naming the file and
        1-based line (header = line 1) for a malformed row: a wrong number of fields, a node
        index that is not a non-negative integer, an empty relation or type, or a node index
        whose type, id or name differs from another row's.
    """
    path = os.fspath(path)
    _check_header(path)
    started = time.perf_counter()
    table = _read_table(path, report_every)
    n_rows = table.num_rows
    report = LoadReport(path)
    report.notes["rows in file"] = n_rows

    rows = _Rows(path, table)
    del table
    rows.check_format()
    log.info("%s: read %d rows in %.1f s", path, n_rows, time.perf_counter() - started)

    keep = rows.non_empty_ids(report)
    nodes = rows.nodes(keep)  # validates that each index has one type, id and name
    # Kept, but said: a relation or node type PrimeKG does not have (another version, an edit).
    for what, vocab, known in (("relations", rows.relation_names, RELATIONS),
                               ("node types", rows.type_names, NODE_TYPES)):
        unknown = sorted(set(vocab.to_pylist()) - set(known))
        if unknown:
            report.notes[f"{what} not in PrimeKG"] = unknown
            log.warning("%s: %s not in PrimeKG's %d, kept: %s", path, what, len(known), unknown)

    keep &= _filter(rows.relation, rows.relation_names, relations, "relation", RELATIONS, report,
                    "relation not selected", keep)
    if node_types is not None:
        type_ok = _selected(rows.type_names, node_types, "node type", NODE_TYPES)
        row_ok = type_ok[rows.x_type] & type_ok[rows.y_type]
        report.drop("node type not selected", int((keep & ~row_ok).sum()))
        keep &= row_ok
        nodes = nodes[type_ok[nodes["type_code"].to_numpy()]]

    node_of_row_x = nodes.index.get_indexer(rows.x_index)  # not used for unselected rows
    node_of_row_y = nodes.index.get_indexer(rows.y_index)
    keep &= _drop_duplicate_edges(rows, keep, report)

    graph, frame = _build_graph(rows, nodes, keep, node_of_row_x, node_of_row_y, report)
    report.kept.update({"rows": graph.num_edges, "nodes": graph.num_nodes,
                        "edge types": len(graph.edges)})
    report.kept.update({f"nodes:{t}": graph.nodes[t].count for t in graph.node_types})
    report.notes["seconds"] = round(time.perf_counter() - started, 2)
    log.info("%s: %d nodes, %d edges of %d types in %.1f s", path, graph.num_nodes,
             graph.num_edges, len(graph.edges), time.perf_counter() - started)
    return graph, PrimeKGNodes(frame), report


def _check_header(path: str) -> None:
    """Raises unless the first line is exactly PrimeKG's header (the columns are read by name)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            first = f.readline()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: line 1 is not UTF-8 text ({e.reason} at byte {e.start}); "
                         f"expected PrimeKG's CSV header") from e
    header = next(csv.reader([first]), [])
    if tuple(header) == COLUMNS:
        return
    missing = [c for c in COLUMNS if c not in header]
    unexpected = [c for c in header if c not in COLUMNS]
    problem = []
    if missing:
        problem.append(f"missing columns {missing}")
    if unexpected:
        problem.append(f"unexpected columns {unexpected}")
    if not problem:
        problem.append(f"columns in the wrong order {header}")
    raise ValueError(f"{path}: not a PrimeKG kg.csv header: {'; '.join(problem)}; expected "
                     f"exactly {','.join(COLUMNS)}")


def _read_options(use_threads: bool) -> tuple:
    read = pacsv.ReadOptions(use_threads=use_threads, block_size=_BLOCK_SIZE)
    # Empty lines stay rows (then fail as malformed), so row r of the table is line r + 2.
    parse = pacsv.ParseOptions(ignore_empty_lines=False, newlines_in_values=False)
    types = {c: (pa.int32() if c.endswith("_index") else _DICT) for c in _READ}
    # only an empty index field is null ("NA" is a conversion error); strings are never null
    convert = pacsv.ConvertOptions(include_columns=list(_READ), column_types=types,
                                   null_values=[""], strings_can_be_null=False,
                                   quoted_strings_can_be_null=False)
    return read, parse, convert


def _read_table(path: str, report_every: int | None) -> pa.Table:
    """The 11 needed columns; int32 indices and dictionary-encoded strings."""
    read, parse, convert = _read_options(use_threads=True)
    try:
        if report_every is None:
            return pacsv.read_csv(path, read_options=read, parse_options=parse,
                                  convert_options=convert)
        batches, done, next_report = [], 0, report_every
        with pacsv.open_csv(path, read_options=read, parse_options=parse,
                            convert_options=convert) as reader:
            for batch in reader:
                batches.append(batch)
                done += batch.num_rows
                if done >= next_report:
                    log.info("%s: %d rows read", path, done)
                    next_report = (done // report_every + 1) * report_every
            return pa.Table.from_batches(batches, schema=reader.schema)
    except pa.ArrowInvalid as error:
        raise _located_parse_error(path, error) from None


def _located_parse_error(path: str, error: Exception) -> ValueError:
    """ValueError with the file and line of a CSV parse/convert error.

    The threaded reader does not know row numbers, so the file is read again serially (only on
    this error path), which makes pyarrow name the row; rows are lines, as empty lines are kept.
    """
    read, parse, convert = _read_options(use_threads=False)
    message = str(error)
    try:
        pacsv.read_csv(path, read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as serial_error:
        message = str(serial_error)
    line = re.search(r"Row #(\d+)", message)
    where = f"line {line.group(1)}" if line else "a row"
    detail = re.sub(r"^(CSV parse error: |In CSV column #\d+: )?(Row #\d+: )?", "", message)
    column = re.search(r"In CSV column #(\d+)", message)
    if column:
        name = COLUMNS[int(column.group(1))]  # pyarrow counts the file's columns
        value = re.search(r"invalid value '(.*)'$", message)
        shown = value.group(1) if value else detail
        detail = f"{name} {shown!r} is not a node index (an integer below 2**31)"
    return ValueError(f"{path}: {where}: {detail}")


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(int32 codes, dictionary) of a dictionary column whose chunks share one dictionary."""
    if column.num_chunks == 0:
        return np.zeros(0, np.int32), pa.array([], pa.string())
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in column.chunks])
    return codes.astype(np.int32, copy=False), column.chunk(0).dictionary


def _shared_codes(x: pa.ChunkedArray, y: pa.ChunkedArray
                  ) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Codes of the x and y columns into one vocabulary, so x and y values compare as integers."""
    x_codes, x_dict = _codes(x)
    y_codes, y_dict = _codes(y)
    vocab = pc.unique(pa.concat_arrays([x_dict, y_dict]))
    x_map = pc.index_in(x_dict, value_set=vocab).to_numpy(zero_copy_only=False).astype(np.int32)
    y_map = pc.index_in(y_dict, value_set=vocab).to_numpy(zero_copy_only=False).astype(np.int32)
    return x_map[x_codes], y_map[y_codes], vocab


class _Rows:
    """The file's rows as integer arrays (one entry per row) plus the string vocabularies."""

    def __init__(self, path: str, table: pa.Table):
        self.path = path
        table = table.unify_dictionaries()
        self.n = table.num_rows
        self.x_index = _index_array(table.column("x_index"))
        self.y_index = _index_array(table.column("y_index"))
        self.relation, self.relation_names = _codes(table.column("relation"))
        self.x_type, self.y_type, self.type_names = _shared_codes(table.column("x_type"),
                                                                  table.column("y_type"))
        self.x_id, self.y_id, self.id_names = _shared_codes(table.column("x_id"),
                                                            table.column("y_id"))
        self.x_name, self.y_name, self.name_names = _shared_codes(table.column("x_name"),
                                                                  table.column("y_name"))
        self.x_source, self.y_source, self.source_names = _shared_codes(table.column("x_source"),
                                                                        table.column("y_source"))

    def line(self, row: int) -> int:
        """1-based line of a row: the header is line 1 and every row is one line."""
        return int(row) + 2

    def fail(self, row: int, message: str) -> ValueError:
        return ValueError(f"{self.path}: line {self.line(row)}: {message}")

    def check_format(self) -> None:
        """Raises for the earliest row with a missing/negative index or an empty relation/type."""
        problems = []  # (row, message) of the first row failing each check
        blank = np.flatnonzero((self.x_index == _MISSING) & (self.y_index == _MISSING)
                               & (self.relation == _empty_code(self.relation_names)))
        if blank.size:  # pyarrow reads an empty line as a row of empty fields
            problems.append((blank[0], "empty line"))
        for side, index in (("x", self.x_index), ("y", self.y_index)):
            bad = np.flatnonzero(index < 0)
            if bad.size:
                r = bad[0]
                problems.append((r, f"{side}_index is empty" if index[r] == _MISSING else
                                 f"{side}_index {int(index[r])} is negative"))
        empty_rel = _empty_code(self.relation_names)
        empty_type = _empty_code(self.type_names)
        for name, codes, empty in (("relation", self.relation, empty_rel),
                                   ("x_type", self.x_type, empty_type),
                                   ("y_type", self.y_type, empty_type)):
            if empty is not None:
                bad = np.flatnonzero(codes == empty)
                if bad.size:
                    problems.append((bad[0], f"{name} is empty"))
        if problems:
            row, message = min(problems, key=lambda p: p[0])
            raise self.fail(row, message)

    def non_empty_ids(self, report: LoadReport) -> np.ndarray:
        """Mask of rows whose x_id and y_id are both non-empty; the others are reported."""
        empty = _empty_code(self.id_names)
        if empty is None:
            return np.ones(self.n, bool)
        bad = (self.x_id == empty) | (self.y_id == empty)
        rows = np.flatnonzero(bad)
        report.drop("empty x_id or y_id", rows.size,
                    [f"line {self.line(r)}: {self.relation_names[self.relation[r]]} "
                     f"{self.x_index[r]} -> {self.y_index[r]}" for r in rows[:report.max_examples]])
        return ~bad

    def nodes(self, keep: np.ndarray) -> pd.DataFrame:
        """One row per global index seen in kept rows, indexed and sorted by global index.

        Raises if an index has two types, ids or names (naming the row that disagrees first).
        """
        rows = np.flatnonzero(keep)
        index = np.concatenate([self.x_index[rows], self.y_index[rows]])
        attrs = {
            "type_code": np.concatenate([self.x_type[rows], self.y_type[rows]]),
            "id_code": np.concatenate([self.x_id[rows], self.y_id[rows]]),
            "name_code": np.concatenate([self.x_name[rows], self.y_name[rows]]),
            "source_code": np.concatenate([self.x_source[rows], self.y_source[rows]]),
        }
        dense, unique_index = _dense(index)
        any_occurrence = np.empty(len(unique_index), np.int64)
        any_occurrence[dense] = np.arange(len(dense))
        for attr, label, vocab in (("type_code", "type", self.type_names),
                                   ("id_code", "id", self.id_names),
                                   ("name_code", "name", self.name_names)):
            values = attrs[attr]
            reference = values[any_occurrence]
            conflict = values != reference[dense]
            if conflict.any():
                self._raise_conflict(rows, dense, values, conflict, label, vocab, index)
        frame = pd.DataFrame({k: v[any_occurrence] for k, v in attrs.items()},
                             index=pd.Index(unique_index, name="node_index"))
        return frame

    def _raise_conflict(self, kept_rows, dense, values, conflict, label, vocab, index) -> None:
        """Finds, among indices with conflicting values, the earliest line that disagrees."""
        bad_nodes = np.unique(dense[conflict])
        occ = np.flatnonzero(np.isin(dense, bad_nodes))
        n = len(kept_rows)
        occ_rows = kept_rows[occ % n]
        side = occ // n  # 0: x, 1: y
        order = np.lexsort((side, occ_rows))  # file order, x before y within a row
        occ, occ_rows, side = occ[order], occ_rows[order], side[order]
        frame = pd.DataFrame({"node": dense[occ], "value": values[occ], "row": occ_rows,
                              "side": side})
        first = frame.groupby("node", sort=False).head(1).set_index("node")
        ref = first.loc[frame["node"]]
        differs = frame["value"].to_numpy() != ref["value"].to_numpy()
        at = np.flatnonzero(differs)[0]
        here, there = frame.iloc[at], ref.iloc[at]
        value, other = vocab[int(here["value"])].as_py(), vocab[int(there["value"])].as_py()
        raise self.fail(here["row"], f"{'xy'[int(here['side'])]}_index {int(index[occ[at]])} has "
                                     f"{label} {value!r} but {other!r} on line "
                                     f"{self.line(there['row'])}")


_MISSING = -1  # index value standing for an empty/NA field


def _index_array(column: pa.ChunkedArray) -> np.ndarray:
    """int32 indices with empty fields (nulls) as -1, which the format check then rejects."""
    if column.null_count:
        column = pc.fill_null(column, _MISSING)
    return column.to_numpy().astype(np.int32, copy=False)


def _empty_code(vocab: pa.Array) -> int | None:
    """Code of the empty string in a vocabulary, or None if no value is empty."""
    at = pc.index(vocab, "").as_py()
    return None if at < 0 else at


def _dense(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dense ids 0..k-1 for each entry, the k sorted distinct values) of non-negative integers."""
    if index.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    top = int(index.max()) + 1
    if top <= 4 * index.size + (1 << 20):  # a bitmap over the index range is cheap
        present = np.zeros(top, bool)
        present[index] = True
        unique_index = np.flatnonzero(present)
        position = np.cumsum(present, dtype=np.int64) - 1
        return position[index], unique_index
    codes, unique_index = pd.factorize(index, sort=True)
    return codes.astype(np.int64), np.asarray(unique_index, np.int64)


def _selected(vocab: pa.Array, wanted: Iterable[str], what: str, known: dict) -> np.ndarray:
    """Boolean mask over a vocabulary; a name neither in the file nor in PrimeKG raises (typos)."""
    wanted = set(wanted)
    present = vocab.to_pylist()
    unknown = sorted(wanted - set(present) - set(known))
    if unknown:
        raise ValueError(f"unknown {what}s {unknown}; known are "
                         f"{sorted(set(present) | set(known))}")
    return np.array([v in wanted for v in present], bool)


def _filter(codes, vocab, wanted, what, known, report, reason, keep) -> np.ndarray:
    if wanted is None:
        return np.ones(len(codes), bool)
    ok = _selected(vocab, wanted, what, known)[codes]
    report.drop(reason, int((keep & ~ok).sum()))
    return ok


def _drop_duplicate_edges(rows: _Rows, keep: np.ndarray, report: LoadReport) -> np.ndarray:
    """Mask that is False on repeats of an earlier kept (x_index, relation, y_index) row."""
    at = np.flatnonzero(keep)
    frame = pd.DataFrame({"x": rows.x_index[at], "r": rows.relation[at], "y": rows.y_index[at]})
    repeated = frame.duplicated(keep="first").to_numpy()
    mask = np.ones(rows.n, bool)
    mask[at[repeated]] = False
    dup_rows = at[repeated]
    examples = []
    xs, rs, ys = (frame[c].to_numpy() for c in ("x", "r", "y"))
    for r in dup_rows[:report.max_examples]:
        first = at[(xs == rows.x_index[r]) & (rs == rows.relation[r]) & (ys == rows.y_index[r])][0]
        relation = rows.relation_names[rows.relation[r]]
        examples.append(f"line {rows.line(r)} repeats line {rows.line(first)}: "
                        f"{rows.x_index[r]} -{relation}-> {rows.y_index[r]}")
    report.drop("duplicate directed edge", dup_rows.size, examples)
    return mask


def _build_graph(rows: _Rows, nodes: pd.DataFrame, keep: np.ndarray, node_x: np.ndarray,
                 node_y: np.ndarray, report: LoadReport) -> tuple[HeteroGraph, pd.DataFrame]:
    """Node sets (ordered by global index within a type) and one edge set per type triple."""
    type_code = nodes["type_code"].to_numpy()
    id_code = nodes["id_code"].to_numpy()
    global_index = nodes.index.to_numpy()
    # position within the type: nodes are sorted by global index, so a stable sort by type keeps
    # that order inside each type
    by_type = np.argsort(type_code, kind="stable")
    counts = np.bincount(type_code, minlength=len(rows.type_names))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.empty(len(nodes), np.int32)
    position[by_type] = np.arange(len(nodes)) - starts[type_code[by_type]]

    ids = rows.id_names.take(pa.array(id_code)).to_numpy(zero_copy_only=False).astype(str)
    shared = pd.DataFrame({"t": type_code, "i": id_code}).duplicated(keep=False).to_numpy()
    names = ids.astype(object)
    if shared.any():
        names[shared] = [f"{i}#{g}" for i, g in zip(ids[shared], global_index[shared])]
        report.notes["ids shared by several indices (named id#index)"] = {
            "nodes": int(shared.sum()),
            "examples": [f"{rows.type_names[int(t)]} {n}" for t, n in
                         zip(type_code[shared][:report.max_examples], names[shared])]}
    names = names.astype(str)

    node_sets = {}
    for code in np.flatnonzero(counts):
        members = by_type[starts[code]:starts[code] + counts[code]]
        node_sets[rows.type_names[int(code)].as_py()] = NodeSet(names[members])

    at = np.flatnonzero(keep)
    n_rel, n_types = len(rows.relation_names), len(rows.type_names)
    combo = ((rows.x_type[at].astype(np.int64) * n_rel + rows.relation[at]) * n_types
             + rows.y_type[at])
    sender = position[node_x[at]]
    receiver = position[node_y[at]]
    order = np.argsort(combo, kind="stable")  # file order within each edge type
    combo_sorted = combo[order]
    keys, first = np.unique(combo_sorted, return_index=True)
    bounds = np.append(first, len(order))
    edge_sets = {}
    for k, key in enumerate(keys):
        xt, rest = divmod(int(key), n_rel * n_types)
        rel, yt = divmod(rest, n_types)
        chunk = order[bounds[k]:bounds[k + 1]]
        edge_type = EdgeType(rows.type_names[xt].as_py(), rows.relation_names[rel].as_py(),
                             rows.type_names[yt].as_py())
        edge_sets[edge_type] = EdgeSet(sender[chunk], receiver[chunk])
    isolated = np.ones(len(nodes), bool)
    isolated[node_x[at]] = False
    isolated[node_y[at]] = False
    if isolated.any():  # e.g. after a relation filter; they stay so node sets do not change
        report.notes["nodes without a kept edge"] = int(isolated.sum())

    frame = pd.DataFrame({
        "node_index": global_index.astype(np.int32),
        "node_type": pd.Categorical.from_codes(type_code, rows.type_names.to_pylist()),
        "node_id": ids,
        "node_name": rows.name_names.take(pa.array(nodes["name_code"].to_numpy()))
        .to_numpy(zero_copy_only=False),
        "node_source": pd.Categorical.from_codes(nodes["source_code"].to_numpy(),
                                                 rows.source_names.to_pylist()),
        "name": names,
        "position": position,
    })
    frame["node_type"] = frame["node_type"].cat.remove_unused_categories()
    frame = frame.iloc[by_type].reset_index(drop=True)
    return HeteroGraph(node_sets, edge_sets), frame
