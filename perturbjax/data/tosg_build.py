"""Writes single-cell data and a gene network into the OmniCellTOSG layout (`perturbjax.data.tosg`).

`perturbjax tosg build --h5ad FILE --network FILE --out ROOT` turns any AnnData file plus a gene
interaction table into a dataset root the loader and the cell-graph task read unchanged. The
graph's nodes are the AnnData genes (node j is expression column j), its edges the network's
interactions between genes both found in the data (symbols matched case-insensitively); the
report says how many genes and edges matched.

Network formats (`--network-format`, detected from the header by default):
  * `ppi`: dhimmel/ppi's protein-interactions.txt(.gz) (`source_symbol`, `target_symbol`);
  * `signaling`: a `source`/`target` table of UniProt ids with a `pkn_nodes.tsv` (`code`,
    `name`) beside it (the DrugsANNSignaling network in ../shared/data/signaling/);
  * `edgelist`: the first two columns are gene symbols (tab, comma or whitespace separated,
    a header line is skipped when its names are no gene of the data).

Node text embeddings: with no embedding model to run, `x_name_emb.npy` holds a deterministic
stand-in, a unit vector drawn from a seed hashed from the gene's name (the same name always gets
the same vector; it carries identity, not meaning); nothing is downloaded.

The root is written so that OmniCellTOSG's own loader (github.com/FuhaiLiAiLab/OmniCellTOSG at
77ad47c) reads it unchanged; each name below is what its code opens or reads:

    cell_metadata_with_mappings.parquet  `matrix_file_path` a bare shard name, joined to
                                 root/expression_matrix (CellTOSG_Loader/subset_builder.py
                                 `matrix_root`, data_loader.py `load_expression_by_metadata`),
                                 `matrix_row_idx`, the label columns as named by
                                 --label-columns (e.g. `bulk_labels=CMT_name`), `dataset_id`
                                 and `donor_id` (its donor-wise splits, CellTOSG_Loader/split.py)
    expression_matrix/part-NNNNN.npy   float32 `[samples, genes]`, counts (below)
    bmg_gene_index.csv           columns `gene_name`, `indices` (`;`-separated node indices;
                                 data_loader.py `load_bmg_gene_index`)
    edge_index.npy               `[2, E]` int64, the network's interactions between the genes
    internal_edge_index.npy, ppi_edge_index.npy
                                 `[2, 0]`: the nodes are genes only, with no protein nodes for
                                 transcript-protein or protein-protein edges (dataset.py loads
                                 both; train.py turns them into tensors)
    x_name_emb.npy               the name stand-ins above, `[N, --text-dim]`
    x_desc_emb.npy, x_bio_emb.npy  `[N, --text-dim]` zeros: no description or sequence is known
                                 (dataset.py loads them; perturbjax's reader skips all-zero
                                 embeddings, so its runs see x_name_emb alone, as before)
    s_name.csv, s_desc.csv, s_bio.csv
                                 columns `Name`; `Description` (the gene name again); `Type`
                                 (`Transcript`) and `Sequence` (empty) (train.py and pretrain.py
                                 `pre_embed_text`)
    build_report.json            what was matched and written

Expression values: OmniCellTOSG's training extraction L1-normalises each sample to 1e4 and
takes log1p (CellTOSG_Loader/extract.py `norm_and_export_split`, data_loader.py
`l1_normalize_log1p`, which raises on a negative value; its ComBat-seq option raises on them too
and rounds to integer counts), so the shards must hold counts. `--layer` picks
the matrix: `X` (default), `raw` (`adata.raw.X`, with `adata.raw`'s genes) or a key of
`adata.layers`. A negative value (scaled data) stops the build with one line naming the file
and the first such value, unless `--allow-negative` (a root for perturbjax only: OmniCellTOSG's
loader refuses it); NaN or infinite values always stop it. Non-integer values (e.g. already
log-normalised data) are written with a warning, recorded in the report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import warnings

import numpy as np
import pandas as pd

from perturbjax.data.tosg import EXPRESSION_DIR, GENE_INDEX_FILE, METADATA_FILES, TOSGError

log = logging.getLogger(__name__)
NETWORK_FORMATS = ("auto", "ppi", "signaling", "edgelist")
SHARD_ROWS = 50_000  # samples per expression shard


def name_embedding(names, dim: int) -> np.ndarray:
    """`[len(names), dim]` float32 unit vectors, each seeded by a hash of its name."""
    out = np.empty((len(names), dim), np.float32)
    for i, name in enumerate(names):
        seed = int.from_bytes(hashlib.sha256(str(name).encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(dim)
        out[i] = v / np.linalg.norm(v)
    return out


def read_network(path: str, fmt: str = "auto") -> tuple[pd.DataFrame, str]:
    """The network's (source, target) gene-symbol pairs, and the format it was read as."""
    if not os.path.isfile(path):
        raise TOSGError(f"{path}: no such network file")
    if fmt not in NETWORK_FORMATS:
        raise TOSGError(f"network format {fmt!r}; expected one of {NETWORK_FORMATS}")
    try:
        head = pd.read_csv(path, sep=None, engine="python", nrows=5, dtype=str)
    except Exception as e:
        raise TOSGError(f"{path}: unreadable as a table ({type(e).__name__}: {e})") from None
    columns = [c.strip() for c in head.columns]
    if fmt == "auto":
        if {"source_symbol", "target_symbol"} <= set(columns):
            fmt = "ppi"
        elif {"source", "target"} <= set(columns) and os.path.exists(
                os.path.join(os.path.dirname(path), "pkn_nodes.tsv")):
            fmt = "signaling"
        else:
            fmt = "edgelist"
    if fmt == "ppi":
        table = pd.read_csv(path, sep="\t", dtype=str)
        missing = {"source_symbol", "target_symbol"} - set(table.columns)
        if missing:
            raise TOSGError(f"{path}: no column(s) {sorted(missing)} (ppi format)")
        return table[["source_symbol", "target_symbol"]].set_axis(["source", "target"], axis=1), fmt
    if fmt == "signaling":
        nodes_path = os.path.join(os.path.dirname(path), "pkn_nodes.tsv")
        if not os.path.exists(nodes_path):
            raise TOSGError(f"{nodes_path}: missing (the signaling format maps UniProt ids to "
                            f"gene names through it)")
        table = pd.read_csv(path, sep="\t", dtype=str)
        nodes = pd.read_csv(nodes_path, sep="\t", dtype=str)
        for file, frame, need in ((path, table, {"source", "target"}),
                                  (nodes_path, nodes, {"code", "name"})):
            if not need <= set(frame.columns):
                raise TOSGError(f"{file}: expected columns {sorted(need)}, found "
                                f"{list(frame.columns)}")
        name = dict(zip(nodes["code"], nodes["name"]))
        return pd.DataFrame({"source": table["source"].map(name),
                             "target": table["target"].map(name)}), fmt
    table = pd.read_csv(path, sep=None, engine="python", header=None, dtype=str,
                        comment="#", usecols=[0, 1])
    table.columns = ["source", "target"]
    return table, fmt


