"""The `files` data source: a user's knowledge graph merged with a user's LINCS level-5 files.

    KG file(s) ──> kg_files.load_kg ─────────────┐
    siginfo ──> keep trt_cp, quality, dose, time │
    compoundinfo ──> match drugs (DrugBank id,   ├──> graph + conditions ──> read the landmark
      InChIKey, name) or add them with targets   │    rows of the kept signatures (blocked) ──>
    geneinfo ──> landmark readout, Entrez<->KG   │    collapse replicates (MODZ) ──> PerturbationData
    cellinfo ──> cell-line nodes (+ disease) ────┘

Every step reports what it kept and dropped, and why (the run's summary.json, `load_reports`;
`perturbjax data check` prints them). Every path is checked before anything is read, and every
file is validated before a run writes anything.

Collapse (`data.collapse`): "none" keeps one example per signature; "drug_cell" and "drug"
collapse the signatures of one drug in one cell line (over doses, times and replicates), or of
one drug over everything, into one moderated z-score (MODZ; Subramanian et al. 2017, Cell
171:1437, as cmapPy's `math/agg_wt.py` computes it: each signature weighted by its mean Spearman
correlation with the others of its group, clipped at 0.01, weights summing to 1;
`perturbjax.data.lincs.modz`). A collapsed condition's dose and time are its signatures' medians;
with "drug" the cell line is one pseudo cell line, `all_cell_lines`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

import ml_collections
import numpy as np
import pandas as pd

from perturbjax.data.kg_files import KG_FORMATS, KnowledgeGraph, load_kg
from perturbjax.data.lincs import modz, read_basal_expression, read_matrix_meta, \
    read_matrix_subset
from perturbjax.data.lincs_layouts import (normalise_signature_info, read_cell_info,
                                           read_compound_info, read_gene_info, read_gene_list,
                                           read_signature_info)
from perturbjax.data.merge import match_drugs, merge_drugs, normalise_name
from perturbjax.data.perturbation import PerturbationData
from perturbjax.data.load_report import LoadReport
from perturbjax.data.tables import read_table
from perturbjax.graph.hetero import EdgeType, HeteroGraph

log = logging.getLogger(__name__)

COLLAPSES = ("none", "drug_cell", "drug")
CELL_TYPE = "cell_line"
CELL_DISEASE = "cell_line_disease"
POOLED_CELL = "all_cell_lines"
PATH_KEYS = ("kg", "kg_nodes", "kg_metaedges", "signatures", "siginfo", "compoundinfo",
             "geneinfo", "cellinfo", "basal", "drug_table", "readout")
REQUIRED_KEYS = ("kg", "signatures", "geneinfo")


@dataclasses.dataclass(frozen=True)
class FilesConfig:
    """The user's files (`data.files`); paths relative to the working directory, else to
    `$PERTURBJAX_DATA_DIR`.

    Attributes:
      kg: the knowledge graph: PrimeKG's kg.csv, a Hetionet SIF, or an edge table.
      kg_format: "primekg", "hetionet" or "edges" (perturbjax/data/kg_files.py).
      kg_nodes, kg_metaedges: Hetionet's nodes.tsv and metaedges.tsv (default: beside `kg`).
      signatures: the level-5 GCTX or GCT (signatures x genes).
      siginfo: siginfo_beta.txt or GEO's sig_info; "" reads the same columns from the
        matrix's column metadata.
      compoundinfo: compoundinfo_beta.txt or GEO's pert_info (SMILES, InChIKey, targets).
      geneinfo: geneinfo_beta.txt or GEO's gene_info (landmarks, Entrez ids, symbols).
      cellinfo: cellinfo_beta.txt or GEO's cell_info (optional: links a cell line to its
        primary disease).
      basal: basal expression, `cell_id` + one column per Entrez id (optional).
      drug_table: KG drug ids with InChIKeys or names, e.g. DrugBank's drugbank-slim.tsv
        (columns drugbank_id or node_id, inchikey and/or name, optional smiles), for matching
        and for the features of KG drugs without LINCS data (optional).
      readout: a list of readout genes replacing the landmarks (optional).
      leaky_relations: KG relations derived from the same signatures: dropped with their
        `rev_` edges.
      drug_type, gene_type, disease_type, target_relations: override the format's defaults.
    """

    kg: str = ""
    kg_format: str = "primekg"
    kg_nodes: str = ""
    kg_metaedges: str = ""
    signatures: str = ""
    siginfo: str = ""
    compoundinfo: str = ""
    geneinfo: str = ""
    cellinfo: str = ""
    basal: str = ""
    drug_table: str = ""
    readout: str = ""
    leaky_relations: tuple[str, ...] = ()
    drug_type: str = ""
    gene_type: str = ""
    disease_type: str = ""
    target_relations: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    """Which signatures are kept (`data.filters`).

    Attributes:
      pert_types: kept perturbation types ("trt_cp": compounds; controls and genetic
        perturbations are left out).
      is_hiq, qc_pass, exemplar_only: keep only signatures flagged so (beta's is_hiq, qc_pass,
        is_exemplar_sig; an error where the table lacks the column).
      min_tas: keep signatures with a transcriptional activity score at least this (0 = all).
      doses: kept doses in µM (empty = all; matched to 1%).
      times: kept times in hours (empty = all).
      max_drugs: keep the signatures of the first n drugs in file order (0 = all), for tests.
    """

    pert_types: tuple[str, ...] = ("trt_cp",)
    is_hiq: bool = False
    qc_pass: bool = False
    exemplar_only: bool = False
    min_tas: float = 0.0
    doses: tuple[float, ...] = ()
    times: tuple[float, ...] = ()
    max_drugs: int = 0


def files_config() -> ml_collections.ConfigDict:
    """The `data` keys of the files source, with defaults: data.files (FilesConfig),
    data.filters (FilterConfig), data.collapse, data.drug_features (any of "morgan",
    "descriptors", from SMILES) and data.morgan_bits."""
    def section(cls):
        return ml_collections.ConfigDict({k: list(v) if isinstance(v, tuple) else v
                                          for k, v in dataclasses.asdict(cls()).items()})

    return ml_collections.ConfigDict({"files": section(FilesConfig),
                                      "filters": section(FilterConfig), "collapse": "drug_cell",
                                      "drug_features": ["morgan"], "morgan_bits": 1024})


def resolve(path: str, key: str) -> str:
    """A path as given if it exists, else under `$PERTURBJAX_DATA_DIR`; ValueError naming the
    config key if neither exists."""
    from perturbjax.data.registry import data_dir

    if os.path.exists(path):
        return path
    if not os.path.isabs(path) and (data_dir() / path).exists():
        return str(data_dir() / path)
    raise ValueError(f"data.files.{key}: {path} does not exist (relative paths are looked up in "
                     f"the working directory, then in $PERTURBJAX_DATA_DIR = {data_dir()})")


def resolved_files(files: FilesConfig) -> FilesConfig:
    """`files` with every given path resolved; raises for a missing required one."""
    missing = [k for k in REQUIRED_KEYS if not getattr(files, k)]
    if missing:
        raise ValueError(f"data.files.{missing[0]} is empty; the files source needs "
                         f"{', '.join('data.files.' + k for k in REQUIRED_KEYS)}")
    if files.kg_format not in KG_FORMATS:
        raise ValueError(f"data.files.kg_format is {files.kg_format!r}; expected one of "
                         f"{KG_FORMATS}")
    return dataclasses.replace(files, **{k: resolve(getattr(files, k), k) for k in PATH_KEYS
                                         if getattr(files, k)})


@dataclasses.dataclass
class Plan:
    """Everything but the expression values: the graph, the readout and the kept signatures.

    Attributes:
      graph: the merged graph.
      kg: the loaded KG (types and relations).
      readout: [G] readout genes' positions among the gene nodes.
      matrix_rows: [G] the matrix row id of each readout gene.
      signatures: the kept signatures (SIGNATURE_COLUMNS) with `drug` (drug node position) and
        `cell_pos` (cell-line node position), in matrix column order.
      drug_smiles: SMILES of every drug node.
      reports: the load reports, in the order of the steps.
    """

    graph: HeteroGraph
    kg: KnowledgeGraph
    readout: np.ndarray
    matrix_rows: np.ndarray
    signatures: pd.DataFrame
    drug_smiles: np.ndarray
    reports: list


def plan(files: FilesConfig, filters: FilterConfig, collapse: str) -> Plan:
    """Reads every table and the matrix's ids, filters and maps: all but the values."""
    if collapse not in COLLAPSES:
        raise ValueError(f"data.collapse is {collapse!r}; expected one of {COLLAPSES}")
    files = resolved_files(files)
    reports = []

    # Genes: the readout and the Entrez <-> symbol table.
    log.info("reading genes: %s", files.geneinfo)
    genes, gene_report = read_gene_info(files.geneinfo)
    reports.append(gene_report)
    readout_genes, readout_report = _readout(genes, files)
    reports.append(readout_report)

    # Signatures: the matrix's ids, the signature table, the filters.
    log.info("reading the matrix's ids and metadata: %s", files.signatures)
    row_meta, col_meta, meta_report = read_matrix_meta(files.signatures)
    reports.append(meta_report)
    matrix_rows, readout_genes = _matrix_rows(row_meta, readout_genes, genes, files.signatures,
                                              readout_report)
    if files.siginfo:
        log.info("reading signatures' info: %s", files.siginfo)
        sig, sig_report = read_signature_info(files.siginfo)
    else:
        sig_report = LoadReport(f"{files.signatures} (column metadata)")
        sig = normalise_signature_info(col_meta.reset_index(drop=True).astype(object),
                                       files.signatures, sig_report,
                                       ids=pd.Series(col_meta.index.astype(str)))
    reports.append(sig_report)
    sig = _in_matrix(sig, col_meta.index, files, sig_report)
    sig, filter_report = _filter(sig, filters, files.siginfo or files.signatures, collapse)
    reports.append(filter_report)

    # Compounds and the KG.
    compounds = pd.DataFrame(columns=["name", "smiles", "inchikey", "drugbank_id", "targets"])
    if files.compoundinfo:
        log.info("reading compounds: %s", files.compoundinfo)
        compounds, compound_report = read_compound_info(files.compoundinfo)
        reports.append(compound_report)
    kg = load_kg(files.kg, files.kg_format, nodes=files.kg_nodes, metaedges=files.kg_metaedges,
                 drug_type=files.drug_type, gene_type=files.gene_type,
                 disease_type=files.disease_type, target_relations=files.target_relations)
    reports.append(kg.report)
    graph, leak_report = _drop_leaky(kg.graph, files.leaky_relations, files.kg)
    reports.append(leak_report)

    graph, gene_node, readout, gene_map_report = _map_genes(graph, kg, genes, readout_genes)
    reports.append(gene_map_report)
    graph, sig, smiles, drug_reports = _place_drugs(graph, kg, sig, compounds, gene_node,
                                                    files.drug_table)
    reports += drug_reports
    graph, sig, cell_reports = _add_cells(graph, kg, sig, files, readout_genes, collapse)
    reports += cell_reports
    return Plan(graph, kg, readout, matrix_rows, sig, smiles, reports)


