import numpy as np
import pytest

from perturbjax.data.chem import (DESCRIPTOR_NAMES, descriptors, morgan_fingerprints,
                                    murcko_scaffolds, parse_smiles, tanimoto)


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


def test_descriptors_match_known_values():
    d = descriptors(["c1ccccc1", "CCO", "not a smiles", "CC(=O)Oc1ccccc1C(=O)O"])
    assert d.names == DESCRIPTOR_NAMES and d.values.shape == (4, len(DESCRIPTOR_NAMES))
    assert d.values.dtype == np.float32
    col = {name: d.values[:, i] for i, name in enumerate(d.names)}
    assert abs(col["MolWt"][0] - 78.11) < 0.01 and abs(col["MolWt"][3] - 180.16) < 0.01
    assert col["NumHDonors"][1] == 1 and col["NumHAcceptors"][1] == 1 and col["HeavyAtomCount"][1] == 3
    assert col["RingCount"][0] == 1 and col["NumAromaticRings"][0] == 1 and col["TPSA"][0] == 0
    assert col["FractionCSP3"][1] == 1.0 and col["FractionCSP3"][0] == 0.0
    np.testing.assert_array_equal(d.valid, [True, True, False, True])
    assert d.invalid == ((2, "not a smiles"),) and not d.values[2].any()
    few = descriptors(["CCO"], names=["TPSA", "MolWt"])
    assert few.names == ("TPSA", "MolWt") and abs(few.values[0, 1] - 46.07) < 0.01
    with pytest.raises(ValueError, match="unknown rdkit descriptors"):
        descriptors(["CCO"], names=["MolWeight"])


def test_murcko_scaffolds_of_known_molecules():
    scaffolds = murcko_scaffolds([
        "CC(C)Cc1ccc(cc1)C(C)C(=O)O",  # ibuprofen
        "CC(=O)Oc1ccccc1C(=O)O",  # aspirin
        "CCO",  # acyclic: empty scaffold
        "not a smiles",
        "Cc1ccc2ccccc2c1",  # naphthalene ring system kept whole
        "OCc1ccccc1CCc1ccncc1",  # two rings and their linker
        "C1CC",  # unclosed ring: invalid too, but a group of its own
    ])
    assert scaffolds.tolist() == ["c1ccccc1", "c1ccccc1", "", "invalid:3", "c1ccc2ccccc2c1",
                                  "c1ccc(CCc2ccncc2)cc1", "invalid:6"]


def test_featurizers_share_one_parser():
    smiles = np.array(["CCO", "", "xyz", "c1ccccc1"])  # numpy strings, as in PerturbationData
    parsed = parse_smiles(smiles)
    assert parsed.mols[1] is None and parsed.mols[0] is not None
    for result in (morgan_fingerprints(smiles), descriptors(smiles)):
        np.testing.assert_array_equal(result.valid, parsed.valid)
        assert result.invalid == parsed.invalid == ((1, ""), (2, "xyz"))
    assert murcko_scaffolds(smiles).tolist() == ["", "invalid:1", "invalid:2", "c1ccccc1"]
    assert descriptors([]).values.shape == (0, len(DESCRIPTOR_NAMES))
