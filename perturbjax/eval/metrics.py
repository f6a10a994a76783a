"""Host-side numpy metrics: predicted differential-expression signatures, and class predictions.

A signature is a vector of per-gene differential expression values. Predictions
and targets come as ``[C, G]`` arrays (C test conditions, G readout genes).
Everything here runs in float64 on the host, after the model, so the numbers in
``summary.json`` do not depend on device precision.

Correlations of a constant vector are defined as 0 rather than NaN: the
training-mean baseline predicts exactly ``train_mean``, so its centred
prediction is all zeros, and it must score "no signal" instead of poisoning
averages with NaN.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np

DEFAULT_KS: tuple[int, ...] = (10, 20, 50, 100)

# Metric families and whether a larger value is better. This is the single source
# of truth for metric names; ``precision_up``/``precision_down`` appear in result
# dicts with an ``@k`` suffix (see ``metric_names``). Consumers of summary.json
# files should go through ``higher_is_better`` rather than hard-coding directions.
HIGHER_IS_BETTER: dict[str, bool] = {
    "pearson": True,
    "spearman": True,
    "pearson_centered": True,
    "rmse": False,
    "precision_up": True,
    "precision_down": True,
    "per_gene_pearson": True,
    "macro_f1": True,
    "accuracy": True,
    "balanced_accuracy": True,
}

# One line per family, for tables that print metric names (see `describe`).
DESCRIPTIONS: dict[str, str] = {
    "pearson": "Pearson r of predicted and measured signature, mean over conditions",
    "spearman": "Spearman rank correlation, mean over conditions",
    "pearson_centered": "Pearson r after subtracting the training-mean signature from both "
                        "(the selection metric: raw r rewards predicting the average response)",
    "rmse": "root mean squared error over all genes and conditions",
    "precision_up": "share of the measured top-k up-regulated genes among the predicted top k",
    "precision_down": "share of the measured top-k down-regulated genes among the predicted "
                      "top k",
    "per_gene_pearson": "Pearson r across conditions for each gene, mean over genes",
    "macro_f1": "F1 score per class, unweighted mean over the classes present in truth or "
                "prediction (the selection metric of classification)",
    "accuracy": "share of samples whose predicted class is their class",
    "balanced_accuracy": "recall per class, mean over the classes present in truth",
}

_PRECISION_FAMILIES = ("precision_up", "precision_down")


def describe(name: str) -> str:
    """`name`: what it measures (higher / lower is better), for a table's legend."""
    family = name.split("@", 1)[0]
    better = "higher" if higher_is_better(name) else "lower"
    k = name.split("@", 1)[1] if "@" in name else None
    text = DESCRIPTIONS[family].replace("top-k", f"top-{k}").replace("top k", f"top {k}") \
        if k else DESCRIPTIONS[family]
    return f"{name}: {text} ({better} is better)"


def metric_names(ks: Sequence[int] = DEFAULT_KS) -> list[str]:
    """Returns the keys of ``signature_metrics(..., ks=ks)`` in their output order."""
    names = ["pearson", "spearman", "pearson_centered", "rmse"]
    for family in _PRECISION_FAMILIES:
        names.extend(f"{family}@{k}" for k in _unique_ks(ks))
    names.append("per_gene_pearson")
    return names


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric ``name`` (e.g. ``"precision_up@20"``) is better.

    Raises:
        KeyError: if ``name`` is not a known metric.
    """
    family = name.split("@", 1)[0]
    if family not in HIGHER_IS_BETTER:
        raise KeyError(f"Unknown metric {name!r}; known families: {sorted(HIGHER_IS_BETTER)}")
    return HIGHER_IS_BETTER[family]


def rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation between matching rows of two ``[N, M]`` arrays.

    Rows where either side is constant get 0 (not NaN, and without warnings).

    Returns:
        float64 array of shape ``[N]``.

    Raises:
        ValueError: on non-2D, mismatched, empty or non-finite inputs.
    """
    return _pearson_rows(*_as_matching_2d(a, b, "a", "b"))


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # Detect constancy on the raw values: after mean-centring, rounding can leave
    # ~1e-17 noise that would otherwise yield a spurious correlation.
    constant = (np.ptp(a, axis=1) == 0) | (np.ptp(b, axis=1) == 0)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    # Product of norms rather than norm of the product keeps large inputs finite.
    denom = np.sqrt(np.sum(a * a, axis=1)) * np.sqrt(np.sum(b * b, axis=1))
    valid = ~constant & (denom > 0)
    r = np.divide(np.sum(a * b, axis=1), denom, out=np.zeros(a.shape[0]), where=valid)
    return np.clip(r, -1.0, 1.0)


