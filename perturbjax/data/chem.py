"""Drug features from SMILES with rdkit: fingerprints, descriptors, scaffolds, Tanimoto similarity.

Every featurizer parses through `parse_smiles`, so an unparsable SMILES is reported the same way
everywhere (position and text in `invalid`, False in `valid`) instead of raising mid-dataset.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import Descriptors as _rd_descriptors
from rdkit.Chem import rdFingerprintGenerator
from rdkit.Chem.Scaffolds import MurckoScaffold

# Cheap, interpretable whole-molecule properties (size, lipophilicity, polarity, flexibility, rings).
DESCRIPTOR_NAMES = ("MolWt", "MolLogP", "TPSA", "NumHDonors", "NumHAcceptors", "NumRotatableBonds",
                    "RingCount", "NumAromaticRings", "FractionCSP3", "HeavyAtomCount")


@dataclasses.dataclass(frozen=True)
class ParsedSmiles:
    """rdkit molecules of a list of SMILES, parsed once and shared by the featurizers.

    Attributes:
      mols: one rdkit Mol per input, None where the SMILES did not parse.
      valid: [n] bool, False where the SMILES did not parse.
      invalid: (position, smiles) of each molecule that did not parse, for reports.
    """

    mols: tuple
    valid: np.ndarray
    invalid: tuple[tuple[int, str], ...]


def parse_smiles(smiles: Sequence[str]) -> ParsedSmiles:
    """Parses every SMILES; empty, non-string or unparsable entries are reported, never raised."""
    mols, invalid = [], []
    RDLogger.DisableLog("rdApp.*")  # parse failures are collected below instead of printed
    try:
        for i, s in enumerate(smiles):
            mol = Chem.MolFromSmiles(s) if isinstance(s, str) and s else None
            if mol is None:
                invalid.append((i, s))
            mols.append(mol)
    finally:
        RDLogger.EnableLog("rdApp.*")
    valid = np.array([m is not None for m in mols], bool)
    return ParsedSmiles(tuple(mols), valid, tuple(invalid))


@dataclasses.dataclass(frozen=True)
class Fingerprints:
    """Morgan bit vectors of a list of molecules.

    Attributes:
      bits: [n, n_bits] uint8; all-zero rows for invalid SMILES.
      valid: [n] bool, False where the SMILES did not parse.
      invalid: (position, smiles) of each molecule that did not parse, for reports.
    """

    bits: np.ndarray
    valid: np.ndarray
    invalid: tuple[tuple[int, str], ...]


def morgan_fingerprints(smiles: Sequence[str], radius: int = 2, n_bits: int = 1024) -> Fingerprints:
    """Morgan (ECFP-like) fingerprints; invalid SMILES are reported, never raised."""
    parsed = parse_smiles(smiles)
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    bits = np.zeros((len(parsed.mols), n_bits), np.uint8)
    for i, mol in enumerate(parsed.mols):
        if mol is not None:
            bits[i] = generator.GetFingerprintAsNumPy(mol)
    return Fingerprints(bits, parsed.valid, parsed.invalid)


@dataclasses.dataclass(frozen=True)
class Descriptors:
    """Physico-chemical descriptors of a list of molecules.

    Attributes:
      values: [n, k] float32, one column per name; all-zero rows for invalid SMILES.
      names: the k rdkit descriptor names, in column order.
      valid: [n] bool, False where the SMILES did not parse.
      invalid: (position, smiles) of each molecule that did not parse, for reports.
    """

    values: np.ndarray
    names: tuple[str, ...]
    valid: np.ndarray
    invalid: tuple[tuple[int, str], ...]


def descriptors(smiles: Sequence[str], names: Sequence[str] = DESCRIPTOR_NAMES) -> Descriptors:
    """rdkit descriptors by name (`rdkit.Chem.Descriptors`); invalid SMILES are reported, never raised.

    Raises:
      ValueError: a name that rdkit does not provide, so a typo fails before any molecule is scored.
    """
    names = tuple(names)
    unknown = [n for n in names if not callable(getattr(_rd_descriptors, n, None))]
    if unknown:
        raise ValueError(f"unknown rdkit descriptors {unknown}")
    functions = [getattr(_rd_descriptors, n) for n in names]
    parsed = parse_smiles(smiles)
    values = np.zeros((len(parsed.mols), len(names)), np.float32)
    rows = np.flatnonzero(parsed.valid)
    if rows.size:  # one rdkit call per molecule and descriptor; the array is filled in one go
        values[rows] = [[f(parsed.mols[i]) for f in functions] for i in rows]
    return Descriptors(values, names, parsed.valid, parsed.invalid)


def murcko_scaffolds(smiles: Sequence[str]) -> np.ndarray:
    """Bemis-Murcko scaffold SMILES (ring systems and linkers, atom types kept) of each molecule.

    Scaffolds group drugs by chemical series, which a scaffold split holds out together. Acyclic
    molecules have the empty scaffold "" (one shared group, as in chemprop/deepchem); an invalid
    SMILES gets "invalid:<position>", its own group, so unparsable drugs never merge with each
    other or with real scaffolds.

    Returns:
      [n] array of str.
    """
    parsed = parse_smiles(smiles)
    scaffolds = [f"invalid:{i}" if mol is None
                 else MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)
                 for i, mol in enumerate(parsed.mols)]
    return np.array(scaffolds, dtype=str)


def tanimoto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tanimoto similarity between every row of bit matrix `a` [n, d] and `b` [m, d] -> [n, m].

    Two empty fingerprints have similarity 0 (not NaN), so invalid molecules match nothing.
    """
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
