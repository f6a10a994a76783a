"""Small generated datasets in the OmniCellTOSG layout, written file by file as the layout says
(not through the converter), for the loader, split and cell-graph task tests."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd

CELL_TYPES = ("T cell", "B cell", "Monocyte")


def write_dataset(root, *, num_nodes: int = 40, expression_columns: int = 30,
                  samples: int = 120, donors: int = 8, metadata_format: str = "parquet",
                  seed: int = 0) -> dict:
    """A dataset whose class shows in its expression: class c raises nodes [5c, 5c + 5).

    Two shards (rows shuffled between them), `expression_columns` < `num_nodes` (the nodes
    beyond read 0, like the published protein nodes), donors across two dataset ids, a few
    samples of unknown cell type, and all optional files. Returns what was written.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "expression_matrix"), exist_ok=True)
    label = rng.integers(0, len(CELL_TYPES), samples)
    x = rng.gamma(2.0, 1.0, (samples, expression_columns)).astype(np.float32)
    for c in range(len(CELL_TYPES)):
        x[label == c, 5 * c:5 * c + 5] += 6.0
    shard_of = rng.integers(0, 2, samples)
    files = []
    for s in range(2):
        members = np.flatnonzero(shard_of == s)
        np.save(os.path.join(root, "expression_matrix", f"shard{s}.npy"), x[members])
        for r, i in enumerate(members):
            files.append((i, f"expression_matrix/shard{s}.npy", r))
    files.sort()
    cell_type = np.array(CELL_TYPES, object)[label]
    cell_type[:3] = ["unknown", "", "Unannotated"]
    meta = pd.DataFrame({
        "sample_id": [f"cell{i}" for i in range(samples)],
        "CMT_name": cell_type,
        "disease_BMG_name": rng.choice(["normal", "COVID-19"], samples),
        "sex_normalized": rng.choice(["female", "male"], samples),
        "tissue_general": rng.choice(["Blood", "lung"], samples),
        "dataset_id": np.where(np.arange(samples) % 2, "ds1", "ds2"),
        "donor_id": [f"d{i % donors}" for i in range(samples)],
        "matrix_file_path": [f for _, f, _ in files],
        "matrix_row_idx": [r for _, _, r in files],
    })
    if metadata_format == "parquet":
        meta.to_parquet(os.path.join(root, "cell_metadata_with_mappings.parquet"), index=False)
    else:
        meta.to_csv(os.path.join(root, "cell_metadata_with_mappings.csv"), index=False)
    src = rng.integers(0, num_nodes, 3 * num_nodes)
    dst = rng.integers(0, num_nodes, 3 * num_nodes)
    np.save(os.path.join(root, "edge_index.npy"), np.stack([src, dst]))
    np.save(os.path.join(root, "internal_edge_index.npy"), np.zeros((2, 0), np.int64))
    np.save(os.path.join(root, "ppi_edge_index.npy"), np.stack([dst[:20], src[:20]]))
    for name, width in (("x_name_emb", 8), ("x_desc_emb", 1)):
        np.save(os.path.join(root, f"{name}.npy"),
                rng.standard_normal((num_nodes, width)).astype(np.float32))
    names = [f"GENE{i}" for i in range(num_nodes)]
    pd.DataFrame({"name": names}).to_csv(os.path.join(root, "s_name.csv"), index=False)
    pd.DataFrame({"gene": names[:10], "columns": [f"{i};{i + 30}" for i in range(10)]}).to_csv(
        os.path.join(root, "bmg_gene_index.csv"), index=False)
    return {"x": x, "label": label, "meta": meta, "cell_type": cell_type}


def tree_digest(root) -> dict[str, str]:
    """Path -> sha256 of every file under root (to show a root was left untouched)."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out