def _gene_names(var: pd.DataFrame, gene_column: str | None) -> list[str]:
    """Gene symbols of the chosen matrix's columns (`var`: adata.var or adata.raw.var)."""
    if gene_column:
        if gene_column not in var.columns:
            raise TOSGError(f"--gene-column {gene_column!r} is not a var column; there are "
                            f"{list(var.columns)}")
        return var[gene_column].astype(str).tolist()
    names = list(map(str, var.index))
    ensembl = sum(bool(re.match(r"ENS[A-Z]*G\d+", n)) for n in names)
    if ensembl > len(names) / 2 and "feature_name" in var.columns:
        log.info("var_names are Ensembl ids; using var['feature_name'] as gene symbols")
        return var["feature_name"].astype(str).tolist()
    return names


def _matrix(adata, layer: str, h5ad: str):
    """The `[cells, genes]` matrix `--layer` names (row-sliceable) and its var table."""
    if layer == "X":
        return adata.X, adata.var
    if layer == "raw":
        if adata.raw is None:
            raise TOSGError(f"{h5ad}: --layer raw, but the file has no adata.raw "
                            f"({_layers_there(adata)})")
        return adata.raw.X, adata.raw.var
    if layer not in adata.layers:
        raise TOSGError(f"{h5ad}: no layer {layer!r} ({_layers_there(adata)})")
    return adata.layers[layer], adata.var


