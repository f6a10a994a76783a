"""The cell-graph task and its models: shared-topology batching, runs, resume, baselines."""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from perturbjax.cli import main
from perturbjax.config import apply_overrides, load_config
from perturbjax.graph.hetero import EdgeSet, EdgeType, HeteroGraph, NodeSet
from perturbjax.graph.topology import Topology
from perturbjax.models.cells import CELL_LAYERS, READOUTS, CellGraphClassifier
from perturbjax.tasks.cells import disjoint_copies
from perturbjax.training import loop
from perturbjax.training.loop import train_and_evaluate
from tosg_data import tree_digest, write_dataset

EXPERIMENT = os.path.join(os.path.dirname(__file__), "..", "experiments", "tosg_celltype.py")


def _graph(n=12, e=30, seed=0):
    rng = np.random.default_rng(seed)
    return HeteroGraph({"node": NodeSet(np.arange(n).astype(str))},
                       {EdgeType("node", "interacts", "node"):
                        EdgeSet(rng.integers(0, n, e), rng.integers(0, n, e))})


@pytest.mark.parametrize("layer", CELL_LAYERS)
@pytest.mark.parametrize("readout", READOUTS)
def test_shared_topology_and_disjoint_padded_copies_give_the_same_logits(layer, readout):
    n, b = 12, 5
    graph = _graph(n)
    model = CellGraphClassifier(3, text_dim=4, num_nodes=n, layer=layer, hidden=8, heads=2,
                                readout=readout, node_embedding=True, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    values = jnp.asarray(rng.standard_normal((n, b)), jnp.float32)
    text = jnp.asarray(rng.standard_normal((n, 4)), jnp.float32)
    shared = Topology.build(graph, sparse=True).to_device()
    expected = model(values, text, shared)  # [B, K], each edge once per batch
    topo, node_graph = disjoint_copies(graph, b, pad_nodes=5, pad_edges=7, sparse=True)
    flat = jnp.concatenate([values.T.reshape(-1), jnp.full(5, 1e3)])[:, None]  # padding: junk
    text_copies = jnp.concatenate([jnp.tile(text, (b, 1)), jnp.full((5, 4), 1e3)])
    got = model(flat, text_copies, topo.to_device(), node_graph=jnp.asarray(node_graph),
                num_graphs=b)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)
    # GCN and GIN aggregate the per-sample and per-node parts of the input apart: the same
    # numbers as aggregating the fused input.
    fused = model(values, text, shared, split_input=False)
    np.testing.assert_allclose(fused, expected, rtol=2e-5, atol=2e-5)
    if readout != "attention":  # the gene-level view adds up to the logits
        parts = model.node_contributions(values, text, shared)
        np.testing.assert_allclose(parts.sum(1) + model.head.bias[...], expected, rtol=1e-5,
                                   atol=1e-5)


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "tosg"
    write_dataset(path)
    return path


def _config(root, *overrides):
    return apply_overrides(load_config(f"{EXPERIMENT}:test"),
                           [f"data.root={root}", *overrides])