def _readout(genes: pd.DataFrame, files: FilesConfig) -> tuple[pd.DataFrame, LoadReport]:
    """The readout genes (entrez, symbol): the landmarks, or the user's list mapped by Entrez
    id or symbol."""
    report = LoadReport("readout genes")
    table = genes.drop_duplicates("entrez")
    if not files.readout:
        out = table[table["landmark"]]
        if out.empty:
            raise ValueError(f"{files.geneinfo}: no landmark genes (feature_space 'landmark' "
                             f"or pr_is_lm 1); give data.files.readout to choose readout genes")
        report.kept["landmark genes"] = len(out)
        return out[["entrez", "symbol"]].reset_index(drop=True), report
    wanted, _ = read_gene_list(files.readout)
    report.kept["genes listed in data.files.readout"] = len(wanted)
    by_id = pd.Series(table["entrez"].to_numpy(), index=table["entrez"].to_numpy())
    by_symbol = table.drop_duplicates("symbol").set_index("symbol")["entrez"]
    entrez = wanted.map(by_id).fillna(wanted.map(by_symbol))
    report.drop("not a gene of data.files.geneinfo", int(entrez.isna().sum()),
                wanted[entrez.isna()])
    entrez = pd.unique(entrez.dropna())
    if not len(entrez):
        raise ValueError(f"{files.readout}: none of its {len(wanted)} genes is an Entrez id or "
                         f"symbol of {files.geneinfo}")
    report.kept["genes of data.files.readout"] = len(entrez)
    return table.set_index("entrez").loc[entrez, ["symbol"]].reset_index(), report


