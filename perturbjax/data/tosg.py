"""Reader for datasets in the OmniCellTOSG on-disk layout (Zhang et al. 2025, arXiv 2504.02148).

Every sample (a cell or meta-cell) is the same gene/protein graph carrying its own expression
values. A dataset root holds:

    cell_metadata_with_mappings.parquet (or .csv)  one row per sample: `matrix_file_path` and
                                 `matrix_row_idx` locate its expression row; label columns
                                 (`CMT_name`, `disease_BMG_name`, `sex_normalized`,
                                 `development_stage_category`, `tissue_general`, `tissue`, ...),
                                 `dataset_id` and `donor_id`
    expression_matrix/*.npy      shards `[samples, C]`; column j is node j's value, C <= N (the
                                 published graph has expression for its 412,039 transcript nodes
                                 and none for its protein nodes, which read as 0)
    edge_index.npy, internal_edge_index.npy, ppi_edge_index.npy
                                 `[2, E]` node index pairs (any may be empty or absent)
    x_name_emb.npy, x_desc_emb.npy, x_bio_emb.npy
                                 per-node text embeddings `[N, d]` (d may be 1)
    s_name.csv, s_desc.csv, s_bio.csv
                                 the texts themselves, one row per node, when present
    bmg_gene_index.csv           gene name -> `;`-separated node (column) indices

The reader never writes into the root and reads only what a run selects: shards are
memory-mapped, and `expression(rows)` reads just those rows (a 16 GB shard is never loaded
whole). Files that are missing or disagree with each other raise `TOSGError`, one line naming
the file and what was expected.

What OmniCellTOSG's own loader reads (github.com/FuhaiLiAiLab/OmniCellTOSG at commit 77ad47c,
`CellTOSG_Loader/`), and how this reader matches it:

  * Files. `subset_builder.py` (`CellTOSGSubsetBuilder.__init__`) reads
    `cell_metadata_with_mappings.parquet` (never the .csv), `bmg_gene_index.csv` and the
    folder `expression_matrix/`; `data_loader.py` `load_expression_by_metadata` opens
    `os.path.join(root/expression_matrix, matrix_file_path)`, so `matrix_file_path` is a bare
    shard name (`Process/build_dataset.py` writes `{source}_{tissue_general}_part_{i}.npy`);
    `data_loader.py` `load_bmg_gene_index` needs the columns `gene_name` and `indices`
    (`;`-separated). `dataset.py` (`CellTOSGDataLoader`) opens `edge_index.npy`,
    `internal_edge_index.npy`, `ppi_edge_index.npy`, and either `x_name_emb.npy`,
    `x_desc_emb.npy`, `x_bio_emb.npy` or `s_name.csv`, `s_desc.csv`, `s_bio.csv`, whose columns
    `train.py` and `pretrain.py` (`pre_embed_text`) read: `Name`, `Description`, and `Type`
    (`Transcript` / `Protein`) with `Sequence`. Its training extraction L1-normalises each
    sample to 1e4 and takes log1p (`extract.py` `norm_and_export_split`, `data_loader.py`
    `l1_normalize_log1p`, which refuses negative values; its ComBat-seq option refuses them
    too and rounds to integers), so shards hold counts. This reader also accepts the layout `perturbjax tosg build` wrote
    before (shard paths under `expression_matrix/`, a gene index `gene,columns`, node names in
    the last column of s_name.csv).
  * Label columns. Its `FIELD_ALIAS` (`subset_builder.py`) maps `cell_type -> CMT_name`,
    `disease -> disease_BMG_name`, `development_stage -> development_stage_category` and
    `sex -> sex_normalized` always; the published metadata keeps the raw `cell_type`,
    `disease`, `development_stage` and `sex` columns beside the mapped ones
    (`Process/field_mapping.ipynb` adds the mapped columns to `Process/build_dataset.py`'s).
    Here too those four names mean the mapped column whenever the metadata has it (else the
    same-named column); `raw:NAME` means the column NAME itself, no alias and no class rules
    below (e.g. `raw:cell_type`). Other names: the column itself, else `ALIASES`.
  * Uninformative classes, on the mapped columns (`OMNICELL_CLASSES`). Cell type
    (`extract.py`, `extract_for_training` / `extract_for_inference`): samples whose `CMT_name`
    is missing, blank or one of unannoted, unannotated, unknown, miscellaneous, splatter, cell
    are dropped; then (`dataset.py` `build_split_labels`, `LABEL_ZERO_LABELS_BY_LABEL_COLUMN`)
    `unclassified` is a class of its own, code 0. Disease and sex: samples whose value is
    missing, blank, unknown, unannotated, unannoted or none are dropped (`extract.py`, the
    balanced training path its disease and sex tasks require); then `normal` and `unclassified`
    diseases are one class, code 0 (named "normal / unclassified" here when both occur), and
    `female` is code 0. The remaining classes follow in case-insensitive order, from 1 when a
    code-0 class exists. Here the rules follow the resolved column (OmniCellTOSG keys them by
    its task and label-column names, so asking it for `CMT_name` directly skips the code-0
    merge); values are compared stripped and case-insensitively, and the generic `UNKNOWN`
    values (`nan`, `n/a`, `not reported`, ...) are left out in every column.
  * Not matched: its extract pads 121,419 protein columns after the normalised expression
    (`extract.py` `N_PROTEIN`) and its inference path requires 412,039 expression columns
    (`extract.py`, `build_gene_df(n_col_expected=412039)`): constants of the published graph,
    which a root with another gene set does not meet.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

METADATA_FILES = ("cell_metadata_with_mappings.parquet", "cell_metadata_with_mappings.csv")
EXPRESSION_DIR = "expression_matrix"
EDGE_FILES = ("edge_index", "internal_edge_index", "ppi_edge_index")
EMBEDDING_FILES = ("x_name_emb", "x_desc_emb", "x_bio_emb")
TEXT_FILES = ("s_name", "s_desc", "s_bio")
GENE_INDEX_FILE = "bmg_gene_index.csv"
# OmniCellTOSG's FIELD_ALIAS (CellTOSG_Loader/subset_builder.py): these names mean the mapped
# column whenever the metadata has one, even beside a raw column of the same name.
MAPPED = {"cell_type": "CMT_name", "disease": "disease_BMG_name",
          "development_stage": "development_stage_category", "sex": "sex_normalized"}
# Short names for the dataset's label columns (other than MAPPED, a name that is itself a column
# means that column).
ALIASES = {**MAPPED, "age": "development_stage_category", "tissue": "tissue_general",
           "organ": "tissue_general"}
RAW_PREFIX = "raw:"  # "raw:cell_type": that column itself, no alias, no OMNICELL_CLASSES
# Label or donor values that say "not known".
UNKNOWN = frozenset({"", "unknown", "nan", "none", "na", "n/a", "unannotated", "unannoted",
                     "not reported"})
# Mapped column -> (values OmniCellTOSG's loader drops, values it merges into class 0): see the
# module docstring (CellTOSG_Loader/extract.py and dataset.py).
_DROPPED_STATUS = frozenset({"unknown", "unannotated", "unannoted", "none"})
OMNICELL_CLASSES = {
    "cmt_name": (frozenset({"unannoted", "unannotated", "unknown", "miscellaneous", "splatter",
                            "cell"}), ("unclassified",)),
    "disease_bmg_name": (_DROPPED_STATUS, ("normal", "unclassified")),
    "sex_normalized": (_DROPPED_STATUS, ("female",)),
}


class TOSGError(ValueError):
    """A dataset file that is missing, malformed or inconsistent (the message names it)."""


def resolve_column(columns: Sequence[str], name: str, file: str = "metadata") -> str:
    """The metadata column `name` means, matched case-insensitively: for `cell_type`,
    `disease`, `development_stage` and `sex` OmniCellTOSG's mapped column when there is one
    (`MAPPED`); else `name` itself; else its alias's (`ALIASES`). `raw:NAME` is the column NAME
    and nothing else. TOSGError naming the columns there are otherwise."""
    by_lower = {c.lower(): c for c in columns}
    if name.lower().startswith(RAW_PREFIX):
        raw = name[len(RAW_PREFIX):]
        if raw.lower() in by_lower:
            return by_lower[raw.lower()]
        raise TOSGError(f"{file}: no column {raw!r} ({name!r} asks for that column itself); it "
                        f"has {list(columns)}")
    key = name.lower()
    for candidate in (MAPPED.get(key, ""), name, ALIASES.get(key, "")):
        if candidate and candidate.lower() in by_lower:
            column = by_lower[candidate.lower()]
            if column.lower() != key and key in by_lower:
                log.info("%s: %r read as OmniCellTOSG's mapped column %r (the raw column is "
                         "%r)", file, name, column, f"{RAW_PREFIX}{by_lower[key]}")
            return column
    raise TOSGError(f"{file}: no column {name!r} (aliases: {ALIASES}); it has {list(columns)}")


def is_unknown(values: pd.Series) -> np.ndarray:
    """Per value: missing or one of `UNKNOWN` (case-insensitive)."""
    text = values.astype("string").str.strip().str.lower()
    return (values.isna() | text.isin(UNKNOWN)).to_numpy(bool)


@dataclasses.dataclass(frozen=True)
class TOSGGraph:
    """The graph every sample shares.

    Attributes:
      num_nodes: N.
      edges: edge file name -> `[2, E]` int64 (source row, target row); empty files kept as
        `[2, 0]`.
      embeddings: embedding file name -> `[N, d]` float array (memory-mapped); a file of
        zeros only is left out (it carries nothing).
      node_names: N names (from s_name.csv), or None.
      gene_index: gene name -> node indices (from bmg_gene_index.csv), or {}.
    """

    num_nodes: int
    edges: dict[str, np.ndarray]
    embeddings: dict[str, np.ndarray]
    node_names: list[str] | None
    gene_index: dict[str, np.ndarray]


class TOSGDataset:
    """A dataset root, its samples after condition filters, and its shared graph.

    Args:
      root: the dataset directory (read only).
      conditions: metadata column (or alias) -> value or list of values; a sample is kept when
        every condition matches, case-insensitively.
      edge_files: which edge files form the graph (each that exists and is non-empty).
      embedding_files: which node embedding files to load (each that exists).

    Raises:
      TOSGError: a missing or inconsistent file, an unknown column, or no sample left.
    """

    def __init__(self, root: str, conditions: Mapping[str, object] | None = None,
                 edge_files: Sequence[str] = EDGE_FILES,
                 embedding_files: Sequence[str] = EMBEDDING_FILES):
        self.root = os.path.abspath(root)
        if not os.path.isdir(self.root):
            raise TOSGError(f"{self.root}: not a directory (expected an OmniCellTOSG dataset root)")
        self.metadata_file, metadata = self._read_metadata()
        self.num_samples_total = len(metadata)
        keep = np.ones(len(metadata), bool)
        self.conditions = {}
        for name, wanted in (conditions or {}).items():
            column = resolve_column(metadata.columns, name, self.metadata_file)
            values = [wanted] if isinstance(wanted, (str, int, float)) else list(wanted)
            wanted_lower = {str(v).strip().lower() for v in values}
            keep &= metadata[column].astype("string").str.strip().str.lower() \
                .isin(wanted_lower).fillna(False).to_numpy(bool)
            self.conditions[column] = values
        if not keep.any():
            raise TOSGError(f"{self.metadata_file}: no sample matches the conditions "
                            f"{self.conditions}")
        self.metadata = metadata[keep].reset_index(drop=True)
        self.metadata_rows = np.flatnonzero(keep)  # positions in the metadata file
        self._shards = self._open_shards()
        self.graph = self._read_graph(edge_files, embedding_files,
                                      max(s.shape[1] for s in self._shards.values()))
        self._check_shards()

    # ---- metadata ----------------------------------------------------------------------
    def _path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def _read_metadata(self) -> tuple[str, pd.DataFrame]:
        for name in METADATA_FILES:
            path = self._path(name)
            if os.path.exists(path):
                try:
                    frame = (pd.read_parquet(path) if name.endswith(".parquet")
                             else pd.read_csv(path, low_memory=False))
                except Exception as e:  # pyarrow and pandas raise many kinds
                    raise TOSGError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
                break
        else:
            raise TOSGError(f"{self.root}: no {' or '.join(METADATA_FILES)}")
        for column in ("matrix_file_path", "matrix_row_idx"):
            if column not in frame.columns:
                raise TOSGError(f"{path}: no column {column!r} (each sample's shard and row)")
        if len(frame) == 0:
            raise TOSGError(f"{path}: no samples")
        rows = pd.to_numeric(frame["matrix_row_idx"], errors="coerce")
        bad = np.flatnonzero(rows.isna().to_numpy() | (rows < 0).to_numpy()
                             | (rows % 1 != 0).fillna(True).to_numpy())
        if len(bad):
            raise TOSGError(f"{path}: record {bad[0]} has matrix_row_idx "
                            f"{frame['matrix_row_idx'].iloc[bad[0]]!r}; expected an integer >= 0")
        frame = frame.assign(matrix_row_idx=rows.astype(np.int64))
        return path, frame

    def column(self, name: str) -> str:
        return resolve_column(self.metadata.columns, name, self.metadata_file)

    def labels(self, name: str) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Integer class codes of a label column, its class names, and which samples have a
        known label (the others get code -1).

        Classes are in case-insensitive order. On OmniCellTOSG's mapped columns (`CMT_name`,
        `disease_BMG_name`, `sex_normalized`, unless asked for as `raw:NAME`) its loader's
        rules apply (`OMNICELL_CLASSES`, module docstring): its uninformative classes are left
        out, and its class-0 values form class 0, before the others.
        """
        column = self.column(name)
        values = self.metadata[column]
        text = values.astype("string").str.strip()
        lower = text.str.lower()
        known = ~is_unknown(values)
        zero = np.zeros(len(values), bool)
        rules = (None if name.lower().startswith(RAW_PREFIX)
                 else OMNICELL_CLASSES.get(column.lower()))
        if rules:
            dropped, class_zero = rules
            known &= ~lower.isin(dropped).fillna(False).to_numpy(bool)
            zero = lower.isin(class_zero).fillna(False).to_numpy(bool) & known
        def order(c):  # deterministic also where two names differ only in case
            return c.lower(), c

        zero_values = sorted(set(text[zero].tolist()), key=order)
        others = sorted(set(text[known & ~zero].tolist()), key=order)
        classes = ([" / ".join(zero_values)] if zero_values else []) + others
        code = {c: i for i, c in enumerate(others, start=1 if zero_values else 0)}
        code.update(dict.fromkeys(zero_values, 0))
        codes = np.array([code[t] if k else -1 for t, k in zip(text.tolist(), known)], np.int64)
        return codes, classes, known

    def donors(self) -> np.ndarray | None:
        """Per sample its donor, `dataset_id|donor_id`, or None when the metadata cannot say
        (no donor column, or fewer than two known donors); samples of an unknown donor get ''."""
        if "donor_id" not in self.metadata.columns:
            return None
        donor = self.metadata["donor_id"]
        known = ~is_unknown(donor)
        dataset = (self.metadata["dataset_id"].astype("string").fillna("")
                   if "dataset_id" in self.metadata.columns
                   else pd.Series([""] * len(donor), dtype="string"))
        keys = (dataset.str.strip() + "|" + donor.astype("string").str.strip()).to_numpy(object)
        keys[~known] = ""
        if len(set(keys[known])) < 2:
            return None
        return keys

    # ---- graph -------------------------------------------------------------------------
    def _read_graph(self, edge_files, embedding_files, shard_columns: int) -> TOSGGraph:
        """The graph; N is the length of the node embeddings and texts (which must agree), or
        without any, the most that the edges and the shards' columns need."""
        embeddings = {}
        for name in embedding_files:
            path = self._path(f"{name}.npy")
            if os.path.exists(path):
                array = _load_npy(path, mmap=True)
                if array.ndim == 1:
                    array = array[:, None]
                if array.ndim != 2:
                    raise TOSGError(f"{path}: shape {array.shape}; expected [N, d]")
                embeddings[name] = array
        texts = {}
        for name in TEXT_FILES:
            path = self._path(f"{name}.csv")
            if os.path.exists(path):
                try:
                    texts[name] = pd.read_csv(path, low_memory=False)
                except Exception as e:
                    raise TOSGError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
        edges = {}
        for name in edge_files:
            path = self._path(f"{name}.npy")
            if os.path.exists(path):
                edges[name] = _edge_array(path)
        sizes = {f"{k}.npy": len(v) for k, v in embeddings.items()}
        sizes.update({f"{k}.csv": len(v) for k, v in texts.items()})
        if sizes:
            num_nodes = next(iter(sizes.values()))
            for file, n in sizes.items():
                if n != num_nodes:
                    raise TOSGError(f"{self._path(file)}: {n} rows; expected one per node, "
                                    f"{num_nodes} (as {next(iter(sizes))})")
        else:
            num_nodes = max([int(e.max()) + 1 for e in edges.values() if e.size]
                            + [shard_columns])
        for name in [n for n, a in embeddings.items() if _all_zero(a)]:
            # e.g. tosg build's stand-ins where no description or sequence is known
            log.info("%s.npy: all zero (carries nothing); not used", self._path(name))
            del embeddings[name]
        for name, e in edges.items():
            if e.size and (e.min() < 0 or e.max() >= num_nodes):
                bad = int(np.flatnonzero((e < 0).any(0) | (e >= num_nodes).any(0))[0])
                raise TOSGError(f"{self._path(name + '.npy')}: edge {bad} is {e[:, bad].tolist()}; "
                                f"expected node indices in [0, {num_nodes})")
        if not any(e.size for e in edges.values()):
            log.warning("%s: the graph has no edges (%s empty or absent)", self.root,
                        ", ".join(f"{n}.npy" for n in edge_files))
        names = None
        if "s_name" in texts:  # OmniCellTOSG's column `Name` (train.py), else the last one
            frame = texts["s_name"]
            names = frame[_named(frame.columns, "Name", -1)].astype(str).tolist()
        return TOSGGraph(num_nodes, edges, embeddings, names, self._read_gene_index(num_nodes))

    def _read_gene_index(self, num_nodes: int) -> dict[str, np.ndarray]:
        path = self._path(GENE_INDEX_FILE)
        if not os.path.exists(path):
            return {}
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except Exception as e:
            raise TOSGError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
        if frame.shape[1] < 2:
            raise TOSGError(f"{path}: {frame.shape[1]} column; expected a gene name and its "
                            f"';'-separated node indices")
        # OmniCellTOSG's columns are gene_name, indices (data_loader.py load_bmg_gene_index);
        # roots written by tosg build before had gene, columns: read by position.
        genes = frame[_named(frame.columns, "gene_name", 0)]
        cols = frame[_named(frame.columns, "indices", 1)]
        index = {}
        for line, (gene, text) in enumerate(zip(genes, cols), start=2):
            try:
                ids = np.array([int(c) for c in str(text).split(";") if c.strip()], np.int64)
            except ValueError:
                raise TOSGError(f"{path}:{line}: indices {text!r}; expected integers separated "
                                f"by ';'") from None
            if ids.size and (ids.min() < 0 or ids.max() >= num_nodes):
                raise TOSGError(f"{path}:{line}: gene {gene!r} points at node {int(ids.max())}; "
                                f"expected indices in [0, {num_nodes})")
            index[gene] = ids
        return index

    # ---- expression --------------------------------------------------------------------
    def _shard_path(self, name: str) -> str:
        """Where a metadata `matrix_file_path` lies: relative to the root, to
        expression_matrix/, or (paths written on another machine) its file name there."""
        candidates = [self._path(name), self._path(os.path.join(EXPRESSION_DIR, name)),
                      self._path(os.path.join(EXPRESSION_DIR, os.path.basename(name)))]
        for path in candidates:
            if os.path.isfile(path):
                return path
        raise TOSGError(f"{self.metadata_file}: matrix_file_path {name!r} is not a file (looked "
                        f"for {', '.join(candidates)})")

    def _open_shards(self) -> dict[str, np.ndarray]:
        """The selected samples' shards, memory-mapped, with their row indices checked."""
        shards = {}
        paths = self.metadata["matrix_file_path"].astype(str)
        for name in paths.unique():
            path = self._shard_path(name)
            shard = _load_npy(path, mmap=True)
            if shard.ndim != 2:
                raise TOSGError(f"{path}: shape {shard.shape}; expected [samples, columns]")
            rows = self.metadata["matrix_row_idx"].to_numpy()[(paths == name).to_numpy()]
            if rows.max() >= shard.shape[0]:
                bad = int(np.flatnonzero((paths == name).to_numpy()
                                         & (self.metadata["matrix_row_idx"] >= shard.shape[0])
                                         .to_numpy())[0])
                raise TOSGError(f"{self.metadata_file}: record {self.metadata_rows[bad]} has "
                                f"matrix_row_idx {rows.max()} in {name}, which has "
                                f"{shard.shape[0]} rows")
            shards[name] = shard
        return shards

    def _check_shards(self) -> None:
        for name, shard in self._shards.items():
            if shard.shape[1] > self.graph.num_nodes:
                raise TOSGError(f"{self._shard_path(name)}: {shard.shape[1]} columns; expected "
                                f"at most one per node ({self.graph.num_nodes})")

    @property
    def num_samples(self) -> int:
        return len(self.metadata)

    def expression(self, samples: np.ndarray) -> np.ndarray:
        """float32 `[len(samples), N]` expression of the (filtered) samples `samples`; nodes
        beyond a shard's columns read 0. Only those rows are read from the shards."""
        samples = np.asarray(samples, np.int64)
        out = np.zeros((len(samples), self.graph.num_nodes), np.float32)
        names = self.metadata["matrix_file_path"].astype(str).to_numpy()[samples]
        rows = self.metadata["matrix_row_idx"].to_numpy()[samples]
        for name in np.unique(names):
            at = np.flatnonzero(names == name)
            shard = self._shards[name]
            order = np.argsort(rows[at], kind="stable")  # sequential reads of the memory map
            out[at[order], :shard.shape[1]] = shard[rows[at][order]]
        if not np.isfinite(out).all():
            bad = samples[np.flatnonzero(~np.isfinite(out).all(1))[0]]
            raise TOSGError(f"{self.metadata['matrix_file_path'].iloc[bad]}: row "
                            f"{self.metadata['matrix_row_idx'].iloc[bad]} (record "
                            f"{self.metadata_rows[bad]}) holds NaN or infinite values")
        return out

    def summary(self) -> dict:
        """What a run records about the dataset it read."""
        g = self.graph
        return {"root": self.root, "metadata_file": os.path.basename(self.metadata_file),
                "samples_total": int(self.num_samples_total),
                "samples_selected": int(self.num_samples),
                "conditions": {k: [str(x) for x in v] for k, v in self.conditions.items()},
                "nodes": int(g.num_nodes),
                "edges": {k: int(v.shape[1]) for k, v in g.edges.items()},
                "embeddings": {k: int(v.shape[1]) for k, v in g.embeddings.items()},
                "shards": len(self._shards), "genes_indexed": len(g.gene_index)}


