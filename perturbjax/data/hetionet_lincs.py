"""Hetionet merged with LINCS L1000 signatures: drug-level consensus and per-cell-line data.

`make_consensus`: a cold-drug benchmark (described here). `make_cell_lines`: (drug, cell
line, dose, time) signatures of a level-5 GCT, for a conditional model.

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
import logging

import numpy as np
import pandas as pd

from perturbjax.data import registry
from perturbjax.data.chem import descriptors, morgan_fingerprints
from perturbjax.data.embeddings import attach_embeddings
from perturbjax.data.hetionet import load_hetionet, read_compound_gene_binding
from perturbjax.data.lincs import read_basal_expression, read_consensus, read_matrix, read_pertinfo
from perturbjax.data.merge import add_cell_lines, match_drugs, merge_drugs, readout_positions
from perturbjax.data.perturbation import PerturbationData
from perturbjax.data.load_report import LoadReport
from perturbjax.data.tables import drop_bad_ids, read_table
from perturbjax.graph.hetero import HeteroGraph

log = logging.getLogger(__name__)

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
      node_embeddings: "NODE_TYPE=FILE" items: precomputed vectors keyed by node id (e.g.
        "compound=molformer.npz" for MolFormer-XL drug embeddings, "gene=biobert.parquet" for
        text embeddings), in a format `perturbjax.data.embeddings.read_embedding_table` reads;
        attached as feature "embedding" with a presence flag, coverage reported.
    """

    edges: str = "hetionet/edges-5k.sif.gz"
    full_tables: bool = True
    drug_features: tuple[str, ...] = ("morgan",)
    morgan_bits: int = 256
    max_drugs: int = 0
    node_embeddings: tuple[str, ...] = ()


def read_drugbank_smiles(path, report: LoadReport | None = None) -> pd.Series:
    """`drugbank_smiles.txt` (DrugBank id <tab> SMILES, no header) -> Series id -> SMILES.

    A blank id, or a repeated one (the first is kept), is dropped and counted in `report`.
    """
    report = LoadReport(str(path)) if report is None else report
    table = read_table(path, header=False, names=("drug_id", "smiles"), strip=True, report=report)
    if not len(table):
        raise ValueError(f"{path}: no records; expected lines of a drug id, a tab and a SMILES")
    table = drop_bad_ids(table, "drug_id", report)
    report.kept["drugs"] = len(table)
    return table.frame.set_index("drug_id")["smiles"]


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


def hetionet_graph(edges: str, full_tables: bool) -> tuple[HeteroGraph, LoadReport]:
    """Hetionet from the registry's files: a SIF sample, optionally with the full tables."""
    path = registry.path
    log.info("loading Hetionet: nodes.tsv, %s%s", edges,
             ", the full compound-gene, disease-gene, PPI and pathway tables" if full_tables else "")
    tables = {}
    if full_tables:
        tables = dict(compound_gene_binding=path("hetionet/CbG-binding.tsv"),
                      disease_gene_association=path("hetionet/DaG-association.tsv"),
                      ppi=path("ppi/protein-interactions.txt.gz"),
                      pathways=path("pathways/pathways.tsv"))
    return load_hetionet(path("hetionet/nodes.tsv"), path(edges), path("hetionet/metaedges.tsv"),
                         **tables)


def place_drugs(graph: HeteroGraph, query: pd.DataFrame) -> tuple[HeteroGraph, np.ndarray, list]:
    """Matches query drugs (drug_id, inchikey, name) to Hetionet compounds; adds the rest.

    KG compounds are matched by DrugBank id, then by the InChIKey and name that
    `drugbank-slim.tsv` gives them; unmatched drugs become compound nodes linked to their
    `CbG-binding.tsv` targets. Returns the graph, each drug's compound index, and the reports.
    """
    path = registry.path
    slim = read_table(path("drugbank/drugbank-slim.tsv"), ("drugbank_id", "name", "inchikey")).frame
    slim = slim.set_index("drugbank_id")
    compounds = pd.Series(graph.nodes[DRUG_TYPE].names, dtype=str)
    kg = pd.DataFrame({"node_id": compounds, "inchikey": compounds.map(slim["inchikey"]).fillna(""),
                       "name": compounds.map(slim["name"]).fillna("")})
    log.info("placing %d drugs in the graph (by DrugBank id, InChIKey and name; the rest join "
             "through their CbG targets)", len(query))
    matched, match_report = match_drugs(query, kg)
    cbg = read_compound_gene_binding(path("hetionet/CbG-binding.tsv"))
    targets = pd.DataFrame({"drug_id": cbg["source_id"], "gene_id": cbg["target_id"]})
    graph, drug_pos, merge_report = merge_drugs(graph, query["drug_id"], matched, targets,
                                                drug_type=DRUG_TYPE, gene_type=GENE_TYPE,
                                                relation=TARGET_RELATION)
    return graph, drug_pos, [match_report, merge_report]