def _matrix_rows(row_meta: pd.DataFrame, readout: pd.DataFrame, genes: pd.DataFrame,
                 path: str, report: LoadReport) -> tuple[np.ndarray, pd.DataFrame]:
    """The matrix row of each readout gene: row ids that are Entrez ids (beta, GEO), or probe
    ids (the `pr_gene_id` row metadata, or the gene table's probes)."""
    ids = pd.Index(row_meta.index.astype(str))
    row_of = pd.Series(ids, index=ids)  # Entrez id -> row id
    if "pr_gene_id" in row_meta:
        entrez = row_meta["pr_gene_id"].astype(str).str.replace(r"\.0$", "", regex=True)
        row_of = pd.concat([row_of, pd.Series(ids, index=entrez.to_numpy())])
    probes = genes[genes["probe"] != genes["entrez"]]
    if len(probes):
        row_of = pd.concat([row_of, pd.Series(probes["probe"].to_numpy(),
                                              index=probes["entrez"].to_numpy())])
    row_of = row_of[row_of.isin(ids)]
    row_of = row_of[~row_of.index.duplicated()]
    rows = readout["entrez"].map(row_of)
    report.drop("readout gene not a row of the matrix", int(rows.isna().sum()),
                readout["entrez"][rows.isna()])
    if rows.notna().sum() == 0:
        raise ValueError(f"{path}: none of the {len(readout)} readout genes is a row of the "
                         f"matrix (row ids such as {ids[:3].tolist()} are neither their "
                         f"Entrez ids nor their probes)")
    keep = rows.notna().to_numpy()
    report.kept["readout genes in the matrix"] = int(keep.sum())
    return rows[keep].to_numpy(dtype=str), readout[keep].reset_index(drop=True)


