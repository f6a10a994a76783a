"""The relational SGC model: its kernel against dense matrices, the label trick, a real run."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from graphs import random_hetero_graph
from perturbjax import cli
from perturbjax.config import apply_overrides, load_config
from perturbjax.graph.hetero import EdgeType
from perturbjax.graph.schema import GraphSchema
from perturbjax.graph.topology import Topology
from perturbjax.models.kernel_ridge import HYPER_RATE, hyper
from perturbjax.models.relational_sgc import RelationalSGC, relation_groups
from perturbjax.training.loop import train_and_evaluate

EXPERIMENTS = os.path.join(os.path.dirname(__file__), "..", "experiments")
CONSENSUS = os.path.join(EXPERIMENTS, "hetionet_lincs_consensus.py")
CELL_LINES = os.path.join(EXPERIMENTS, "l1000_cell_lines.py")
DEMO = os.path.join(EXPERIMENTS, "demo.py")


def dense_kernel(model, topo, support, unlabelled=()):
    """The model's [N, S] kernel from explicit matrices: hop-h features of every node's
    indicator, standardised over the support (and the unlabelled drugs), weighted per
    (hop, node type), inner products."""
    population = np.r_[support, np.asarray(unlabelled, int)]
    n = topo.num_nodes
    w = np.exp(np.asarray(hyper(model.log_relation_weight), np.float64))[
        np.asarray(model.edge_group)][np.asarray(topo.edge_type)]
    a = np.zeros((n, n))
    np.add.at(a, (np.asarray(topo.receivers), np.asarray(topo.senders)), w)
    degree = 1.0 + 0.5 * (a.sum(1) + a.sum(0))
    p = (a + np.eye(n)) / np.sqrt(np.outer(degree, degree))
    types = np.asarray(topo.node_type)
    hop_mix = np.asarray(jax.nn.softmax(hyper(model.hop_logits)), np.float64)
    logits = np.asarray(hyper(model.type_logits), np.float64)
    features = np.eye(n)
    kernel = np.zeros((n, len(support)))
    for h in range(model.hops):
        features = p @ features                        # column a: P^h e_a
        on_population = features[:, population]
        mean, sd = on_population.mean(1), on_population.std(1)
        used = sd > RelationalSGC.MIN_SD
        z = np.where(used[:, None], (features - mean[:, None]) / np.where(used, sd, 1)[:, None], 0)
        count = np.bincount(types[used], minlength=logits.shape[1])
        share = np.where(count > 0, np.exp(logits[h]) * count, 0.0)
        share = share / share.sum() / np.maximum(count, 1)
        kernel += hop_mix[h] * z.T @ (share[types][:, None] * z[:, support])
    return kernel


@pytest.mark.parametrize("sparse", [True, False])
def test_kernel_matches_dense_matrices_and_is_kg_ridge_scaled_at_init(sparse):
    graph = random_hetero_graph(4, counts=(12, 15, 8), max_edges=40)
    graph = graph.with_reverse_edges()
    schema = GraphSchema.of(graph)
    topo = Topology.build(graph, schema, sparse=sparse).to_device()
    model = RelationalSGC(schema, hops=3)
    support = np.array([0, 2, 3, 5, 7, 8, 10, 11])  # nodes of type "a"
    k = np.asarray(model.graph_kernel(topo, jnp.asarray(support)))
    np.testing.assert_allclose(k, dense_kernel(model, topo, support), atol=2e-4)
    # kg_ridge's scale: hop kernels of unit mean diagonal over the support, averaged.
    np.testing.assert_allclose(np.mean(k[support, np.arange(len(support))]), 1.0, rtol=1e-4)
    # Statistics over the support and held-out drugs (their graph neighbourhoods only).
    unlabelled = np.array([1, 4, 9])
    k = np.asarray(model.graph_kernel(topo, jnp.asarray(support), jnp.asarray(unlabelled)))
    np.testing.assert_allclose(k, dense_kernel(model, topo, support, unlabelled), atol=2e-4)
    # Learned weights, as after training: still the dense matrices' kernel.
    rng = np.random.default_rng(0)
    for p in (model.log_relation_weight, model.hop_logits, model.type_logits):
        p[...] = jnp.asarray(rng.normal(size=p.shape) / HYPER_RATE, jnp.float32)
    k = np.asarray(model.graph_kernel(topo, jnp.asarray(support)))
    np.testing.assert_allclose(k, dense_kernel(model, topo, support), atol=2e-4)


def test_a_relation_and_its_reverse_share_one_weight():
    graph = random_hetero_graph(0).with_reverse_edges()
    group, names = relation_groups(GraphSchema.of(graph))
    schema = GraphSchema.of(graph)
    by_name = {}
    for key, g in zip(schema.edge_types, group):
        by_name.setdefault(key.relation.removeprefix("rev_"), set()).add(g)
    assert all(len(gs) == 1 for gs in by_name.values())
    assert len(names) == len(by_name) == 6


def test_the_target_kernel_is_target_ridges_standardised_indicators():
    graph = random_hetero_graph(6, counts=(12, 15, 8), max_edges=40).with_reverse_edges()
    schema = GraphSchema.of(graph)
    topo = Topology.build(graph, schema, sparse=True).to_device()
    model = RelationalSGC(schema, hops=2, targets=("a", "b"))  # drugs "a", targets "b"
    support = np.array([0, 1, 3, 4, 6, 8, 9, 11])
    k = np.asarray(model.target_kernel(topo, jnp.asarray(support)))
    # One-hop neighbours of type b: through x (a -> b) and rev_y (b -> a reversed).
    ab, ba = graph.edges[EdgeType("a", "x", "b")], graph.edges[EdgeType("b", "y", "a")]
    x = np.zeros((12, 15))
    np.add.at(x, (np.r_[ab.senders, ba.receivers], np.r_[ab.receivers, ba.senders]), 1.0)
    mean, sd = x[support].mean(0), x[support].std(0)
    z = np.where(sd > 0, (x - mean) / np.where(sd > 0, sd, 1.0), 0.0)
    dense = z @ z[support].T
    offset = graph.node_offsets()["a"]
    np.testing.assert_allclose(k[offset:offset + 12], dense / np.mean(np.diag(dense[support])),
                               atol=1e-4)
    # No c -> b edges (as after an ablation of the targets): the readout predicts the mean.
    empty = RelationalSGC(schema, hops=1, targets=("c", "b"))
    empty.target_logit[...] = jnp.float32(20.0 / HYPER_RATE)  # the target readout alone
    drugs = jnp.asarray(graph.node_offsets()["c"] + np.arange(8))
    y = np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32)
    nodes = {"features": jnp.zeros((topo.num_nodes, 4), jnp.float32)}
    pred = empty(topo, nodes, drugs, None, None, None,
                 support={"drug": drugs[:5], "signature": jnp.asarray(y)})
    c = RelationalSGC.INTERCEPT * 5
    np.testing.assert_allclose(pred, np.broadcast_to(y.mean(0) * c / (c + 1.0), (8, 3)), atol=1e-4)
    with pytest.raises(ValueError, match="one condition per drug"):
        RelationalSGC(schema, conditions=True, targets=("a", "b"))
    with pytest.raises(ValueError, match=r"node types \['gene'\] are not in the graph"):
        RelationalSGC(schema, targets=("a", "gene"))


@pytest.mark.parametrize("targets", [None, ("a", "b")])
def test_support_drugs_never_see_their_own_signature(targets):
    graph = random_hetero_graph(5, counts=(10, 12, 6), max_edges=40).with_reverse_edges()
    schema = GraphSchema.of(graph)
    topo = Topology.build(graph, schema, sparse=True).to_device()
    model = RelationalSGC(schema, hops=2, targets=targets)
    rng = np.random.default_rng(1)
    support = jnp.arange(8)
    rows = jnp.r_[jnp.arange(8), -1, -1].astype(jnp.int32)  # queries 0-7 are the support
    nodes = {"features": jnp.asarray(rng.random((topo.num_nodes, 5)) < 0.5, jnp.float32)}
    y = rng.normal(size=(8, 4)).astype(np.float32)

    def predict(signature):
        s = {"drug": support, "signature": jnp.asarray(signature)}
        return np.asarray(model(topo, nodes, jnp.arange(10), None, None, None, support=s,
                                support_row=rows))

    changed = y.copy()
    changed[3] += 10.0
    before, after = predict(y), predict(changed)
    np.testing.assert_allclose(before[3], after[3], atol=1e-4)  # support drug 3: left out
    assert np.abs(before[[0, 8, 9]] - after[[0, 8, 9]]).max() > 1e-3  # the others use it


def test_a_held_out_cell_line_is_predicted_without_its_conditions():
    """Several conditions per drug (the generated demo, cold-cell split): a training condition
    is predicted from the other cell lines only, so changing the signatures of one training
    line's conditions leaves that line's predictions alone and moves everything else's."""
    from flax import nnx

    from perturbjax.tasks.perturbation import PerturbationTask

    config = apply_overrides(load_config(f"{DEMO}:test"),
                             ["model.name=relational_sgc", "model.num_layers=2",
                              "data.split=cold_cell", "baselines=[]"])
    task = PerturbationTask(config)
    assert task.several_conditions_per_drug
    model = task.build_model(nnx.Rngs(0))
    train, validation = task.examples("train"), task.examples("validation")
    idx = np.r_[train, validation]
    batch = jax.tree.map(jnp.asarray, task.make_batch(idx, (0,)))
    before = np.asarray(task.forward(model, task.inputs, batch))
    line = task.data.cell[train] == task.data.cell[train[0]]
    support = task.inputs["support"]
    changed = {**task.inputs, "support": {**support, "signature":
                                          support["signature"].at[np.flatnonzero(line)].add(10.0)}}
    after = np.asarray(task.forward(model, changed, batch))
    np.testing.assert_allclose(before[:len(train)][line], after[:len(train)][line], atol=1e-4)
    assert np.abs(before[:len(train)][~line] - after[:len(train)][~line]).max() > 1e-3
    assert np.abs(before[len(train):] - after[len(train):]).max() > 1e-3
    assert set(model.report()["cell_kernel"]) == {"same_cell", "constant", "basal_similarity",
                                                  "sharpness"}


