"""Baselines for signature prediction; each is fitted on train and tuned on validation only.

Simple baselines match many published perturbation models, so every run reports them beside
the graph model on the same split:

* `zero`: no change at all; a reference that shows how much a metric rewards merely
  predicting something other than the training mean (pearson_centered does).
* `mean`: the training-mean signature for every condition.
* `tanimoto_knn`: similarity-weighted signatures of the nearest training drugs by Tanimoto
  similarity of Morgan fingerprints (same cell line where measured).
* `ridge`, `mlp`: regression on fingerprints + drug-target indicators + basal cell expression +
  log dose and time, the seed paper's baseline inputs.
* `target_ridge`: ridge on target indicators (+ dose, time) alone.
* `fingerprint_ridge`: ridge on fingerprints (+ dose, time) alone.
* `tanimoto_ridge`: kernel ridge on drugs' Tanimoto similarity raised to a power chosen on
  validation (the strong chemistry-only baseline; see `DrugKernelRidge`).
"""

from __future__ import annotations

import abc

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from perturbjax.data.chem import morgan_fingerprints, tanimoto
from perturbjax.data.perturbation import PerturbationData
from perturbjax.eval.metrics import centered_pearson

SELECTION_METRIC = "pearson_centered"


def _score(data: PerturbationData, idx: np.ndarray, pred: np.ndarray, train_mean: np.ndarray) -> float:
    """The selection metric alone: hyperparameter searches score hundreds of candidates."""
    return centered_pearson(data.signatures[idx], pred, train_mean)


class Baseline(abc.ABC):
    """A signature predictor fitted on host data; hyperparameters chosen on validation."""

    name: str
    chosen: dict  # hyperparameters picked on validation, reported in the summary

    @abc.abstractmethod
    def fit(self, data: PerturbationData, train: np.ndarray, validation: np.ndarray) -> None:
        ...

    @abc.abstractmethod
    def predict(self, data: PerturbationData, idx: np.ndarray) -> np.ndarray:
        """[len(idx), G] predicted signatures."""


class MeanSignature(Baseline):
    name = "mean"

    def fit(self, data, train, validation):
        self.mean = data.signatures[train].mean(0)
        self.chosen = {}

    def predict(self, data, idx):
        return np.broadcast_to(self.mean, (len(idx), len(self.mean))).copy()


class ZeroSignature(MeanSignature):
    name = "zero"

    def fit(self, data, train, validation):
        self.mean = np.zeros(data.signatures.shape[1], np.float32)
        self.chosen = {}