def _in_matrix(sig: pd.DataFrame, columns: pd.Index, files: FilesConfig,
               report: LoadReport) -> pd.DataFrame:
    """The signatures that are columns of the matrix, in the matrix's column order; the
    matrix's columns the table does not describe are counted in `report`."""
    columns = pd.Index(columns.astype(str))
    at = columns.get_indexer(sig["sig_id"])
    if (at >= 0).sum() == 0:
        raise ValueError(f"{files.signatures}: none of its {len(columns)} column ids (e.g. "
                         f"{list(columns[:2])}) is a sig_id of {files.siginfo}")
    undescribed = ~columns.isin(sig["sig_id"])
    report.drop("matrix column without a row in the signature table", int(undescribed.sum()),
                columns[undescribed])
    report.notes["signature-table rows that are not matrix columns"] = int((at < 0).sum())
    return sig.assign(column=at)[at >= 0].sort_values("column").reset_index(drop=True)


def _filter(sig: pd.DataFrame, f: FilterConfig, source: str, collapse: str
            ) -> tuple[pd.DataFrame, LoadReport]:
    """Applies the filters in order; the report counts what each removed."""
    report = LoadReport("signature filters")
    report.kept["signatures in the matrix"] = len(sig)

    def keep(mask, reason):
        nonlocal sig
        mask = np.asarray(mask, bool)
        report.drop(reason, int((~mask).sum()), sig["sig_id"][~mask])
        sig = sig[mask]

    keep(sig["pert_type"].isin(list(f.pert_types)),
         f"pert_type not in {list(f.pert_types)} (controls, genetic perturbations)")
    for flag, column in (("is_hiq", "is_hiq"), ("qc_pass", "qc_pass"),
                         ("exemplar_only", "is_exemplar")):
        if getattr(f, flag):
            if sig[column].isna().all():
                raise ValueError(f"{source}: data.filters.{flag}=True but the table has no "
                                 f"{column if column != 'is_exemplar' else 'is_exemplar_sig'} "
                                 f"values")
            keep(sig[column] == 1, f"{column} is not 1")
    if f.min_tas:
        if sig["tas"].isna().all():
            raise ValueError(f"{source}: data.filters.min_tas={f.min_tas} but the table has no "
                             f"tas values")
        keep(sig["tas"] >= f.min_tas, f"tas below {f.min_tas}")
    if f.doses:
        keep(np.isclose(sig["dose_um"].to_numpy()[:, None], np.asarray(f.doses)[None],
                        rtol=0.01).any(1), f"dose not in {list(f.doses)} µM")
    if f.times:
        keep(np.isclose(sig["time_h"].to_numpy()[:, None], np.asarray(f.times)[None],
                        rtol=0.01).any(1), f"time not in {list(f.times)} h")
    if collapse != "drug":  # the condition's covariates are log10 dose and time
        keep(np.isfinite(sig["dose_um"]) & (sig["dose_um"] > 0) & np.isfinite(sig["time_h"]),
             "dose or time missing or not positive")
    if f.max_drugs:
        first = pd.unique(sig["pert_id"])[:f.max_drugs]
        keep(sig["pert_id"].isin(first), f"beyond the first {f.max_drugs} drugs (max_drugs)")
    if sig.empty:
        raise ValueError(f"{source}: no signature is left after the filters "
                         f"({dict(report.dropped)})")
    report.kept["signatures"] = len(sig)
    report.kept["compounds"] = int(sig["pert_id"].nunique())
    report.kept["cell lines"] = int(sig["cell"].nunique())
    return sig.reset_index(drop=True), report


