"""Explanations: edge scales through `propagate`, integrated gradients, the planted demo's
mechanism recovered as KG paths, kernel-ridge explanations and the `explain` command."""

import json
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from perturbjax import cli
from perturbjax.explain import attribution
from perturbjax.explain.report import explain
from perturbjax.graph.propagate import propagate
from perturbjax.graph.topology import Topology
from perturbjax.training.restore import condition_function, load_run
from tests.conftest import DEMO_EXPERIMENT
from tests.test_cli_errors import one_line_error

STEPS = 8


def test_edge_scale_multiplies_each_message_and_is_differentiable(graph):
    topo = Topology.build(graph, sparse=True).to_device()
    segment = Topology.build(graph, sparse=False).to_device()
    x = jax.random.normal(jax.random.key(0), (topo.num_nodes, 3))
    w = jax.random.uniform(jax.random.key(1), (topo.num_edges,))
    scale = jax.random.uniform(jax.random.key(2), (topo.num_edges,))
    for t in (topo, segment):
        plain = propagate(t, x, w)
        np.testing.assert_allclose(propagate(t.with_edge_scale(jnp.ones_like(w)), x, w), plain,
                                   rtol=1e-6)
        np.testing.assert_allclose(propagate(t.with_edge_scale(scale), x, w),
                                   propagate(t, x, w * scale), rtol=1e-5, atol=1e-6)
        g = jax.grad(lambda s: propagate(t.with_edge_scale(s), x, w).sum())(scale)
        np.testing.assert_allclose(g, jax.grad(lambda s: propagate(t, x, w * s).sum())(scale),
                                   rtol=1e-5, atol=1e-6)


# ---- the planted demo --------------------------------------------------------------------
def _truth(graph):
    """The generator's mechanism: drug -> targets, gene interactions, pathway membership."""
    off = graph.node_offsets()

    def edges(relation):
        es = graph.edges[next(k for k in graph.edges if k.relation == relation)]
        return es.senders, es.receivers

    targets = {}
    for relation in ("inhibits", "activates"):
        for s, t in zip(*edges(relation)):
            targets.setdefault(off["drug"] + int(s), set()).add(off["gene"] + int(t))
    inter = {(off["gene"] + int(a), off["gene"] + int(b)) for a, b in zip(*edges("interacts"))}
    member = {(off["gene"] + int(a), off["pathway"] + int(b))
              for a, b in zip(*edges("participates"))}
    return targets, inter, member


def _planted(nodes, truth) -> bool:
    """Whether a path is the planted mechanism: the drug's target, then the target itself, one
    or two interaction steps, or a shared pathway (demo.py's propagation kernel)."""
    targets, inter, member = truth
    chain = list(nodes[1:])
    if chain[0] not in targets.get(nodes[0], ()):
        return False
    if all((a, b) in inter for a, b in zip(chain[:-1], chain[1:])):
        return True
    return len(chain) == 3 and (chain[0], chain[1]) in member and (chain[2], chain[1]) in member


def _random_walks(graph, starts_and_lengths, rng, per_path=20):
    """Random walks (no node twice) from the same drugs with the same lengths, over every edge
    in either direction."""
    off = graph.node_offsets()
    s = np.concatenate([graph.edges[k].senders + off[k.source] for k in graph.edges])
    r = np.concatenate([graph.edges[k].receivers + off[k.target] for k in graph.edges])
    n = graph.num_nodes
    adj = sp.csr_matrix((np.ones(2 * len(s)), (np.r_[s, r], np.r_[r, s])), shape=(n, n))
    walks = []
    for start, length in starts_and_lengths:
        for _ in range(per_path):
            path = [start]
            while len(path) <= length:
                nxt = [v for v in adj.getrow(path[-1]).indices.tolist() if v not in path]
                if not nxt:
                    break
                path.append(int(rng.choice(nxt)))
            if len(path) == length + 1:
                walks.append(path)
    return walks


@pytest.fixture(scope="module")
def demo_run(demo_runs):
    return load_run(demo_runs[0, ""][1])


def test_integrated_gradients_add_up_to_the_prediction(demo_run):
    condition = int(demo_run.task.split.test[0])
    f, topo = condition_function(demo_run, condition)
    outputs = np.array([0, 7])
    ig = attribution.integrated_gradients(f.forward, f.args, topo.num_edges, outputs, steps=32)
    gap = np.asarray(f())[outputs] - np.asarray(f(jnp.zeros(topo.num_edges)))[outputs]
    np.testing.assert_allclose(ig.sum(1), gap, rtol=0.02, atol=1e-3)


