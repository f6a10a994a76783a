"""HeteroGraph -> padded `jraph.GraphsTuple` with a frozen budget.

Layout of the padded graph (the contract every layer relies on):

    nodes = {"features": f32[N, F_max],  # a type's features left-aligned, zero-filled to F_max
             "node_type": i32[N], "mask": bool[N],
             "id": i32[N]}  # the node's position in the full graph (a sampled subgraph's differ)
    edges = {"edge_type": i32[E], "mask": bool[E]}
    senders, receivers: i32[E] (flat node numbering, types in `schema.node_types` order)

The budget is computed once per experiment and then frozen: every step sees the same shapes,
so a training run compiles its step once. Masks, not positions, tell layers what is padding.
"""

from __future__ import annotations

import dataclasses
import math

import jraph
import numpy as np

from perturbjax.graph.hetero import HeteroGraph
from perturbjax.graph.schema import GraphSchema


@dataclasses.dataclass(frozen=True)
class PaddingBudget:
    """Sizes every padded graph of a run is padded to (nodes and edges include the padding)."""

    n_node: int
    n_edge: int
    n_graph: int = 2

    @classmethod
    def fitting(cls, graph: HeteroGraph, multiple: int = 256, n_graph: int = 1) -> "PaddingBudget":
        """Smallest budget holding `n_graph` real graphs like `graph`, rounded up to `multiple`.

        One extra node is always reserved: `jraph.pad_with_graphs` needs a padding node for the
        padding graph that absorbs the padding edges.
        """
        return cls(
            n_node=_round_up(graph.num_nodes + 1, multiple),
            n_edge=_round_up(max(graph.num_edges, 1), multiple),
            n_graph=n_graph + 1,
        )

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _round_up(x: int, multiple: int) -> int:
    return int(math.ceil(x / multiple) * multiple)


def flat_nodes(graph: HeteroGraph, schema: GraphSchema) -> tuple[np.ndarray, np.ndarray]:
    """Every node's features (left-aligned, zero-filled to the widest type) and type id, in the
    flat numbering (types in `schema.node_types` order): the padded layout's node arrays."""
    features = np.zeros((graph.num_nodes, max(schema.feature_widths, default=0)), np.float32)
    node_type = np.zeros(graph.num_nodes, np.int32)
    offsets = graph.node_offsets()
    for type_id, t in enumerate(schema.node_types):
        ns, start = graph.nodes[t], offsets[t]
        features[start:start + ns.count, :ns.feature_width] = ns.stacked_features()
        node_type[start:start + ns.count] = type_id
    return features, node_type


def to_graphs_tuple(graph: HeteroGraph, budget: PaddingBudget | None = None,
                    schema: GraphSchema | None = None) -> jraph.GraphsTuple:
    """Flattens `graph` into one `GraphsTuple`, padded to `budget` when one is given.

    Args:
      graph: the heterogeneous graph.
      budget: padding sizes; `None` returns the unpadded graph (tests use this).
      schema: fixes type and relation ids; defaults to the graph's own schema. Must list the
        graph's node and edge types in the same order when given.

    Raises:
      ValueError: if the graph does not fit the budget (naming which size overflowed).
    """
    schema = schema or GraphSchema.of(graph)
    if tuple(graph.node_types) != schema.node_types:
        raise ValueError(f"graph node types {graph.node_types} differ from schema {schema.node_types}")
    unknown = set(graph.edge_types) - set(schema.edge_types)
    if unknown:
        raise ValueError(f"edge types {sorted(map(str, unknown))} are not in the schema")
    offsets = graph.node_offsets()
    features, node_type = flat_nodes(graph, schema)
    relation_id = {k: i for i, k in enumerate(schema.edge_types)}
    keys = graph.edge_types
    senders = np.concatenate([graph.edges[k].senders + offsets[k.source] for k in keys] or [[]])
    receivers = np.concatenate([graph.edges[k].receivers + offsets[k.target] for k in keys] or [[]])
    edge_type = np.concatenate(
        [np.full(graph.edges[k].count, relation_id[k], np.int32) for k in keys] or [[]])

    gt = jraph.GraphsTuple(
        nodes={"features": features, "node_type": node_type,
               "mask": np.ones(graph.num_nodes, bool), "id": np.arange(graph.num_nodes, dtype=np.int32)},
        edges={"edge_type": edge_type.astype(np.int32), "mask": np.ones(len(senders), bool)},
        senders=senders.astype(np.int32), receivers=receivers.astype(np.int32),
        n_node=np.array([graph.num_nodes], np.int32), n_edge=np.array([len(senders)], np.int32),
        globals=None,
    )
    if budget is None:
        return gt
    if graph.num_nodes + 1 > budget.n_node or len(senders) > budget.n_edge or budget.n_graph < 2:
        raise ValueError(
            f"graph with {graph.num_nodes} nodes and {len(senders)} edges does not fit the padding "
            f"budget {budget} (need n_node > nodes, n_edge >= edges, n_graph >= 2)")
    return jraph.pad_with_graphs(gt, budget.n_node, budget.n_edge, budget.n_graph)
