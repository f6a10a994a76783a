"""Tests for perturbjax.eval.metrics against scipy/numpy references and hand examples."""

import warnings

import numpy as np
import pytest
from scipy import stats

from perturbjax.eval import metrics


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    num_conditions, num_genes = 7, 40
    train_mean = rng.normal(size=num_genes)
    y_true = train_mean + rng.normal(size=(num_conditions, num_genes))
    y_pred = 0.5 * y_true + rng.normal(size=(num_conditions, num_genes))
    return y_true, y_pred, train_mean


def _ref_pearson_rows(a, b):
    return np.array([stats.pearsonr(x, y)[0] for x, y in zip(a, b)])


def _ref_spearman_rows(a, b):
    return np.array([stats.spearmanr(x, y)[0] for x, y in zip(a, b)])


def test_rowwise_pearson_matches_scipy(data):
    y_true, y_pred, _ = data
    np.testing.assert_allclose(
        metrics.rowwise_pearson(y_true, y_pred), _ref_pearson_rows(y_true, y_pred), atol=1e-12
    )


def test_rowwise_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(1)
    # Few distinct integer values force many ties within each row.
    a = rng.integers(0, 5, size=(6, 30)).astype(float)
    b = rng.integers(0, 4, size=(6, 30)).astype(float)
    np.testing.assert_allclose(
        metrics.rowwise_spearman(a, b), _ref_spearman_rows(a, b), atol=1e-12
    )


def test_rowwise_spearman_matches_scipy_without_ties(data):
    y_true, y_pred, _ = data
    np.testing.assert_allclose(
        metrics.rowwise_spearman(y_true, y_pred), _ref_spearman_rows(y_true, y_pred), atol=1e-12
    )