def test_cli_run_writes_macro_f1_for_model_and_baselines_and_leaves_the_root(root, tmp_path,
                                                                              capsys):
    before = tree_digest(root)
    main(["train", "--config", f"{EXPERIMENT}:test", "--workdir", str(tmp_path / "run"),
          "--no-progress", f"--config.data.root={root}", "--config.train.num_steps=40",
          "--config.model.name=gat"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert tree_digest(root) == before
    assert summary["task"] == "cells" and summary["selection_metric"] == "macro_f1"
    assert summary["split"]["kind"] == "donor" and summary["dropped_unknown_label"] == 3
    for result in [summary] + list(summary["baselines"].values()):
        for part in ("validation", "test"):
            assert 0 <= result[part]["macro_f1"] <= 1
            assert set(result[part]["per_class"]) == {"B cell", "Monocyte", "T cell"}
    # The classes show in the expression (generated that way): model and logistic
    # regression beat the majority class.
    assert summary["baselines"]["logreg"]["test"]["macro_f1"] > 0.8
    assert summary["test"]["macro_f1"] > summary["baselines"]["majority"]["test"]["macro_f1"]
    assert summary["compilations"] == {"train_step": 1, "predict_step": 1}
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    meta_donors = np.array([f"d{i % 8}" for i in range(120)])[split["samples"]]
    parts = {p: set(meta_donors[np.searchsorted(np.arange(len(meta_donors)), split[p])])
             for p in ("train", "validation", "test")}
    assert not parts["train"] & parts["test"] and not parts["validation"] & parts["test"]
    assert "macro_f1" in capsys.readouterr().out
    main(["compare", str(tmp_path / "run")])  # the task's own metrics are the table's columns
    table = capsys.readouterr().out
    assert "| model | runs | macro_f1 | accuracy | balanced_accuracy |" in table
    assert "run: baseline logreg" in table


def test_unknown_donors_are_said_and_split_stratified(root, tmp_path):
    import pandas as pd

    meta = pd.read_parquet(root / "cell_metadata_with_mappings.parquet")
    meta.drop(columns="donor_id").to_parquet(root / "cell_metadata_with_mappings.parquet")
    summary = train_and_evaluate(_config(root, "baselines=[]"), str(tmp_path / "run"),
                                 progress=False)
    assert summary["split"]["kind"] == "stratified_random"
    assert "names no donors" in summary["split"]["note"]


def test_a_cell_graph_run_resumes_exactly(root, tmp_path, monkeypatch):
    config = _config(root, "train.num_steps=9", "train.checkpoint.every=3", "baselines=[]")
    reference = train_and_evaluate(config, str(tmp_path / "reference"), progress=False)

    real = loop.train_batches

    def crash_after_step_4(*args, **kwargs):
        for i, batch in enumerate(real(*args, **kwargs)):
            if i == 4:
                raise KeyboardInterrupt  # a crash after the step-3 checkpoint
            yield batch

    monkeypatch.setattr(loop, "train_batches", crash_after_step_4)
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(config, str(tmp_path / "resumed"), progress=False)
    monkeypatch.setattr(loop, "train_batches", real)
    resumed = train_and_evaluate(config, str(tmp_path / "resumed"), progress=False)
    assert resumed["resumed_from_step"] == 3
    for key in ("validation", "test", "selected_step"):
        assert resumed[key] == reference[key], key


def test_bad_config_values_name_the_key(root, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", f"{EXPERIMENT}:test", "--workdir", str(tmp_path / "run"),
              f"--config.data.root={root}", "--config.data.label_column=organism"])
    assert e.value.code == 2 and "no column 'organism'" in str(e.value)
    with pytest.raises(ValueError, match="config key data.edge_files"):  # a typo'd file name
        train_and_evaluate(_config(root, "data.edge_files=['ppi_edges']"), str(tmp_path / "x"),
                           progress=False)
    with pytest.raises(ValueError, match="config key data.root"):
        train_and_evaluate(_config(""), str(tmp_path / "other"), progress=False)


PARALLEL_SCRIPT = """
import json, sys
import jax
from perturbjax.config import apply_overrides, load_config
from perturbjax.training.loop import train_and_evaluate
assert jax.device_count() == 2, jax.devices()
experiment, root, workdir = sys.argv[1:4]
base = [f"data.root={root}", "model.dropout=0.0", "train.batch_size=8", "train.num_steps=6",
        "train.log_every=1", "baselines=[]"]
out = {}
for name, extra in (("single", []), ("parallel", ["train.data_parallel=True"])):
    config = apply_overrides(load_config(experiment + ":test"), base + extra)
    summary = train_and_evaluate(config, f"{workdir}/{name}", progress=False)
    with open(f"{workdir}/{name}/metrics.jsonl") as f:
        losses = [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]
    out[name] = {"losses": losses, "test": summary["test"]["macro_f1"],
                 "compilations": summary["compilations"]}
print(json.dumps(out))
"""


def test_data_parallel_cell_graph_steps_match_the_single_device_run(root, tmp_path):
    """2 CPU devices, 4 samples each, on the replicated shared topology: the 1-device losses."""
    import subprocess
    import sys

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", PARALLEL_SCRIPT, EXPERIMENT, str(root),
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["parallel"]["losses"], out["single"]["losses"], rtol=1e-4)
    assert out["parallel"]["compilations"] == {"train_step": 1, "predict_step": 1}


