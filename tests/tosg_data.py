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


# A dataset in OmniCellTOSG's published layout, from the names its own code writes and reads
# (github.com/FuhaiLiAiLab/OmniCellTOSG at 77ad47c), not from perturbjax's converter:
#   metadata columns: Process/build_dataset.py COLUMN_ORDER, then the mapped columns that
#     Process/field_mapping.ipynb adds (CMT_id, CMT_name, disease_BMG_id, disease_BMG_name,
#     development_stage_numeric_age, development_stage_category, birth_phase, sex_normalized);
#     unmapped values map to "" there;
#   shards: expression_matrix/{source}_{tissue_general}_part_{i}.npy, `matrix_file_path` the bare
#     name (Process/build_dataset.py), transcript columns only (CellTOSG_Loader/extract.py pads
#     the protein columns with zeros after them);
#   bmg_gene_index.csv: gene_name, indices (CellTOSG_Loader/data_loader.py load_bmg_gene_index);
#   s_name.csv Name, s_desc.csv Description, s_bio.csv Type + Sequence, transcripts before
#     proteins (train.py pre_embed_text); x_{name,desc,bio}_emb.npy and the three edge files
#     (CellTOSG_Loader/dataset.py). Its README lists `x_name_emb.csv`; its code loads .npy.
PUBLISHED_COLUMNS = (
    "source", "dataset_id", "suspension_type", "cell_type", "tissue_general", "tissue", "disease",
    "development_stage", "sex", "assay", "batch", "donor_id", "n_raw_cells", "raw_file",
    "raw_file_indices", "matrix_file_path", "matrix_row_idx",
    "CMT_id", "CMT_name", "disease_BMG_id", "disease_BMG_name", "development_stage_numeric_age",
    "development_stage_category", "birth_phase", "sex_normalized")
# raw cell_type -> (CMT_id, CMT_name); the class of the first three shows in the expression.
PUBLISHED_CELL_TYPES = {
    "CD4-positive, alpha-beta T cell": ("CMT:1", "T cell"),
    "B-cell": ("CMT:2", "B cell"),
    "classical monocyte": ("CMT:3", "Monocyte"),
    "CD8-positive, alpha-beta T cell": ("CMT:1", "T cell"),
    "miscellaneous": ("CMT:9", "miscellaneous"),
    "Unknown": ("CMT:0", "unknown"),
    "unclassified cell": ("CMT:8", "unclassified"),
    "native cell": ("CMT:7", "cell"),
    "doublet": ("", ""),
}
PUBLISHED_DISEASES = {"COVID-19 infection": ("BMG:1", "COVID-19"), "healthy": ("BMG:0", "normal"),
                      "unclassified disease": ("BMG:2", "unclassified"),
                      "not known": ("", "unknown")}
PUBLISHED_SEXES = {"F": "female", "M": "male", "unknown": "unknown"}


