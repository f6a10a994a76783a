"""A user's knowledge graph from files, in one of three formats, with what the merge needs.

Formats (`kg_format`):
  primekg   PrimeKG's `kg.csv` (perturbjax.data.primekg): drugs are `drug` nodes (DrugBank ids),
            genes `gene/protein` nodes (NCBI Entrez ids, display names = symbols), drug targets
            the `drug_protein` relation, diseases `disease` nodes.
  hetionet  Hetionet's `nodes.tsv` plus a SIF edge list (perturbjax.data.hetionet): the SIF is
            the `kg` path; `nodes.tsv` and `metaedges.tsv` are taken from beside it unless given.
            Drugs are `compound` nodes, genes `gene` (Entrez ids), targets `binds`.
  edges     a CSV/TSV edge table with columns source, source_type, relation, target,
            target_type (optional source_name, target_name): every (type, id) is a node, every
            row an edge of type (source_type, relation, target_type), and every edge type gets a
            `rev_` type for the way back (but a same-type relation already listed in both
            directions). Drug and gene node types default to `drug` and `gene`.

`load_kg` returns the graph with the node types and relations the LINCS merge reads, and the
display names it matches drugs and genes by.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import pandas as pd

from perturbjax.data.load_report import LoadReport
from perturbjax.data.tables import read_table
from perturbjax.graph.hetero import EdgeSet, EdgeType, HeteroGraph, NodeSet

log = logging.getLogger(__name__)

KG_FORMATS = ("primekg", "hetionet", "edges")
EDGE_COLUMNS = ("source", "source_type", "relation", "target", "target_type")

# format -> (drug node type, gene node type, disease node type, drug-target relations)
_DEFAULT_TYPES = {
    "primekg": ("drug", "gene/protein", "disease", ("drug_protein",)),
    "hetionet": ("compound", "gene", "disease", ("binds",)),
    "edges": ("drug", "gene", "disease", ()),  # targets: every drug -> gene relation
}


@dataclasses.dataclass(frozen=True)
class KnowledgeGraph:
    """A loaded KG and what the merge with LINCS reads of it.

    Attributes:
      graph: the graph.
      drug_type, gene_type, disease_type: node types of drugs, genes and diseases.
      target_relations: relations of drug -> gene edges naming a drug's targets.
      names: node type -> display name of each node, aligned with `graph.nodes[type].names`
        (the node id where the format has no names).
      report: the loader's report.
    """

    graph: HeteroGraph
    drug_type: str
    gene_type: str
    disease_type: str
    target_relations: tuple[str, ...]
    names: dict
    report: LoadReport


def load_kg(path: str, kg_format: str, *, nodes: str = "", metaedges: str = "",
            drug_type: str = "", gene_type: str = "", disease_type: str = "",
            target_relations=()) -> KnowledgeGraph:
    """Reads a KG file; the type and relation arguments override the format's defaults.

    Raises:
      ValueError: an unknown format, a file that is not in it, or a drug or gene node type the
        graph does not have (naming the file and the types it has).
    """
    if kg_format not in KG_FORMATS:
        raise ValueError(f"data.files.kg_format is {kg_format!r}; expected one of {KG_FORMATS}")
    d_drug, d_gene, d_disease, d_targets = _DEFAULT_TYPES[kg_format]
    drug_type, gene_type = drug_type or d_drug, gene_type or d_gene
    disease_type = disease_type or d_disease
    log.info("loading the knowledge graph: %s (%s)", path, kg_format)
    if kg_format == "primekg":
        from perturbjax.data.primekg import load_primekg

        graph, primekg_nodes, report = load_primekg(path)
        frame = primekg_nodes.frame
        names = {t: frame.loc[frame["node_type"] == t, "node_name"].fillna("").to_numpy(dtype=str)
                 for t in graph.node_types}
    elif kg_format == "hetionet":
        from perturbjax.data.hetionet import load_hetionet, read_nodes

        folder = os.path.dirname(os.path.abspath(path))
        nodes = nodes or os.path.join(folder, "nodes.tsv")
        metaedges = metaedges or os.path.join(folder, "metaedges.tsv")
        for what, p in (("data.files.kg_nodes", nodes), ("data.files.kg_metaedges", metaedges)):
            if not os.path.isfile(p):
                raise ValueError(f"{p} (Hetionet's {os.path.basename(p)}, {what}) does not "
                                 f"exist; the hetionet format reads it beside the SIF file "
                                 f"{path} unless {what} names it")
        graph, report = load_hetionet(nodes, path, metaedges)
        table = read_nodes(nodes).set_index(["node_type", "node_id"])["name"]
        names = {t: np.asarray([table.get((t, n), n) for n in graph.nodes[t].names], dtype=str)
                 for t in graph.node_types}
    else:
        graph, names, report = read_edge_table(path)
    for what, t in (("drug", drug_type), ("gene", gene_type)):
        if t not in graph.nodes:
            raise ValueError(f"{path}: no {what} node type {t!r} (data.files.{what}_type); "
                             f"the graph's node types are {graph.node_types}")
    targets = tuple(target_relations) or d_targets or tuple(sorted(
        {k.relation for k in graph.edge_types if k.source == drug_type
         and k.target == gene_type}))
    present = {k.relation for k in graph.edge_types if k.source == drug_type and
               k.target == gene_type}
    if not set(targets) & present:
        raise ValueError(f"{path}: no {drug_type} -> {gene_type} edges of the target "
                         f"relations {list(targets)}; the graph has {sorted(present) or 'none'}")
    report.notes["drug, gene and disease node types"] = [drug_type, gene_type, disease_type]
    report.notes["target relations"] = list(targets)
    return KnowledgeGraph(graph, drug_type, gene_type, disease_type, targets, names, report)


def read_edge_table(path: str) -> tuple[HeteroGraph, dict, LoadReport]:
    """An edge table (EDGE_COLUMNS, optional source_name and target_name) -> graph, display
    names per node type, report. Blank ids and repeated edges are dropped and reported."""
    report = LoadReport(str(path))
    table = read_table(path, EDGE_COLUMNS, strip=True, report=report)
    frame = table.frame.fillna("")
    blank = (frame[list(EDGE_COLUMNS)] == "").any(axis=1).to_numpy()
    report.drop("blank field in source, source_type, relation, target or target_type",
                int(blank.sum()), (table.line(i) for i in np.flatnonzero(blank)[:5]))
    frame = frame[~blank]
    if frame.empty:
        raise ValueError(f"{path}: no edges; expected rows of {', '.join(EDGE_COLUMNS)}")
    ends = pd.concat([
        pd.DataFrame({"type": frame["source_type"], "id": frame["source"],
                      "name": frame.get("source_name", frame["source"])}),
        pd.DataFrame({"type": frame["target_type"], "id": frame["target"],
                      "name": frame.get("target_name", frame["target"])})])
    ends = ends.drop_duplicates(["type", "id"]).sort_values(["type", "id"], kind="stable")
    nodes, names, lookup = {}, {}, {}
    for node_type, group in ends.groupby("type", sort=True):
        ids = group["id"].to_numpy(dtype=str)
        nodes[node_type] = NodeSet(ids, {})
        names[node_type] = group["name"].replace("", np.nan).fillna(group["id"]).to_numpy(str)
        lookup[node_type] = pd.Index(ids)
        report.kept[f"nodes:{node_type}"] = len(ids)
    edges = {}
    for (s, r, t), group in frame.groupby(["source_type", "relation", "target_type"], sort=True):
        src = lookup[s].get_indexer(group["source"])
        dst = lookup[t].get_indexer(group["target"])
        pairs = np.unique(np.stack([src, dst], 1), axis=0)
        report.drop(f"{s}--{r}-->{t}: repeated edge", len(src) - len(pairs))
        edges[EdgeType(s, r, t)] = EdgeSet(pairs[:, 0], pairs[:, 1])
        report.kept[f"edges:{s}--{r}-->{t}"] = len(pairs)
    # A same-type relation listed in both directions (an undirected one) is not reversed again.
    symmetric = {k.relation for k, es in edges.items() if k.source == k.target and
                 _is_symmetric(es, len(nodes[k.source].names))}
    if symmetric:
        report.notes["relations listed in both directions (not reversed)"] = sorted(symmetric)
    graph = HeteroGraph(nodes, edges).with_reverse_edges(skip=symmetric)
    return graph, names, report


def _is_symmetric(es: EdgeSet, n: int) -> bool:
    """Whether every edge's reverse is an edge too (edges are unique)."""
    forward = es.senders.astype(np.int64) * n + es.receivers
    backward = es.receivers.astype(np.int64) * n + es.senders
    return np.array_equal(np.sort(forward), np.sort(backward))
