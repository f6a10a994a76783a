"""A perturbation dataset: a knowledge graph plus measured signatures of (drug, cell, dose, time)."""

from __future__ import annotations

import dataclasses

import numpy as np

from perturbjax.graph.hetero import HeteroGraph


@dataclasses.dataclass(frozen=True)
class PerturbationData:
    """Signatures of drug perturbations, with the drugs, cell lines and genes as graph nodes.

    Attributes:
      graph: the knowledge graph holding drug, cell-line and gene nodes (and anything else).
      drug, cell: [C] indices of each condition's drug / cell line within their node types.
      dose: [C] dose in micromolar.
      time: [C] time after treatment in hours.
      signatures: [C, G] differential expression of the readout genes.
      readout: [G] indices of the readout genes within the gene node type.
      drug_smiles: SMILES of every drug node, aligned with the drug node set.
      target_relations: relations of drug -> gene edges that name a drug's targets.
      basal_feature: name of the cell-line node feature holding basal expression.
      drug_type, cell_type, gene_type: node type names of drugs, cell lines and genes.
    """

    graph: HeteroGraph
    drug: np.ndarray
    cell: np.ndarray
    dose: np.ndarray
    time: np.ndarray
    signatures: np.ndarray
    readout: np.ndarray
    drug_smiles: np.ndarray
    target_relations: tuple[str, ...]
    basal_feature: str = "basal_expression"
    drug_type: str = "drug"
    cell_type: str = "cell_line"
    gene_type: str = "gene"

    def __post_init__(self):
        c = len(self.drug)
        for name in ("cell", "dose", "time"):
            if len(getattr(self, name)) != c:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries, drug has {c}")
        if self.signatures.shape != (c, len(self.readout)):
            raise ValueError(f"signatures have shape {self.signatures.shape}, "
                             f"expected ({c}, {len(self.readout)})")
        if len(self.drug_smiles) != self.graph.nodes[self.drug_type].count:
            raise ValueError("drug_smiles must have one entry per drug node")
        if not np.isfinite(self.signatures).all():
            raise ValueError("signatures contain non-finite values")

    @property
    def num_conditions(self) -> int:
        return len(self.drug)

    def with_graph(self, graph: HeteroGraph) -> "PerturbationData":
        """Same measurements over another graph (e.g. with edge types dropped)."""
        return dataclasses.replace(self, graph=graph)

    def target_indicators(self) -> np.ndarray:
        """[n_drugs, n_relations * n_genes] 0/1: which genes each drug hits, one block per relation."""
        g = self.graph
        n_drugs, n_genes = g.nodes[self.drug_type].count, g.nodes[self.gene_type].count
        blocks = []
        for relation in self.target_relations:
            block = np.zeros((n_drugs, n_genes), np.float32)
            for key, es in g.edges.items():
                if key.relation == relation and key.source == self.drug_type:
                    block[es.senders, es.receivers] = 1.0
            blocks.append(block)
        return np.concatenate(blocks, axis=1)

    def basal_expression(self) -> np.ndarray:
        """[n_cells, width] basal expression of each cell line."""
        return self.graph.nodes[self.cell_type].features[self.basal_feature]

    def condition_covariates(self) -> np.ndarray:
        """[C, 2] log10 dose and time in days: the numeric part of a condition."""
        return np.stack([np.log10(self.dose), self.time / 24.0], axis=1).astype(np.float32)
