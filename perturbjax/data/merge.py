"""Merging LINCS L1000 drugs, cell lines and readout genes into a knowledge graph.

Drugs are matched to the KG's drug nodes by identifier (DrugBank id), then InChIKey, then
normalised name, and every step's counts go in the report. A drug the KG lacks becomes a new
drug node linked to its known targets, so it still has a way into the graph. Cell lines become
nodes carrying basal expression; readout genes are joined by Entrez id.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from perturbjax.data.load_report import LoadReport
from perturbjax.graph.hetero import EdgeType, HeteroGraph

MATCH_KEYS = ("drug_id", "inchikey", "name")


def normalise_name(names: pd.Series) -> pd.Series:
    """Lower case, letters and digits only: 'Acetylsalicylic Acid' -> 'acetylsalicylicacid'."""
    return names.fillna("").astype(str).str.lower().str.replace(r"[^0-9a-z]", "", regex=True)


def match_drugs(query: pd.DataFrame, kg: pd.DataFrame) -> tuple[pd.Series, LoadReport]:
    """Matches each query drug to a KG drug node.

    Args:
      query: one row per drug to place; column `drug_id`, optional `inchikey` and `name`.
      kg: one row per KG drug node; column `node_id`, optional `inchikey` and `name`.

    Returns:
      The matched `node_id` per query row (NaN where none matched), indexed like `query`, and a
      report of how many matched by each key. Keys that name two KG nodes are not used.
    """
    report = LoadReport("drug matching")
    matched = pd.Series(np.nan, index=query.index, dtype=object)
    kg_key_columns = {"drug_id": "node_id", "inchikey": "inchikey", "name": "name"}
    for key in MATCH_KEYS:
        kg_column = kg_key_columns[key]
        if key not in query or kg_column not in kg:
            continue
        left, right = query[key], kg[kg_column]
        if key == "name":
            left, right = normalise_name(left), normalise_name(right)
        elif key == "inchikey":
            left = left.fillna("").str.replace("InChIKey=", "", regex=False)
            right = right.fillna("").str.replace("InChIKey=", "", regex=False)
        lookup = pd.Series(kg["node_id"].to_numpy(), index=right.to_numpy())
        lookup = lookup[(lookup.index != "") & ~lookup.index.duplicated(keep=False)]
        todo = matched.isna() & (left.fillna("") != "")
        hits = left[todo].map(lookup)
        matched.loc[hits.dropna().index] = hits.dropna()
        report.kept[f"matched by {key}"] = int(hits.notna().sum())
    unmatched = matched.isna()
    report.kept["unmatched"] = int(unmatched.sum())
    report.notes["unmatched examples"] = query.loc[unmatched, "drug_id"].head(5).tolist()
    return matched, report


def merge_drugs(graph: HeteroGraph, drug_ids: pd.Series, matched: pd.Series,
                targets: pd.DataFrame, *, drug_type: str, gene_type: str,
                relation: str = "binds", reverse_prefix: str = "rev_"
                ) -> tuple[HeteroGraph, np.ndarray, LoadReport]:
    """Places every drug in the graph, adding the unmatched ones as new nodes.

    Args:
      graph: the KG.
      drug_ids: the drugs to place (e.g. DrugBank ids of the signatures).
      matched: KG node name of each drug, NaN where unmatched (from `match_drugs`).
      targets: columns drug_id, gene_id: known targets; edges are added for new drugs only
        (matched drugs keep the KG's own edges).
      drug_type, gene_type: node types of drugs and genes.
      relation: relation of the drug -> gene target edges (and `reverse_prefix + relation`
        back), normally the KG's own target relation so that new and old drugs look alike.

    Returns:
      The graph, each drug's index within `drug_type`, and a report.
    """
    report = LoadReport("drug merge")
    new = drug_ids[matched.isna().to_numpy()].to_numpy(dtype=str)
    features = {k: np.zeros((len(new), v.shape[1]), np.float32)
                for k, v in graph.nodes[drug_type].features.items()}
    if features and len(new):
        report.notes["new drug nodes have zero features"] = sorted(features)
    graph = graph.with_nodes(drug_type, new, features)
    report.kept["new drug nodes"] = len(new)

    new_targets = targets[targets["drug_id"].isin(new)]
    gene_lookup = pd.Index(graph.nodes[gene_type].names)
    genes = gene_lookup.get_indexer(new_targets["gene_id"])
    report.drop("target gene not in the graph", int((genes < 0).sum()),
                new_targets["gene_id"][genes < 0])
    drug_lookup = pd.Index(graph.nodes[drug_type].names)
    drugs = drug_lookup.get_indexer(new_targets["drug_id"])[genes >= 0]
    genes = genes[genes >= 0]
    graph = graph.with_edges(EdgeType(drug_type, relation, gene_type), drugs, genes)
    if reverse_prefix is not None:
        graph = graph.with_edges(EdgeType(gene_type, reverse_prefix + relation, drug_type), genes, drugs)
    report.kept["target edges of new drugs"] = int(np.unique(np.stack([drugs, genes], 1), axis=0).shape[0])
    report.kept["new drugs without a target in the graph"] = int(len(np.setdiff1d(
        np.arange(len(drug_lookup) - len(new), len(drug_lookup)), drugs)))

    names = np.where(matched.isna(), drug_ids, matched).astype(str)
    return graph, drug_lookup.get_indexer(names), report


def add_cell_lines(graph: HeteroGraph, cell_ids, basal: np.ndarray | None = None, *,
                   cell_type: str = "cell_line", feature: str = "basal_expression"
                   ) -> tuple[HeteroGraph, np.ndarray]:
    """Adds cell-line nodes carrying basal expression [n, d] (or a constant 1 where None)."""
    cell_ids = np.asarray(list(cell_ids), dtype=str)
    values = np.ones((len(cell_ids), 1), np.float32) if basal is None else np.asarray(basal, np.float32)
    graph = graph.with_nodes(cell_type, cell_ids, {feature: values})
    return graph, graph.index(cell_type, cell_ids)


def readout_positions(graph: HeteroGraph, gene_type: str, entrez_ids) -> np.ndarray:
    """Indices of the readout genes within `gene_type`; every readout gene must be a node."""
    return graph.index(gene_type, [str(g) for g in entrez_ids])