def _layers_there(adata) -> str:
    """The --layer values this file offers, as "it has: X, raw, counts"."""
    there = ["X"] + (["raw"] if adata.raw is not None else []) + list(adata.layers.keys())
    return "it has: " + ", ".join(there)


def _columns(spec: list[str], obs: pd.DataFrame, what: str) -> dict[str, str]:
    """["bulk_labels=CMT_name", "phase"] -> {obs column: metadata column}."""
    out = {}
    for item in spec:
        source, _, dest = item.partition("=")
        if source not in obs.columns:
            raise TOSGError(f"{what} {source!r} is not an obs column; there are "
                            f"{list(obs.columns)}")
        out[source] = dest or source
    return out


def build_from_anndata(h5ad: str, network: str, out: str, *, network_format: str = "auto",
                       label_columns: list[str] = (), donor_column: str | None = None,
                       dataset_id: str | None = None, gene_column: str | None = None,
                       text_dim: int = 16, shard_rows: int = SHARD_ROWS, layer: str = "X",
                       allow_negative: bool = False) -> dict:
    """Converts `h5ad` + `network` into a dataset root `out` (which must not exist or be empty).

    Args:
      layer: the expression matrix: "X", "raw" (adata.raw.X) or a key of adata.layers.
      allow_negative: copy negative (scaled) values instead of refusing them.

    Returns:
      The build report (also written to `out/build_report.json`).

    Raises:
      TOSGError: a missing input or column, no matched interaction, or values that are not
        counts (negative unless `allow_negative`, NaN or infinite); `out` is then left as it
        was found.
    """
    if not os.path.isfile(h5ad):
        raise TOSGError(f"{h5ad}: no such file")
    if text_dim < 1 or shard_rows < 1:
        raise TOSGError(f"--text-dim {text_dim} and shard rows {shard_rows}: expected >= 1")
    existed = os.path.isdir(out)
    if existed and os.listdir(out):
        raise TOSGError(f"{out}: exists and is not empty (choose a new --out directory)")
    try:
        with warnings.catch_warnings():  # anndata's notes on older files' encodings
            warnings.simplefilter("ignore")
            return _build(h5ad, network, out, network_format, label_columns, donor_column,
                          dataset_id, gene_column, text_dim, shard_rows, layer, allow_negative)
    except BaseException:
        if os.path.isdir(out):  # leave no half-written root behind
            shutil.rmtree(out)
            if existed:
                os.makedirs(out)
        raise


