"""Hetionet merged with LINCS L1000 DrugBank consensus signatures: a cold-drug benchmark.

Every condition is one drug's consensus signature (moderated z-scores over cell lines, doses and
times; dhimmel/lincs) over the 978 landmark genes. Drugs are Hetionet compounds where the
DrugBank id (or InChIKey, or name) matches and new compound nodes linked to their
`CbG-binding.tsv` targets otherwise. The signatures are collapsed over cell lines, so there is a
single pseudo cell line, `consensus`, and dose and time are constant.

All files come through `perturbjax.data.registry`, so the dataset builds offline wherever
`$PERTURBJAX_DATA_DIR` holds them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from perturbjax.data import registry
from perturbjax.data.chem import descriptors, morgan_fingerprints
from perturbjax.data.hetionet import load_hetionet, read_compound_gene_binding, read_nodes
from perturbjax.data.lincs import read_consensus
from perturbjax.data.merge import add_cell_lines, match_drugs, merge_drugs, readout_positions
from perturbjax.data.perturbation import PerturbationData
from perturbjax.data.report import LoadReport
from perturbjax.data.tables import read_table

DRUG_TYPE, GENE_TYPE, CELL_TYPE = "compound", "gene", "cell_line"
TARGET_RELATION = "binds"
DRUG_FEATURES = ("morgan", "descriptors")


@dataclasses.dataclass(frozen=True)
class ConsensusConfig:
    """What goes into the consensus dataset.

    Attributes:
      edges: the Hetionet SIF sample supplying the metaedges no full table replaces.
      full_tables: replace sampled CbG, DaG, GiG and GpPW edges by the full CbG and DaG tables,
        the PPI table and the pathway table.
      drug_features: compound node features, from SMILES: any of "morgan" (fingerprint bits)
        and "descriptors" (standardised rdkit descriptors); drugs without SMILES get zeros.
      morgan_bits: fingerprint width.
      max_drugs: keep only the first n drugs of the signature table (0 = all), for quick tests.
    """

    edges: str = "hetionet/edges-5k.sif.gz"
    full_tables: bool = True
    drug_features: tuple[str, ...] = ("morgan",)
    morgan_bits: int = 256
    max_drugs: int = 0


def read_drugbank_smiles(path) -> pd.Series:
    """`drugbank_smiles.txt` (DrugBank id <tab> SMILES, no header) -> Series id -> SMILES."""
    table = read_table(path, header=False, names=("drug_id", "smiles"))
    return table.drop_duplicates("drug_id").set_index("drug_id")["smiles"]


def drug_feature_arrays(smiles, kinds, morgan_bits: int) -> tuple[dict[str, np.ndarray], LoadReport]:
    """Node features of drugs from SMILES; invalid or missing SMILES give zero rows (reported)."""
    unknown = set(kinds) - set(DRUG_FEATURES)
    if unknown:
        raise ValueError(f"unknown drug features {sorted(unknown)}; expected any of {DRUG_FEATURES}")
    report, features = LoadReport("drug features"), {}
    smiles = list(smiles)
    if "morgan" in kinds:
        fp = morgan_fingerprints(smiles, n_bits=morgan_bits)
        features["morgan"] = fp.bits.astype(np.float32)
        report.drop("SMILES missing or not parsed by rdkit", len(fp.invalid),
                    (f"{i}: {s!r}" for i, s in fp.invalid))
    if "descriptors" in kinds:
        d = descriptors(smiles)
        v = d.values[d.valid]
        mu, sd = v.mean(0), v.std(0) + 1e-6
        features["descriptors"] = np.where(d.valid[:, None], (d.values - mu) / sd, 0.0).astype(np.float32)
    report.kept["drugs"] = len(smiles)
    return features, report


def make_consensus(config: ConsensusConfig = ConsensusConfig()) -> tuple[PerturbationData, dict]:
    """Builds the dataset; returns it and the load reports (JSON-ready) of every step."""
    path = registry.path
    tables = {}
    if config.full_tables:
        tables = dict(compound_gene_binding=path("hetionet/CbG-binding.tsv"),
                      disease_gene_association=path("hetionet/DaG-association.tsv"),
                      ppi=path("ppi/protein-interactions.txt.gz"),
                      pathways=path("pathways/pathways.tsv"))
    graph, graph_report = load_hetionet(path("hetionet/nodes.tsv"), path(config.edges),
                                        path("hetionet/metaedges.tsv"), **tables)

    consensus, consensus_report = read_consensus(path("lincs/consensi-drugbank.tsv.gz"))
    keep = slice(None) if not config.max_drugs else slice(config.max_drugs)
    drug_ids = pd.Series(consensus.perturbagens[keep], dtype=str)
    signatures = consensus.values[keep]

    # Match by DrugBank id, then InChIKey and name (from drugbank-slim) where a table has them.
    slim = read_table(path("drugbank/drugbank-slim.tsv"), ("drugbank_id", "name", "inchikey"))
    slim = slim.set_index("drugbank_id")
    nodes = read_nodes(path("hetionet/nodes.tsv"))
    kg = nodes[nodes["node_type"] == DRUG_TYPE][["node_id", "name"]].reset_index(drop=True)
    kg["inchikey"] = kg["node_id"].map(slim["inchikey"]).fillna("")
    query = pd.DataFrame({"drug_id": drug_ids,
                          "inchikey": drug_ids.map(slim["inchikey"]).fillna(""),
                          "name": drug_ids.map(slim["name"]).fillna("")})
    matched, match_report = match_drugs(query, kg)
    cbg = read_compound_gene_binding(path("hetionet/CbG-binding.tsv"))
    targets = pd.DataFrame({"drug_id": cbg["source_id"], "gene_id": cbg["target_id"]})
    graph, drug_pos, merge_report = merge_drugs(graph, drug_ids, matched, targets,
                                                drug_type=DRUG_TYPE, gene_type=GENE_TYPE,
                                                relation=TARGET_RELATION)

    smiles = read_drugbank_smiles(path("drugbank/drugbank_smiles.txt"))
    drug_smiles = pd.Series(graph.nodes[DRUG_TYPE].names).map(smiles).fillna("").to_numpy(dtype=object)
    feature_report = LoadReport("drug features")
    if config.drug_features:
        features, feature_report = drug_feature_arrays(drug_smiles, config.drug_features,
                                                       config.morgan_bits)
        graph = graph.with_features(DRUG_TYPE, features)

    graph, cell = add_cell_lines(graph, ["consensus"], cell_type=CELL_TYPE)
    readout = readout_positions(graph, GENE_TYPE, consensus.genes)
    n = len(drug_ids)
    data = PerturbationData(
        graph=graph, drug=drug_pos, cell=np.repeat(cell, n), dose=np.ones(n, np.float32),
        time=np.full(n, 24.0, np.float32), signatures=signatures.astype(np.float32),
        readout=readout, drug_smiles=drug_smiles, target_relations=(TARGET_RELATION,),
        drug_type=DRUG_TYPE, cell_type=CELL_TYPE, gene_type=GENE_TYPE)
    reports = {r.source: r.to_json() for r in (graph_report, consensus_report, match_report,
                                               merge_report, feature_report)}
    return data, reports