def test_explanations_recover_the_planted_paths(demo_run):
    graph = demo_run.task.graph
    truth = _truth(graph)
    names = graph.nodes["drug"].names
    drugs = sorted(set(demo_run.task.data.drug[demo_run.task.split.test].tolist()))[:4]
    top1, top3, found = [], [], []
    for d in drugs:
        x = explain(demo_run, str(names[d]), genes=5, paths=3, steps=STEPS)
        assert x["part"] == "test"
        for entry in x["paths"]:
            for rank, path in enumerate(entry["paths"]):
                ok = _planted(path["node_ids"], truth)
                top3.append(ok)
                top1 += [ok] if rank == 0 else []
                found.append((path["node_ids"][0], len(path["node_ids"]) - 1))
    walks = _random_walks(graph, found, np.random.default_rng(0))
    baseline = np.mean([_planted(w, truth) for w in walks])
    print(f"planted paths: precision@1 {np.mean(top1):.2f} ({len(top1)} genes), precision@3 "
          f"{np.mean(top3):.2f} ({len(top3)} paths), random walks {baseline:.2f}")
    assert len(top1) >= 15
    assert np.mean(top1) >= 0.9, (np.mean(top1), baseline)
    assert np.mean(top3) >= 0.7 and np.mean(top3) > baseline + 0.25, (np.mean(top3), baseline)


def test_explain_command_writes_the_report(demo_runs, tmp_path, capsys):
    summary, workdir = demo_runs[0, ""]
    run = load_run(workdir)
    drug = str(run.task.graph.nodes["drug"].names[run.task.data.drug[run.task.split.test[0]]])
    out = tmp_path / "report"
    cli.main(["explain", "--workdir", workdir, "--drug", drug.lower(), "--genes", "3",
              "--paths", "2", "--steps", "4", "--out", str(out), "--no-progress"])
    for name in ("explanation.md", "explanation.json", "signature.png", "relations.png"):
        assert (out / name).stat().st_size > 0, name
    text = (out / "explanation.md").read_text()
    assert f"# Why hetero_gat predicts this signature for {drug}" in text
    assert "gene--interacts-->gene" in text
    assert "-[inhibits]->" in text or "-[activates]->" in text
    x = json.loads((out / "explanation.json").read_text())
    assert len(x["genes"]) == 3 and len(x["relations"]) == len(summary["graph"]["edges"])
    assert abs(sum(r["ig_share"] for r in x["relations"]) - 1) < 1e-6
    for g in x["genes"]:  # the chart's two bars on one scale: minus the training mean
        measured = run.task.data.signatures[x["condition"], g["readout_index"]]
        assert g["measured_effect"] == pytest.approx(
            measured - run.task.train_mean[g["readout_index"]], abs=1e-5)
    assert "| predicted − training mean | measured − training mean |" in text
    assert not os.path.exists(os.path.join(workdir, "explain"))  # --out elsewhere
    assert one_line_error(capsys, ["explain", "--workdir", workdir, "--drug", "NODRUG"]) \
        .startswith("perturbjax: error: drug 'NODRUG' is not a node")
    unfinished = tmp_path / "unfinished"  # its config, but no model
    unfinished.mkdir()
    shutil.copy(os.path.join(workdir, "config.json"), unfinished)
    line = one_line_error(capsys, ["explain", "--workdir", str(unfinished), "--drug", drug])
    assert "model.npz is missing" in line


def test_explain_needs_a_finished_run(tmp_path, capsys):
    line = one_line_error(capsys, ["explain", "--workdir", str(tmp_path), "--drug", "x"])
    assert "config.json is missing" in line and str(tmp_path) in line


@pytest.fixture(scope="module")
def ridge_workdir(tmp_path_factory):
    """A kg_ridge run of the small demo (closed form: seconds)."""
    workdir = tmp_path_factory.mktemp("ridge")
    cli.main(["train", "--config", f"{DEMO_EXPERIMENT}:test,model=kg_ridge", "--workdir",
              str(workdir), "--no-progress", "--config.baselines=[]"])
    return str(workdir)


def test_kernel_ridge_explanations_name_training_drugs_and_shared_targets(ridge_workdir):
    run = load_run(ridge_workdir)
    data = run.task.data
    d = int(data.drug[run.task.split.test[0]])
    x = explain(run, str(run.task.graph.nodes["drug"].names[d]), genes=5)
    assert "training_drugs" in x and "relations" not in x
    train_names = set(run.task.graph.nodes["drug"].names[data.drug[run.task.split.train]])
    assert {t["drug"] for t in x["training_drugs"]} <= train_names
    assert all(set(t["shared_targets"]) <= set(_targets(run, d)) for t in x["training_drugs"])


