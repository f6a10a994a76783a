"""Kernel ridge over drugs (tanimoto_ridge; kg_ridge shares it) on generated data and the tiny demo."""

import dataclasses

import numpy as np

from perturbjax.data.chem import morgan_fingerprints, tanimoto
from perturbjax.data.splits import make_split
from perturbjax.models.baselines import TanimotoRidge, kernel_ridge_fits, tanimoto_kernels


def test_kernel_ridge_fits_solve_the_penalised_system_for_every_penalty():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 8))
    kernel, y = x @ x.T, rng.normal(size=(30, 5))
    alphas = (1e-3, 0.5, 20.0)
    fits = list(kernel_ridge_fits(kernel, y, alphas))
    assert [a for a, _ in fits] == list(alphas)
    for alpha, coef in fits:
        np.testing.assert_allclose(coef, np.linalg.solve(kernel + alpha * np.eye(30), y),
                                   rtol=1e-6, atol=1e-8)


def test_tanimoto_kernels_are_powers_of_the_similarity(tiny_demo):
    drugs = np.arange(6)
    kernels = tanimoto_kernels(tiny_demo, drugs, (1, 4))
    bits = morgan_fingerprints(list(tiny_demo.drug_smiles[drugs])).bits
    np.testing.assert_allclose(kernels[1], tanimoto(bits, bits), rtol=1e-6)
    np.testing.assert_allclose(kernels[4], kernels[1] ** 4, rtol=1e-6)
    np.testing.assert_allclose(np.diag(kernels[1]), 1.0)


def test_tanimoto_ridge_chooses_on_validation_and_predicts_zero_for_a_drug_like_none(tiny_demo):
    split = make_split(tiny_demo, "cold_drug", seed=0)
    model = TanimotoRidge()
    model.fit(tiny_demo, split.train, split.validation)
    assert model.chosen["tanimoto_power"] in TanimotoRidge.powers
    assert model.chosen["alpha"] in TanimotoRidge.alphas
    pred = model.predict(tiny_demo, split.test)
    assert pred.shape == (len(split.test), tiny_demo.signatures.shape[1]) and np.isfinite(pred).all()
    # Training drugs are fitted closely with a small penalty, so predictions are signatures.
    assert np.abs(pred).max() > 0
    # A molecule that does not parse has an empty fingerprint, similar to nothing: the model
    # predicts no change at all (the fit is on raw signatures, not deviations from the mean).
    lonely = tiny_demo.drug[split.test[0]]
    smiles = tiny_demo.drug_smiles.copy()
    smiles[lonely] = "not a smiles"
    data = dataclasses.replace(tiny_demo, drug_smiles=smiles)
    model.fit(data, split.train, split.validation)
    rows = split.test[tiny_demo.drug[split.test] == lonely]
    np.testing.assert_array_equal(model.predict(data, rows), 0.0)