def _named(columns, name: str, position: int) -> str:
    """The column called `name`, else the one at `position`."""
    return name if name in columns else columns[position]


def _all_zero(array: np.ndarray, rows: int = 4096) -> bool:
    """Whether every value is 0, read in blocks of rows (stops at the first block that is not)."""
    return all(not np.any(array[i:i + rows]) for i in range(0, len(array), rows))


def _load_npy(path: str, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as e:  # a truncated header raises ValueError, others OSError
        raise TOSGError(f"{path}: not a readable .npy array ({type(e).__name__}: {e})") from None


def _edge_array(path: str) -> np.ndarray:
    """A `[2, E]` edge file as int64; `[E, 2]` is accepted too (and said), empty as `[2, 0]`."""
    e = _load_npy(path, mmap=False)
    if e.size == 0:
        return np.zeros((2, 0), np.int64)
    if e.ndim == 2 and e.shape[0] != 2 and e.shape[1] == 2:
        log.info("%s: shape %s read as [E, 2] node pairs", path, e.shape)
        e = e.T
    if e.ndim != 2 or e.shape[0] != 2:
        raise TOSGError(f"{path}: shape {e.shape}; expected [2, E] node index pairs")
    if not np.issubdtype(e.dtype, np.integer):
        if not np.all(np.mod(e, 1) == 0):
            raise TOSGError(f"{path}: non-integer node indices ({e.dtype})")
    return e.astype(np.int64)
