"""Hetionet v1.0 (Himmelstein et al. 2017) into a `HeteroGraph`.

Sources: `nodes.tsv` (id `Kind::identifier`, name, kind), edge lists in SIF form (source,
metaedge abbreviation, target; e.g. `edges-5k.sif.gz`), `metaedges.tsv` (abbreviation ->
"Source - relation - Target", or "Source > relation > Target" when directed), and the full
per-metaedge tables `CbG-binding.tsv` and `DaG-association.tsv`, which replace the sampled
CbG/DaG edges when given. Gene-gene and gene-pathway tables from `perturbjax.data.gene_tables`
replace GiG/GpPW in the same way.

Node types are the kinds in snake case (`Compound` -> `compound`, `Side Effect` ->
`side_effect`); node names are the identifiers (DrugBank ids, Entrez ids, DOIDs, GO ids ...);
relations are the metaedge verbs (`binds`, `regulates` ...). Undirected metaedges between nodes
of one kind are stored in both directions under one relation; every other metaedge gets a
`rev_` edge type for the way back, so messages flow both ways.
"""

from __future__ import annotations

import dataclasses
import os
from os import PathLike

import numpy as np
import pandas as pd

from perturbjax.data import gene_tables
from perturbjax.data.load_report import LoadReport
from perturbjax.data.tables import read_table
from perturbjax.graph.hetero import EdgeSet, EdgeType, HeteroGraph, NodeSet

REVERSE_PREFIX = "rev_"

# The metaedges computed from LINCS L1000 itself (Himmelstein et al. 2017, "Hetionet" methods):
# a model predicting L1000 signatures must not see them (see perturbjax.data.leakage).
L1000_DERIVED_METAEDGES = ("CuG", "CdG", "Gr>G")


def node_type_of(kind: str) -> str:
    """Hetionet kind -> node type name: 'Side Effect' -> 'side_effect'."""
    return kind.strip().lower().replace(" ", "_")


@dataclasses.dataclass(frozen=True)
class Metaedge:
    abbreviation: str
    source: str  # node type
    relation: str
    target: str  # node type
    directed: bool

    @property
    def edge_type(self) -> EdgeType:
        return EdgeType(self.source, self.relation, self.target)


def read_metaedges(path: str | PathLike) -> dict[str, Metaedge]:
    """`metaedges.tsv` -> {abbreviation: Metaedge}."""
    table = read_table(path, ("metaedge", "abbreviation"))
    out, first_row = {}, {}
    for row, (name, abbrev) in enumerate(zip(table.frame["metaedge"],
                                             table.frame["abbreviation"])):
        if abbrev in first_row:
            raise ValueError(f"{table.line(row)}: abbreviation {abbrev!r} repeats (first at "
                             f"{table.line(first_row[abbrev])}); expected one row per metaedge")
        first_row[abbrev] = row
        directed = " > " in name
        parts = name.split(" > " if directed else " - ")
        if len(parts) != 3 or not abbrev:
            raise ValueError(f"{table.line(row)}: metaedge {name!r} is not of the form "
                             f"'Source - relation - Target' or 'Source > relation > Target'")
        out[abbrev] = Metaedge(abbrev, node_type_of(parts[0]), parts[1].strip(),
                               node_type_of(parts[2]), directed)
    return out


def read_nodes(path: str | PathLike) -> pd.DataFrame:
    """`nodes.tsv` -> columns node_type, node_id, name (one row per node, ids unique per type)."""
    table = read_table(path, ("id", "name", "kind"))
    frame = table.frame
    split = frame["id"].str.split("::", n=1, expand=True)
    bad = np.flatnonzero(split[1].isna().to_numpy() if split.shape[1] > 1 else np.ones(len(frame), bool))
    if bad.size:
        raise ValueError(f"{table.line(bad[0])}: node id {frame['id'].iloc[bad[0]]!r} is not "
                         f"'Kind::identifier' ({bad.size} such rows)")
    mismatch = np.flatnonzero((split[0] != frame["kind"]).to_numpy())
    if mismatch.size:
        i = mismatch[0]
        raise ValueError(f"{table.line(i)}: id {frame['id'].iloc[i]!r} does not match its "
                         f"kind {frame['kind'].iloc[i]!r}")
    nodes = pd.DataFrame({"node_type": frame["kind"].map(node_type_of), "node_id": split[1],
                          "name": frame["name"]})
    dup = np.flatnonzero(nodes.duplicated(["node_type", "node_id"]).to_numpy())
    if dup.size:
        raise ValueError(f"{table.line(dup[0])}: duplicate node id {frame['id'].iloc[dup[0]]!r}")
    return nodes