class TanimotoKNN(Baseline):
    """Weighted mean of the k most similar training drugs' signatures; k chosen on validation."""

    name = "tanimoto_knn"
    ks = (1, 3, 5, 10, 20)

    def fit(self, data, train, validation):
        self.bits = morgan_fingerprints(list(data.drug_smiles)).bits
        self.train_mean = data.signatures[train].mean(0)
        drugs = np.unique(data.drug[train])
        self.train_drugs = drugs
        n_cells = data.graph.nodes[data.cell_type].count
        g = data.signatures.shape[1]
        # Mean signature of each training drug overall and per cell line (NaN where unmeasured).
        sums = np.zeros((len(drugs), n_cells, g))
        counts = np.zeros((len(drugs), n_cells))
        pos = np.searchsorted(drugs, data.drug[train])
        np.add.at(sums, (pos, data.cell[train]), data.signatures[train])
        np.add.at(counts, (pos, data.cell[train]), 1)
        self.drug_mean = sums.sum(1) / counts.sum(1)[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            self.drug_cell_mean = sums / counts[..., None]
        best = max(self.ks, key=lambda k: _score(data, validation, self._predict(data, validation, k),
                                                 self.train_mean))
        self.chosen = {"k": best}

    def _predict(self, data, idx, k):
        sim = tanimoto(self.bits[data.drug[idx]], self.bits[self.train_drugs])
        k = min(k, len(self.train_drugs))
        nearest = np.argsort(-sim, axis=1)[:, :k]
        weights = np.take_along_axis(sim, nearest, 1) + 1e-6
        per_cell = self.drug_cell_mean[nearest, data.cell[idx][:, None]]  # [n, k, G]
        neighbour = np.where(np.isnan(per_cell), self.drug_mean[nearest], per_cell)
        return (weights[..., None] * neighbour).sum(1) / weights.sum(1)[:, None]

    def predict(self, data, idx):
        return self._predict(data, idx, self.chosen["k"])


def kernel_ridge_fits(k_train: np.ndarray, y_train: np.ndarray, alphas):
    """Yields (alpha, dual coefficients [n, G]) for every penalty from one eigendecomposition of
    the [n, n] training kernel, so a penalty grid costs little more than one fit."""
    evals, evecs = np.linalg.eigh(k_train.astype(np.float64))
    proj = evecs.T @ y_train
    for alpha in alphas:
        yield alpha, evecs @ (proj / (evals + alpha)[:, None])


class DrugKernelRidge(Baseline):
    """Kernel ridge over drugs: a condition's signature from the signatures of similar drugs.

    Subclasses propose candidate [n_drugs, n_drugs] kernels (unit diagonal scale); every
    candidate and penalty is scored on validation. The fit is on the raw signatures, not on
    their deviation from the training mean, so a drug like no training drug is predicted to
    change nothing (the `zero` reference) rather than the training mean: most drugs respond
    weakly, and the training mean is dominated by the few that respond strongly.
    """

    alphas = (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4)

    @abc.abstractmethod
    def candidate_kernels(self, data: PerturbationData, drugs: np.ndarray, train: np.ndarray):
        """Yields (hyperparameters, kernel over `drugs`); `train` indexes conditions."""

    def fit(self, data, train, validation):
        self.drugs = np.unique(data.drug)
        pos = np.searchsorted(self.drugs, data.drug)
        self.train_pos, y = pos[train], data.signatures
        train_mean = y[train].mean(0)
        best = -np.inf
        for chosen, kernel in self.candidate_kernels(data, self.drugs, train):
            k_vt = kernel[np.ix_(pos[validation], self.train_pos)]
            for alpha, coef in kernel_ridge_fits(kernel[np.ix_(self.train_pos, self.train_pos)],
                                                 y[train], self.alphas):
                score = _score(data, validation, k_vt @ coef, train_mean)
                if score > best:
                    best, self.kernel, self.coef = score, kernel, coef.astype(np.float32)
                    self.chosen = {**chosen, "alpha": alpha}

    def predict(self, data, idx):
        pos = np.searchsorted(self.drugs, data.drug[idx])
        return self.kernel[np.ix_(pos, self.train_pos)] @ self.coef


def tanimoto_kernels(data: PerturbationData, drugs: np.ndarray, powers) -> dict[int, np.ndarray]:
    """Tanimoto similarity of the drugs' Morgan fingerprints raised to each power.

    A high power keeps close analogues and silences the many weak similarities that every pair
    of drug-like molecules has, which is what makes nearest-neighbour methods work; ridge then
    pools the analogues instead of picking k of them.
    """
    bits = morgan_fingerprints(list(data.drug_smiles)).bits[drugs]
    sim = tanimoto(bits, bits).astype(np.float64)
    return {p: sim ** p for p in powers}


class TanimotoRidge(DrugKernelRidge):
    name = "tanimoto_ridge"
    powers = (1, 2, 4, 8)

    def candidate_kernels(self, data, drugs, train):
        for power, kernel in tanimoto_kernels(data, drugs, self.powers).items():
            yield {"tanimoto_power": power}, kernel


def design_matrix(data: PerturbationData, parts=("fingerprint", "targets", "basal", "covariates")
                  ) -> np.ndarray:
    """[C, d] condition features for the regression baselines."""
    blocks = []
    if "fingerprint" in parts:
        blocks.append(morgan_fingerprints(list(data.drug_smiles)).bits[data.drug].astype(np.float32))
    if "targets" in parts:
        blocks.append(data.target_indicators()[data.drug])
    if "basal" in parts:
        blocks.append(data.basal_expression()[data.cell])
    if "covariates" in parts:
        blocks.append(data.condition_covariates())
    return np.concatenate(blocks, axis=1).astype(np.float32)


class _Standardised(Baseline):
    """Shared feature handling: design matrix standardised with training statistics."""

    parts = ("fingerprint", "targets", "basal", "covariates")

    def _features(self, data, train=None):
        x = design_matrix(data, self.parts)
        if train is not None:
            sd = x[train].std(0)
            self.mu, self.sd = x[train].mean(0), np.where(sd > 1e-6, sd, 1.0)
        return (x - self.mu) / self.sd


class Ridge(_Standardised):
    """Closed-form ridge regression; the penalty is chosen on validation."""

    name = "ridge"
    alphas = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7)

    def fit(self, data, train, validation):
        x = self._features(data, train)
        y = data.signatures
        self.y_mean = y[train].mean(0)
        xt, yt = x[train], y[train] - self.y_mean
        # Eigendecomposition once, then every penalty is cheap.
        gram = xt.T @ xt if xt.shape[0] >= xt.shape[1] else xt @ xt.T
        evals, evecs = np.linalg.eigh(gram.astype(np.float64))
        best_score, best = -np.inf, None
        for alpha in self.alphas:
            inv = (evecs / (evals + alpha)) @ evecs.T
            w = inv @ (xt.T @ yt) if xt.shape[0] >= xt.shape[1] else xt.T @ (inv @ yt)
            score = _score(data, validation, x[validation] @ w + self.y_mean, self.y_mean)
            if score > best_score:
                best_score, best, self.w = score, alpha, w.astype(np.float32)
        self.chosen = {"alpha": best}

    def predict(self, data, idx):
        return self._features(data)[idx] @ self.w + self.y_mean


