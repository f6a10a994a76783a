"""A linear KG model: kernel ridge over where each drug's node reaches in the graph.

Simplified graph convolution (SGC; Wu et al. 2019, "Simplifying Graph Convolutional Networks")
without learned layers: a drug is represented by `S^h e_d`, its one-hot node vector propagated
h hops through the symmetric-normalised adjacency `S = D^-1/2 (A + I) D^-1/2` of the whole KG
(all edge types, both directions). Each hop's features are standardised with training
statistics, as the regression baselines standardise theirs (so a rare target weighs as much as
a hub), and the kernel averages the hops 1..h. Two drugs are then similar when their
neighbourhoods overlap: shared targets (h = 1), targets that interact or share pathways, shared
diseases, side effects or classes (h = 2, 3). Ridge regression in that kernel predicts
signatures; h and the penalty are chosen on validation.

It reads only the graph it is given, so edge-type ablations and the leakage guard act on it as
on the GNNs, and it fits in seconds on the full Hetionet graph on a CPU.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from perturbjax.data.perturbation import PerturbationData
from perturbjax.models.baselines import Baseline, _score


def normalised_adjacency(data: PerturbationData) -> sp.csr_matrix:
    """`D^-1/2 (A + I) D^-1/2` over all nodes (flat numbering), edges made undirected."""
    graph, offsets = data.graph, data.graph.node_offsets()
    rows, cols = [], []
    for key, es in graph.edges.items():
        rows.append(es.senders.astype(np.int64) + offsets[key.source])
        cols.append(es.receivers.astype(np.int64) + offsets[key.target])
    n = graph.num_nodes
    r = np.concatenate(rows + cols + [np.arange(n)])
    c = np.concatenate(cols + rows + [np.arange(n)])
    a = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(n, n))
    a.data[:] = 1.0  # repeated edges (several relations between two nodes) count once
    d = np.asarray(a.sum(1)).ravel() ** -0.5
    return (sp.diags(d) @ a @ sp.diags(d)).astype(np.float32).tocsr()


class GraphRidge(Baseline):
    """Kernel ridge on drugs' 1..h-hop KG neighbourhoods; h and the penalty chosen on validation."""

    name = "kg_ridge"
    max_hops = 3
    alphas = (1e-2, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)  # kernels: unit mean diagonal

    def _hop_kernels(self, data: PerturbationData, train_drugs: np.ndarray
                     ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Drugs used by conditions and one [n, n] kernel per hop, each of unit mean diagonal."""
        drugs = np.unique(data.drug)
        s = normalised_adjacency(data)
        start = data.graph.node_offsets()[data.drug_type]
        signal = s[drugs + start].toarray()  # hop 1: [n_drugs, n_nodes]
        fit_rows = np.searchsorted(drugs, np.unique(train_drugs))
        kernels = []
        for hop in range(self.max_hops):
            if hop:
                signal = (s.T @ signal.T).T  # S is symmetric; keeps the product sparse x dense
            sd = signal[fit_rows].std(0)
            used = sd > 1e-9
            x = (signal[:, used] - signal[fit_rows][:, used].mean(0)) / sd[used]
            k = x @ x.T
            kernels.append(k / max(np.mean(np.diag(k)), 1e-12))
        return drugs, kernels

    def fit(self, data, train, validation):
        self.drugs, kernels = self._hop_kernels(data, data.drug[train])
        pos = np.searchsorted(self.drugs, data.drug)
        y = data.signatures
        self.y_mean = y[train].mean(0)
        self.train_pos = pos[train]
        best = -np.inf
        for hops in range(1, self.max_hops + 1):
            kernel = sum(kernels[:hops]) / hops
            k_tt = kernel[np.ix_(pos[train], pos[train])].astype(np.float64)
            evals, evecs = np.linalg.eigh(k_tt)
            proj = evecs.T @ (y[train] - self.y_mean)
            for alpha in self.alphas:
                coef = evecs @ (proj / (evals + alpha)[:, None])
                pred = kernel[np.ix_(pos[validation], pos[train])] @ coef + self.y_mean
                score = _score(data, validation, pred, self.y_mean)
                if score > best:
                    best, self.kernel, self.coef = score, kernel, coef.astype(np.float32)
                    self.chosen = {"hops": hops, "alpha": alpha}

    def predict(self, data, idx):
        pos = np.searchsorted(self.drugs, data.drug[idx])
        return self.kernel[np.ix_(pos, self.train_pos)] @ self.coef + self.y_mean