def _targets(run, d: int) -> list[str]:
    """Drug d's target genes' ids (edges of the data's target relations)."""
    graph, data = run.task.graph, run.task.data
    genes = graph.nodes[data.gene_type].names
    return [str(genes[t]) for k, es in graph.edges.items() if k.relation in data.target_relations
            for s, t in zip(es.senders, es.receivers) if s == d]


def test_kg_ridge_places_a_new_drug(ridge_workdir, tmp_path, capsys):
    import perturbjax as pj
    from perturbjax.predict import graph_ridge_signatures

    run = pj.load_run(ridge_workdir)
    trained = run.trained
    data, model = trained.task.data, trained.host_model
    test = trained.task.split.test
    # The kernel computed again over the run's own drugs gives the run's predictions.
    rows = np.searchsorted(model.drugs, data.drug[test])
    np.testing.assert_allclose(graph_ridge_signatures(trained, trained.host_data, model.drugs,
                                                      rows),
                               model.predict(trained.host_data, test), rtol=1e-3, atol=1e-3)
    d = int(data.drug[test[0]])
    smiles, targets = str(data.drug_smiles[d]), _targets(trained, d)
    twin = run.predict(smiles=smiles, targets=targets, name="twin")
    known = model.predict(trained.host_data, test[:1])[0]
    assert np.corrcoef(twin["twin"], known)[0, 1] > 0.99  # its node's one more neighbour aside
    out = tmp_path / "ridge.tsv"
    cli.main(["predict", "--workdir", ridge_workdir, "--smiles", smiles, "--targets",
              ",".join(targets), "--name", "twin", "--out", str(out)])
    assert "one signature per drug" in capsys.readouterr().out
    np.testing.assert_allclose(pd.read_csv(out, sep="\t")["twin"], twin["twin"], rtol=1e-4,
                               atol=1e-6)


def test_runs_that_cannot_place_a_drug_refuse_from_their_files(ridge_workdir, tmp_path):
    """Before JAX or any data are loaded: a subprocess shows what was imported."""
    workdir = tmp_path / "baseline"
    workdir.mkdir()
    with open(os.path.join(ridge_workdir, "config.json")) as f:
        config = json.load(f)
    config["model"]["name"] = "tanimoto_ridge"
    (workdir / "config.json").write_text(json.dumps(config))
    shutil.copy(os.path.join(ridge_workdir, "parts.json"), workdir)
    script = ("import sys\nfrom perturbjax.cli import main\ntry:\n    main(sys.argv[1:])\n"
              "except SystemExit as e:\n    print(e.code, 'jax' in sys.modules)\n")
    for argv in (["predict", "--workdir", str(workdir), "--smiles", "CCO", "--out", "x.tsv"],
                 ["repurpose", "--workdir", str(workdir), "--signature", "q.tsv", "--library",
                  "lib.smi"]):
        done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True,
                              text=True, cwd=os.path.join(os.path.dirname(__file__), ".."))
        assert done.stdout.split() == ["2", "False"], (done.stdout, done.stderr)
        assert re.fullmatch(r"perturbjax: error: \S+config\.json: model\.name is "
                            r"'tanimoto_ridge'.* needs a run of hetero_gat, .*kg_ridge\n",
                            done.stderr), done.stderr


