"""From a loaded graph to what a graph model reads, in one function: `prepare_graph`.

    leakage guard -> dropped relations -> dropped node features -> ablation
        -> "full": the whole graph's topology   |   "sampled": a neighbour sampler

Each step reads the run's `config.graph` section (perturbjax/tasks/perturbation_config.py says
what each key means).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import ml_collections
import numpy as np

from perturbjax.data import leakage
from perturbjax.graph.ablation import apply_ablation
from perturbjax.graph.hetero import HeteroGraph
from perturbjax.graph.padding import PaddingBudget, flat_nodes
from perturbjax.graph.sampling import NeighbourSampler, parse_fanouts
from perturbjax.graph.schema import GraphSchema
from perturbjax.graph.topology import Topology

GRAPH_MODES = ("full", "sampled")


@dataclasses.dataclass(frozen=True)
class PreparedGraph:
    """A run's graph at every stage it needs, and what each stage did.

    Attributes:
      guarded: the leakage-guarded graph (what the baselines read: never ablated).
      graph: guarded, relations and node features dropped, ablated: what graph models read.
      schema: `graph`'s schema (the models are built from it).
      leakage: the guard's report (`perturbjax.data.leakage.guard`).
      ablation: the ablation's report (`perturbjax.graph.ablation.apply_ablation`).
      permuted: node type -> the permutation `randomize` applied to its features.
      budget: the padding budget every step's graph has.
      topology: "full" mode: the whole graph's topology with the sparse index, on device.
      features: "full" mode: every node's input features `[N, F_max]` (flat numbering).
      sampler: "sampled" mode: the neighbour sampler, whose budget is frozen.
    """

    guarded: HeteroGraph
    graph: HeteroGraph
    schema: GraphSchema
    leakage: dict
    ablation: dict
    permuted: Mapping[str, np.ndarray]
    budget: PaddingBudget
    topology: Topology | None = None
    features: np.ndarray | None = None
    sampler: NeighbourSampler | None = None


def prepare_graph(graph: HeteroGraph, g: ml_collections.ConfigDict, *, seed: int,
                  max_seeds: Mapping[str, int] | None = None,
                  calibration_seeds: Sequence[np.ndarray] = ()) -> PreparedGraph:
    """Guards, ablates and lays out `graph` as `g` (a run's `config.graph`) says.

    Args:
      graph: the loaded graph.
      g: the `graph` config section (keep_leaky_edges, drop_relations, drop_node_features,
        ablation, edge_groups, mode, sampling, padding_multiple).
      seed: the run's seed (shuffle and randomize ablations draw from it).
      max_seeds: "sampled" mode: node type -> most seeds of that type in one batch.
      calibration_seeds: "sampled" mode: seed sets of representative batches (flat node
        numbering) that a "calibrated" budget is sized from.

    Returns:
      The prepared graph; `topology` and `features` in "full" mode, `sampler` in "sampled".

    Raises:
      ValueError: a malformed ablation or sampling setting, or an unknown mode.
    """
    guarded, leakage_report = leakage.guard(graph, keep_leaky=g.keep_leaky_edges)
    ablated = guarded.drop_edge_types(g.drop_relations)
    ablated = ablated.without_features(g.drop_node_features)
    ablated, ablation, permuted = apply_ablation(ablated, g.ablation, g.edge_groups.to_dict(),
                                                 seed)
    schema = GraphSchema.of(ablated)
    stages = dict(guarded=guarded, graph=ablated, schema=schema, leakage=leakage_report,
                  ablation=ablation, permuted=permuted)
    if g.mode == "sampled":
        s = g.sampling
        fanouts = parse_fanouts(s.fanouts, s.relation_fanouts,
                                [k.relation for k in ablated.edge_types])
        sampler = NeighbourSampler(ablated, schema, fanouts, max_seeds or {},
                                   padding_multiple=g.padding_multiple, budget=s.budget,
                                   calibration_seeds=list(calibration_seeds))
        return PreparedGraph(**stages, budget=sampler.budget, sampler=sampler)
    if g.mode == "full":
        # The whole graph, exactly (no padding), with the sparse backend's index.
        features, _ = flat_nodes(ablated, schema)
        return PreparedGraph(
            **stages, budget=PaddingBudget(n_node=ablated.num_nodes, n_edge=ablated.num_edges,
                                           n_graph=1),
            topology=Topology.build(ablated, schema, sparse=True).to_device(), features=features)
    raise ValueError(f"graph.mode is {g.mode!r}; expected one of {GRAPH_MODES}")