def read_sif(path: str | PathLike, metaedges: dict[str, Metaedge]) -> pd.DataFrame:
    """A SIF edge list -> columns metaedge, source_id, target_id (ids without the kind prefix).

    Raises ValueError naming the line of an unknown metaedge or of an endpoint whose kind is not
    the one its metaedge joins.
    """
    table = read_table(path, ("source", "metaedge", "target"))
    frame = table.frame
    unknown = np.flatnonzero(~frame["metaedge"].isin(list(metaedges)).to_numpy())
    if unknown.size:
        i = unknown[0]
        raise ValueError(f"{table.line(i)}: unknown metaedge {frame['metaedge'].iloc[i]!r}; "
                         f"known: {sorted(metaedges)}")
    out = {"metaedge": frame["metaedge"]}
    for end, role in (("source", "source"), ("target", "target")):
        split = frame[end].str.split("::", n=1, expand=True)
        expected = frame["metaedge"].map({k: getattr(m, role) for k, m in metaedges.items()})
        wrong = np.flatnonzero((split[0].map(node_type_of) != expected).to_numpy()
                               | split.get(1, pd.Series(index=frame.index)).isna().to_numpy())
        if wrong.size:
            i = wrong[0]
            raise ValueError(f"{table.line(i)}: {end} {frame[end].iloc[i]!r} is not a "
                             f"'{expected.iloc[i]}' node as metaedge {frame['metaedge'].iloc[i]} "
                             f"requires")
        out[f"{end}_id"] = split[1]
    return pd.DataFrame(out)


def _gene_edge_table(path, source_col: str, metaedge: str) -> pd.DataFrame:
    """A table of `source_col` -> `entrez_gene_id` edges; a blank source or a gene id that is
    not an Entrez id (digits) raises naming the line."""
    table = read_table(path, (source_col, "entrez_gene_id"), strip=True)
    frame = table.frame
    bad = (frame[source_col] == "") | ~frame["entrez_gene_id"].str.fullmatch(r"\d+")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{table.line(i)}: expected a {source_col} and an Entrez gene id "
                         f"(digits), got {frame[source_col].iloc[i]!r} and "
                         f"{frame['entrez_gene_id'].iloc[i]!r}")
    return pd.DataFrame({"metaedge": metaedge, "source_id": frame[source_col],
                         "target_id": frame["entrez_gene_id"]})


def read_compound_gene_binding(path: str | PathLike) -> pd.DataFrame:
    """`CbG-binding.tsv` -> columns metaedge ('CbG'), source_id (DrugBank), target_id (Entrez)."""
    return _gene_edge_table(path, "drugbank_id", "CbG")


def read_disease_gene_association(path: str | PathLike) -> pd.DataFrame:
    """`DaG-association.tsv` -> columns metaedge ('DaG'), source_id (DOID), target_id (Entrez)."""
    return _gene_edge_table(path, "doid_id", "DaG")


def build_graph(nodes: pd.DataFrame, edges: pd.DataFrame, metaedges: dict[str, Metaedge], *,
                source: str, reverse: bool = True,
                node_features: dict[str, dict[str, np.ndarray]] | None = None
                ) -> tuple[HeteroGraph, LoadReport]:
    """Nodes (node_type, node_id) and edges (metaedge, source_id, target_id) -> graph + report.

    Edges whose endpoint is not a node, blank ids and repeated edges are dropped and reported.
    """
    report = LoadReport(source)
    node_sets, lookup = {}, {}
    for node_type, group in nodes.groupby("node_type", sort=True):
        names = group["node_id"].to_numpy(dtype=str)
        feats = (node_features or {}).get(node_type, {})
        node_sets[node_type] = NodeSet(names, feats)
        lookup[node_type] = pd.Index(names)
        report.kept[f"nodes:{node_type}"] = len(names)

    blank = (edges["source_id"] == "") | (edges["target_id"] == "")
    report.drop("blank endpoint id", int(blank.sum()))
    edges = edges[~blank]
    edge_sets = {}
    for abbrev, group in edges.groupby("metaedge", sort=True):
        m = metaedges[abbrev]
        src = lookup[m.source].get_indexer(group["source_id"]) if m.source in lookup else np.full(len(group), -1)
        dst = lookup[m.target].get_indexer(group["target_id"]) if m.target in lookup else np.full(len(group), -1)
        unknown = (src < 0) | (dst < 0)
        report.drop(f"{abbrev}: endpoint not among the nodes", int(unknown.sum()),
                    (f"{s} -> {t}" for s, t in zip(group["source_id"][unknown], group["target_id"][unknown])))
        src, dst = src[~unknown], dst[~unknown]
        symmetric = not m.directed and m.source == m.target
        if symmetric:  # undirected within one kind: both directions under one relation
            src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
        pairs = np.unique(np.stack([src, dst], 1), axis=0) if len(src) else np.zeros((0, 2), np.int64)
        report.drop(f"{abbrev}: repeated edge", len(src) - len(pairs))
        edge_sets[m.edge_type] = EdgeSet(pairs[:, 0], pairs[:, 1])
        report.kept[f"edges:{abbrev}"] = len(pairs)
        if reverse and not symmetric:
            rev = EdgeType(m.target, REVERSE_PREFIX + m.relation, m.source)
            edge_sets[rev] = EdgeSet(pairs[:, 1], pairs[:, 0])
    return HeteroGraph(node_sets, edge_sets), report