def test_a_cell_line_run_learns_its_cell_kernel(tmp_path, data_dir_unchanged):
    config = apply_overrides(load_config(f"{CELL_LINES}:test,model=relational_sgc"),
                             ["baselines=['zero']"])
    summary = train_and_evaluate(config, str(tmp_path / "run"), progress=False)
    assert summary["compilations"]["train_step"] == 1
    assert np.isfinite(summary["test"]["pearson_centered"])
    learned = summary["learned"]["cell_kernel"]
    assert abs(learned["sharpness"] - 4.0) > 1e-3  # trained off its start
    # kg_ridge's warm start fits one condition per drug: refused with a one-line error.
    with pytest.raises(ValueError, match="model.warm_start=kg_ridge"):
        train_and_evaluate(apply_overrides(config, ["model.warm_start=kg_ridge"]),
                           str(tmp_path / "warm"), progress=False)


@pytest.fixture(scope="module")
def sgc_run(tmp_path_factory):
    """A relational SGC run (the scaffold winner: with its target readout) on the small slice of
    the real consensus data."""
    config = load_config(f"{CONSENSUS}:test,model=relational_sgc,target_readout=True")
    apply_overrides(config, ["baselines=[]", "train.num_steps=4", "train.eval_every=2"])
    workdir = str(tmp_path_factory.mktemp("sgc") / "run")
    return train_and_evaluate(config, workdir, progress=False), workdir


