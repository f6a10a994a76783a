"""Leakage guard: edges computed from the measurements a model predicts stay out of its graph.

Hetionet's Compound-upregulates-Gene, Compound-downregulates-Gene and Gene-regulates-Gene edges
were derived from LINCS L1000 signatures (Himmelstein et al. 2017), so a model predicting
L1000 signatures with them in its graph reads its labels. The task drops them by default; a
config flag keeps them, and then the run's summary says it is leaky.
"""

from __future__ import annotations

from perturbjax.graph.hetero import EdgeType, HeteroGraph

# Edge types (as the Hetionet loader names them, both directions) derived from LINCS L1000.
L1000_DERIVED = (
    EdgeType("compound", "upregulates", "gene"), EdgeType("gene", "rev_upregulates", "compound"),
    EdgeType("compound", "downregulates", "gene"), EdgeType("gene", "rev_downregulates", "compound"),
    EdgeType("gene", "regulates", "gene"), EdgeType("gene", "rev_regulates", "gene"),
)


def guard(graph: HeteroGraph, *, keep_leaky: bool = False) -> tuple[HeteroGraph, dict]:
    """Drops the L1000-derived edge types present in `graph` unless `keep_leaky`.

    Returns:
      The graph and a record for the run's summary: which edge types were dropped or kept, and
      `leaky`, true when any were kept.
    """
    present = [k for k in L1000_DERIVED if k in graph.edges]
    if keep_leaky:
        return graph, {"leaky": bool(present), "kept": [str(k) for k in present], "dropped": []}
    graph = graph.drop_edge_types(present) if present else graph
    return graph, {"leaky": False, "kept": [], "dropped": [str(k) for k in present]}