def write_published_dataset(root, *, transcripts: int = 24, proteins: int = 8, samples: int = 90,
                            seed: int = 0) -> dict:
    """A small dataset in OmniCellTOSG's published layout (above), integer counts in three
    shards of two sources. Returns what was written."""
    rng = np.random.default_rng(seed)
    n = transcripts + proteins
    os.makedirs(os.path.join(root, "expression_matrix"), exist_ok=True)
    raw_types = list(PUBLISHED_CELL_TYPES)
    cell_type = np.array(raw_types, object)[np.r_[np.arange(len(raw_types)),
                                                  rng.integers(0, 4, samples - len(raw_types))]]
    x = rng.poisson(2.0, (samples, transcripts)).astype(np.float32)
    for c, name in enumerate(raw_types[:3]):
        x[cell_type == name, 4 * c:4 * c + 4] += 20
    shard = np.where(np.arange(samples) < samples // 3, 0, np.where(np.arange(samples) % 2, 1, 2))
    names = ["cellxgene_blood_part_0.npy", "cellxgene_blood_part_1.npy",
             "braincellatlas_brain_part_0.npy"]
    rows = np.zeros(samples, np.int64)
    for s, name in enumerate(names):
        members = np.flatnonzero(shard == s)
        np.save(os.path.join(root, "expression_matrix", name), x[members])
        rows[members] = np.arange(len(members))
    disease = rng.choice(list(PUBLISHED_DISEASES), samples)
    sex = rng.choice(list(PUBLISHED_SEXES), samples, p=[0.45, 0.45, 0.1])
    stage = rng.choice(["45-year-old human stage", "newborn human stage"], samples)
    meta = pd.DataFrame({
        "source": np.where(shard == 2, "Brain Cell Atlas", "CellxGene"),
        "dataset_id": np.where(shard == 2, "bca1", np.where(np.arange(samples) % 3, "cx1", "cx2")),
        "suspension_type": "cell", "cell_type": cell_type,
        "tissue_general": np.where(shard == 2, "brain", "blood"),
        "tissue": np.where(shard == 2, "cortex", "peripheral blood"), "disease": disease,
        "development_stage": stage, "sex": sex, "assay": "10x 3' v3", "batch": "unknown",
        "donor_id": [f"donor{i % 6}" for i in range(samples)], "n_raw_cells": "unknown",
        "raw_file": "unknown", "raw_file_indices": "unknown",
        "matrix_file_path": np.array(names, object)[shard], "matrix_row_idx": rows,
        "CMT_id": [PUBLISHED_CELL_TYPES[c][0] for c in cell_type],
        "CMT_name": [PUBLISHED_CELL_TYPES[c][1] for c in cell_type],
        "disease_BMG_id": [PUBLISHED_DISEASES[d][0] for d in disease],
        "disease_BMG_name": [PUBLISHED_DISEASES[d][1] for d in disease],
        "development_stage_numeric_age": np.where(stage == "newborn human stage", 0.0, 45.0),
        "development_stage_category": np.where(stage == "newborn human stage", "newborn", "adult"),
        "birth_phase": "postnatal", "sex_normalized": [PUBLISHED_SEXES[v] for v in sex],
    })
    assert tuple(meta.columns) == PUBLISHED_COLUMNS
    meta.to_parquet(os.path.join(root, "cell_metadata_with_mappings.parquet"), index=False)
    meta.to_csv(os.path.join(root, "cell_metadata_with_mappings.csv"), index=False)
    t = np.arange(transcripts)
    internal = np.stack([t[:proteins], transcripts + np.arange(proteins)])  # transcript->protein
    ppi = transcripts + np.stack([np.arange(proteins - 1), np.arange(1, proteins)])
    regulatory = np.stack([rng.integers(0, transcripts, 40), rng.integers(0, transcripts, 40)])
    np.save(os.path.join(root, "edge_index.npy"), np.concatenate([regulatory, internal, ppi], 1))
    np.save(os.path.join(root, "internal_edge_index.npy"), internal)
    np.save(os.path.join(root, "ppi_edge_index.npy"), ppi)
    for name in ("x_name_emb", "x_desc_emb", "x_bio_emb"):
        np.save(os.path.join(root, f"{name}.npy"), rng.standard_normal((n, 4)).astype(np.float32))
    genes = [f"GENE{i}" for i in range(transcripts)]
    node_names = genes + [f"PROT{i}" for i in range(proteins)]
    pd.DataFrame({"Name": node_names}).to_csv(os.path.join(root, "s_name.csv"), index=False)
    pd.DataFrame({"Description": [f"{v} description" for v in node_names]}).to_csv(
        os.path.join(root, "s_desc.csv"), index=False)
    pd.DataFrame({"Type": ["Transcript"] * transcripts + ["Protein"] * proteins,
                  "Sequence": ["AUGC"] * transcripts + ["MKV"] * proteins}).to_csv(
        os.path.join(root, "s_bio.csv"), index=False)
    # Two transcripts of one gene, as the published index has: GENEk -> "k;k+12" for k < 4.
    index = [(g, f"{i};{i + transcripts // 2}" if i < 4 else str(i))
             for i, g in enumerate(genes[:transcripts // 2])]
    pd.DataFrame(index, columns=["gene_name", "indices"]).to_csv(
        os.path.join(root, "bmg_gene_index.csv"), index=False)
    return {"x": x, "meta": meta, "num_nodes": n, "shards": names}


def tree_digest(root) -> dict[str, str]:
    """Path -> sha256 of every file under root (to show a root was left untouched)."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out
