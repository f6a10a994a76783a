"""Host-side heterogeneous graph: named node sets and edge sets keyed by (source, relation, target).

The container is independent of any task. Edge types stay addressable by name everywhere, so an
edge-type ablation is one call (`drop_edge_types`) and a saved graph is plain npz + JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterable, Mapping, NamedTuple

import numpy as np

_FORMAT_VERSION = 1


class EdgeType(NamedTuple):
    """Key of an edge set: messages flow from `source` nodes to `target` nodes."""

    source: str
    relation: str
    target: str

    def __str__(self) -> str:
        return f"{self.source}--{self.relation}-->{self.target}"

    @classmethod
    def parse(cls, text: str) -> "EdgeType":
        """Inverse of `str(edge_type)`."""
        try:
            source, rest = text.split("--", 1)
            relation, target = rest.split("-->", 1)
        except ValueError:
            raise ValueError(f"edge type {text!r} is not of the form 'source--relation-->target'")
        return cls(source, relation, target)


@dataclasses.dataclass(frozen=True)
class NodeSet:
    """Nodes of one type.

    Attributes:
      names: [n] string identifiers (unique within the type); defines the node count.
      features: named float feature arrays, each [n, width]; widths may differ between arrays.
    """

    names: np.ndarray
    features: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.names)

    @property
    def feature_width(self) -> int:
        return sum(f.shape[1] for f in self.features.values())

    def stacked_features(self) -> np.ndarray:
        """All feature arrays side by side, sorted by name: [n, feature_width] float32."""
        if not self.features:
            return np.zeros((self.count, 0), np.float32)
        return np.concatenate(
            [np.asarray(self.features[k], np.float32) for k in sorted(self.features)], axis=1
        )


@dataclasses.dataclass(frozen=True)
class EdgeSet:
    """Directed edges of one type, as index arrays into the source and target node sets."""

    senders: np.ndarray
    receivers: np.ndarray

    @property
    def count(self) -> int:
        return len(self.senders)


class HeteroGraph:
    """A typed graph: `nodes[type] -> NodeSet`, `edges[EdgeType] -> EdgeSet`.

    Validated on construction, so a graph that exists is consistent: every edge set joins known
    node types, index arrays are integer, equal-length and in range, feature rows match counts.
    """

    def __init__(self, nodes: Mapping[str, NodeSet], edges: Mapping[EdgeType, EdgeSet]):
        self.nodes = {name: _checked_node_set(name, ns) for name, ns in nodes.items()}
        self.edges = {}
        for key, es in edges.items():
            key = EdgeType(*key)
            self.edges[key] = _checked_edge_set(key, es, self.nodes)

    # ---- views ---------------------------------------------------------------------------
    @property
    def node_types(self) -> list[str]:
        """Node type names in a fixed (sorted) order; this order defines node type ids."""
        return sorted(self.nodes)

    @property
    def edge_types(self) -> list[EdgeType]:
        """Edge types in a fixed (sorted) order; this order defines relation ids."""
        return sorted(self.edges)

    @property
    def num_nodes(self) -> int:
        return sum(ns.count for ns in self.nodes.values())

    @property
    def num_edges(self) -> int:
        return sum(es.count for es in self.edges.values())

    def node_offsets(self) -> dict[str, int]:
        """Start of each node type in the flat (all types concatenated) node numbering."""
        offsets, start = {}, 0
        for name in self.node_types:
            offsets[name] = start
            start += self.nodes[name].count
        return offsets

    def index(self, node_type: str, names: Iterable[str]) -> np.ndarray:
        """Positions of `names` within `node_type`; raises KeyError naming what is missing."""
        lookup = {n: i for i, n in enumerate(self.nodes[_known(node_type, self.nodes)].names)}
        names = list(names)
        missing = [n for n in names if n not in lookup]
        if missing:
            raise KeyError(f"{len(missing)} names not among {node_type!r} nodes, e.g. {missing[:5]}")
        return np.array([lookup[n] for n in names], np.int64)

    def summary(self) -> dict:
        """Node count per type and edge count per edge type (JSON-friendly)."""
        return {
            "nodes": {t: self.nodes[t].count for t in self.node_types},
            "edges": {str(k): self.edges[k].count for k in self.edge_types},
        }

    # ---- edits (each returns a new graph) ------------------------------------------------
    def drop_edge_types(self, relations: Iterable[str | EdgeType]) -> "HeteroGraph":
        """Graph without the given edge types, named by relation or by full `EdgeType`.

        A relation name drops every edge type with that relation; a name matching nothing raises,
        so a typo in an ablation config cannot silently keep the edges.
        """
        relations = list(relations)
        drop = set()
        for r in relations:
            matched = [k for k in self.edges if k == r or k.relation == r or str(k) == r]
            if not matched:
                known = sorted({k.relation for k in self.edges})
                raise KeyError(f"edge type {r!r} is not in the graph; relations are {known}")
            drop.update(matched)
        return HeteroGraph(self.nodes, {k: v for k, v in self.edges.items() if k not in drop})

    def without_features(self, node_types: Iterable[str]) -> "HeteroGraph":
        """Graph whose given node types carry no input features (a node-feature ablation)."""
        node_types = set(node_types)
        for t in node_types:
            _known(t, self.nodes)
        nodes = {t: NodeSet(ns.names) if t in node_types else ns for t, ns in self.nodes.items()}
        return HeteroGraph(nodes, self.edges)

    def with_features(self, node_type: str, features: Mapping[str, np.ndarray]) -> "HeteroGraph":
        """Graph whose `node_type` nodes carry `features` besides (or replacing) their own."""
        ns = self.nodes[_known(node_type, self.nodes)]
        nodes = {**self.nodes, node_type: NodeSet(ns.names, {**ns.features, **features})}
        return HeteroGraph(nodes, self.edges)

    def with_nodes(self, node_type: str, names, features: Mapping[str, np.ndarray] | None = None
                   ) -> "HeteroGraph":
        """Graph with `names` appended to `node_type` (created if new); existing indices hold.

        Features of the type must be given for the new nodes, feature for feature (a new node
        with no value for a feature is a decision the caller makes, e.g. zeros plus a flag).
        """
        names = np.asarray(list(names), dtype=str)
        features = dict(features or {})
        old = self.nodes.get(node_type, NodeSet(np.zeros(0, str), {k: np.zeros((0, v.shape[1]))
                                                                      for k, v in features.items()}))
        if set(features) != set(old.features):
            raise ValueError(f"node type {node_type!r} has features {sorted(old.features)}; "
                             f"new nodes came with {sorted(features)}")
        merged = NodeSet(np.concatenate([np.asarray(old.names, str), names]),
                         {k: np.concatenate([old.features[k], np.asarray(features[k], np.float32)])
                          for k in old.features})
        return HeteroGraph({**self.nodes, node_type: merged}, self.edges)

    def with_edges(self, edge_type: EdgeType, senders, receivers) -> "HeteroGraph":
        """Graph with edges added to `edge_type` (created if new); repeated edges kept once."""
        edge_type = EdgeType(*edge_type)
        old = self.edges.get(edge_type, EdgeSet(np.zeros(0, np.int32), np.zeros(0, np.int32)))
        pairs = np.stack([np.concatenate([old.senders, np.asarray(senders, np.int64)]),
                          np.concatenate([old.receivers, np.asarray(receivers, np.int64)])], 1)
        pairs = np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)
        return HeteroGraph(self.nodes, {**self.edges, edge_type: EdgeSet(pairs[:, 0], pairs[:, 1])})

    def with_reverse_edges(self, skip: Iterable[str] = (), prefix: str = "rev_") -> "HeteroGraph":
        """Adds `target --rev_relation--> source` for each edge type, so messages flow both ways.

        Args:
          skip: relations left alone, e.g. symmetric ones already stored in both directions.
          prefix: prepended to the relation name of each reverse edge type.
        """
        skip = set(skip)
        edges = dict(self.edges)
        for k, es in self.edges.items():
            if k.relation in skip:
                continue
            rk = EdgeType(k.target, prefix + k.relation, k.source)
            if rk in edges:
                raise ValueError(f"reverse edge type {rk} already exists")
            edges[rk] = EdgeSet(es.receivers, es.senders)
        return HeteroGraph(self.nodes, edges)

    # ---- persistence (npz + JSON, never pickle) ------------------------------------------
    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        arrays, meta = {}, {"format_version": _FORMAT_VERSION, "nodes": {}, "edges": []}
        for t in self.node_types:
            ns = self.nodes[t]
            arrays[f"nodes/{t}/names"] = np.asarray(ns.names, dtype=str)
            for f, value in ns.features.items():
                arrays[f"nodes/{t}/features/{f}"] = value
            meta["nodes"][t] = {"count": ns.count, "features": sorted(ns.features)}
        for i, k in enumerate(self.edge_types):
            arrays[f"edges/{i}/senders"] = self.edges[k].senders
            arrays[f"edges/{i}/receivers"] = self.edges[k].receivers
            meta["edges"].append(list(k))
        np.savez(os.path.join(directory, "arrays.npz"), **arrays)
        with open(os.path.join(directory, "graph.json"), "w") as f:
            json.dump(meta, f, indent=2)

    @classmethod
    def load(cls, directory: str) -> "HeteroGraph":
        meta_path = os.path.join(directory, "graph.json")
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"{meta_path}: format_version {meta.get('format_version')!r}, "
                             f"expected {_FORMAT_VERSION}")
        with np.load(os.path.join(directory, "arrays.npz"), allow_pickle=False) as z:
            nodes = {
                t: NodeSet(z[f"nodes/{t}/names"], {f: z[f"nodes/{t}/features/{f}"] for f in m["features"]})
                for t, m in meta["nodes"].items()
            }
            edges = {
                EdgeType(*k): EdgeSet(z[f"edges/{i}/senders"], z[f"edges/{i}/receivers"])
                for i, k in enumerate(meta["edges"])
            }
        return cls(nodes, edges)

    def __repr__(self) -> str:
        return f"HeteroGraph({self.summary()})"


def _known(node_type: str, nodes: Mapping[str, NodeSet]) -> str:
    if node_type not in nodes:
        raise KeyError(f"unknown node type {node_type!r}; known types are {sorted(nodes)}")
    return node_type


def _checked_node_set(name: str, ns: NodeSet) -> NodeSet:
    names = np.asarray(ns.names)
    if names.ndim != 1:
        raise ValueError(f"node type {name!r}: names must be 1-D, got shape {names.shape}")
    if len(np.unique(names)) != len(names):
        raise ValueError(f"node type {name!r}: node names are not unique")
    features = {}
    for f, value in ns.features.items():
        value = np.asarray(value, np.float32)
        if value.ndim != 2 or value.shape[0] != len(names):
            raise ValueError(f"node type {name!r}: feature {f!r} has shape {value.shape}, "
                             f"expected ({len(names)}, width)")
        if not np.isfinite(value).all():
            raise ValueError(f"node type {name!r}: feature {f!r} has non-finite values")
        features[f] = value
    return NodeSet(names, features)


def _checked_edge_set(key: EdgeType, es: EdgeSet, nodes: Mapping[str, NodeSet]) -> EdgeSet:
    for role, t in (("source", key.source), ("target", key.target)):
        if t not in nodes:
            raise KeyError(f"edge type {key}: unknown {role} node type {t!r}; "
                           f"known types are {sorted(nodes)}")
    senders, receivers = np.asarray(es.senders), np.asarray(es.receivers)
    if senders.shape != receivers.shape or senders.ndim != 1:
        raise ValueError(f"edge type {key}: senders {senders.shape} and receivers "
                         f"{receivers.shape} must be 1-D of equal length")
    for role, idx, t in (("senders", senders, key.source), ("receivers", receivers, key.target)):
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"edge type {key}: {role} must be integers, got {idx.dtype}")
        n = nodes[t].count
        bad = np.flatnonzero((idx < 0) | (idx >= n))
        if bad.size:
            raise IndexError(f"edge type {key}: {role}[{bad[0]}] = {idx[bad[0]]} is out of range "
                             f"for {n} {t!r} nodes ({bad.size} such edges)")
    return EdgeSet(senders.astype(np.int32), receivers.astype(np.int32))
