"""k-hop neighbour sampling (perturbjax/graph/sampling.py) and the sampled-subgraph train mode."""

import dataclasses
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from perturbjax.config import apply_overrides, load_config
from perturbjax.graph.hetero import EdgeSet, EdgeType, HeteroGraph, NodeSet
from perturbjax.graph.padding import flat_nodes
from perturbjax.graph.schema import GraphSchema
from perturbjax.graph.topology import Topology, host_sources
from perturbjax.graph.sampling import NeighbourSampler, parse_fanouts
from perturbjax.models.perturbation import KGEncoder
from perturbjax.models.registry import layer_factory
from perturbjax.tasks import make_task
from perturbjax.training.batching import train_batches
from perturbjax.training.loop import train_and_evaluate

DEMO = "experiments/demo.py:test"


def random_graph(seed=0) -> HeteroGraph:
    """Three node types, four relations, skewed degrees (some nodes with many in-edges)."""
    rng = np.random.default_rng(seed)
    sizes = {"a": 40, "b": 25, "c": 12}
    nodes = {t: NodeSet(np.array([f"{t}{i}" for i in range(n)]),
                        {"x": rng.normal(size=(n, 3 + len(t))).astype(np.float32)})
             for t, n in sizes.items()}
    edges = {}
    for source, relation, target, count in (("a", "r1", "a", 200), ("b", "r2", "a", 120),
                                            ("a", "r3", "b", 150), ("c", "r4", "b", 60)):
        weights = rng.pareto(1.5, sizes[target]) + 0.1
        pairs = np.unique(np.stack([rng.integers(0, sizes[source], count),
                                    rng.choice(sizes[target], count, p=weights / weights.sum())],
                                   1), axis=0)
        edges[EdgeType(source, relation, target)] = EdgeSet(pairs[:, 0], pairs[:, 1])
    return HeteroGraph(nodes, edges)


def full_edges(graph, schema) -> set:
    offsets = graph.node_offsets()
    return {(int(s) + offsets[k.source], int(r) + offsets[k.target], i)
            for i, k in enumerate(schema.edge_types)
            for s, r in zip(graph.edges[k].senders, graph.edges[k].receivers)}


def make_sampler(graph, fanouts=(3, 2), overrides=(), max_seeds=None, **kwargs):
    schema = GraphSchema.of(graph)
    hops = parse_fanouts(list(fanouts), list(overrides), [k.relation for k in schema.edge_types])
    return NeighbourSampler(graph, schema, hops, max_seeds or {"a": 6, "c": 3},
                            padding_multiple=8, **kwargs), schema


def test_sampled_edges_are_graph_edges_within_fanouts_hop_by_hop():
    graph = random_graph()
    sampler, schema = make_sampler(graph, fanouts=(3, 2), overrides=["r4=1,0"])
    edges, offsets = full_edges(graph, schema), graph.node_offsets()
    indeg = {}
    for s, r, t in edges:
        indeg[(r, t)] = indeg.get((r, t), 0) + 1
    seeds = np.array([5, 5, 17, offsets["c"] + 2])  # a repeat, and a node of another type
    sub = sampler.sample(seeds, np.random.default_rng(0))
    # Seeds map back to their nodes; each type's nodes fill its block in the order reached
    # (seeds first), and no node appears twice.
    assert sub.nodes[sub.seeds].tolist() == seeds.tolist()
    real = sub.nodes[sub.nodes >= 0]
    assert len(np.unique(real)) == len(real) == sub.num_nodes
    a_block, c_block = sampler.layout.node_blocks[0], sampler.layout.node_blocks[2]
    assert sub.nodes[a_block[0]:a_block[0] + 2].tolist() == [5, 17]
    assert sub.nodes[c_block[0]] == offsets["c"] + 2
    for t, (lo, hi) in enumerate(sampler.layout.node_blocks):
        block = sub.nodes[lo:hi]
        assert (sampler.node_type[block[block >= 0]] == t).all()
        assert (np.diff((block < 0).astype(int)) >= 0).all()  # padding only at the block's end
    triples = list(zip(sub.nodes[sub.senders].tolist(), sub.nodes[sub.receivers].tolist(),
                       sub.edge_type.tolist()))
    assert set(triples) <= edges and len(set(triples)) == len(triples)
    # Hop 1 expands the seeds (fan-out 3, r4 1); hop 2 the new nodes (fan-out 2, r4 0).
    hop1_nodes = {5, 17, offsets["c"] + 2}
    per_receiver = {}
    for s, r, t in triples:
        per_receiver[(r, t)] = per_receiver.get((r, t), 0) + 1
    r4 = schema.edge_types.index(EdgeType("c", "r4", "b"))
    for (r, t), n in per_receiver.items():
        fan = (3 if t != r4 else 1) if r in hop1_nodes else (2 if t != r4 else 0)
        assert 1 <= n <= fan
        if indeg[(r, t)] <= fan:  # all of a node's edges when it has no more than the fan-out
            assert n == indeg[(r, t)]
    expanded = {r for _, r, _ in triples}
    assert expanded - hop1_nodes, "hop 2 sampled nothing"
    # Every hop-2 receiver was reached in hop 1: it is the sender of an edge into a seed.
    hop1_senders = {s for s, r, _ in triples if r in hop1_nodes}
    assert expanded - hop1_nodes <= hop1_senders