# ---- prediction for new drugs and repurposing ---------------------------------------------
def test_a_new_drug_like_a_known_one_is_predicted_like_it(demo_run, tmp_path, capsys):
    from perturbjax.predict import NewDrug, extend_graph, predict_drugs

    data, graph = demo_run.task.data, demo_run.task.graph
    i = int(demo_run.task.split.test[0])
    d = int(data.drug[i])
    genes = graph.nodes["gene"].names
    targets = tuple(str(genes[t]) for k, es in graph.edges.items() if k.relation == "inhibits"
                    for s, t in zip(es.senders, es.receivers) if s == d)
    twin = NewDrug("twin", str(data.drug_smiles[d]), targets)
    extended, positions, old_id = extend_graph(demo_run, [twin])
    assert extended.nodes["drug"].count == graph.nodes["drug"].count + 1
    dose, time, cell = float(data.dose[i]), float(data.time[i]), int(data.cell[i])
    new = predict_drugs(demo_run, extended, positions, old_id, cell, dose, time)[0]
    off = graph.node_offsets()
    known = predict_drugs(demo_run, graph, np.array([off["drug"] + d]), np.arange(graph.num_nodes),
                          cell, dose, time)[0]
    f, _ = condition_function(demo_run, i)
    np.testing.assert_allclose(known, np.asarray(f()), rtol=1e-4, atol=1e-5)  # same model path
    assert np.corrcoef(new, known)[0, 1] > 0.95  # one more edge into its target, else the same
    out = tmp_path / "sig.tsv"
    cli.main(["predict", "--workdir", demo_run.workdir, "--smiles", twin.smiles, "--targets",
              ",".join(targets), "--name", "twin", "--out", str(out), "--cell",
              str(graph.nodes["cell_line"].names[cell]), "--dose", str(dose), "--time", str(time)])
    lines = out.read_text().splitlines()
    assert lines[0] == "entrez_id\tsymbol\ttwin" and len(lines) == 1 + len(data.readout)
    np.testing.assert_allclose([float(x.split("\t")[2]) for x in lines[1:]], new, rtol=1e-3,
                               atol=1e-4)
    library = tmp_path / "lib.tsv"
    library.write_text(f"name\tsmiles\ttargets\nA\t{twin.smiles}\t{targets[0]}\nB\tCCO\t\n")
    cli.main(["predict", "--workdir", demo_run.workdir, "--smiles-file", str(library), "--out",
              str(tmp_path / "lib_out.tsv")])
    assert (tmp_path / "lib_out.tsv").read_text().splitlines()[0] == "entrez_id\tsymbol\tA\tB"
    capsys.readouterr()
    assert "'C1CC' of 'new_drug' is not a valid molecule" in one_line_error(
        capsys, ["predict", "--workdir", demo_run.workdir, "--smiles", "C1CC", "--out", str(out)])
    assert "not gene nodes" in one_line_error(
        capsys, ["predict", "--workdir", demo_run.workdir, "--smiles", "CCO", "--targets", "X1",
                 "--out", str(out)])
    library.write_text("smiles\tname\nCCO\tok\nnot-a-molecule\tbad\n")
    assert "'not-a-molecule' of 'bad'" in one_line_error(
        capsys, ["predict", "--workdir", demo_run.workdir, "--smiles-file", str(library),
                 "--out", str(out)])


def test_repurposing_finds_the_planted_reverser(demo_run, tmp_path, capsys):
    """The query is a held-out drug's measured signature, negated: that drug reverses it."""
    from perturbjax.explain.report import node_names
    from perturbjax.predict import repurpose

    data, graph = demo_run.task.data, demo_run.task.graph
    names = node_names(demo_run)
    genes = graph.nodes["gene"].names[data.readout]
    ranks = []
    for i in [int(x) for x in demo_run.task.split.test[::40][:6]]:
        query = -(data.signatures[i] - demo_run.task.train_mean)
        rows, _ = repurpose(demo_run, query, names, k=12,
                            cell=str(graph.nodes["cell_line"].names[data.cell[i]]),
                            dose=float(data.dose[i]), time=float(data.time[i]))
        drug = str(names["drug"][data.drug[i]])
        ranks.append(next(r["rank"] for r in rows if r["drug"] == drug))
    print(f"planted reversers' ranks among {len(rows)} drugs: {ranks}")
    assert np.median(ranks) <= 3 and max(ranks) <= 20, ranks  # chance: about 200
    signature = tmp_path / "query.tsv"
    signature.write_text("gene\tvalue\n" + "".join(f"{g}\t{v}\n" for g, v in zip(genes, query)))
    library = tmp_path / "lib.smi"
    library.write_text("CCO ethanol\n")
    capsys.readouterr()
    cli.main(["repurpose", "--workdir", demo_run.workdir, "--signature", str(signature),
              "--library", str(library), "--out", str(tmp_path / "rep")])
    table = (tmp_path / "rep" / "repurposing.tsv").read_text().splitlines()
    assert table[0] == "rank\tdrug\tsource\tpart\tconnectivity" and len(table) == 1 + len(rows) + 1
    assert "ethanol\tlibrary\tnew" in "\n".join(table)
    assert (tmp_path / "rep" / "repurposing.png").read_bytes()[:4] == b"\x89PNG"
    assert "perturbjax: warning: 'ethanol' has no targets" in capsys.readouterr().err
    signature.write_text("gene\tvalue\nG0000\tbig\n")
    assert "value 'big' is not a number" in one_line_error(
        capsys, ["repurpose", "--workdir", demo_run.workdir, "--signature", str(signature)])
