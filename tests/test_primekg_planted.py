"""Signatures planted on a PrimeKG-format graph (perturbjax/data/primekg_planted.py) and the
PrimeKG-scale experiment's test variant, which trains on sampled subgraphs."""

import dataclasses

import numpy as np
import pytest

from perturbjax.config import apply_overrides, load_config
from perturbjax.data.primekg_planted import CELL, PPI, TARGETS, PlantedConfig, make_planted
from perturbjax.training.loop import train_and_evaluate

SMALL = dict(synthesize=True, synthetic_nodes=2_000, synthetic_rows=40_000, n_readout=40,
             n_cells=4, expressed_genes=10, max_drugs=50, cells_per_drug=2)


def test_planted_signatures_follow_targets_and_interactions(tmp_path):
    path = str(tmp_path / "kg.csv")
    data, reports = make_planted(PlantedConfig(path=path, **SMALL))
    assert list(reports) == [path] and reports[path]["kept"]["rows"] > 0
    assert reports[path]["notes"]["synthetic"] is True  # the run's summary says so
    g = data.graph
    assert data.signatures.shape == (100, 40) and len(np.unique(data.drug)) == 50
    assert g.nodes[CELL].count == 4 and g.nodes[CELL].features["basal_expression"].shape == (4, 32)
    assert (data.target_indicators()[data.drug].sum(1) > 0).all()  # every drug has a target
    # A drug's signature is largest on readout genes near its targets (itself or one PPI step).
    targets, ppi = g.edges[TARGETS], g.edges[PPI]
    near_scores, far_scores = [], []
    for row, d in enumerate(data.drug):
        hit = set(targets.receivers[targets.senders == d].tolist())
        hit |= set(ppi.receivers[np.isin(ppi.senders, list(hit))].tolist())
        near = np.isin(data.readout, list(hit))
        near_scores += np.abs(data.signatures[row][near]).tolist()
        far_scores += np.abs(data.signatures[row][~near]).tolist()
    assert np.mean(near_scores) > 2 * np.mean(far_scores)
    # The same config plants the same data (the file is written once and reused).
    again, _ = make_planted(PlantedConfig(path=path, **SMALL))
    np.testing.assert_array_equal(again.signatures, data.signatures)


def test_missing_graph_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="synthesize=True"):
        make_planted(PlantedConfig(path=str(tmp_path / "none.csv")))
    with pytest.raises(ValueError, match="path is empty"):
        make_planted(PlantedConfig())
    config = dataclasses.replace(PlantedConfig(path=str(tmp_path / "kg.csv"), **SMALL),
                                 n_readout=10_000)
    with pytest.raises(ValueError, match="fewer than n_readout=10000"):
        make_planted(config)


def test_scale_experiment_test_variant_trains_on_sampled_subgraphs(tmp_path, data_dir_unchanged):
    config = apply_overrides(load_config("experiments/primekg_scale.py:test"),
                             [f"data.planted.path={tmp_path / 'kg.csv'}"])
    assert config.graph.mode == "sampled"
    summary = train_and_evaluate(config, str(tmp_path / "run"), progress=False)
    assert summary["padding_budget"]["n_edge"] < sum(summary["graph"]["edges"].values())
    assert summary["graph_mode"] == "sampled" and summary["sampling"]["fanouts"] == [4, 2]
    assert summary["compilations"] == {"train_step": 1, "predict_step": 1}
    assert 0 < summary["peak_rss_gib"] < 8
    assert np.isfinite(summary["test"]["pearson_centered"])


def test_synthetic_data_is_never_written_into_the_data_directory(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    (data_dir / "primekg").mkdir(parents=True)
    monkeypatch.setenv("PERTURBJAX_DATA_DIR", str(data_dir))
    with pytest.raises(ValueError, match="data directory"):
        make_planted(PlantedConfig(path=str(data_dir / "primekg" / "kg.csv"), **SMALL))
    assert list(data_dir.rglob("*")) == [data_dir / "primekg"]  # nothing written