def with_node_embeddings(graph: HeteroGraph, items) -> tuple[HeteroGraph, list]:
    """Attaches "NODE_TYPE=FILE" embedding tables; returns their coverage reports."""
    reports = []
    for item in items:
        node_type, sep, file = item.partition("=")
        if not sep or not node_type or not file:
            raise ValueError(f"node_embeddings item {item!r} is not NODE_TYPE=FILE")
        graph, report = attach_embeddings(graph, node_type, file)
        reports.append(report)
    return graph, reports


def with_drug_features(graph: HeteroGraph, smiles: np.ndarray, kinds, morgan_bits: int
                       ) -> tuple[HeteroGraph, LoadReport]:
    """Compound node features from SMILES (aligned with the compound nodes)."""
    if not kinds:
        return graph, LoadReport("drug features")
    log.info("drug features from SMILES (RDKit: %s) for %d compounds", ", ".join(kinds), len(smiles))
    features, report = drug_feature_arrays(smiles, kinds, morgan_bits)
    return graph.with_features(DRUG_TYPE, features), report


def make_consensus(config: ConsensusConfig = ConsensusConfig()) -> tuple[PerturbationData, dict]:
    """Builds the consensus dataset; returns it and the load reports (JSON-ready) of every step."""
    path = registry.path
    graph, graph_report = hetionet_graph(config.edges, config.full_tables)
    log.info("reading consensus signatures: lincs/consensi-drugbank.tsv.gz")
    consensus, consensus_report = read_consensus(path("lincs/consensi-drugbank.tsv.gz"))
    keep = slice(None) if not config.max_drugs else slice(config.max_drugs)
    drug_ids = pd.Series(consensus.perturbagens[keep], dtype=str)
    signatures = consensus.values[keep]
    slim = read_table(path("drugbank/drugbank-slim.tsv"), ("drugbank_id", "name", "inchikey")).frame
    slim = slim.set_index("drugbank_id")
    query = pd.DataFrame({"drug_id": drug_ids,
                          "inchikey": drug_ids.map(slim["inchikey"]).fillna(""),
                          "name": drug_ids.map(slim["name"]).fillna("")})
    graph, drug_pos, place_reports = place_drugs(graph, query)

    smiles_report = LoadReport(str(path("drugbank/drugbank_smiles.txt")))
    smiles = read_drugbank_smiles(path("drugbank/drugbank_smiles.txt"), smiles_report)
    drug_smiles = pd.Series(graph.nodes[DRUG_TYPE].names).map(smiles).fillna("").to_numpy(dtype=object)
    graph, feature_report = with_drug_features(graph, drug_smiles, config.drug_features,
                                               config.morgan_bits)
    graph, embedding_reports = with_node_embeddings(graph, config.node_embeddings)
    graph, cell = add_cell_lines(graph, ["consensus"], cell_type=CELL_TYPE)
    readout = readout_positions(graph, GENE_TYPE, consensus.genes)
    n = len(drug_ids)
    data = PerturbationData(
        graph=graph, drug=drug_pos, cell=np.repeat(cell, n), dose=np.ones(n, np.float32),
        time=np.full(n, 24.0, np.float32), signatures=signatures.astype(np.float32),
        readout=readout, drug_smiles=drug_smiles, target_relations=(TARGET_RELATION,),
        drug_type=DRUG_TYPE, cell_type=CELL_TYPE, gene_type=GENE_TYPE)
    reports = [graph_report, consensus_report, *place_reports, smiles_report, feature_report,
               *embedding_reports]
    return data, {r.source: r.to_json() for r in reports}


@dataclasses.dataclass(frozen=True)
class CellLineConfig:
    """What goes into the per-cell-line dataset (see `make_cell_lines`).

    Attributes:
      signatures: a level-5 GCT/GCTX of signatures with LINCS column metadata (pert_id,
        cell_id, pert_idose, pert_itime) and row metadata pr_gene_id (Entrez).
      edges, full_tables, drug_features, morgan_bits, node_embeddings: as in `ConsensusConfig`.
    """

    signatures: str = "l1000/modzs_n272x978.gct"
    edges: str = "hetionet/edges-5k.sif.gz"
    full_tables: bool = True
    drug_features: tuple[str, ...] = ("morgan",)
    morgan_bits: int = 256
    node_embeddings: tuple[str, ...] = ()


def parse_amount(text: pd.Series, units: dict[str, float], what: str, source: str) -> np.ndarray:
    """'10 µM', '500 nM', '24 h' -> numbers in the unit whose factor is 1; NaN-free or raises."""
    parts = text.astype(str).str.extract(r"^\s*([0-9.]+)\s*(\S+)")
    unit = parts[1].str.replace("<b5>", "u", regex=False).str.replace("µ", "u", regex=False)
    factor = unit.map(units)
    value = pd.to_numeric(parts[0], errors="coerce") * factor
    bad = np.flatnonzero(value.isna().to_numpy())
    if bad.size:
        raise ValueError(f"{source}: column {bad[0] + 1}: {what} {text.iloc[bad[0]]!r} is not a "
                         f"number followed by one of {sorted(units)}")
    return value.to_numpy(np.float32)