class TargetRidge(Ridge):
    name = "target_ridge"
    parts = ("targets", "covariates")


class FingerprintRidge(Ridge):
    name = "fingerprint_ridge"
    parts = ("fingerprint", "covariates")


class _MLP(nnx.Module):
    def __init__(self, d_in, d_hidden, d_out, dropout, rngs):
        self.l1 = nnx.Linear(d_in, d_hidden, rngs=rngs)
        self.l2 = nnx.Linear(d_hidden, d_hidden, rngs=rngs)
        self.out = nnx.Linear(d_hidden, d_out, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x):
        x = self.drop(nnx.relu(self.l1(x)))
        x = self.drop(nnx.relu(self.l2(x)))
        return self.out(x)


class SignatureMLP(_Standardised):
    """Two-hidden-layer MLP; the epoch is chosen by validation score (early stopping)."""

    name = "mlp"

    def __init__(self, hidden: int = 256, dropout: float = 0.2, epochs: int = 60,
                 batch_size: int = 64, learning_rate: float = 1e-3, weight_decay: float = 1e-2,
                 seed: int = 0):
        self.hidden, self.dropout, self.epochs = hidden, dropout, epochs
        self.batch_size, self.lr, self.wd, self.seed = batch_size, learning_rate, weight_decay, seed

    def fit(self, data, train, validation):
        x = self._features(data, train)
        y = data.signatures
        self.y_mean = y[train].mean(0)
        model = _MLP(x.shape[1], self.hidden, y.shape[1], self.dropout, nnx.Rngs(self.seed))
        model.train()
        train_def, params, rest = nnx.split(model, nnx.Param, ...)
        model.eval()
        self.graphdef = nnx.graphdef(model)
        tx = optax.adamw(self.lr, weight_decay=self.wd)

        # One compiled call per epoch (a scan over its batches), not one per batch: the
        # per-call overhead dominated at these sizes.
        @jax.jit
        def epoch(params, rest, opt_state, xb, yb):
            def step(carry, batch):
                params, rest, opt_state = carry
                m = nnx.merge(train_def, params, rest)
                grads = nnx.grad(lambda m: jnp.mean((m(batch[0]) - batch[1]) ** 2))(m)
                updates, opt_state = tx.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), nnx.state(m, nnx.Not(nnx.Param)),
                        opt_state), None
            return jax.lax.scan(step, (params, rest, opt_state), (xb, yb))[0]

        @jax.jit
        def forward(params, rest, xb):
            return nnx.merge(self.graphdef, params, rest)(xb)

        rng = np.random.default_rng(self.seed)
        n_batches = max(1, len(train) // self.batch_size)
        y_centred = jnp.asarray(y - self.y_mean)
        x_dev, x_val = jnp.asarray(x), jnp.asarray(x[validation])
        opt_state = tx.init(params)
        best_score = -np.inf
        for i in range(self.epochs):
            order = jnp.asarray(rng.permutation(train)[: n_batches * self.batch_size]
                                .reshape(n_batches, -1))
            params, rest, opt_state = epoch(params, rest, opt_state, x_dev[order], y_centred[order])
            score = _score(data, validation, np.asarray(forward(params, rest, x_val)) + self.y_mean,
                           self.y_mean)
            if score > best_score:
                best_score, best_epoch = score, i + 1
                self.params = jax.tree.map(np.asarray, params)
        self.chosen = {"epochs": best_epoch}
        self.rest = rest
        self._forward = forward

    def predict(self, data, idx):
        return np.asarray(self._forward(self.params, self.rest, self._features(data)[idx])) + self.y_mean


BASELINES = {cls.name: cls for cls in (ZeroSignature, MeanSignature, TanimotoKNN, TanimotoRidge,
                                       Ridge, TargetRidge, FingerprintRidge, SignatureMLP)}


def make_baseline(name: str, seed: int = 0) -> Baseline:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known baselines are {sorted(BASELINES)}")
    return SignatureMLP(seed=seed) if name == "mlp" else BASELINES[name]()
