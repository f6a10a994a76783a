"""`prepare_graph`: leakage guard -> dropped relations and features -> ablation -> topology or
sampler, each stage checked on one small graph with an L1000-derived edge type."""

import numpy as np
import pytest

from conftest import small_graph
from perturbjax.graph.hetero import EdgeSet, EdgeType, HeteroGraph
from perturbjax.graph.prepare import prepare_graph
from perturbjax.tasks.perturbation_config import base_config

UPREGULATES = EdgeType("compound", "upregulates", "gene")


def leaky_graph() -> HeteroGraph:
    """small_graph with its drugs called compounds and an L1000-derived upregulates relation."""
    g = small_graph()
    nodes = {("compound" if t == "drug" else t): ns for t, ns in g.nodes.items()}
    edges = {EdgeType("compound" if k.source == "drug" else k.source, k.relation, k.target): es
             for k, es in g.edges.items()}
    edges[UPREGULATES] = EdgeSet(np.array([0, 1]), np.array([4, 5]))
    return HeteroGraph(nodes, edges)


def graph_config(**overrides):
    g = base_config().graph
    g.update(overrides)
    return g


def test_each_stage_in_order_and_a_full_graph_topology():
    g = graph_config(drop_relations=["interacts"], drop_node_features=["gene"],
                     ablation="drop:contains")
    p = prepare_graph(leaky_graph(), g, seed=0)
    assert UPREGULATES not in p.guarded.edges and p.leakage["dropped"] == [str(UPREGULATES)]
    assert {k.relation for k in p.guarded.edges} == {"targets", "interacts", "participates",
                                                     "contains"}  # baselines' graph: unablated
    assert {k.relation for k in p.graph.edges} == {"targets", "participates"}
    assert p.graph.nodes["gene"].feature_width == 0 and p.ablation["kind"] == "drop"
    assert p.schema.edge_types == tuple(p.graph.edge_types)
    assert p.sampler is None and p.topology.num_edges == p.graph.num_edges == 7
    assert p.features.shape == (p.graph.num_nodes, 5)  # the compounds' fingerprint width
    assert (p.budget.n_node, p.budget.n_edge) == (p.graph.num_nodes, 7)


def test_leaky_edges_kept_on_request():
    p = prepare_graph(leaky_graph(), graph_config(keep_leaky_edges=True), seed=0)
    assert UPREGULATES in p.graph.edges and p.leakage["leaky"]


def test_sampled_mode_gives_a_sampler_with_a_frozen_budget():
    g = graph_config(mode="sampled")
    g.sampling.budget = "bound"
    p = prepare_graph(leaky_graph(), g, seed=0, max_seeds={"compound": 2, "gene": 3})
    assert p.topology is None and p.features is None
    assert p.budget is p.sampler.budget
    sub = p.sampler.sample(np.array([0, 1, 3, 4, 5]), np.random.default_rng(0))
    assert sub.num_nodes >= 5


def test_an_unknown_mode_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="graph.mode"):
        prepare_graph(leaky_graph(), graph_config(mode="tiled"), seed=0)