def make_cell_lines(config: CellLineConfig = CellLineConfig()) -> tuple[PerturbationData, dict]:
    """(drug, cell line, dose, time) signatures from a level-5 GCT, merged into Hetionet.

    LINCS drugs (BRD ids) are matched to Hetionet compounds by the InChIKey and name that
    `lincs/pertinfo.tsv.gz` gives them; cell lines carry their basal expression from
    `l1000/transigen_basal.tsv` where it has them (zeros and a 0 flag elsewhere, reported).
    """
    path = registry.path
    source = str(path(config.signatures))
    log.info("reading signatures: %s", config.signatures)
    gct, gct_report = read_matrix(path(config.signatures))
    meta = gct.col_meta
    missing = [c for c in ("pert_id", "cell_id", "pert_idose", "pert_itime") if c not in meta]
    if missing:
        raise ValueError(f"{source}: column metadata lacks {missing}")
    graph, graph_report = hetionet_graph(config.edges, config.full_tables)

    pertinfo, _ = read_pertinfo(path("lincs/pertinfo.tsv.gz"))
    pertinfo = pertinfo.drop_duplicates("pert_id").set_index("pert_id")
    drugs = pd.Series(pd.unique(meta["pert_id"].astype(str)))
    unknown = drugs[~drugs.isin(pertinfo.index)]
    if len(unknown):
        raise ValueError(f"{source}: pert_ids not in lincs/pertinfo.tsv.gz: {unknown.tolist()[:5]}")
    info = pertinfo.loc[drugs]
    query = pd.DataFrame({"drug_id": drugs.to_numpy(),
                          "inchikey": info["inchi_key"].fillna("").to_numpy(),
                          "name": info["pert_iname"].fillna("").to_numpy()})
    graph, drug_pos, place_reports = place_drugs(graph, query)
    # SMILES: DrugBank's for Hetionet compounds, LINCS's for the drugs that joined as new nodes.
    smiles_report = LoadReport(str(path("drugbank/drugbank_smiles.txt")))
    smiles = read_drugbank_smiles(path("drugbank/drugbank_smiles.txt"), smiles_report)
    names = pd.Series(graph.nodes[DRUG_TYPE].names)
    lincs_smiles = pd.Series(info["canonical_smiles"].fillna("").to_numpy(), index=drugs.to_numpy())
    drug_smiles = names.map(smiles).fillna(names.map(lincs_smiles)).fillna("").to_numpy(dtype=object)
    graph, feature_report = with_drug_features(graph, drug_smiles, config.drug_features,
                                               config.morgan_bits)
    graph, embedding_reports = with_node_embeddings(graph, config.node_embeddings)

    cells = pd.unique(meta["cell_id"].astype(str))
    basal, basal_report = read_basal_expression(path("l1000/transigen_basal.tsv"))
    rows = pd.Index(basal.cell_ids).get_indexer(cells)
    genes = pd.Index(basal.genes).get_indexer(pd.Index(gct.row_meta["pr_gene_id"].astype(str)))
    if (genes < 0).any():
        raise ValueError(f"{source}: {int((genes < 0).sum())} genes are not in l1000/transigen_basal.tsv")
    values = np.where(rows[:, None] >= 0, basal.values[rows][:, genes], 0.0)
    basal_report.kept["cell lines with basal expression"] = int((rows >= 0).sum())
    basal_report.drop("cell line without basal expression (zeros, flag 0)", int((rows < 0).sum()),
                      cells[rows < 0])
    graph, cell_pos = add_cell_lines(graph, cells, np.c_[values, rows >= 0], cell_type=CELL_TYPE)

    drug_index = pd.Series(drug_pos, index=drugs.to_numpy())
    cell_index = pd.Series(cell_pos, index=cells)
    readout = readout_positions(graph, GENE_TYPE, gct.row_meta["pr_gene_id"].astype(str))
    data = PerturbationData(
        graph=graph, drug=drug_index[meta["pert_id"].astype(str)].to_numpy(),
        cell=cell_index[meta["cell_id"].astype(str)].to_numpy(),
        dose=parse_amount(meta["pert_idose"], {"uM": 1.0, "nM": 1e-3, "mM": 1e3}, "dose", source),
        time=parse_amount(meta["pert_itime"], {"h": 1.0}, "time", source),
        signatures=gct.data.T.astype(np.float32), readout=readout, drug_smiles=drug_smiles,
        target_relations=(TARGET_RELATION,), drug_type=DRUG_TYPE, cell_type=CELL_TYPE,
        gene_type=GENE_TYPE)
    reports = [graph_report, gct_report, *place_reports, smiles_report, feature_report,
               *embedding_reports, basal_report]
    return data, {r.source: r.to_json() for r in reports}
