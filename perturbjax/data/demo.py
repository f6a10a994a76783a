"""Deterministic demo data with a planted mechanism, generated in-process (nothing downloaded).

The mechanism, which the knowledge graph encodes and the baselines cannot see in full:

* each drug inhibits or activates 1-2 target genes (edges `drug --inhibits/activates--> gene`);
* the perturbation spreads from the targets along gene-gene interactions (`interacts`, one and
  two steps) and to the other members of the targets' pathways (`participates`);
* each cell line scales the response gene by gene through its basal expression (a cell-line
  feature), dose and time scale it by a Hill curve and a time factor, and noise is added.

Drugs get SMILES composed from fragments: a drug carries its targets' "pharmacophore" fragments
only some of the time, so Morgan fingerprints hold part of the signal. Most targets are hit by
one or two drugs, so a model that learns "how a perturbation spreads through the graph" can
predict drugs whose targets it never saw in training, while a model of target indicators cannot.
Diseases and drug-treats-disease edges are distractors with no effect on the signatures.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from perturbjax.data.chem import morgan_fingerprints
from perturbjax.data.perturbation import PerturbationData
from perturbjax.graph.hetero import EdgeSet, EdgeType, HeteroGraph, NodeSet

MECHANISM_RELATIONS = ("interacts", "participates", "rev_participates")
TARGET_RELATIONS = ("inhibits", "activates")

# Chain fragments that join head-to-tail into valid SMILES (ring closures stay inside one).
_FRAGMENTS = (
    "C", "CC", "CCC", "C(C)", "C(=O)", "C(=O)N", "NC(=O)", "O", "N", "S", "C(F)(F)", "C(Cl)",
    "c1ccccc1", "c1ccncc1", "c1ccc(F)cc1", "c1ncncc1", "C1CCNCC1", "C1CCOCC1", "C1CC1",
    "c1ccc2ccccc2c1", "c1ccsc1", "C(=O)O", "S(=O)(=O)", "N(C)", "C#C", "C=C", "c1ccoc1",
    "C1CCCCC1", "C(O)", "C(N)", "OC", "c1cc(Cl)ccc1", "C(C)(C)", "N1CCCC1", "c1cnccc1",
)
_DOSES_UM = (1.0, 3.0, 10.0)
_TIMES_H = (6.0, 24.0)


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes and strengths of the demo world.

    Attributes:
      n_genes: gene nodes; the first `n_druggable` (after shuffling) can be drug targets.
      n_druggable: size of the target pool; much larger than the drug count on purpose.
      n_readout: genes whose expression is measured (the demo's "landmark" genes).
      n_pathways: pathway nodes; each gene belongs to 1-2 of them.
      n_diseases: distractor disease nodes.
      n_cells: cell-line nodes.
      n_drugs: drug nodes.
      cells_per_drug: cell lines each drug is measured in.
      pharmacophore_rate: chance a drug's SMILES carries each target's fragment.
      noise: standard deviation of the measurement noise, relative to the signal's.
      embedding_dim: width of the random "embedding" feature of genes (their identity).
      seed: everything is a deterministic function of this.
    """

    n_genes: int = 500
    n_druggable: int = 300
    n_readout: int = 120
    n_pathways: int = 30
    n_diseases: int = 20
    n_cells: int = 10
    n_drugs: int = 200
    cells_per_drug: int = 5
    pharmacophore_rate: float = 0.5
    noise: float = 0.3
    embedding_dim: int = 32
    seed: int = 0