def edge_types_of(metaedge_names, metaedges: dict[str, Metaedge]) -> list[EdgeType]:
    """The edge types (both directions) that a list of metaedge abbreviations became."""
    out = []
    for abbrev in metaedge_names:
        m = metaedges[abbrev]
        out.append(m.edge_type)
        if m.directed or m.source != m.target:
            out.append(EdgeType(m.target, REVERSE_PREFIX + m.relation, m.source))
    return out


def load_hetionet(nodes_path: str | PathLike, sif_paths, metaedges_path: str | PathLike, *,
                  compound_gene_binding: str | PathLike | None = None,
                  disease_gene_association: str | PathLike | None = None,
                  ppi: str | PathLike | None = None, pathways: str | PathLike | None = None,
                  exclude_metaedges=(), reverse: bool = True) -> tuple[HeteroGraph, LoadReport]:
    """Hetionet from its node table and SIF edge lists, with full tables replacing samples.

    Args:
      nodes_path, sif_paths, metaedges_path: `nodes.tsv`, SIF file(s), `metaedges.tsv`.
      compound_gene_binding: `CbG-binding.tsv`; replaces the SIF's CbG edges.
      disease_gene_association: `DaG-association.tsv`; replaces the SIF's DaG edges.
      ppi: a protein-interaction table (`gene_tables.read_ppi`); replaces GiG edges.
      pathways: `pathways.tsv` (`gene_tables.read_pathways`); replaces GpPW edges and adds
        pathways that are not Hetionet nodes.
      exclude_metaedges: abbreviations left out entirely (e.g. the L1000-derived ones).
      reverse: add edges for the way back (see the module docstring).
    """
    metaedges = read_metaedges(metaedges_path)
    unknown = set(exclude_metaedges) - set(metaedges)
    if unknown:
        raise ValueError(f"unknown metaedges {sorted(unknown)}; known: {sorted(metaedges)}")
    nodes = read_nodes(nodes_path)
    sif_paths = [sif_paths] if isinstance(sif_paths, (str, PathLike)) else list(sif_paths)
    edges = pd.concat([read_sif(p, metaedges) for p in sif_paths], ignore_index=True)
    replaced, notes, sub_reports = {}, {}, []
    if compound_gene_binding is not None:
        replaced["CbG"] = read_compound_gene_binding(compound_gene_binding)
    if disease_gene_association is not None:
        replaced["DaG"] = read_disease_gene_association(disease_gene_association)
    if ppi is not None:
        genes = nodes[nodes["node_type"] == "gene"]
        pairs, r = gene_tables.read_ppi(ppi, gene_tables.symbol_to_entrez(genes["name"], genes["node_id"]))
        replaced["GiG"] = pairs.assign(metaedge="GiG")
        sub_reports.append(r)
    if pathways is not None:
        table, members, r = gene_tables.read_pathways(pathways)
        new = table[~table["node_id"].isin(nodes.loc[nodes["node_type"] == "pathway", "node_id"])]
        nodes = pd.concat([nodes, pd.DataFrame({"node_type": "pathway", "node_id": new["node_id"],
                                                "name": new["name"]})], ignore_index=True)
        notes["pathways added from the pathway table"] = len(new)
        replaced["GpPW"] = pd.DataFrame({"metaedge": "GpPW", "source_id": members["gene_id"],
                                         "target_id": members["pathway_id"]})
        sub_reports.append(r)
    for abbrev, rows in replaced.items():
        notes[f"{abbrev}: sampled edges replaced by the full table"] = {
            "sampled": int((edges["metaedge"] == abbrev).sum()), "table": len(rows)}
    drop = edges["metaedge"].isin(list(replaced) + list(exclude_metaedges))
    edges = pd.concat([edges[~drop], *replaced.values()], ignore_index=True)
    edges = edges[~edges["metaedge"].isin(list(exclude_metaedges))]
    graph, report = build_graph(nodes, edges, metaedges, source=str(nodes_path), reverse=reverse)
    report.notes.update(notes)
    if exclude_metaedges:
        report.notes["excluded metaedges"] = sorted(exclude_metaedges)
    for r in sub_reports:
        report = report.merge(r)
    return graph, report


def load_hetionet_folder(sif_path: str | PathLike, **options) -> tuple[HeteroGraph, LoadReport]:
    """Hetionet from a SIF file with `nodes.tsv` and `metaedges.tsv` beside it."""
    folder = os.path.dirname(os.path.abspath(sif_path))
    return load_hetionet(os.path.join(folder, "nodes.tsv"), sif_path,
                         os.path.join(folder, "metaedges.tsv"), **options)