def _drop_leaky(graph: HeteroGraph, relations, source: str) -> tuple[HeteroGraph, LoadReport]:
    report = LoadReport("leaky relations (data.files.leaky_relations)")
    names = set(relations) | {"rev_" + r for r in relations}
    present = {k.relation for k in graph.edge_types}
    unknown = sorted(set(relations) - present)
    if unknown:
        raise ValueError(f"{source}: data.files.leaky_relations names {unknown}, not relations "
                         f"of the graph ({sorted(present)[:20]})")
    drop = [k for k in graph.edge_types if k.relation in names]
    report.drop("edges of a relation derived from the signatures",
                sum(graph.edges[k].count for k in drop), map(str, drop))
    return graph.drop_edge_types(drop) if drop else graph, report


def _symbol_lookup(kg: KnowledgeGraph, graph: HeteroGraph, genes: pd.DataFrame) -> pd.Series:
    """Gene symbol (upper case) -> gene node name: the KG's display names, node ids that are
    symbols, and the gene table's symbol -> Entrez where the nodes are Entrez ids."""
    nodes = graph.nodes[kg.gene_type].names.astype(str)
    display = kg.names.get(kg.gene_type, nodes)
    node_set = pd.Index(nodes)
    parts = [pd.Series(nodes[:len(display)], index=pd.Index(display).str.upper()),
             pd.Series(nodes, index=pd.Index(nodes).str.upper())]
    entrez = genes.drop_duplicates("symbol")
    entrez = entrez[entrez["entrez"].isin(node_set)]
    parts.append(pd.Series(entrez["entrez"].to_numpy(), index=entrez["symbol"].str.upper()))
    out = pd.concat(parts)
    return out[(out.index != "") & ~out.index.duplicated()]


def _map_genes(graph, kg: KnowledgeGraph, genes: pd.DataFrame, readout: pd.DataFrame):
    """Readout genes -> KG gene nodes by Entrez id, else symbol; the rest join as gene nodes
    without edges (their signature is still predicted). Returns the graph, the symbol lookup,
    the readout positions and the report."""
    report = LoadReport("readout genes -> KG gene nodes")
    symbols = _symbol_lookup(kg, graph, genes)
    nodes = pd.Index(graph.nodes[kg.gene_type].names.astype(str))
    by_id = readout["entrez"].where(readout["entrez"].isin(nodes))
    by_symbol = readout["symbol"].str.upper().map(symbols)
    node = by_id.fillna(by_symbol)
    report.kept["matched by Entrez id"] = int(by_id.notna().sum())
    report.kept["matched by symbol"] = int((by_id.isna() & by_symbol.notna()).sum())
    new = node.isna().to_numpy()
    report.drop("readout gene not in the KG (added as a gene node without edges)",
                int(new.sum()), readout["symbol"][new] + " (" + readout["entrez"][new] + ")")
    # New gene nodes are named as the KG names genes: Entrez ids, or symbols where its gene
    # ids are not numbers.
    new_names = readout["entrez"][new] if nodes.str.fullmatch(r"\d+").mean() >= 0.5 or \
        not len(nodes) else readout["symbol"][new]
    node[new] = new_names.to_numpy()
    to_add = pd.unique(new_names[~new_names.isin(nodes)])
    features = {k: np.zeros((len(to_add), v.shape[1]), np.float32)
                for k, v in graph.nodes[kg.gene_type].features.items()}
    graph = graph.with_nodes(kg.gene_type, to_add, features)
    if node.duplicated().any():
        dup = readout["entrez"][node.duplicated().to_numpy()].tolist()[:5]
        raise ValueError(f"readout genes {dup} map to the same KG gene node as another readout "
                         f"gene; give data.files.readout without them")
    return graph, symbols, graph.index(kg.gene_type, node.astype(str)), report


