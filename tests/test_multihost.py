"""Multi-host through JAX's distributed runtime: 2 processes of 2 CPU devices give the 4-device run.

Three `perturbjax train` subprocesses run at once on the demo's test variant (20 steps of a
global batch of 8, R-GCN, dropout 0, as in tests/test_parallel.py): processes 0 and 1 of one run
joined on 127.0.0.1 (collectives over gloo) sharing one workdir, and one process with 4 forced
devices. Process 1 alone is sent SIGTERM during training: both processes must stop at the same
step with a checkpoint, and the same two commands again resume from it. The resumed run and the
4-device run must agree step for step, in their final parameters and in their summaries, and
only process 0 may have written the run files. Every process has a deadline, so a hung
collective fails the test instead of hanging it.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from perturbjax import cli
from perturbjax.config import load_config
from perturbjax.training import loop
from perturbjax.training.checkpoint import Checkpoints
from perturbjax.training.parallel import ProcessSetupError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "experiments", "demo.py")
TIMEOUT_S = 240
OVERRIDES = ["model.name=rgcn", "model.dropout=0.0", "train.batch_size=8", "train.num_steps=20",
             "train.log_every=1", "train.eval_every=20", "train.checkpoint.every=20",
             "baselines=[]", "train.data_parallel=True"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(workdir, log, devices: int, *flags):
    # One compilation cache: the resumed run does not compile again.
    cache = os.path.join(os.path.dirname(workdir), "jax_cache")
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "perturbjax.cli", "train", "--config", f"{DEMO}:test",
           "--workdir", str(workdir), "--no-progress", *flags,
           *[f"--config.{o}" for o in OVERRIDES]]
    with open(log, "w") as f:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)


def _wait_all(procs: dict) -> None:
    """Waits for every process (name -> (Popen, log)); kills them all on a failure or timeout."""
    try:
        for name, (proc, log) in procs.items():
            try:
                rc = proc.wait(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} still running after {TIMEOUT_S} s:\n{_tail(log)}")
            assert rc == 0, f"{name} exited with {rc}:\n{_tail(log)}"
    finally:
        for proc, _ in procs.values():
            proc.kill()
            proc.wait()


def _tail(log) -> str:
    return "\n".join(line for line in open(log).read().splitlines()
                     if not line.startswith("[Gloo]"))[-4000:]


def _records(workdir) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _params(workdir) -> list[np.ndarray]:
    """The final parameters, from the checkpoint of step 20, in tree order."""
    ckpt = Checkpoints(str(workdir), keep=1)
    try:
        out = ckpt.manager.restore(20, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    finally:
        ckpt.close()
    return [np.asarray(x) for x in jax.tree.leaves(out.state["params"])]


def _wait_for_train_step(workdir, step, procs) -> None:
    deadline = time.time() + TIMEOUT_S
    path = workdir / "metrics.jsonl"
    while not (path.exists() and f'{{"step": {step}, "split": "train"' in path.read_text()):
        for name, (proc, log) in procs.items():
            assert proc.poll() is None, f"{name} ended first:\n{_tail(log)}"
        assert time.time() < deadline, "timed out waiting for training"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The run directories; `preempted_at` is the step at which both processes stopped."""
    root = tmp_path_factory.mktemp("multihost")
    address = f"127.0.0.1:{_free_port()}"

    def multi(attempt):
        return {f"process {i}": (_start(root / "multi", root / f"process{i}.{attempt}.log", 2,
                                        "--coordinator-address", address, "--num-processes", "2",
                                        "--process-id", str(i)), root / f"process{i}.{attempt}.log")
                for i in range(2)}

    single = {"single": (_start(root / "single", root / "single.log", 4), root / "single.log")}
    try:
        first = multi(0)
        try:
            _wait_for_train_step(root / "multi", 3, first)
            first["process 1"][0].send_signal(signal.SIGTERM)  # process 1 only
        finally:
            _wait_all(first)
        stops = [re.findall(r"preempted \(SIGTERM\) at step (\d+)", _tail(log))
                 for _, log in first.values()]
        assert stops[0] == stops[1] and len(stops[0]) == 1, stops
        assert not (root / "multi" / "summary.json").exists()
        _wait_all(multi(1))
    finally:
        _wait_all(single)
    return root, int(stops[0][0])


