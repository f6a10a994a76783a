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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
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


def _gene_names(adata, gene_column: str | None) -> list[str]:
    if gene_column:
        if gene_column not in adata.var.columns:
            raise TOSGError(f"--gene-column {gene_column!r} is not a var column; there are "
                            f"{list(adata.var.columns)}")
        return adata.var[gene_column].astype(str).tolist()
    names = list(map(str, adata.var_names))
    ensembl = sum(bool(re.match(r"ENS[A-Z]*G\d+", n)) for n in names)
    if ensembl > len(names) / 2 and "feature_name" in adata.var.columns:
        log.info("var_names are Ensembl ids; using var['feature_name'] as gene symbols")
        return adata.var["feature_name"].astype(str).tolist()
    return names


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
                       text_dim: int = 16, shard_rows: int = SHARD_ROWS) -> dict:
    """Converts `h5ad` + `network` into a dataset root `out` (which must not exist or be empty).

    Returns the build report (also written to `out/build_report.json`).
    """
    if not os.path.isfile(h5ad):
        raise TOSGError(f"{h5ad}: no such file")
    if text_dim < 1 or shard_rows < 1:
        raise TOSGError(f"--text-dim {text_dim} and shard rows {shard_rows}: expected >= 1")
    if os.path.isdir(out) and os.listdir(out):
        raise TOSGError(f"{out}: exists and is not empty (choose a new --out directory)")
    with warnings.catch_warnings():  # anndata's notes on older files' encodings
        warnings.simplefilter("ignore")
        return _build(h5ad, network, out, network_format, label_columns, donor_column,
                      dataset_id, gene_column, text_dim, shard_rows)


def _build(h5ad, network, out, network_format, label_columns, donor_column, dataset_id,
           gene_column, text_dim, shard_rows) -> dict:
    import anndata

    try:
        adata = anndata.read_h5ad(h5ad, backed="r")
    except Exception as e:
        raise TOSGError(f"{h5ad}: not a readable AnnData file ({type(e).__name__}: {e})") from None
    genes = _gene_names(adata, gene_column)
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
    report = {"h5ad": os.path.abspath(h5ad), "network": os.path.abspath(network),
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
    files, rows = [], []
    for shard, start in enumerate(range(0, adata.n_obs, shard_rows)):
        stop = min(start + shard_rows, adata.n_obs)
        block = adata.X[start:stop]
        block = np.asarray(block.toarray() if hasattr(block, "toarray") else block, np.float32)
        name = os.path.join(EXPRESSION_DIR, f"part-{shard:05d}.npy")
        np.save(os.path.join(out, name), block)
        files += [name] * (stop - start)
        rows += list(range(stop - start))
    meta["matrix_file_path"] = files
    meta["matrix_row_idx"] = rows
    meta.to_parquet(os.path.join(out, METADATA_FILES[0]), index=False)
    np.save(os.path.join(out, "edge_index.npy"), edges)
    np.save(os.path.join(out, "x_name_emb.npy"), name_embedding(genes, text_dim))
    pd.DataFrame({"node": np.arange(len(genes)), "name": genes}).to_csv(
        os.path.join(out, "s_name.csv"), index=False)
    index = pd.DataFrame({"gene": genes, "columns": [str(j) for j in range(len(genes))]})
    index.groupby("gene", sort=False)["columns"].agg(";".join).reset_index().to_csv(
        os.path.join(out, GENE_INDEX_FILE), index=False)
    with open(os.path.join(out, "build_report.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report