def _kg_drug_table(graph, kg: KnowledgeGraph, drug_table: str) -> pd.DataFrame:
    """node_id, name, inchikey of every KG drug node (InChIKeys and missing names from the
    user's drug table)."""
    ids = graph.nodes[kg.drug_type].names.astype(str)
    out = pd.DataFrame({"node_id": ids, "name": kg.names.get(kg.drug_type, ids)[:len(ids)],
                        "inchikey": ""})
    if drug_table:
        table = read_table(drug_table, strip=True).frame
        # Column names compared in lower case with "_" for spaces, so DrugBank's vocabulary
        # file ("DrugBank ID", "Common name", "Standard InChI Key") reads as well.
        table.columns = [c.lower().replace(" ", "_") for c in table.columns]
        table = table.rename(columns={"common_name": "name", "standard_inchi_key": "inchikey"})
        id_col = next((c for c in ("node_id", "drugbank_id", "id", "drug_id") if c in table),
                      None)
        key = next((c for c in ("inchikey", "inchi_key") if c in table), None)
        if id_col is None or (key is None and "name" not in table):
            raise ValueError(f"{drug_table} line 1: expected a drug id column (node_id or "
                             f"drugbank_id) and inchikey and/or name; found "
                             f"{list(table.columns)[:10]}")
        table = table.drop_duplicates(id_col).set_index(id_col)
        if key:
            inchikey = table[key].fillna("").str.replace("InChIKey=", "", regex=False)
            out["inchikey"] = out["node_id"].map(inchikey).fillna("")
        if "name" in table:
            out["name"] = out["name"].where(out["name"] != out["node_id"], "")
            out["name"] = out["name"].mask(out["name"] == "", out["node_id"].map(table["name"]))
            out["name"] = out["name"].fillna("")
        if "smiles" in table:
            out["smiles"] = out["node_id"].map(table["smiles"]).fillna("")
    return out


def _place_drugs(graph, kg: KnowledgeGraph, sig: pd.DataFrame, compounds: pd.DataFrame,
                 symbols: pd.Series, drug_table: str):
    """Matches the signatures' compounds to KG drugs (a DrugBank id column, InChIKey, name);
    the rest join as new drug nodes with edges to their compoundinfo targets."""
    perts = pd.Series(pd.unique(sig["pert_id"]), dtype=str)
    info = compounds.reindex(perts).reset_index(drop=True)
    names = sig.drop_duplicates("pert_id").set_index("pert_id")["pert_name"]
    info["name"] = info["name"].fillna("").mask(info["name"].fillna("") == "",
                                                perts.map(names).to_numpy())
    info = info.fillna("")
    coverage = LoadReport("compounds of the signatures")
    coverage.kept["compounds"] = len(perts)
    coverage.drop("compound not in data.files.compoundinfo (no SMILES, targets or InChIKey)",
                  int((~perts.isin(compounds.index)).sum()), perts[~perts.isin(compounds.index)])
    query = pd.DataFrame({"drug_id": info["drugbank_id"].where(info["drugbank_id"] != "",
                                                               perts.to_numpy()).to_numpy(),
                          "inchikey": info["inchikey"].to_numpy(),
                          "name": info["name"].to_numpy()})
    log.info("placing %d compounds in the graph (by %sInChIKey and name; the rest join through "
             "their targets)", len(perts),
             "DrugBank id, " if (info["drugbank_id"] != "").any() else "")
    kg_drugs = _kg_drug_table(graph, kg, drug_table)
    matched, match_report = match_drugs(query, kg_drugs)
    match_report.kept = {("matched by DrugBank id / KG id" if k == "matched by drug_id" else k): v
                         for k, v in match_report.kept.items()}
    targets = info["targets"].explode().dropna()
    targets = targets[targets != ""]
    target_frame = pd.DataFrame({"drug_id": perts.to_numpy()[targets.index.to_numpy()],
                                 "gene_id": targets.str.upper().map(symbols).to_numpy()})
    unknown = target_frame["gene_id"].isna().to_numpy()
    of_new = matched.isna().to_numpy()[targets.index.to_numpy()]
    match_report.drop("target symbol of a new compound not a KG gene", int((unknown & of_new).sum()),
                      targets[unknown & of_new])
    target_frame = target_frame[~unknown]
    relation = kg.target_relations[0]
    graph, drug_pos, merge_report = merge_drugs(graph, perts, matched, target_frame,
                                                drug_type=kg.drug_type, gene_type=kg.gene_type,
                                                relation=relation)
    drug_of = pd.Series(drug_pos, index=perts.to_numpy())
    sig = sig.assign(drug=sig["pert_id"].map(drug_of).to_numpy())
    # SMILES: the user's drug table's for KG drugs, LINCS's for LINCS compounds where given.
    smiles = pd.Series("", index=graph.nodes[kg.drug_type].names.astype(str), dtype=object)
    if "smiles" in kg_drugs:
        smiles.iloc[:len(kg_drugs)] = kg_drugs["smiles"].to_numpy()
    lincs = info["smiles"].to_numpy(dtype=object)
    smiles.iloc[drug_pos[lincs != ""]] = lincs[lincs != ""]
    match_report.kept["drug nodes with signatures"] = int(len(np.unique(drug_pos)))
    return graph, sig, smiles.to_numpy(dtype=object), [coverage, match_report, merge_report]


