"""What a Python user does and expects: Ctrl-C, notebook plots, inputs that cannot be
normalised, a diverging loss, and a kernel cache that follows the compiler."""

import os
import signal

import matplotlib
import numpy as np
import pytest

from perturbjax.cli import main
from perturbjax.graph import kernels
from perturbjax.training.checkpoint import StopSignals
from tests.tosg_data import write_dataset

EXPERIMENT = os.path.join(os.path.dirname(__file__), "..", "experiments", "tosg_celltype.py")


def test_first_ctrl_c_asks_for_a_checkpoint_and_the_second_aborts(capsys):
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a background job
    with StopSignals() as stop:
        assert not stop.reached(1)
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.reached(2) and stop.signal_name == "SIGINT"
        assert "Ctrl-C again to abort" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) == before  # restored
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.reached(1) and stop.signal_name == "SIGTERM"


def test_plots_leave_the_notebook_backend_alone(tmp_path):
    from perturbjax.predict import write_repurposing

    previous = matplotlib.get_backend()
    matplotlib.use("svg")  # stands for a notebook's inline backend
    try:
        rows = [{"rank": i + 1, "drug": f"D{i}", "source": "graph", "part": "test",
                 "connectivity": -0.1 * i} for i in range(3)]
        paths = write_repurposing(rows, str(tmp_path), "query")
        assert matplotlib.get_backend() == "svg"
        assert open(paths[2], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    finally:
        matplotlib.use(previous)


def test_log1p_on_scaled_values_is_one_line_at_load(tmp_path, capsys):
    root = tmp_path / "tosg"
    write_dataset(root)
    shard = root / "expression_matrix" / "shard0.npy"
    np.save(shard, np.load(shard) - 5.0)  # scaled values: many negative
    workdir = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", f"{EXPERIMENT}:test", "--workdir", str(workdir),
              "--no-progress", f"--config.data.root={root}", "--config.data.normalize=log1p"])
    assert e.value.code == 2 and not workdir.exists()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("perturbjax: error: ") and "shard0.npy: row" in err
    assert "log1p needs counts" in err and "Traceback" not in err


def test_a_diverging_loss_ends_in_one_line_naming_the_step(tmp_path, capsys):
    root = tmp_path / "tosg"
    write_dataset(root)
    with pytest.raises(SystemExit) as e:
        main(["train", "--config", f"{EXPERIMENT}:test", "--workdir", str(tmp_path / "run"),
              "--no-progress", f"--config.data.root={root}", "--config.train.learning_rate=1e30",
              "--config.train.log_every=1", "--config.baselines=[]"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("perturbjax: error: loss is ") and " at step " in err
    assert "train.learning_rate" in err


def test_kernel_cache_follows_the_compiler_and_linux_only_affinity(monkeypatch, caplog):
    path, identity = kernels._compiler()
    assert os.path.isabs(path) and identity.startswith(os.path.realpath(path))
    assert kernels._library_path(identity) != kernels._library_path(identity + " 99.0")
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.delenv("PERTURBJAX_KERNELS", raising=False)  # the suite may run with them off
    kernels.available.cache_clear()
    try:
        assert not kernels.available()
        assert "sched_getaffinity" in caplog.text
    finally:
        monkeypatch.undo()
        kernels.available.cache_clear()
