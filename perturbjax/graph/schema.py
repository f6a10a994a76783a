"""`GraphSchema`: the static description of a typed graph that models are built from."""

from __future__ import annotations

import dataclasses

from perturbjax.graph.hetero import EdgeType, HeteroGraph


@dataclasses.dataclass(frozen=True)
class GraphSchema:
    """Static description of a typed graph (padded or not) that models are built from.

    Attributes:
      node_types: node type names; position = node type id.
      feature_widths: input feature width of each node type (0 = no features).
      edge_types: edge types; position = relation id.
    """

    node_types: tuple[str, ...]
    feature_widths: tuple[int, ...]
    edge_types: tuple[EdgeType, ...]

    @classmethod
    def of(cls, graph: HeteroGraph) -> GraphSchema:
        """The schema of `graph`: its node types and edge types in its own order."""
        return cls(
            tuple(graph.node_types),
            tuple(graph.nodes[t].feature_width for t in graph.node_types),
            tuple(graph.edge_types),
        )

    def to_json(self) -> dict:
        """A JSON-friendly record (the run summary's "schema")."""
        return {
            "node_types": list(self.node_types),
            "feature_widths": list(self.feature_widths),
            "edge_types": [str(k) for k in self.edge_types],
        }