def _build(h5ad, network, out, network_format, label_columns, donor_column, dataset_id,
           gene_column, text_dim, shard_rows, layer, allow_negative) -> dict:
    import anndata

    try:
        adata = anndata.read_h5ad(h5ad, backed="r")
    except Exception as e:
        raise TOSGError(f"{h5ad}: not a readable AnnData file ({type(e).__name__}: {e})") from None
    matrix, var = _matrix(adata, layer, h5ad)
    genes = _gene_names(var, gene_column)
    obs = adata.obs
    labels = _columns(list(label_columns), obs, "--label-columns")
    if donor_column and donor_column not in obs.columns:
        raise TOSGError(f"--donor-column {donor_column!r} is not an obs column; there are "
                        f"{list(obs.columns)}")
    pairs, fmt = read_network(network, network_format)

    position = {}
    for j, g in enumerate(genes):
        position.setdefault(g.upper(), j)  # a symbol listed twice maps to its first column
    src = pairs["source"].astype(str).str.upper().map(position)
    dst = pairs["target"].astype(str).str.upper().map(position)
    both = src.notna() & dst.notna()
    edges = np.stack([src[both].to_numpy(np.int64), dst[both].to_numpy(np.int64)])
    network_genes = set(pairs["source"].astype(str).str.upper()) | set(
        pairs["target"].astype(str).str.upper())
    report = {"h5ad": os.path.abspath(h5ad), "layer": layer, "network": os.path.abspath(network),
              "network_format": fmt, "samples": int(adata.n_obs), "genes": len(genes),
              "network_genes": len(network_genes),
              "genes_matched": len(network_genes & set(position)),
              "network_edges": int(len(pairs)), "edges_matched": int(edges.shape[1]),
              "label_columns": labels, "donor_column": donor_column}
    if edges.shape[1] == 0:
        raise TOSGError(f"{network}: none of its {len(pairs)} interactions joins two genes of "
                        f"{h5ad} (gene symbols of the data: {genes[:5]}...)")

    os.makedirs(os.path.join(out, EXPRESSION_DIR), exist_ok=True)
    meta = pd.DataFrame({"sample_id": obs.index.astype(str)})
    for source, dest in labels.items():
        meta[dest] = obs[source].astype(str).to_numpy()
    meta["dataset_id"] = dataset_id or os.path.splitext(os.path.basename(h5ad))[0]
    meta["donor_id"] = (obs[donor_column].astype(str).to_numpy() if donor_column
                        else "unknown")
    files, rows, integer = [], [], True
    what = "adata.X" if layer == "X" else ("adata.raw.X" if layer == "raw"
                                           else f"adata.layers[{layer!r}]")
    for shard, start in enumerate(range(0, adata.n_obs, shard_rows)):
        stop = min(start + shard_rows, adata.n_obs)
        block = matrix[start:stop]
        block = np.asarray(block.toarray() if hasattr(block, "toarray") else block, np.float32)
        _check_counts(block, start, h5ad, what, obs.index, genes, adata, allow_negative)
        integer = integer and bool(np.all(block == np.round(block)))
        name = f"part-{shard:05d}.npy"  # bare: OmniCellTOSG joins it to expression_matrix/
        np.save(os.path.join(out, EXPRESSION_DIR, name), block)
        files += [name] * (stop - start)
        rows += list(range(stop - start))
    report["integer_values"] = integer
    if not integer:
        log.warning("%s: %s holds non-integer values (not raw counts); OmniCellTOSG's loader "
                    "will L1-normalise and log1p them as if they were", h5ad, what)
    meta["matrix_file_path"] = files
    meta["matrix_row_idx"] = rows
    meta.to_parquet(os.path.join(out, METADATA_FILES[0]), index=False)
    np.save(os.path.join(out, "edge_index.npy"), edges)
    for name in ("internal_edge_index", "ppi_edge_index"):  # no protein nodes: no such edges
        np.save(os.path.join(out, f"{name}.npy"), np.zeros((2, 0), np.int64))
    np.save(os.path.join(out, "x_name_emb.npy"), name_embedding(genes, text_dim))
    for name in ("x_desc_emb", "x_bio_emb"):  # nothing known: zeros, which carry nothing
        np.save(os.path.join(out, f"{name}.npy"), np.zeros((len(genes), text_dim), np.float32))
    pd.DataFrame({"Name": genes}).to_csv(os.path.join(out, "s_name.csv"), index=False)
    pd.DataFrame({"Description": genes}).to_csv(os.path.join(out, "s_desc.csv"), index=False)
    pd.DataFrame({"Type": "Transcript", "Sequence": [""] * len(genes)}).to_csv(
        os.path.join(out, "s_bio.csv"), index=False)
    index = pd.DataFrame({"gene_name": genes, "indices": [str(j) for j in range(len(genes))]})
    index.groupby("gene_name", sort=False)["indices"].agg(";".join).reset_index().to_csv(
        os.path.join(out, GENE_INDEX_FILE), index=False)
    with open(os.path.join(out, "build_report.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report


def _check_counts(block, start, h5ad, what, cells, genes, adata, allow_negative) -> None:
    """TOSGError at the first value that cannot be a count: NaN or infinite, or negative unless
    `allow_negative` (OmniCellTOSG's l1_normalize_log1p refuses those)."""
    bad = ~np.isfinite(block) | ((block < 0) if not allow_negative else False)
    if not bad.any():
        return
    i, j = np.argwhere(bad)[0]
    value = block[i, j]
    where = (f"first {value:g} at cell {str(cells[start + i])!r} (row {start + i}), gene "
             f"{genes[j]!r} (column {j})")
    if not np.isfinite(value):
        raise TOSGError(f"{h5ad}: {what} holds NaN or infinite values, {where}; expected counts")
    raise TOSGError(
        f"{h5ad}: {what} holds negative values (scaled data, not counts), {where}; "
        f"OmniCellTOSG's loader log-normalises counts and refuses negatives "
        f"(CellTOSG_Loader/data_loader.py l1_normalize_log1p): build from counts with --layer "
        f"raw|NAME ({_layers_there(adata)}), or pass --allow-negative for a root only "
        f"perturbjax reads")