def rowwise_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation between matching rows of two ``[N, M]`` arrays.

    Ties get average ranks (as ``scipy.stats.spearmanr``); constant rows give 0.

    Returns:
        float64 array of shape ``[N]``.

    Raises:
        ValueError: on non-2D, mismatched, empty or non-finite inputs.
    """
    return _spearman_rows(*_as_matching_2d(a, b, "a", "b"))


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _pearson_rows(_average_ranks(a), _average_ranks(b))


def centered_pearson(y_true: np.ndarray, y_pred: np.ndarray, train_mean: np.ndarray) -> float:
    """``pearson_centered`` of ``signature_metrics`` alone (validation searches call it often)."""
    y_true, y_pred = _as_matching_2d(y_true, y_pred, "y_true", "y_pred")
    train_mean = np.asarray(train_mean, dtype=np.float64)
    return float(_pearson_rows(y_true - train_mean, y_pred - train_mean).mean())


def signature_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    train_mean: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """Computes all signature metrics (keys as in ``metric_names(ks)``).

    Args:
        y_true: ``[C, G]`` measured signatures.
        y_pred: ``[C, G]`` predicted signatures.
        train_mean: ``[G]`` mean training signature; ``pearson_centered`` measures
            agreement on the condition-specific part beyond this shared component.
        ks: cut-offs for ``precision_up@k``/``precision_down@k``. A k larger than G
            is clipped to G (so the score is trivially 1.0) but the key keeps the
            requested k, so summaries stay comparable across gene panels. Ties in
            the ranking are broken by gene index.

    Returns:
        Dict of metric name to Python float.

    Raises:
        ValueError: on mismatched or non-2D shapes, empty or non-finite inputs
            (a diverged model should fail loudly, not score 0), or k < 1.
    """
    y_true, y_pred = _as_matching_2d(y_true, y_pred, "y_true", "y_pred")
    num_genes = y_true.shape[1]
    train_mean = np.asarray(train_mean, dtype=np.float64)
    if train_mean.shape != (num_genes,):
        raise ValueError(
            f"train_mean must have shape ({num_genes},) to match y_true {y_true.shape}, "
            f"got {train_mean.shape}"
        )
    _check_finite(train_mean, "train_mean")
    ks = _unique_ks(ks)

    out = {
        "pearson": _pearson_rows(y_true, y_pred).mean(),
        "spearman": _spearman_rows(y_true, y_pred).mean(),
        "pearson_centered": _pearson_rows(y_true - train_mean, y_pred - train_mean).mean(),
        "rmse": np.sqrt(np.mean((y_true - y_pred) ** 2)),
    }
    # Rank positions are computed once and reused for every k.
    for family, sign in zip(_PRECISION_FAMILIES, (-1.0, 1.0)):
        pos_true = _rank_positions(sign * y_true)
        pos_pred = _rank_positions(sign * y_pred)
        for k in ks:
            k_eff = min(k, num_genes)
            hits = np.sum((pos_true < k_eff) & (pos_pred < k_eff), axis=1)
            out[f"{family}@{k}"] = np.mean(hits / k_eff)
    out["per_gene_pearson"] = _pearson_rows(y_true.T, y_pred.T).mean()
    return {name: float(out[name]) for name in metric_names(ks)}


def _unique_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """Validates ks and drops duplicates, keeping first-seen order."""
    # operator.index rejects floats like 2.5 instead of silently truncating them.
    ks = tuple(dict.fromkeys(operator.index(k) for k in ks))
    bad = [k for k in ks if k < 1]
    if bad:
        raise ValueError(f"ks must be positive integers, got {bad}")
    return ks


def _as_matching_2d(a, b, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name_a} must be 2-D [conditions, genes], got shape {a.shape}")
    if b.shape != a.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}"
        )
    if a.size == 0:
        raise ValueError(f"{name_a} and {name_b} must be non-empty, got shape {a.shape}")
    _check_finite(a, name_a)
    _check_finite(b, name_b)
    return a, b


def _check_finite(x: np.ndarray, name: str) -> None:
    # NaN would otherwise slip through as a 0 correlation or an arbitrary ranking.
    bad = np.size(x) - np.count_nonzero(np.isfinite(x))
    if bad:
        raise ValueError(f"{name} contains {bad} non-finite value(s)")


def _rank_positions(x: np.ndarray) -> np.ndarray:
    """Position of each entry in its row's ascending order (0 = smallest), ties by index."""
    order = np.argsort(x, axis=1, kind="stable")
    pos = np.empty_like(order)
    np.put_along_axis(pos, order, np.arange(x.shape[1])[None, :], axis=1)
    return pos


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Row-wise 1-based ranks with ties averaged (scipy's ``rankdata(method='average')``)."""
    n, m = x.shape
    order = np.argsort(x, axis=1, kind="stable")
    xs = np.take_along_axis(x, order, axis=1)
    starts = np.ones((n, m), dtype=bool)
    starts[:, 1:] = xs[:, 1:] != xs[:, :-1]
    # Give every tie group a globally unique id so one bincount handles all rows.
    group = np.cumsum(starts, axis=1) - 1 + (np.arange(n) * m)[:, None]
    ordinal = np.broadcast_to(np.arange(1, m + 1, dtype=np.float64), (n, m))
    sums = np.bincount(group.ravel(), weights=ordinal.ravel(), minlength=n * m)
    counts = np.bincount(group.ravel(), minlength=n * m)
    mean_rank = sums[group] / counts[group]
    ranks = np.empty((n, m))
    np.put_along_axis(ranks, order, mean_rank, axis=1)
    return ranks


def classification_metrics(labels: np.ndarray, scores: np.ndarray,
                           class_names: Sequence[str]) -> dict:
    """Macro-F1, accuracy and balanced accuracy of class scores `[n, K]` (any monotone scores:
    logits or probabilities; the predicted class is the argmax) against integer `labels` `[n]`,
    and `per_class`: precision, recall, F1 and support of every class."""
    labels = np.asarray(labels, np.int64)
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0] or scores.shape[1] != len(class_names):
        raise ValueError(f"scores of shape {scores.shape} for {labels.shape[0]} labels and "
                         f"{len(class_names)} classes; expected [n, K]")
    _check_finite(scores, "scores")
    k = len(class_names)
    pred = scores.argmax(1)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (labels, pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(1), confusion.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k),
                   where=precision + recall > 0)
    present = (support > 0) | (predicted > 0)
    return {
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "accuracy": float(tp.sum() / max(len(labels), 1)),
        "balanced_accuracy": float(recall[support > 0].mean()) if (support > 0).any() else 0.0,
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                             "f1": float(f1[i]), "support": int(support[i])}
                      for i, name in enumerate(class_names)},
    }
