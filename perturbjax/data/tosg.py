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
# Short names for the dataset's label columns (a name that is itself a column means that column).
ALIASES = {"cell_type": "CMT_name", "disease": "disease_BMG_name", "sex": "sex_normalized",
           "age": "development_stage_category", "tissue": "tissue_general",
           "organ": "tissue_general"}
# Label or donor values that say "not known".
UNKNOWN = frozenset({"", "unknown", "nan", "none", "na", "n/a", "unannotated", "unannoted",
                     "not reported"})


class TOSGError(ValueError):
    """A dataset file that is missing, malformed or inconsistent (the message names it)."""


def resolve_column(columns: Sequence[str], name: str, file: str = "metadata") -> str:
    """The metadata column `name` means: itself if it is a column, else its alias's, matched
    case-insensitively; TOSGError naming the columns there are otherwise."""
    by_lower = {c.lower(): c for c in columns}
    for candidate in (name, ALIASES.get(name.lower(), "")):
        if candidate and candidate.lower() in by_lower:
            return by_lower[candidate.lower()]
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
      embeddings: embedding file name -> `[N, d]` float array (memory-mapped).
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
        """Integer class codes of a label column, its class names (sorted), and which samples
        have a known label (unknown ones get code -1)."""
        values = self.metadata[self.column(name)]
        known = ~is_unknown(values)
        text = values.astype("string").str.strip()
        classes = sorted(set(text[known].tolist()), key=str.lower)
        code = {c: i for i, c in enumerate(classes)}
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
        for name, e in edges.items():
            if e.size and (e.min() < 0 or e.max() >= num_nodes):
                bad = int(np.flatnonzero((e < 0).any(0) | (e >= num_nodes).any(0))[0])
                raise TOSGError(f"{self._path(name + '.npy')}: edge {bad} is {e[:, bad].tolist()}; "
                                f"expected node indices in [0, {num_nodes})")
        if not any(e.size for e in edges.values()):
            log.warning("%s: the graph has no edges (%s empty or absent)", self.root,
                        ", ".join(f"{n}.npy" for n in edge_files))
        names = None
        if "s_name" in texts:
            frame = texts["s_name"]
            names = frame.iloc[:, -1].astype(str).tolist()
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
        index = {}
        for line, (gene, cols) in enumerate(zip(frame.iloc[:, 0], frame.iloc[:, 1]), start=2):
            try:
                ids = np.array([int(c) for c in str(cols).split(";") if c.strip()], np.int64)
            except ValueError:
                raise TOSGError(f"{path}:{line}: indices {cols!r}; expected integers separated "
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