def test_same_rng_same_subgraph_and_scratch_state_is_clean():
    graph = random_graph()
    sampler, _ = make_sampler(graph)
    seeds = np.array([1, 2, 3])
    a = sampler.sample(seeds, np.random.default_rng(7))
    sampler.sample(np.array([30, 4]), np.random.default_rng(1))
    b = sampler.sample(seeds, np.random.default_rng(7))
    for field in ("nodes", "seeds", "senders", "receivers", "edge_type"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert (sampler._local == -1).all() and not sampler._reached.any()
    # Edges come sorted by (relation, receiver, sender): the layout's blocks rely on it.
    key = list(zip(b.edge_type.tolist(), b.receivers.tolist(), b.senders.tolist()))
    assert key == sorted(key)


def test_bound_budget_holds_every_sample_and_padding_is_masked():
    graph = random_graph(1)
    sampler, _ = make_sampler(graph, fanouts=(4, 3), max_seeds={"a": 8, "b": 4}, budget="bound")
    offsets, rng = graph.node_offsets(), np.random.default_rng(0)
    most_nodes = most_edges = 0
    for _ in range(200):
        seeds = np.concatenate([rng.choice(40, 8), offsets["b"] + rng.choice(25, 4)])
        sub = sampler.sample(seeds, rng)
        gt = sampler.padded(sub)  # raises if the subgraph exceeds the budget
        n, e = sub.num_nodes, len(sub.senders)
        most_nodes, most_edges = max(most_nodes, n), max(most_edges, e)
        assert gt.nodes["mask"].sum() == n and gt.edges["mask"].sum() == e
        real = gt.nodes["mask"]
        np.testing.assert_array_equal(gt.nodes["features"][real], sampler.features[sub.nodes[real]])
        np.testing.assert_array_equal(gt.nodes["id"][real], sub.nodes[real])
        # Every edge lies in its relation's block, between nodes of the relation's types, with
        # receivers ascending (padding edges at the block's end join its last slots).
        topo = Topology.from_graphs_tuple(gt, sampler.layout)
        for r, blk in enumerate(sampler.layout.relations):
            sl = slice(blk.edge_start, blk.edge_stop)
            assert (gt.edges["edge_type"][sl] == r).all()
            assert (np.diff(gt.receivers[sl]) >= 0).all()
            assert (gt.nodes["node_type"][gt.senders[sl]] == blk.source_type).all()
            assert (gt.nodes["node_type"][gt.receivers[sl]] == blk.target_type).all()
        assert (np.diff(np.asarray(topo.group)) >= 0).all()
        # Relation-source space, compacted in the step: each real edge's row holds its sender,
        # within its relation's rows, and a relation's rows hold distinct nodes.
        index, rows = np.asarray(topo.sources.index), np.asarray(topo.src_index)
        edge_mask = gt.edges["mask"]
        np.testing.assert_array_equal(index[rows[edge_mask]], gt.senders[edge_mask])
        off = sampler.layout.active_offsets
        for r in range(len(sampler.layout.relations)):
            mine = rows[gt.edges["edge_type"] == r]
            assert ((mine >= off[r]) & (mine < off[r + 1])).all()
            used = np.unique(mine)
            assert len(np.unique(index[used])) == len(used)
    assert sampler.trimmed == {"subgraphs": 0, "nodes": 0, "edges": 0}
    assert most_nodes <= sampler.budget.n_node and most_edges <= sampler.budget.n_edge
    # The bound is not vacuous: no larger than the whole graph (each relation rounded up to the
    # multiple).
    assert sampler.budget.n_edge <= sum(-(-es.count // 8) * 8 for es in graph.edges.values())


def test_calibrated_budget_fits_fresh_batches_with_little_padding():
    """Calibrated on 16 batches, 100 fresh ones are never trimmed, and no block holds more than
    about a fifth of padding over the largest fresh subgraph (1.25 times the largest seen left
    about 28% at PrimeKG size)."""
    rng = np.random.default_rng(0)
    sizes = {"a": 3000, "b": 2000}
    nodes = {t: NodeSet(np.array([f"{t}{i}" for i in range(n)]), {}) for t, n in sizes.items()}
    edges = {}
    for source, relation, target, count in (("a", "r1", "a", 30000), ("b", "r2", "a", 20000),
                                            ("a", "r3", "b", 25000)):
        pairs = np.unique(np.stack([rng.integers(0, sizes[source], count),
                                    rng.integers(0, sizes[target], count)], 1), axis=0)
        edges[EdgeType(source, relation, target)] = EdgeSet(pairs[:, 0], pairs[:, 1])
    graph = HeteroGraph(nodes, edges)
    offsets = graph.node_offsets()

    def draw():
        return np.concatenate([rng.choice(3000, 64, replace=False),
                               offsets["b"] + rng.choice(2000, 32, replace=False)])

    sampler, _ = make_sampler(graph, fanouts=(4, 3), max_seeds={"a": 64, "b": 32},
                              calibration_seeds=[draw() for _ in range(16)])
    largest_nodes, largest_edges = np.zeros(2), np.zeros(3)
    for b in range(100):
        sub = sampler.sample(draw(), np.random.default_rng(b))
        real = sub.nodes[sub.nodes >= 0]
        largest_nodes = np.maximum(largest_nodes, np.bincount(sampler.node_type[real],
                                                              minlength=2))
        largest_edges = np.maximum(largest_edges, np.bincount(sub.edge_type, minlength=3))
    assert sampler.trimmed["subgraphs"] == 0
    node_blocks = np.array([b - a for a, b in sampler.layout.node_blocks])
    edge_blocks = np.array([r.edge_stop - r.edge_start for r in sampler.layout.relations])
    assert (node_blocks <= 1.2 * largest_nodes + 24).all(), (node_blocks, largest_nodes)
    assert (edge_blocks <= 1.2 * largest_edges + 24).all(), (edge_blocks, largest_edges)


def test_calibrated_budget_is_tighter_and_an_overflow_is_trimmed_to_fit_and_logged(caplog):
    graph = random_graph(1)
    offsets, rng = graph.node_offsets(), np.random.default_rng(0)

    def draw():
        return np.concatenate([rng.choice(40, 8), offsets["b"] + rng.choice(25, 4)])

    bound, _ = make_sampler(graph, fanouts=(4, 3), max_seeds={"a": 8, "b": 4}, budget="bound")
    calibrated, _ = make_sampler(graph, fanouts=(4, 3), max_seeds={"a": 8, "b": 4},
                                 calibration_seeds=[draw() for _ in range(16)])
    assert calibrated.budget.n_edge < bound.budget.n_edge
    # Calibrated on one seed's subgraph, a batch of twelve seeds overflows and is trimmed.
    small, schema = make_sampler(graph, fanouts=(4, 3), max_seeds={"a": 8, "b": 4},
                                 calibration_seeds=[np.array([0])])
    seeds = draw()
    whole = bound.sample(seeds, np.random.default_rng(3))
    with caplog.at_level(logging.WARNING, logger="perturbjax.graph.sampling"):
        sub = small.sample(seeds, np.random.default_rng(3))
        small.sample(seeds, np.random.default_rng(4))
    assert sum("trimmed" in r.message for r in caplog.records) == 1  # logged once
    assert small.trimmed["subgraphs"] == 2 and small.trimmed["edges"] > 0
    assert sub.num_nodes < whole.num_nodes and len(sub.senders) < len(whole.senders)
    gt = small.padded(sub)  # fits its blocks (raises otherwise)
    assert sub.nodes[sub.seeds].tolist() == seeds.tolist()  # every seed stays
    # ... and each relation's senders fit its source rows: compacted in the step, every real
    # edge's row holds its sender.
    for r in range(len(small.layout.relations)):
        assert len(np.unique(sub.senders[sub.edge_type == r])) <= small.layout.active_sources[r]
    topo = Topology.from_graphs_tuple(jax.tree.map(jnp.asarray, gt), small.layout)
    index, rows = np.asarray(topo.sources.index), np.asarray(topo.src_index)
    np.testing.assert_array_equal(index[rows[gt.edges["mask"]]], gt.senders[gt.edges["mask"]])
    triples = set(zip(sub.nodes[sub.senders].tolist(), sub.nodes[sub.receivers].tolist(),
                      sub.edge_type.tolist()))
    assert triples <= full_edges(graph, schema)
    # A type keeps its earliest-reached nodes: the trimmed subgraph's nodes were all reached by
    # the untrimmed one (same seeds, same draws up to the trim).
    assert set(sub.nodes[sub.nodes >= 0].tolist()) <= set(whole.nodes[whole.nodes >= 0].tolist())


def test_unknown_budget_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="graph.sampling.budget"):
        make_sampler(random_graph(), budget="tight")


@pytest.mark.parametrize("layer", ["rgcn", "hetero_gat"])
def test_with_every_edge_sampled_seed_outputs_equal_the_full_graph(layer):
    """k hops with fan-outs above every degree hold each seed's whole k-layer receptive field."""
    graph = random_graph(2)
    sampler, schema = make_sampler(graph, fanouts=(1000, 1000))
    # With a learned vector per "a" node, indexed by the node ids both layouts carry.
    encoder = KGEncoder(schema, layer=layer_factory(layer, {"heads": 2}), hidden=16,
                        num_layers=2, dropout=0.0, rngs=nnx.Rngs(0), embedded_types=("a",),
                        num_nodes=graph.num_nodes)
    features, _ = flat_nodes(graph, schema)
    full = encoder(Topology.build(graph, schema).to_device(),
                   {"features": jnp.asarray(features), "id": jnp.arange(graph.num_nodes)})
    seeds = np.array([3, 44, 70, 3])
    sub = sampler.sample(seeds, np.random.default_rng(0))
    assert sub.num_nodes < graph.num_nodes  # a proper subgraph, not the whole graph
    assert sampler.trimmed["subgraphs"] == 0
    padded = sampler.padded(sub)
    gt = jax.tree.map(jnp.asarray, padded)
    # Both backends: segment ops on the device arrays, and the sparse index the task builds on
    # the host for every sampled batch.
    for topology in (Topology.from_graphs_tuple(gt, sampler.layout),
                     Topology.from_graphs_tuple(padded, sampler.layout, sparse=True).to_device()):
        local = encoder(topology, gt.nodes)
        np.testing.assert_allclose(np.asarray(local)[sub.seeds], np.asarray(full)[seeds],
                                   rtol=1e-4, atol=1e-5)


def test_host_sources_give_each_relation_its_distinct_senders():
    graph = random_graph(3)
    sampler, _ = make_sampler(graph)
    sub = sampler.sample(np.array([1, 5, 9, 44, 70]), np.random.default_rng(1))
    padded, layout = sampler.padded(sub), sampler.layout
    index, row = host_sources(layout, padded.senders, padded.edges["edge_type"])
    np.testing.assert_array_equal(index[row], padded.senders)  # every edge finds its sender
    off = np.asarray(layout.active_offsets)
    rel = padded.edges["edge_type"]
    assert ((row >= off[rel]) & (row < off[rel + 1])).all()  # within its relation's rows
    for r in range(len(layout.relations)):  # one row per distinct sender, none twice
        mine = row[rel == r]
        assert len(np.unique(mine)) == len(np.unique(padded.senders[rel == r]))
    small = dataclasses.replace(layout, active_sources=(1,) * len(layout.relations))
    with pytest.raises(ValueError, match="distinct senders, above its budget"):
        host_sources(small, padded.senders, padded.edges["edge_type"])


def test_padding_multiple_must_be_positive():
    graph = random_graph()
    schema = GraphSchema.of(graph)
    hops = parse_fanouts([2], [], [k.relation for k in schema.edge_types])
    with pytest.raises(ValueError, match="graph.padding_multiple must be a positive integer"):
        NeighbourSampler(graph, schema, hops, {"a": 2}, padding_multiple=0)


def test_parse_fanouts_errors_name_the_problem():
    relations = ["r1", "r2"]
    assert parse_fanouts([3, 1], ["r2=0,5"], relations) == [{"r1": 3, "r2": 0}, {"r1": 1, "r2": 5}]
    with pytest.raises(ValueError, match="at least one hop"):
        parse_fanouts([], [], relations)
    with pytest.raises(ValueError, match="'relation=f1,...,f2'"):
        parse_fanouts([3, 1], ["r2=4"], relations)
    with pytest.raises(ValueError, match="'rx', which is not a relation"):
        parse_fanouts([3, 1], ["rx=1,1"], relations)
    with pytest.raises(ValueError, match=">= 0"):
        parse_fanouts([-1], [], relations)


def sampled_config(*extra):
    return apply_overrides(load_config(DEMO), ["graph.mode=sampled", "graph.sampling.fanouts=[4,2]",
                                               "baselines=[]", *extra])


def test_sampled_mode_trains_with_one_compilation_and_reproducible_evaluation(tmp_path):
    config = sampled_config("train.num_steps=30", "train.eval_every=10", "train.log_every=10",
                            "train.checkpoint.every=0")
    summary = train_and_evaluate(config, str(tmp_path / "a"), progress=False)
    assert summary["compilations"] == {"train_step": 1, "predict_step": 1}
    budget, full = summary["padding_budget"], summary["graph"]
    assert budget["n_edge"] < sum(full["edges"].values())  # the steps ran on subgraphs
    assert summary["sampling_trimmed"]["subgraphs"] == 0  # counted over the run's batches
    losses = [r["loss"] for r in map(json.loads, open(tmp_path / "a" / "metrics.jsonl"))
              if r["split"] == "train"]
    assert losses[-1] < losses[0]
    again = train_and_evaluate(config, str(tmp_path / "b"), progress=False)
    assert again["test"] == summary["test"]  # batches and subgraphs are functions of the seed


def test_sampled_batch_positions_point_at_the_conditions_nodes():
    task = make_task(sampled_config())
    batch = next(train_batches(task, 0))
    graph = batch["graph"]
    drug_type = task.schema.node_types.index(task.data.drug_type)
    gene_type = task.schema.node_types.index(task.data.gene_type)
    assert (graph.nodes["node_type"][batch["drug"]] == drug_type).all()
    assert (graph.nodes["node_type"][batch["readout"]] == gene_type).all()
    assert len(batch["readout"]) == len(task.data.readout)
    assert task.inputs == {}
    # Sampled subgraphs carry each node's full-graph id, which learned node vectors index.
    np.testing.assert_array_equal(graph.nodes["id"][batch["readout"]], task._readout_pos)
    with pytest.raises(ValueError, match="graph.mode is 'partial'"):
        make_task(sampled_config("graph.mode=partial"))


def test_sampled_mode_data_parallel_gives_each_device_its_own_subgraph(tmp_path):
    """2 forced CPU devices (a subprocess: XLA_FLAGS must be set before JAX starts)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(
        "import json, sys, jax, numpy as np\n"
        "from perturbjax.config import apply_overrides, load_config\n"
        "from perturbjax.tasks import make_task\n"
        "from perturbjax.training.loop import train_and_evaluate\n"
        "from perturbjax.training.parallel import Shares\n"
        "from perturbjax.training.batching import train_batches\n"
        "assert jax.device_count() == 2\n"
        f"config = apply_overrides(load_config({DEMO!r}), ['graph.mode=sampled', 'baselines=[]',"
        " 'train.data_parallel=True'])\n"
        "task = make_task(config)\n"
        "batch = next(train_batches(task, 0, shares=Shares(2, (0, 1))))\n"
        "masks = batch['graph'].nodes['mask']\n"
        "assert masks.shape == (2, task.budget.n_node) and batch['readout'].shape[0] == 2\n"
        "assert (batch['graph'].senders[0] != batch['graph'].senders[1]).any()\n"
        "summary = train_and_evaluate(config, sys.argv[1], progress=False)\n"
        "print('RESULT', json.dumps([summary['compilations'], summary['test']['pearson_centered']]))\n")
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    compilations, score = json.loads(line[len("RESULT "):])
    assert compilations == {"train_step": 1, "predict_step": 1} and np.isfinite(score)
