import numpy as np

from perturbjax.data.chem import morgan_fingerprints, tanimoto


def test_invalid_smiles_are_reported_not_raised():
    fp = morgan_fingerprints(["CCO", "not a smiles", "", "c1ccccc1O"], n_bits=256)
    assert fp.bits.shape == (4, 256)
    np.testing.assert_array_equal(fp.valid, [True, False, False, True])
    assert [i for i, _ in fp.invalid] == [1, 2]
    assert not fp.bits[1].any() and fp.bits[0].any()


def test_tanimoto_matches_set_definition():
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 40)) < 0.3, rng.random((4, 40)) < 0.3
    b[0] = 0  # an empty fingerprint is similar to nothing
    sim = tanimoto(a, b)
    for i in range(5):
        for j in range(4):
            union = (a[i] | b[j]).sum()
            expected = (a[i] & b[j]).sum() / union if union else 0.0
            assert abs(sim[i, j] - expected) < 1e-6
    fp = morgan_fingerprints(["CCO", "CCO", "CCN"]).bits
    assert tanimoto(fp, fp)[0, 1] == 1.0 and tanimoto(fp, fp)[0, 2] < 1.0
