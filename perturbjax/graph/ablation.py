"""Edge-type and node-feature ablations of a graph, named by one config string.

`graph.ablation` takes one of

    none                 the graph as built (the reference every ablation is compared with)
    drop:SEL             the selected edge types removed
    keep:SEL             only the selected edge types kept (every other one removed)
    shuffle:SEL          the selected edge types rewired, degree-preserving: every node keeps
                         its in- and out-degree per edge type, its partners are random
    randomize:TYPE       node type TYPE's input features permuted across its nodes (each node
                         gets another node's features: same distribution, no identity)

SEL is a group name from `graph.edge_groups` (group -> relation names), a relation name, or an
edge type written `source--relation-->target`; several are joined with `+`. A relation comes
with its reverse (`rev_R` for R, R for `rev_R`), so dropping, keeping or shuffling a relation
never leaves its mirror image carrying the same information. A name that matches nothing is an
error, so a typo cannot silently run the full graph.

Shuffling (the first ablation of Passigan, Zhu and Ning; the second is the feature
randomisation) permutes the senders among an edge type's edges, which keeps every receiver's
in-degree and every sender's out-degree. An edge type stored in both directions under one name
(a symmetric relation such as gene--interacts-->gene) is rewired as undirected edges (a
configuration model over its endpoints, each node keeps its degree) and stored both ways
again; a reverse edge type is rebuilt as the mirror of its shuffled forward. Random partners may
repeat (multi-edges) or, within one node type, join a node to itself; the report counts both.
The permutations are seeded by the run's seed and the ablation's name.
"""

from __future__ import annotations

import zlib
from typing import Mapping, Sequence

import numpy as np

from perturbjax.graph.hetero import EdgeSet, EdgeType, HeteroGraph, NodeSet

KINDS = ("none", "drop", "keep", "shuffle", "randomize")
REVERSE_PREFIX = "rev_"


def parse_ablation(text: str) -> tuple[str, list[str]]:
    """`(kind, names)` of an ablation string (see the module docstring).

    Raises:
      ValueError: an unknown kind, or a kind without (or `none` with) a selection.
    """
    kind, sep, rest = str(text).partition(":")
    kind = kind.strip()
    names = [n.strip() for n in rest.split("+") if n.strip()]
    if kind not in KINDS:
        raise ValueError(f"graph.ablation is {text!r}; expected 'none' or KIND:SELECTION with "
                         f"KIND one of {KINDS[1:]}")
    if kind == "none":
        if sep:
            raise ValueError(f"graph.ablation is {text!r}; 'none' takes no selection")
        return kind, []
    if not names:
        raise ValueError(f"graph.ablation is {text!r}; expected {kind}:NAME (a group of "
                         f"graph.edge_groups, a relation or an edge type)")
    if kind == "randomize" and len(names) != 1:
        raise ValueError(f"graph.ablation is {text!r}; randomize takes one node type")
    return kind, names


def _mirror(relation: str) -> str:
    if relation.startswith(REVERSE_PREFIX):
        return relation[len(REVERSE_PREFIX):]
    return REVERSE_PREFIX + relation


def select_edge_types(graph: HeteroGraph, names: Sequence[str],
                      groups: Mapping[str, Sequence[str]]) -> set[EdgeType]:
    """The edge types that `names` select, each relation with its reverse.

    Raises:
      ValueError: a name that is neither a group, a relation nor an edge type of the graph, or a
        group whose relations are all missing from the graph.
    """
    selected: set[EdgeType] = set()
    relations = {k.relation for k in graph.edges}
    for name in names:
        if name in groups:
            members, where = list(groups[name]), f"graph.edge_groups.{name}"
        else:
            members, where = [name], "graph.ablation"
        matched = set()
        for m in members:
            hits = {k for k in graph.edges if str(k) == m or k.relation in (m, _mirror(m))}
            if not hits and where == "graph.ablation":
                raise ValueError(
                    f"graph.ablation names {m!r}, which is not a group of graph.edge_groups "
                    f"({sorted(groups)}), a relation ({sorted(relations)}) or an edge type")
            matched |= hits
        if not matched:
            raise ValueError(f"{where} lists {members}, none of which is a relation of the graph; "
                             f"relations are {sorted(relations)}")
        selected |= matched
    return selected


