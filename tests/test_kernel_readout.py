"""The kernel-ridge decoder: closed-form leave-one-out (and leave-group-out), the label trick, and a demo run."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from perturbjax import cli
from perturbjax.config import apply_overrides, load_config
from perturbjax.models.kernel_ridge import (KernelRidgeReadout, hyper, leave_out_groups,
                                           ridge_predict)
from perturbjax.training.loop import train_and_evaluate

EXPERIMENTS = os.path.join(os.path.dirname(__file__), "..", "experiments")
DEMO = os.path.join(EXPERIMENTS, "demo.py")
CONSENSUS = os.path.join(EXPERIMENTS, "hetionet_lincs_consensus.py")


@pytest.fixture(scope="module")
def readout_inputs():
    rng = np.random.default_rng(0)
    s, q, views, width, genes = 12, 3, 3, 8, 5
    head = KernelRidgeReadout(width, views, 6, rngs=nnx.Rngs(0))
    h_s = jnp.asarray(rng.normal(size=(s, views * width)), jnp.float32)
    h_q = jnp.asarray(rng.normal(size=(q, views * width)), jnp.float32)
    x_s = jnp.asarray(rng.random((s, 10)) < 0.4, jnp.float32)
    x_q = jnp.asarray(rng.random((q, 10)) < 0.4, jnp.float32)
    y = jnp.asarray(rng.normal(size=(s, genes)), jnp.float32)
    return head, h_s, h_q, x_s, x_q, y


def _kernel(head, h_a, h_b, x_a, x_b, h_support):
    v, w, _ = head.keys.shape
    centre = jnp.einsum("vw,vwd->vd", h_support.reshape(-1, v, w).mean(0), head.keys[...])[:, None]
    return head.kernel(head._keys(h_a, centre), head._keys(h_b, centre), x_a, x_b)


def test_support_drugs_are_predicted_leave_one_out(readout_inputs):
    head, h_s, _, x_s, _, y = readout_inputs
    n = len(y)
    pred = np.asarray(head(h_s, h_s, x_s, x_s, y, jnp.arange(n)))
    k = np.asarray(_kernel(head, h_s, h_s, x_s, x_s, h_s), np.float64)
    penalty = float(jnp.exp(hyper(head.log_penalty)))
    for i in range(n):
        rest = np.delete(np.arange(n), i)
        # ridge refitted without drug i (same kernel, the keys centred as in the model)
        coef = np.linalg.solve(k[np.ix_(rest, rest)] + penalty * np.eye(n - 1), np.asarray(y)[rest])
        np.testing.assert_allclose(pred[i], k[i, rest] @ coef, rtol=2e-3, atol=2e-4)


def test_a_drug_never_sees_its_own_signature(readout_inputs):
    head, h_s, _, x_s, _, y = readout_inputs
    changed = y.at[4].set(y[4] + 100.0)
    a = head(h_s, h_s, x_s, x_s, y, jnp.arange(len(y)))
    b = head(h_s, h_s, x_s, x_s, changed, jnp.arange(len(y)))
    np.testing.assert_allclose(a[4], b[4], rtol=1e-3, atol=1e-3)
    assert not np.allclose(a[5], b[5], atol=1e-3)  # the others do see it


def test_other_drugs_get_the_full_ridge_fit(readout_inputs):
    head, h_s, h_q, x_s, x_q, y = readout_inputs
    pred = head(h_q, h_s, x_q, x_s, y, -jnp.ones(len(h_q), jnp.int32))
    k_ss = np.asarray(_kernel(head, h_s, h_s, x_s, x_s, h_s), np.float64)
    k_qs = np.asarray(_kernel(head, h_q, h_s, x_q, x_s, h_s), np.float64)
    penalty = float(jnp.exp(hyper(head.log_penalty)))
    expected = k_qs @ np.linalg.solve(k_ss + penalty * np.eye(len(y)), np.asarray(y))
    np.testing.assert_allclose(pred, expected, rtol=2e-3, atol=2e-4)
    grads = jax.grad(lambda p: jnp.sum(nnx.merge(*nnx.split(head)[:1], p)(
        h_q, h_s, x_q, x_s, y, -jnp.ones(len(h_q), jnp.int32)) ** 2))(nnx.state(head))
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_a_consensus_run_with_the_kernel_ridge_decoder(tmp_path, data_dir_unchanged):
    # Real signatures (one per drug), the small slice of the real graph.
    config = apply_overrides(load_config(f"{CONSENSUS}:test,model=hetero_gat"), [
        "model.decoder=kernel_ridge", "baselines=[]", "train.batch_size=1024",
        "train.num_steps=4"])
    summary = train_and_evaluate(config, str(tmp_path), progress=False)
    assert summary["compilations"] == {"train_step": 1, "predict_step": 1}
    for part in ("validation", "test"):
        assert np.isfinite(summary[part]["pearson_centered"]), part
    assert summary["validation"]["pearson_centered"] > 0.0


def test_the_pearson_loss_is_one_minus_the_selection_metric():
    from perturbjax.eval.metrics import rowwise_pearson
    from perturbjax.tasks.perturbation import _row_pearson
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 6, 40))
    np.testing.assert_allclose(_row_pearson(jnp.asarray(a), jnp.asarray(b)),
                               rowwise_pearson(a, b), rtol=1e-5, atol=1e-6)


def test_the_kernel_ridge_decoder_needs_one_condition_per_drug(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--config", f"{DEMO}:test", "--workdir", str(tmp_path / "w"),
                  "--config.model.decoder=kernel_ridge", "--config.model.propagation_steps=0"])
    assert e.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "one training condition per drug" in err[0], err
    with pytest.raises(SystemExit):
        cli.main(["train", "--config", f"{DEMO}:test", "--workdir", str(tmp_path / "w2"),
                  "--config.model.decoder=kernel_ridge", "--config.graph.mode=sampled",
                  "--config.model.propagation_steps=0"])
    assert "graph.mode" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the demo propagates a signal by default
        cli.main(["train", "--config", f"{DEMO}:test", "--workdir", str(tmp_path / "w3"),
                  "--config.model.decoder=kernel_ridge"])
    assert "model.propagation_steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--config", f"{DEMO}:test", "--workdir", str(tmp_path / "w4"),
                  "--config.model.loss=cosine"])
    assert "model.loss" in capsys.readouterr().err


def test_support_groups_are_predicted_with_the_whole_group_left_out():
    rng = np.random.default_rng(3)
    n, genes = 12, 3
    z = rng.normal(size=(n, 5))
    k = z @ z.T
    y = rng.normal(size=(n, genes))
    labels = np.array([2, 0, 2, 1, 0, 2, 5, 1, 5, 5, 5, 7])  # uneven groups, one singleton
    groups = jax.tree.map(jnp.asarray, leave_out_groups(labels))
    q = rng.normal(size=(2, 5))
    pred = np.asarray(ridge_predict(jnp.asarray(k, jnp.float32), jnp.asarray(np.r_[k, q @ z.T], jnp.float32),
                                    jnp.asarray(y, jnp.float32), jnp.float32(0.5),
                                    jnp.r_[jnp.arange(n), -1, -1].astype(jnp.int32), groups))
    for i in range(n):
        rest = labels != labels[i]  # refitted without i's whole group
        coef = np.linalg.solve(k[np.ix_(rest, rest)] + 0.5 * np.eye(rest.sum()), y[rest])
        np.testing.assert_allclose(pred[i], k[i, rest] @ coef, rtol=2e-3, atol=2e-3)
    full = np.linalg.solve(k + 0.5 * np.eye(n), y)
    np.testing.assert_allclose(pred[n:], q @ z.T @ full, rtol=2e-3, atol=2e-3)