def test_average_ranks_match_scipy_rankdata():
    x = np.array([[3.0, 1.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(
        metrics._average_ranks(x), [stats.rankdata(row) for row in x]
    )


def test_signature_metrics_match_references(data):
    y_true, y_pred, train_mean = data
    out = metrics.signature_metrics(y_true, y_pred, train_mean, ks=(5, 10))

    assert list(out) == metrics.metric_names((5, 10))
    assert all(isinstance(v, float) for v in out.values())
    np.testing.assert_allclose(out["pearson"], _ref_pearson_rows(y_true, y_pred).mean())
    np.testing.assert_allclose(out["spearman"], _ref_spearman_rows(y_true, y_pred).mean())
    np.testing.assert_allclose(
        out["pearson_centered"],
        _ref_pearson_rows(y_true - train_mean, y_pred - train_mean).mean(),
    )
    np.testing.assert_allclose(out["rmse"], np.sqrt(np.mean((y_true - y_pred) ** 2)))
    assert metrics.centered_pearson(y_true, y_pred, train_mean) == out["pearson_centered"]
    np.testing.assert_allclose(
        out["per_gene_pearson"], _ref_pearson_rows(y_true.T, y_pred.T).mean()
    )
    for k in (5, 10):
        up = [
            len(set(np.argsort(-t)[:k]) & set(np.argsort(-p)[:k])) / k
            for t, p in zip(y_true, y_pred)
        ]
        down = [
            len(set(np.argsort(t)[:k]) & set(np.argsort(p)[:k])) / k
            for t, p in zip(y_true, y_pred)
        ]
        np.testing.assert_allclose(out[f"precision_up@{k}"], np.mean(up))
        np.testing.assert_allclose(out[f"precision_down@{k}"], np.mean(down))


def test_perfect_prediction(data):
    y_true, _, train_mean = data
    out = metrics.signature_metrics(y_true, y_true, train_mean, ks=(3,))
    for name in ("pearson", "spearman", "pearson_centered", "per_gene_pearson"):
        assert out[name] == pytest.approx(1.0)
    assert out["rmse"] == 0.0
    assert out["precision_up@3"] == out["precision_down@3"] == 1.0


def test_precision_at_k_hand_computed():
    y_true = np.array([
        [5.0, 4.0, 3.0, 2.0, 1.0, 0.0],
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
    ])
    y_pred = np.array([
        # top-2 {0, 2} vs true {0, 1} -> 1/2; bottom-2 {4, 5} vs true {4, 5} -> 2/2
        [9.0, 1.0, 8.0, 2.0, 0.0, -1.0],
        # top-2 {0, 1} vs true {4, 5} -> 0/2; bottom-2 {4, 5} vs true {0, 1} -> 0/2
        [9.0, 8.0, 3.0, 2.0, 1.0, 0.0],
    ])
    out = metrics.signature_metrics(y_true, y_pred, np.zeros(6), ks=(2, 3))
    assert out["precision_up@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert out["precision_down@2"] == pytest.approx((2 / 2 + 0) / 2)
    # row 0: top-3 {0, 2, 3} vs {0, 1, 2} -> 2/3; bottom-3 {1, 4, 5} vs {3, 4, 5} -> 2/3
    # row 1: top-3 {0, 1, 2} vs {3, 4, 5} -> 0;   bottom-3 {3, 4, 5} vs {0, 1, 2} -> 0
    assert out["precision_up@3"] == pytest.approx((2 / 3 + 0) / 2)
    assert out["precision_down@3"] == pytest.approx((2 / 3 + 0) / 2)


def test_precision_k_larger_than_genes_is_clipped():
    y_true = np.array([[1.0, 2.0, 3.0]])
    y_pred = np.array([[3.0, 2.0, 1.0]])
    out = metrics.signature_metrics(y_true, y_pred, np.zeros(3), ks=(2, 100))
    # Key keeps the requested k; with k clipped to G every gene is selected.
    assert out["precision_up@100"] == 1.0
    assert out["precision_down@100"] == 1.0
    assert out["precision_up@2"] == pytest.approx(1 / 2)


def test_constant_vectors_give_zero_without_warnings(data):
    y_true, _, train_mean = data
    # Training-mean baseline: centred prediction is identically zero.
    baseline = np.broadcast_to(train_mean, y_true.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = metrics.signature_metrics(y_true, baseline, train_mean)
        # Every gene column of the baseline is constant across conditions.
        assert out["per_gene_pearson"] == 0.0
        assert out["pearson_centered"] == 0.0
        const = np.full((2, 5), 0.1)
        np.testing.assert_array_equal(metrics.rowwise_pearson(const, const), [0.0, 0.0])
        np.testing.assert_array_equal(metrics.rowwise_spearman(const, const), [0.0, 0.0])
        one_gene = metrics.signature_metrics(y_true[:, :1], y_true[:, :1], train_mean[:1])
    assert one_gene["pearson"] == 0.0 and one_gene["spearman"] == 0.0


def test_float32_inputs_and_single_condition():
    rng = np.random.default_rng(2)
    y = rng.normal(size=(1, 20)).astype(np.float32)
    out = metrics.signature_metrics(y, y, np.zeros(20, np.float32), ks=(5,))
    assert out["pearson"] == pytest.approx(1.0)
    # One condition: each gene column is a single value, hence constant.
    assert out["per_gene_pearson"] == 0.0


@pytest.mark.parametrize(
    "y_true_shape, y_pred_shape, mean_shape, match",
    [
        ((3, 4), (3, 5), (4,), r"y_true and y_pred.*\(3, 4\).*\(3, 5\)"),
        ((4,), (4,), (4,), r"y_true must be 2-D.*\(4,\)"),
        ((3, 4), (3, 4), (5,), r"train_mean.*\(4,\).*\(5,\)"),
        ((3, 4), (3, 4), (1, 4), r"train_mean"),
        ((0, 4), (0, 4), (4,), r"non-empty"),
    ],
)
def test_bad_shapes_raise(y_true_shape, y_pred_shape, mean_shape, match):
    with pytest.raises(ValueError, match=match):
        metrics.signature_metrics(
            np.zeros(y_true_shape), np.zeros(y_pred_shape), np.zeros(mean_shape)
        )


def test_rowwise_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        metrics.rowwise_pearson(np.zeros((2, 3)), np.zeros((3, 2)))


def test_non_finite_and_bad_k_raise():
    y = np.ones((2, 3))
    bad = y.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="y_pred contains 1 non-finite"):
        metrics.signature_metrics(y, bad, np.zeros(3))
    with pytest.raises(ValueError, match="ks must be positive"):
        metrics.signature_metrics(y, y, np.zeros(3), ks=(0,))
    with pytest.raises(TypeError):
        metrics.signature_metrics(y, y, np.zeros(3), ks=(2.5,))


def test_metric_directions():
    for name in metrics.metric_names():
        assert isinstance(metrics.higher_is_better(name), bool)
    assert metrics.higher_is_better("precision_up@20")
    assert not metrics.higher_is_better("rmse")
    with pytest.raises(KeyError):
        metrics.higher_is_better("auroc")
    assert metrics.higher_is_better("macro_f1") and metrics.higher_is_better("balanced_accuracy")


def test_default_metric_names_are_stable():
    assert metrics.metric_names() == [
        "pearson", "spearman", "pearson_centered", "rmse",
        "precision_up@10", "precision_up@20", "precision_up@50", "precision_up@100",
        "precision_down@10", "precision_down@20", "precision_down@50", "precision_down@100",
        "per_gene_pearson",
    ]


def test_classification_metrics_against_hand_counts():
    # 3 classes; class 2 never occurs in truth but is predicted once.
    labels = np.array([0, 0, 0, 1, 1, 1])
    pred = np.array([0, 0, 1, 1, 1, 2])
    scores = np.eye(3)[pred]
    m = metrics.classification_metrics(labels, scores, ["a", "b", "c"])
    # class a: precision 1, recall 2/3 -> F1 0.8; b: precision 2/3, recall 2/3; c: 0.
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3),
                                   "f1": pytest.approx(0.8), "support": 3}
    assert m["macro_f1"] == pytest.approx((0.8 + 2 / 3 + 0.0) / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)  # over classes present in truth
    with pytest.raises(ValueError, match="expected \\[n, K\\]"):
        metrics.classification_metrics(labels, scores[:, :2], ["a", "b", "c"])