def test_a_consensus_run_trains_the_relation_weights(sgc_run, data_dir_unchanged):
    summary, _ = sgc_run
    assert summary["compilations"]["train_step"] == 1
    assert np.isfinite(summary["test"]["pearson_centered"])
    # The summary names every relation group's learned weight, moved off its initial 1.
    weights = summary["learned"]["relation_weights"]
    assert "compound--binds--gene" in weights and len(weights) >= 2
    assert any(abs(w - 1.0) > 1e-3 for w in weights.values())
    # The target readout's mixture weight is learned too (it starts at 0.5).
    assert 0.0 < summary["learned"]["target_readout_weight"] < 1.0
    assert abs(summary["learned"]["target_readout_weight"] - 0.5) > 1e-4


def test_a_relational_sgc_run_explains_and_predicts_new_drugs(sgc_run, tmp_path):
    from perturbjax.explain.report import explain
    from perturbjax.predict import NewDrug, extend_graph, predict_drugs
    from perturbjax.training.restore import condition_function, load_run

    run = load_run(sgc_run[1])
    data, graph = run.task.data, run.task.graph
    i = int(run.task.split.test[0])
    d = int(data.drug[i])
    x = explain(run, str(graph.nodes[data.drug_type].names[d]), genes=3, paths=2, steps=4)
    shares = [r["ig_share"] for r in x["relations"]]
    assert abs(sum(shares) - 1) < 1e-6 and len(x["genes"]) == 3
    # A known drug through predict's path equals the model's own prediction; a new node with
    # the same molecule and targets is predicted like it.
    offsets = graph.node_offsets()
    known = predict_drugs(run, graph, np.array([offsets[data.drug_type] + d]),
                          np.arange(graph.num_nodes), 0, 1.0, 24.0)[0]
    f, _ = condition_function(run, i)
    np.testing.assert_allclose(known, np.asarray(f()), rtol=1e-4, atol=1e-4)
    genes = graph.nodes[data.gene_type].names
    targets = tuple(str(genes[t]) for k, es in graph.edges.items() if k.relation == "binds"
                    for s, t in zip(es.senders, es.receivers) if s == d)
    twin = NewDrug("twin", str(data.drug_smiles[d]), targets)
    extended, positions, old_id = extend_graph(run, [twin])
    new = predict_drugs(run, extended, positions, old_id, 0, 1.0, 24.0)[0]
    assert np.corrcoef(new, known)[0, 1] > 0.9


