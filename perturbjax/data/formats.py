"""Every file format the project reads, by name: what `perturbjax data summary` inspects.

Each entry reads one file with the same reader the experiments use and returns a short,
JSON-ready summary (counts, shapes, columns) with the reader's `LoadReport`, so a user can check
a file of their own (what was kept, what was dropped and why) before a run reads it, and the
bad-input tests drive every reader through one entry point.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Callable

import numpy as np
import pandas as pd

from perturbjax.data.load_report import LoadReport


@dataclasses.dataclass(frozen=True)
class Format:
    """A readable file format: its name, what such a file is, and how to summarise one."""

    name: str
    description: str
    read: Callable[[str], tuple[dict, LoadReport]]


def _reader(module: str, name: str) -> Callable:
    """A loader imported on first use (so that `perturbjax --help` stays fast)."""
    return lambda *args: getattr(importlib.import_module(f"perturbjax.data.{module}"), name)(*args)


def _graph(graph, report) -> tuple[dict, LoadReport]:
    return graph.summary(), report


def _frame(frame: pd.DataFrame, report: LoadReport, what: str = "rows") -> tuple[dict, LoadReport]:
    return {what: len(frame), "columns": list(map(str, frame.columns))}, report


def _primekg(path):
    from perturbjax.data.primekg import load_primekg

    graph, _, report = load_primekg(path)
    return _graph(graph, report)


def _hetionet(path):
    from perturbjax.data.hetionet import load_hetionet_folder

    return _graph(*load_hetionet_folder(path))


def _hetionet_nodes(path):
    from perturbjax.data.hetionet import read_nodes

    nodes = read_nodes(path)
    report = LoadReport(path, kept={"nodes": len(nodes)})
    return {"nodes": nodes["node_type"].value_counts().sort_index().to_dict()}, report


def _metaedges(path):
    from perturbjax.data.hetionet import read_metaedges

    metaedges = read_metaedges(path)
    return ({"metaedges": {k: str(m.edge_type) for k, m in metaedges.items()}},
            LoadReport(path, kept={"metaedges": len(metaedges)}))


def _edge_table(reader):
    def read(path):
        edges = reader(path)
        report = LoadReport(path)
        repeated = edges.duplicated(["source_id", "target_id"])
        report.drop("repeated edge (a graph keeps one)", int(repeated.sum()),
                    (f"{a} -> {b}" for a, b in zip(edges["source_id"][repeated],
                                                   edges["target_id"][repeated])))
        report.kept["edges"] = int((~repeated).sum())
        return ({"edges": int((~repeated).sum()), "sources": int(edges["source_id"].nunique()),
                 "targets": int(edges["target_id"].nunique())}, report)
    return read


def _ppi(path):
    from perturbjax.data.gene_tables import read_ppi

    pairs, report = read_ppi(path, None)  # symbols stand for themselves: no Entrez map here
    return {"interactions": len(pairs)}, report


def _pathways(path):
    from perturbjax.data.gene_tables import read_pathways

    pathways, members, report = read_pathways(path)
    return {"pathways": len(pathways), "memberships": len(members)}, report


def _matrix(path):
    from perturbjax.data.lincs import read_matrix

    gct, report = read_matrix(path)
    return ({"version": gct.version, "shape": list(gct.data.shape),
             "row_metadata": list(gct.row_meta.columns), "column_metadata": list(gct.col_meta.columns),
             "missing_values": int(np.isnan(gct.data).sum())}, report)


def _lincs_table(reader_name):
    return lambda path: _frame(*_reader("lincs", reader_name)(path))


def _wide(reader_name, id_name):
    def read(path):
        table, report = _reader("lincs", reader_name)(path)
        return {id_name: len(table.values), "genes": len(table.genes)}, report
    return read


def _transigen(path):
    from perturbjax.data.lincs import read_transigen_pairs

    pairs, report = read_transigen_pairs(path)
    return {"signatures": len(pairs.meta), "genes": int(pairs.control.shape[1])}, report


def _smiles(path):
    from perturbjax.data.chem import parse_smiles
    from perturbjax.data.hetionet_lincs import read_drugbank_smiles

    report = LoadReport(path)
    smiles = read_drugbank_smiles(path, report)
    parsed = parse_smiles(smiles.to_numpy())
    bad = ~parsed.valid
    report.drop("SMILES RDKit cannot parse (such a drug gets zero chemistry features)",
                int(bad.sum()), smiles.index[bad][:5])
    report.kept["valid SMILES"] = int(parsed.valid.sum())
    return {"drugs": len(smiles), "valid_smiles": int(parsed.valid.sum())}, report


def _embeddings(path):
    from perturbjax.data.embeddings import read_embedding_table

    ids, vectors = read_embedding_table(path)
    return ({"ids": len(ids), "dimension": int(vectors.shape[1])},
            LoadReport(path, kept={"vectors": len(ids)}))


FORMATS: dict[str, Format] = {f.name: f for f in [
    Format("primekg", "PrimeKG kg.csv (x_index, ..., relation, display_relation, y_*)", _primekg),
    Format("hetionet", "a Hetionet SIF edge list (.sif/.sif.gz) with nodes.tsv and metaedges.tsv "
           "beside it", _hetionet),
    Format("hetionet-nodes", "Hetionet nodes.tsv (id Kind::identifier, name, kind)", _hetionet_nodes),
    Format("hetionet-metaedges", "Hetionet metaedges.tsv (metaedge, abbreviation, ...)", _metaedges),
    Format("compound-gene", "Hetionet CbG-binding.tsv (drugbank_id, entrez_gene_id, ...)",
           _edge_table(_reader("hetionet", "read_compound_gene_binding"))),
    Format("disease-gene", "Hetionet DaG-association.tsv (doid_id, entrez_gene_id, ...)",
           _edge_table(_reader("hetionet", "read_disease_gene_association"))),
    Format("ppi", "protein interactions (source_symbol, target_symbol, ...), as dhimmel/ppi",
           _ppi),
    Format("pathways", "pathways.tsv (identifier, name, genes as |-separated Entrez ids)",
           _pathways),
    Format("gct", "an expression matrix: GCT 1.2/1.3 (.gct, .gct.gz) or GCTX (.gctx)", _matrix),
    Format("pertinfo", "LINCS perturbagen table (pert_id, pert_iname, pert_type, ...)",
           _lincs_table("read_pertinfo")),
    Format("cellinfo", "LINCS cell-line table (cell_id, ...)", _lincs_table("read_cellinfo")),
    Format("geneinfo", "L1000 probe table (pr_id, pr_gene_id, pr_gene_symbol, is_lm, ...)",
           _lincs_table("read_geneinfo")),
    Format("siginfo", "LINCS signature table (sig_info.txt)", _lincs_table("read_siginfo")),
    Format("landmark-genes", "the 978 landmark genes: genes.tsv (dhimmel/lincs) or "
           "landmark_geneinfo.csv (TranSiGen)", _lincs_table("read_landmark_genes")),
    Format("consensus", "consensus signatures: perturbagen + one column per Entrez id",
           _wide("read_consensus", "perturbagens")),
    Format("basal", "basal expression: cell_id + one column per Entrez id",
           _wide("read_basal_expression", "cell_lines")),
    Format("transigen-pairs", "TranSiGen's HDF5 of control/treated profile pairs", _transigen),
    Format("smiles", "drug id <tab> SMILES, no header (drugbank_smiles.txt)", _smiles),
    Format("embeddings", "a node embedding table (.npz, .npy + .ids.txt, .parquet, .csv, .tsv)",
           _embeddings),
]}


def summarise(format_name: str, path: str) -> tuple[dict, LoadReport]:
    """Reads `path` as `format_name`; raises ValueError / OSError naming the file on bad input."""
    if format_name not in FORMATS:
        raise ValueError(f"unknown format {format_name!r}; expected one of {sorted(FORMATS)}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: expected a {format_name} file, got a directory")
    return FORMATS[format_name].read(path)