def _add_cells(graph, kg: KnowledgeGraph, sig: pd.DataFrame, files: FilesConfig,
               readout: pd.DataFrame, collapse: str):
    """Cell-line nodes (basal expression of the readout genes where data.files.basal has it,
    else a constant), linked to their primary disease where the KG has a disease of that
    name; with collapse "drug", one pooled cell line."""
    report = LoadReport("cell lines")
    cells = np.array([POOLED_CELL]) if collapse == "drug" else pd.unique(sig["cell"].astype(str))
    report.kept["cell lines"] = len(cells)
    features = np.ones((len(cells), 1), np.float32)
    reports = [report]
    if files.basal and collapse != "drug":
        basal, basal_report = read_basal_expression(files.basal)
        rows = pd.Index(basal.cell_ids).get_indexer(cells)
        cols = pd.Index(basal.genes).get_indexer(readout["entrez"])
        values = np.where((rows[:, None] >= 0) & (cols[None] >= 0),
                          basal.values[rows][:, cols], 0.0)
        features = np.c_[values, rows >= 0].astype(np.float32)
        basal_report.kept["cell lines with basal expression"] = int((rows >= 0).sum())
        basal_report.drop("cell line without basal expression (zeros, flag 0)",
                          int((rows < 0).sum()), cells[rows < 0])
        reports.append(basal_report)
    graph = graph.with_nodes(CELL_TYPE, cells, {"basal_expression": features})
    position = pd.Series(graph.index(CELL_TYPE, cells), index=cells)
    sig = sig.assign(cell_pos=position[POOLED_CELL] if collapse == "drug"
                     else sig["cell"].astype(str).map(position).to_numpy())
    if files.cellinfo and collapse != "drug":
        info, info_report = read_cell_info(files.cellinfo)
        reports.append(info_report)
        disease = pd.Series(cells, index=cells).map(info["disease"]).fillna("")
        report.drop("cell line not in data.files.cellinfo", int((~pd.Index(cells).isin(
            info.index)).sum()), [c for c in cells if c not in info.index])
        if kg.disease_type in graph.nodes and (disease != "").any():
            names = kg.names.get(kg.disease_type, graph.nodes[kg.disease_type].names)
            lookup = pd.Series(np.arange(len(names)), index=normalise_name(pd.Series(names)))
            lookup = lookup[(lookup.index != "") & ~lookup.index.duplicated()]
            at = normalise_name(disease).map(lookup)
            linked = at.notna().to_numpy()
            src = position[cells[linked]].to_numpy()
            dst = at[linked].to_numpy(np.int64)
            graph = graph.with_edges(EdgeType(CELL_TYPE, CELL_DISEASE, kg.disease_type), src, dst)
            graph = graph.with_edges(EdgeType(kg.disease_type, "rev_" + CELL_DISEASE, CELL_TYPE),
                                     dst, src)
            report.kept["linked to their primary disease"] = int(linked.sum())
            report.drop("primary disease not a KG disease name",
                        int(((disease != "") & ~at.notna()).sum()),
                        disease[(disease != "") & ~at.notna()])
    return graph, sig, reports


def read_values(p: Plan, signatures: str, progress: bool = False) -> tuple[np.ndarray, LoadReport]:
    """[G, S] the readout rows of the kept signatures, read in blocks (perturbjax.data.lincs)."""
    log.info("reading %d signatures x %d genes from %s", len(p.signatures), len(p.matrix_rows),
             signatures)
    gct, report = read_matrix_subset(signatures, rows=p.matrix_rows,
                                     cols=p.signatures["sig_id"].to_numpy(), progress=progress)
    return gct.data, report