def test_sigterm_saves_a_cell_graph_run_which_then_resumes(root, tmp_path):
    """SIGTERM during training: a checkpoint, exit status 0, no summary; the rerun finishes."""
    import signal
    import subprocess
    import sys
    import time

    workdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "perturbjax.cli", "train", "--config", f"{EXPERIMENT}:test",
           "--workdir", str(workdir), "--no-progress", f"--config.data.root={root}",
           "--config.train.num_steps=1000", "--config.train.checkpoint.every=250",
           "--config.train.log_every=1", "--config.train.eval_every=250", "--config.baselines=[]"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    metrics = workdir / "metrics.jsonl"
    while not (metrics.exists() and '"step": 5, "split": "train"' in metrics.read_text()):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    stopped = next(r["checkpoint_step"] for r in records if r["split"] == "preempted")
    assert not (workdir / "summary.json").exists() and "rerun the same command" in output
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["resumed_from_step"] == stopped and summary["step"] == 1000


def test_two_processes_train_a_cell_graph_run_like_one_process_of_two_devices(root, tmp_path):
    """Multi-host: 2 processes x 1 device give the losses and test scores of 1 x 2 devices."""
    import subprocess
    import sys

    from test_multihost import _free_port, _records, _wait_all

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    overrides = [f"--config.data.root={root}", "--config.model.dropout=0.0",
                 "--config.train.batch_size=8", "--config.train.num_steps=6",
                 "--config.train.log_every=1", "--config.baselines=[]",
                 "--config.train.data_parallel=True"]

    def start(workdir, name, devices, *flags):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                   JAX_PLATFORMS="cpu",
                   PYTHONPATH=os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
        log = tmp_path / f"{name}.log"
        cmd = [sys.executable, "-m", "perturbjax.cli", "train", "--config", f"{EXPERIMENT}:test",
               "--workdir", str(workdir), "--no-progress", *flags, *overrides]
        with open(log, "w") as f:
            return subprocess.Popen(cmd, env=env, cwd=repo, stdout=f, stderr=subprocess.STDOUT), log

    address = f"127.0.0.1:{_free_port()}"
    procs = {"single": start(tmp_path / "single", "single", 2)}
    procs.update({f"process {i}": start(tmp_path / "multi", f"process{i}", 1,
                                        "--coordinator-address", address,
                                        "--num-processes", "2", "--process-id", str(i))
                  for i in range(2)})
    _wait_all(procs)
    single, multi = (json.loads((tmp_path / d / "summary.json").read_text())
                     for d in ("single", "multi"))
    losses = [[r["loss"] for r in _records(tmp_path / d) if r["split"] == "train"]
              for d in ("single", "multi")]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    assert multi["host"]["processes"] == 2
    assert multi["test"]["macro_f1"] == pytest.approx(single["test"]["macro_f1"], abs=1e-6)


def test_a_cell_graph_run_logs_to_wandb_and_launches_as_a_sweep(root, tmp_path, monkeypatch,
                                                                 capsys):
    import sys
    import types

    logged, init = [], {}

    class FakeRun:
        def log(self, metrics, step):
            logged.append((step, metrics))

        def finish(self):
            pass

        settings = types.SimpleNamespace(sync_dir="wandb/offline-run-x", log_user="debug.log")

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: init.update(kwargs) or FakeRun()
    fake.Settings = lambda **kwargs: kwargs
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = _config(root, "wandb.mode=offline", "baselines=[]")
    train_and_evaluate(config, str(tmp_path / "run"), experiment="tosg_celltype",
                       variant="test", progress=False)
    assert init["group"] == "tosg_celltype" and init["job_type"] == "test"
    assert init["settings"] == {"silent": True}  # W&B's own messages stay off the console
    keys = {k for _, metrics in logged for k in metrics}
    assert {"train/loss", "train/accuracy", "validation/macro_f1", "final_test/macro_f1"} <= keys
    main(["launch", "--config", f"{EXPERIMENT}:model=gat", "--sweep", "--root",
          str(tmp_path / "sweep"), "--target", "local", "--dry-run", f"--config.data.root={root}"])
    commands = [line for line in capsys.readouterr().out.splitlines() if "perturbjax" in line
                and " train " in line]
    assert len(commands) == 3 and all("model=gat" in c for c in commands)
    assert [f"seed={s}" in c for s, c in zip((0, 1, 2), commands)] == [True] * 3