def apply_ablation(graph: HeteroGraph, text: str, groups: Mapping[str, Sequence[str]],
                   seed: int) -> tuple[HeteroGraph, dict, dict[str, np.ndarray]]:
    """The ablated graph, a report of what changed (JSON-friendly, for the run's summary), and
    for `randomize` the permutation applied (node type -> `order`, node i got node order[i]'s
    features), so what else describes those nodes (a drug's SMILES) can follow it.

    Raises:
      ValueError: a malformed ablation, a selection that matches nothing, `keep` of everything
        or nothing, or `randomize` of a type without input features.
    """
    kind, names = parse_ablation(text)
    report = {"name": str(text), "kind": kind, "selection": names}
    if kind == "none":
        return graph, report, {}
    rng = np.random.default_rng([int(seed), zlib.crc32(str(text).encode())])
    if kind == "randomize":
        return _randomize(graph, names[0], rng, report)
    selected = select_edge_types(graph, names, groups)
    report["edge_types"] = {str(k): graph.edges[k].count for k in sorted(selected)}
    if kind == "drop":
        return HeteroGraph(graph.nodes, {k: v for k, v in graph.edges.items()
                                         if k not in selected}), report, {}
    if kind == "keep":
        if len(selected) == len(graph.edges):
            raise ValueError(f"graph.ablation {text!r} keeps every edge type: it is the full graph")
        return HeteroGraph(graph.nodes, {k: v for k, v in graph.edges.items()
                                         if k in selected}), report, {}
    edges, multi, loops = dict(graph.edges), 0, 0
    for k in sorted(selected):
        mirror = EdgeType(k.target, _mirror(k.relation), k.source)
        if k.relation.startswith(REVERSE_PREFIX) and mirror in selected \
                and _mirrors(graph.edges[k], graph.edges[mirror]):
            continue  # rebuilt from its forward below
        es = _shuffled(graph.edges[k], k.source == k.target, rng)
        edges[k] = es
        if mirror in selected and mirror != k and _mirrors(graph.edges[k], graph.edges[mirror]):
            edges[mirror] = EdgeSet(es.receivers, es.senders)
        pairs = np.stack([es.senders, es.receivers], 1)
        multi += len(pairs) - len(np.unique(pairs, axis=0)) if len(pairs) else 0
        loops += int((es.senders == es.receivers).sum()) if k.source == k.target else 0
    report.update(repeated_edges=int(multi), self_loops=int(loops))
    return HeteroGraph(graph.nodes, edges), report, {}


def _mirrors(a: EdgeSet, b: EdgeSet) -> bool:
    """Whether edge set b holds exactly a's edges reversed."""
    if a.count != b.count:
        return False
    fa = np.lexsort((a.receivers, a.senders))
    fb = np.lexsort((b.senders, b.receivers))
    return bool(np.array_equal(a.senders[fa], b.receivers[fb])
                and np.array_equal(a.receivers[fa], b.senders[fb]))


def _shuffled(es: EdgeSet, same_type: bool, rng: np.random.Generator) -> EdgeSet:
    """Degree-preserving random partners (see the module docstring)."""
    s, t = np.asarray(es.senders, np.int64), np.asarray(es.receivers, np.int64)
    if same_type and es.count and _mirrors(es, es):
        # Stored both ways: rewire the undirected edges (one endpoint list, paired at random).
        # The (u, u) self-loops appear once in both directions; they stay as they are.
        once = s < t
        stubs = rng.permutation(np.concatenate([s[once], t[once]]))
        u, v = stubs[: once.sum()], stubs[once.sum():]
        loops = s == t
        return EdgeSet(np.concatenate([u, v, s[loops]]), np.concatenate([v, u, t[loops]]))
    return EdgeSet(s[rng.permutation(len(s))], t)


def _randomize(graph: HeteroGraph, node_type: str, rng: np.random.Generator,
               report: dict) -> tuple[HeteroGraph, dict, dict[str, np.ndarray]]:
    if node_type not in graph.nodes:
        raise ValueError(f"graph.ablation randomizes {node_type!r}, which is not a node type; "
                         f"types are {graph.node_types}")
    ns = graph.nodes[node_type]
    if not ns.features:
        raise ValueError(f"graph.ablation randomizes {node_type!r}, whose nodes carry no input "
                         f"features in this run's graph (see graph.drop_node_features)")
    order = rng.permutation(ns.count)
    nodes = {**graph.nodes, node_type: NodeSet(ns.names, {k: np.asarray(v)[order]
                                                          for k, v in ns.features.items()})}
    report.update(node_type=node_type, features=sorted(ns.features), nodes=int(ns.count))
    return HeteroGraph(nodes, graph.edges), report, {node_type: order}