def test_relational_sgc_needs_the_full_graph(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--config", f"{CONSENSUS}:test,model=relational_sgc",
                  "--workdir", str(tmp_path / "w"), "--config.graph.mode=sampled"])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "graph.mode" in err[0] and "relational_sgc" in err[0], err


def test_a_warm_start_predicts_what_kg_ridge_predicts(data_dir_unchanged):
    import jax.numpy as jnp
    from flax import nnx

    from perturbjax.models.graph_ridge import GraphRidge
    from perturbjax.tasks.perturbation import PerturbationTask

    # Node fingerprints as wide as kg_ridge's (the test slice shrinks them); no target readout,
    # which kg_ridge does not have.
    config = apply_overrides(
        load_config(f"{CONSENSUS}:test,model=relational_sgc,target_readout=False"),
        ["baselines=[]", "data.consensus.morgan_bits=1024"])
    task = PerturbationTask(config)
    model = task.build_model(nnx.Rngs(0))
    task.warm_start(model)
    ridge = GraphRidge()
    ridge.fit(task.graph_data(), task.split.train, task.split.validation)
    for part in ("validation", "test"):
        idx = task.examples(part)
        batch = jax.tree.map(jnp.asarray, task.make_batch(idx, (0,)))
        ours = np.asarray(task.forward(model, task.inputs, batch))
        theirs = ridge.predict(task.graph_data(), idx)
        np.testing.assert_allclose(ours, theirs, rtol=2e-3, atol=2e-3 * np.abs(theirs).max())


def test_a_warm_start_takes_kg_ridges_choice():
    graph = random_hetero_graph(4).with_reverse_edges()
    model = RelationalSGC(GraphSchema.of(graph), hops=3)
    model.start_from({"hops": 2, "chemistry_weight": 0.25, "tanimoto_power": 8, "alpha": 0.01},
                     [1.0, 0.1, 0.01])
    hop_mix = np.asarray(jax.nn.softmax(hyper(model.hop_logits)))
    np.testing.assert_allclose(hop_mix[:2], [1 / 1.1, 0.1 / 1.1], atol=0.01)
    assert hop_mix[2] < 0.01
    scale = 0.75 * 0.55 + 0.25  # (1 - w) * mean of the first two hop scales + w
    np.testing.assert_allclose(jax.nn.sigmoid(hyper(model.chemistry_logit)), 0.25 / scale,
                               rtol=1e-5)
    np.testing.assert_allclose(jnp.exp(hyper(model.log_tanimoto_power)), 8.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.exp(hyper(model.log_penalty)), 0.01 / scale, rtol=1e-5)
    model.start_from({"hops": 1, "chemistry_weight": 0.0, "tanimoto_power": None, "alpha": 1.0},
                     [0.9, 0.1, 0.1])
    assert float(jax.nn.sigmoid(hyper(model.chemistry_logit))) < 0.01