def test_two_processes_match_one_process_of_four_devices(runs):
    root, preempted_at = runs
    multi, single = root / "multi", root / "single"
    records, reference = _records(multi), _records(single)
    # One record per logged step (both processes would have appended theirs): process 0 wrote.
    keys = [(r["split"], r["step"]) for r in records]
    assert len(keys) == len(set(keys))
    assert keys == sorted([*[(r["split"], r["step"]) for r in reference],
                           ("preempted", preempted_at)], key=lambda k: k[1])
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(losses) == 20
    np.testing.assert_allclose(losses, [r["loss"] for r in reference if r["split"] == "train"],
                               rtol=0, atol=1e-5)

    a, b = _params(multi), _params(single)
    assert len(a) == len(b) > 0 and [x.shape for x in a] == [x.shape for x in b]
    diff = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
    assert diff < 1e-5, diff

    summary, expected = (json.loads((d / "summary.json").read_text()) for d in (multi, single))
    assert summary["resumed_from_step"] == preempted_at < 20
    assert summary["host"]["processes"] == 2 and expected["host"]["processes"] == 1
    assert summary["host"]["device_count"] == expected["host"]["device_count"] == 4
    assert summary["selected_step"] == expected["selected_step"]
    assert summary["compilations"] == expected["compilations"] == {"train_step": 1, "predict_step": 1}
    for part in ("validation", "test"):
        assert summary[part].keys() == expected[part].keys()
        for name, value in summary[part].items():
            assert abs(value - expected[part][name]) < 1e-4, (part, name)


def test_only_process_zero_writes(runs):
    root, _ = runs
    multi = root / "multi"
    assert sorted(os.listdir(multi)) == ["checkpoints", "config.json", "metrics.jsonl",
                                         "model.npz", "parts.json", "predictions.npz", "split.json",
                                         "summary.json"]
    config = json.loads((multi / "config.json").read_text())
    assert config["train"]["data_parallel"] is True
    # The results table is printed by process 0 alone.
    assert "test metrics" in (root / "process0.1.log").read_text()
    assert "test metrics" not in (root / "process1.1.log").read_text()


def test_process_flags_go_together(tmp_path):
    with pytest.raises(SystemExit, match="--num-processes, --process-id.*--distributed alone"):
        cli.main(["train", "--config", f"{DEMO}:test", "--workdir", str(tmp_path / "x"),
                  "--coordinator-address", "127.0.0.1:1234"])
    assert not (tmp_path / "x").exists()


def test_distributed_alone_outside_a_cluster_says_what_to_pass(tmp_path):
    # A subprocess: joining changes this process's JAX for good, even when it fails.
    proc = subprocess.run([sys.executable, "-m", "perturbjax.cli", "train", "--config",
                           f"{DEMO}:test", "--workdir", str(tmp_path / "x"), "--distributed"],
                          env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"), cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 2
    assert "perturbjax: error: train: cannot join JAX's distributed runtime" in proc.stderr
    assert "pass --coordinator-address, --num-processes, --process-id" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_several_processes_need_data_parallelism(tmp_path, monkeypatch):
    monkeypatch.setattr(loop.jax, "process_count", lambda: 2)
    with pytest.raises(ProcessSetupError, match=r"2 processes .*--config\.train\.data_parallel=True"):
        loop.train_and_evaluate(load_config(f"{DEMO}:test"), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    # The command says so in one line, without a traceback.
    with pytest.raises(SystemExit, match=r"^2 processes train one model only"):
        cli.main(["train", "--config", f"{DEMO}:test", "--workdir", str(tmp_path / "run")])
