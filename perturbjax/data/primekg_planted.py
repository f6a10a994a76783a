"""Perturbation signatures planted on a PrimeKG graph: the workload of PrimeKG-size training.

LINCS L1000 measures drugs, not PrimeKG, so a PrimeKG-scale run needs signatures over PrimeKG's
own drug and gene nodes. Here they are planted, as in the demo: a drug perturbs its
`drug_protein` targets, the perturbation spreads one and two `protein_protein` steps, and each
cell line scales it gene by gene. The graph is a real `kg.csv` or, for the scale benchmarks,
PrimeKG-size synthetic data written by `primekg_synthetic.synthetic_primekg` (129,375 nodes,
8.1M rows). What a model reaches here measures the code's speed and memory at PrimeKG scale
and whether it can learn through the graph; it is not a biological result.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from perturbjax.data import registry
from perturbjax.data.perturbation import PerturbationData
from perturbjax.data.primekg import load_primekg
from perturbjax.data.primekg_synthetic import synthetic_primekg
from perturbjax.graph.hetero import EdgeType

log = logging.getLogger(__name__)

DRUG, GENE, CELL = "drug", "gene/protein", "cell_line"
TARGETS = EdgeType(DRUG, "drug_protein", GENE)
PPI = EdgeType(GENE, "protein_protein", GENE)


@dataclasses.dataclass(frozen=True)
class PlantedConfig:
    """Where the graph comes from and how the signatures are planted.

    Attributes:
      path: PrimeKG's kg.csv (or a file in its format).
      synthesize: when `path` does not exist, write PrimeKG-size synthetic data there first
        (`synthetic_nodes` nodes, `synthetic_rows` rows, seed `synthetic_seed`).
      n_readout: measured genes (L1000 has 978 landmarks).
      n_cells: cell-line nodes added to the graph, each with a `basal_width` basal programme
        and `expresses` edges to its `expressed_genes` most expressed genes.
      max_drugs: drugs with at least one target that get signatures (0 = all of them).
      cells_per_drug: cell lines each drug is measured in.
      noise: measurement noise, relative to the signal's standard deviation.
      seed: the planted world (readout, cells, conditions, noise).
    """

    path: str = ""
    synthesize: bool = False
    synthetic_nodes: int = 129_375
    synthetic_rows: int = 8_100_498
    synthetic_seed: int = 0
    n_readout: int = 978
    n_cells: int = 20
    basal_width: int = 32
    expressed_genes: int = 200
    max_drugs: int = 2000
    cells_per_drug: int = 3
    noise: float = 0.3
    seed: int = 0


def make_planted(config: PlantedConfig) -> tuple[PerturbationData, dict]:
    """Loads (or first writes) the graph and plants signatures on it; returns the dataset and
    the load report of the graph.

    Raises:
      FileNotFoundError: `path` does not exist and `synthesize` is off.
      ValueError: the graph has no drug targets or too few genes for the readout.
    """
    c = config
    if not c.path:
        raise ValueError("data.planted.path is empty: give PrimeKG's kg.csv, or a path for "
                         "synthetic data with data.planted.synthesize=True")
    marker = c.path + ".synthetic.json"  # beside every file this module wrote
    if not os.path.exists(c.path):
        if not c.synthesize:
            raise FileNotFoundError(f"{c.path} does not exist (set data.planted.synthesize=True "
                                    f"to write PrimeKG-size synthetic data there)")
        data_dir = registry.data_dir().resolve()
        target = Path(c.path).resolve()
        if target == data_dir or data_dir in target.parents:
            raise ValueError(f"data.planted.path {c.path} does not exist and lies in the data "
                             f"directory {data_dir}, which holds real data only: point it at a "
                             f"real kg.csv, or at a path outside it (e.g. runs/data/...) for "
                             f"synthetic data")
        os.makedirs(os.path.dirname(os.path.abspath(c.path)), exist_ok=True)
        partial = c.path + ".partial"  # renamed when complete: an interrupted write is not reused
        log.info("writing synthetic PrimeKG-size data (%d nodes, %d rows) to %s", c.synthetic_nodes,
                 c.synthetic_rows, c.path)
        synthetic_primekg(partial, n_nodes=c.synthetic_nodes, n_edges=c.synthetic_rows,
                          seed=c.synthetic_seed)
        with open(marker, "w") as f:
            json.dump({"synthetic": True, "nodes": c.synthetic_nodes, "rows": c.synthetic_rows,
                       "seed": c.synthetic_seed}, f)
        os.replace(partial, c.path)
    log.info("loading %s", c.path)
    graph, _, report = load_primekg(c.path)
    # The run's summary (its load reports) says whether the graph was synthetic.
    report.notes["synthetic"] = os.path.exists(marker)
    rng = np.random.default_rng(c.seed)
    n_genes = graph.nodes[GENE].count
    if n_genes < c.n_readout:
        raise ValueError(f"{c.path}: {n_genes} {GENE!r} nodes, fewer than n_readout={c.n_readout}")
    if TARGETS not in graph.edges:
        raise ValueError(f"{c.path}: no {TARGETS} edges to plant drug effects on")
    readout = np.sort(rng.choice(n_genes, c.n_readout, replace=False))

    # Drug effects: +-1 on each target, spread 1 and 2 PPI steps (symmetric normalisation).
    targets = graph.edges[TARGETS]
    n_drugs = graph.nodes[DRUG].count
    sign = np.where(rng.random(targets.count) < 0.7, -1.0, 1.0)
    effect = sp.csr_matrix((sign, (targets.senders, targets.receivers)), shape=(n_drugs, n_genes))
    ppi = graph.edges.get(PPI)
    spread = np.zeros((n_genes, c.n_readout), np.float32)
    spread[readout, np.arange(c.n_readout)] = 0.5
    if ppi is not None and ppi.count:
        a = sp.csr_matrix((np.ones(ppi.count, np.float32), (ppi.senders, ppi.receivers)),
                          shape=(n_genes, n_genes))
        a.data[:] = 1.0  # repeated pairs count once
        deg = np.asarray(a.sum(1)).ravel()
        inv = sp.diags(1.0 / np.sqrt(np.maximum(deg, 1.0)))
        a = (inv @ a @ inv).tocsr()
        one_step = a[:, readout].toarray()
        spread += one_step + 0.5 * (a @ one_step)
    drugs = np.flatnonzero(np.diff(effect.indptr) > 0)
    if c.max_drugs:
        drugs = np.sort(rng.permutation(drugs)[:c.max_drugs])
    response = effect[drugs] @ spread  # [drugs, readout]

    # Cell lines: a basal programme -> per-gene gain; `expresses` edges to top genes.
    activity = rng.normal(size=(c.n_cells, c.basal_width)).astype(np.float32)
    loadings = rng.normal(size=(c.basal_width, n_genes)).astype(np.float32) / np.sqrt(c.basal_width)
    program = activity @ loadings
    gain = 1.0 + 0.5 * np.tanh(program[:, readout])
    expressed = np.argsort(-program, axis=1)[:, :c.expressed_genes]
    graph = graph.with_nodes(CELL, [f"CELL{i:03d}" for i in range(c.n_cells)],
                             {"basal_expression": activity})
    cells = np.repeat(np.arange(c.n_cells), expressed.shape[1])
    graph = graph.with_edges(EdgeType(CELL, "expresses", GENE), cells, expressed.ravel())
    graph = graph.with_edges(EdgeType(GENE, "rev_expresses", CELL), expressed.ravel(), cells)

    drug_of = np.repeat(np.arange(len(drugs)), c.cells_per_drug)
    cell_of = np.concatenate([rng.choice(c.n_cells, c.cells_per_drug, replace=False)
                              for _ in drugs]).astype(np.int64)
    clean = response[drug_of] * gain[cell_of]
    clean /= max(float(clean.std()), 1e-12)
    signatures = (clean + c.noise * rng.normal(size=clean.shape)).astype(np.float32)
    n_cond = len(drug_of)
    data = PerturbationData(
        graph=graph, drug=drugs[drug_of], cell=cell_of, dose=np.full(n_cond, 10.0, np.float32),
        time=np.full(n_cond, 24.0, np.float32), signatures=signatures, readout=readout,
        drug_smiles=np.full(n_drugs, "", dtype=object), target_relations=(TARGETS.relation,),
        drug_type=DRUG, cell_type=CELL, gene_type=GENE)
    return data, {report.source: report.to_json()}
