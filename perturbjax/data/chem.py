"""Drug features from SMILES with rdkit: Morgan fingerprints and Tanimoto similarity."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import rdFingerprintGenerator


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
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    bits = np.zeros((len(smiles), n_bits), np.uint8)
    valid = np.zeros(len(smiles), bool)
    invalid = []
    RDLogger.DisableLog("rdApp.*")  # parse failures are collected below instead of printed
    try:
        for i, s in enumerate(smiles):
            mol = Chem.MolFromSmiles(s) if isinstance(s, str) and s else None
            if mol is None:
                invalid.append((i, s))
                continue
            bits[i] = generator.GetFingerprintAsNumPy(mol)
            valid[i] = True
    finally:
        RDLogger.EnableLog("rdApp.*")
    return Fingerprints(bits, valid, tuple(invalid))


def tanimoto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tanimoto similarity between every row of bit matrix `a` [n, d] and `b` [m, d] -> [n, m].

    Two empty fingerprints have similarity 0 (not NaN), so invalid molecules match nothing.
    """
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