def make_demo(config: DemoConfig = DemoConfig()) -> PerturbationData:
    """Builds the demo knowledge graph and signatures; same config, same data, every time."""
    rng = np.random.default_rng(config.seed)
    c = config
    genes = np.array([f"G{i:04d}" for i in range(c.n_genes)])

    # Pathway membership: each gene in one or two pathways.
    membership = np.zeros((c.n_genes, c.n_pathways), np.float32)
    membership[np.arange(c.n_genes), rng.integers(0, c.n_pathways, c.n_genes)] = 1
    second = rng.random(c.n_genes) < 0.3
    membership[np.flatnonzero(second), rng.integers(0, c.n_pathways, second.sum())] = 1

    # Gene-gene interactions, mostly within pathways, stored in both directions.
    pairs = set()
    members = [np.flatnonzero(membership[:, p]) for p in range(c.n_pathways)]
    for g in range(c.n_genes):
        same = members[rng.choice(np.flatnonzero(membership[g]))]
        for h in rng.choice(same, size=min(3, len(same)), replace=False):
            pairs.add((min(g, h), max(g, h)))
        h = int(rng.integers(c.n_genes))
        pairs.add((min(g, h), max(g, h)))
    pairs = np.array(sorted(p for p in pairs if p[0] != p[1]))
    adjacency = np.zeros((c.n_genes, c.n_genes), np.float32)
    adjacency[pairs[:, 0], pairs[:, 1]] = adjacency[pairs[:, 1], pairs[:, 0]] = 1

    # Propagation kernel: the planted mechanism (target itself, 1 and 2 interaction steps, pathway).
    deg = adjacency.sum(1)
    a_norm = adjacency / np.sqrt(np.outer(deg, deg)).clip(min=1)
    m_norm = membership / membership.sum(0, keepdims=True).clip(min=1)
    kernel = 0.5 * np.eye(c.n_genes) + a_norm + 0.5 * a_norm @ a_norm + 2.0 * membership @ m_norm.T

    # Drugs and their targets (sign: inhibit or activate).
    druggable = rng.permutation(c.n_genes)[: c.n_druggable]
    readout = np.sort(rng.permutation(c.n_genes)[: c.n_readout])
    effect = np.zeros((c.n_drugs, c.n_genes), np.float32)
    target_edges = {r: ([], []) for r in TARGET_RELATIONS}
    target_lists = []
    for d in range(c.n_drugs):
        targets = rng.choice(druggable, size=1 + int(rng.random() < 0.4), replace=False)
        target_lists.append(targets)
        for t in targets:
            relation = "inhibits" if rng.random() < 0.7 else "activates"
            effect[d, t] = -1.0 if relation == "inhibits" else 1.0
            target_edges[relation][0].append(d)
            target_edges[relation][1].append(t)
    response = effect @ kernel  # [drugs, genes]; kernel is symmetric

    # Cell lines: pathway activity -> basal expression (readout genes) -> per-gene gain.
    activity = rng.normal(size=(c.n_cells, c.n_pathways)).astype(np.float32)
    basal_all = activity @ membership.T + 0.3 * rng.normal(size=(c.n_cells, c.n_genes))
    gain = 1.0 + 0.6 * np.tanh(basal_all)
    basal = basal_all[:, readout].astype(np.float32)
    expressed = np.argsort(-basal_all, axis=1)[:, : c.n_genes // 20]

    # Conditions: each drug in a few cell lines at one or two (dose, time) points.
    rows = []
    for d in range(c.n_drugs):
        for cell in rng.choice(c.n_cells, size=c.cells_per_drug, replace=False):
            for _ in range(1 + int(rng.random() < 0.5)):
                rows.append((d, cell, rng.choice(_DOSES_UM), rng.choice(_TIMES_H)))
    drug_idx, cell_idx, dose, time = (np.array(x) for x in zip(*rows))
    hill = dose / (dose + 1.0)
    time_factor = np.where(time >= 24, 1.0, 0.6)
    clean = (hill * time_factor)[:, None] * response[drug_idx] * gain[cell_idx]
    clean = clean[:, readout] / clean[:, readout].std()  # z-score-like scale
    noise = c.noise * rng.normal(size=clean.shape)
    signatures = (clean + noise).astype(np.float32)

    smiles = _compose_smiles(rng, target_lists, c.n_genes, c.pharmacophore_rate)

    # Distractors: diseases associated with random genes; drugs treating random diseases.
    dis_gene = np.stack([np.repeat(np.arange(c.n_diseases), 10),
                         rng.integers(0, c.n_genes, c.n_diseases * 10)])
    dis_gene = np.unique(dis_gene, axis=1)
    treats = np.flatnonzero(rng.random(c.n_drugs) < 0.5)
    drug_dis = np.stack([treats, rng.integers(0, c.n_diseases, len(treats))])

    p_gene, p_path = np.nonzero(membership)
    nodes = {
        "gene": NodeSet(genes, {"embedding": rng.normal(size=(c.n_genes, c.embedding_dim)).astype(np.float32)}),
        "pathway": NodeSet(np.array([f"P{i:03d}" for i in range(c.n_pathways)]),
                           {"embedding": rng.normal(size=(c.n_pathways, 16)).astype(np.float32)}),
        "disease": NodeSet(np.array([f"D{i:03d}" for i in range(c.n_diseases)]),
                           {"embedding": rng.normal(size=(c.n_diseases, 16)).astype(np.float32)}),
        "cell_line": NodeSet(np.array([f"CELL{i:02d}" for i in range(c.n_cells)]),
                             {"basal_expression": basal}),
        "drug": NodeSet(np.array([f"DRUG{i:04d}" for i in range(c.n_drugs)]),
                        {"morgan": morgan_fingerprints(smiles, n_bits=512).bits.astype(np.float32)}),
    }
    edges = {
        EdgeType("gene", "interacts", "gene"): EdgeSet(np.r_[pairs[:, 0], pairs[:, 1]],
                                                       np.r_[pairs[:, 1], pairs[:, 0]]),
        EdgeType("gene", "participates", "pathway"): EdgeSet(p_gene, p_path),
        EdgeType("disease", "associates", "gene"): EdgeSet(dis_gene[0], dis_gene[1]),
        EdgeType("drug", "treats", "disease"): EdgeSet(drug_dis[0], drug_dis[1]),
        EdgeType("cell_line", "expresses", "gene"): EdgeSet(
            np.repeat(np.arange(c.n_cells), expressed.shape[1]), expressed.ravel()),
    }
    for relation, (src, dst) in target_edges.items():
        edges[EdgeType("drug", relation, "gene")] = EdgeSet(np.array(src), np.array(dst))
    graph = HeteroGraph(nodes, edges).with_reverse_edges(skip=("interacts",))
    return PerturbationData(
        graph=graph, drug=drug_idx, cell=cell_idx, dose=dose.astype(np.float32),
        time=time.astype(np.float32), signatures=signatures, readout=readout,
        drug_smiles=np.array(smiles), target_relations=TARGET_RELATIONS,
    )


def _compose_smiles(rng, target_lists, n_genes, pharmacophore_rate) -> list[str]:
    """SMILES per drug: random decorations plus, sometimes, each target's own fragment pair."""
    pharmacophore = rng.integers(0, len(_FRAGMENTS), size=(n_genes, 2))
    smiles = []
    for targets in target_lists:
        parts = [_FRAGMENTS[i] for i in rng.integers(0, len(_FRAGMENTS), 2 + rng.integers(0, 3))]
        for t in targets:
            if rng.random() < pharmacophore_rate:
                parts += [_FRAGMENTS[i] for i in pharmacophore[t]]
        rng.shuffle(parts)
        smiles.append("c1ccccc1" + "".join(parts))  # a shared aromatic anchor keeps it drug-like
    return smiles