def collapse_conditions(values: np.ndarray, sig: pd.DataFrame, collapse: str
                        ) -> tuple[np.ndarray, pd.DataFrame, LoadReport]:
    """[G, S] signatures -> ([C, G] conditions, their drug / cell / dose / time, report)."""
    report = LoadReport(f"collapse ({collapse})")
    finite = np.isfinite(values).all(0) if collapse == "none" else np.isfinite(values).any(0)
    report.drop("signature with missing values" if collapse == "none"
                else "signature without any value", int((~finite).sum()), sig["sig_id"][~finite])
    values, sig = values[:, finite], sig[finite].reset_index(drop=True)
    if collapse == "none":
        conditions = sig[["drug", "cell_pos", "dose_um", "time_h"]]
        out = values.T
    else:
        keys = ["drug"] if collapse == "drug" else ["drug", "cell_pos"]
        codes, groups = pd.factorize(pd.MultiIndex.from_frame(sig[keys]), sort=True)
        collapsed, weights = modz(values, codes)
        conditions = sig.assign(group=codes).groupby("group").agg(
            drug=("drug", "first"), cell_pos=("cell_pos", "first"),
            dose_um=("dose_um", "median"), time_h=("time_h", "median")).reset_index(drop=True)
        out = collapsed.T
        report.notes["signatures per condition"] = {
            "median": float(np.median(np.bincount(codes))), "max": int(np.bincount(codes).max())}
        report.notes["MODZ weights"] = "mean Spearman correlation with the group's others, " \
                                       "clipped at 0.01, normalised per group"
        missing = ~np.isfinite(out)
        if missing.any():  # a gene no signature of the group measured
            report.notes["missing values set to 0"] = int(missing.sum())
            out = np.where(missing, 0.0, out)
    if collapse == "drug":
        conditions = conditions.assign(dose_um=1.0, time_h=24.0)
    report.kept["conditions"] = len(out)
    return out.astype(np.float32), conditions.reset_index(drop=True), report


def make_from_files(files: FilesConfig, filters: FilterConfig, collapse: str, *,
                    drug_features=("morgan",), morgan_bits: int = 1024, progress: bool = False
                    ) -> tuple[PerturbationData, dict]:
    """The dataset from the user's files; returns it and the load reports (JSON-ready)."""
    from perturbjax.data.hetionet_lincs import drug_feature_arrays

    started = time.perf_counter()
    p = plan(files, filters, collapse)
    values, value_report = read_values(p, resolve(files.signatures, "signatures"), progress)
    signatures, conditions, collapse_report = collapse_conditions(values, p.signatures, collapse)
    graph = p.graph
    feature_report = LoadReport("drug features")
    if drug_features:
        features, feature_report = drug_feature_arrays(p.drug_smiles, drug_features, morgan_bits)
        graph = graph.with_features(p.kg.drug_type, features)
    reports = [*p.reports, value_report, collapse_report, feature_report]
    data = PerturbationData(
        graph=graph, drug=conditions["drug"].to_numpy(np.int64),
        cell=conditions["cell_pos"].to_numpy(np.int64),
        dose=conditions["dose_um"].to_numpy(np.float32),
        time=conditions["time_h"].to_numpy(np.float32), signatures=signatures,
        readout=p.readout, drug_smiles=p.drug_smiles, target_relations=p.kg.target_relations,
        drug_type=p.kg.drug_type, cell_type=CELL_TYPE, gene_type=p.kg.gene_type)
    log.info("files source: %d conditions of %d drugs in %d cell lines x %d genes in %.0f s",
             data.num_conditions, len(np.unique(data.drug)), len(np.unique(data.cell)),
             len(data.readout), time.perf_counter() - started)
    return data, _keyed(reports)


def _keyed(reports) -> dict:
    """Reports keyed by source, in step order; a repeated source gets a number."""
    out = {}
    for r in reports:
        key, k = r.source, 2
        while key in out:
            key, k = f"{r.source} ({k})", k + 1
        out[key] = r.to_json()
    return out


def check(files: FilesConfig, filters: FilterConfig, collapse: str) -> tuple[dict, dict]:
    """What `perturbjax data check` prints: every report of the route except the values', and
    a summary (signatures kept, compounds placed, genes matched, cell lines, conditions after
    the collapse, graph size). Reads the tables and the matrix's ids, not its values."""
    p = plan(files, filters, collapse)
    sig = p.signatures
    keys = {"none": ["sig_id"], "drug_cell": ["drug", "cell_pos"], "drug": ["drug"]}[collapse]
    summary = {"signatures kept": len(sig), "compounds": int(sig["pert_id"].nunique()),
               "drug nodes with signatures": int(sig["drug"].nunique()),
               "cell lines": int(sig["cell"].nunique()),
               "conditions after collapse": int(len(sig.drop_duplicates(keys))),
               "readout genes": len(p.readout),
               "graph": {"nodes": p.graph.num_nodes, "edges": p.graph.num_edges,
                         "node types": {t: p.graph.nodes[t].count for t in p.graph.node_types},
                         "edge types": len(p.graph.edges)}}
    return summary, _keyed(p.reports)
