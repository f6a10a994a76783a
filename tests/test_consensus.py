"""The Hetionet + LINCS consensus dataset and experiment, on the real files."""

import json
import logging
import runpy

import numpy as np
import pytest

from perturbjax.config import load_config, load_sweep
from perturbjax.data import leakage
from perturbjax.data.hetionet_lincs import ConsensusConfig, make_consensus
from perturbjax.data.lincs import read_landmark_genes
from perturbjax.data.splits import make_split
from perturbjax.graph.hetero import EdgeType
from perturbjax.training.loop import train_and_evaluate

EXPERIMENT = "experiments/hetionet_lincs_consensus.py"


@pytest.fixture(scope="module")
def consensus():
    return make_consensus(ConsensusConfig(edges="hetionet/edges-10.sif"))


def test_every_drug_placed_and_every_landmark_read_out(consensus, real_file):
    data, reports = consensus
    assert data.num_conditions == 1170 and data.signatures.shape == (1170, 978)
    # 849 of the 1,170 DrugBank ids are Hetionet compounds (checked with comm on the id lists).
    match = reports["drug matching"]["kept"]
    assert match["matched by drug_id"] == 849 and match["unmatched"] == 321
    compounds = data.graph.nodes["compound"]
    assert compounds.count == 1552 + 321
    assert len(np.unique(data.drug)) == 1170
    landmarks, _ = read_landmark_genes(real_file("lincs/genes.tsv"))
    readout_ids = data.graph.nodes["gene"].names[data.readout]
    assert sorted(readout_ids) == sorted(landmarks["entrez_id"])
    # A new drug reaches the graph through its CbG targets: DB00197 (troglitazone) is not a
    # Hetionet compound; CbG-binding.tsv lists CYP1A1 (Entrez 1543) among its targets.
    assert "DB00197" not in compounds.names[:1552]
    drug = data.graph.index("compound", ["DB00197"])[0]
    binds = data.graph.edges[EdgeType("compound", "binds", "gene")]
    assert "1543" in set(data.graph.nodes["gene"].names[binds.receivers[binds.senders == drug]])
    # Drugs without a parseable SMILES are counted, not fatal.
    no_smiles = reports["drug features"]["dropped"]["SMILES missing or not parsed by rdkit"]
    assert no_smiles == (data.drug_smiles == "").sum() > 0
    assert compounds.features["morgan"].shape == (1873, 256)


def test_leaky_edges_present_in_data_but_not_in_guarded_graph(consensus):
    data, _ = consensus
    assert EdgeType("compound", "upregulates", "gene") in data.graph.edges
    graph, info = leakage.guard(data.graph)
    assert not set(leakage.L1000_DERIVED) & set(graph.edges)
    assert len(info["dropped"]) == 6 and not info["leaky"]


def test_five_cold_drug_folds_partition_the_drugs(consensus):
    data, _ = consensus
    tests = [make_split(data, "cold_drug", seed=0, num_folds=5, fold=k).test for k in range(5)]
    assert np.array_equal(np.sort(np.concatenate(tests)), np.arange(data.num_conditions))
    assert load_sweep(EXPERIMENT) == [[f"data.fold={k}"] for k in range(5)]


def test_every_ablation_drops_relations_of_the_guarded_graph(consensus):
    """An ablation naming a relation the graph lacks would raise at run time; check them all."""
    data, _ = consensus
    graph, _ = leakage.guard(data.graph)
    for name in runpy.run_path(EXPERIMENT)["ABLATIONS"]:
        dropped = load_config(f"{EXPERIMENT}:test,ablate={name}").graph.drop_relations
        kept = {k.relation for k in graph.drop_edge_types(dropped).edges}
        assert not kept & set(dropped)
        if name == "beyond_targets":
            assert kept == {"binds", "rev_binds"}


def test_kg_ridge_runs_without_anything_but_targets(tmp_path):
    config = load_config(f"{EXPERIMENT}:test,fold=1,model=kg_ridge,ablate=beyond_targets")
    summary = train_and_evaluate(config, str(tmp_path), experiment="consensus", progress=False)
    assert set(summary["graph"]["edges"]) == {"compound--binds-->gene", "gene--rev_binds-->compound"}
    assert summary["chosen"]["chemistry_weight"] < 1 and np.isfinite(summary["test"]["pearson_centered"])


@pytest.mark.parametrize("leaky", [False, True])
def test_experiment_runs_end_to_end(tmp_path, leaky, data_dir_unchanged):
    config = load_config(f"{EXPERIMENT}:test,fold=2" + (",leaky" if leaky else ""))
    summary = train_and_evaluate(config, str(tmp_path), experiment="consensus", progress=False)
    assert summary["split"]["kind"] == "cold_drug" and summary["split"]["fold"] == 2
    assert summary["leakage"]["leaky"] is leaky
    assert ("compound--upregulates-->gene" in summary["graph"]["edges"]) is leaky
    assert set(summary["baselines"]) == {"mean", "target_ridge"}
    assert np.isfinite(summary["test"]["pearson_centered"])
    assert summary["compilations"]["train_step"] == 1
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["load_reports"]["drug matching"]["kept"]["unmatched"] >= 0


def test_cell_line_dataset_matches_lincs_drugs_by_inchikey_and_name():
    from perturbjax.data.hetionet_lincs import CellLineConfig, make_cell_lines

    data, reports = make_cell_lines(CellLineConfig(edges="hetionet/edges-10.sif", full_tables=False))
    # modzs_n272x978.gct: 272 signatures, 65 cell lines, 6 LINCS pert_ids of 3 drugs, 5 doses,
    # times 6 h and 24 h (counted with awk over its header block).
    assert data.signatures.shape == (272, 978)
    assert len(np.unique(data.cell)) == 65 and len(np.unique(data.drug)) == 3
    np.testing.assert_allclose(np.unique(data.dose), [0.1, 0.5, 1.0, 3.0, 10.0], rtol=1e-6)
    assert set(np.unique(data.time)) == {6.0, 24.0}
    match = reports["drug matching"]["kept"]
    assert match["matched by drug_id"] == 0 and match["unmatched"] == 0
    assert match["matched by inchikey"] + match["matched by name"] == 6
    names = set(data.graph.nodes["compound"].names[np.unique(data.drug)])
    assert names == {"DB08881", "DB01076", "DB00285"}  # vemurafenib, atorvastatin, venlafaxine
    basal = data.basal_expression()
    assert basal.shape == (65, 979) and basal[:, -1].sum() == 32  # flag: basal known for 32


def test_cell_line_experiment_runs(tmp_path, data_dir_unchanged, caplog):
    config = load_config("experiments/l1000_cell_lines.py:test,fold=1")
    with caplog.at_level(logging.INFO, logger="perturbjax"):
        summary = train_and_evaluate(config, str(tmp_path), experiment="cell_lines",
                                     progress=False)
    # A real-data run says what it is loading, stage by stage, and what came of it.
    stages = [m for m in caplog.messages if m.startswith(("reading", "loading", "placing",
                                                          "drug features", "data ready"))]
    assert [s.split()[0] for s in stages] == ["reading", "loading", "placing", "drug", "data"]
    assert summary["split"]["kind"] == "cold_cell" and summary["split"]["fold"] == 1
    assert np.isfinite(summary["test"]["pearson_centered"])


def test_precomputed_embeddings_attach_by_node_id(tmp_path):
    """A MolFormer-style table keyed by DrugBank id becomes a compound feature, coverage reported."""
    ids = np.array(["DB00014", "DB00197", "DB99999"])  # Hetionet, joined from CbG, unknown
    np.savez(tmp_path / "drugs.npz", ids=ids, vectors=np.arange(12, dtype=np.float32).reshape(3, 4))
    data, reports = make_consensus(ConsensusConfig(edges="hetionet/edges-10.sif", full_tables=False,
                                                   max_drugs=300, drug_features=(),
                                                   node_embeddings=(f"compound={tmp_path / 'drugs.npz'}",)))
    compounds = data.graph.nodes["compound"]
    rows = data.graph.index("compound", ["DB00014", "DB00197"])
    np.testing.assert_array_equal(compounds.features["embedding"][rows], [[0, 1, 2, 3], [4, 5, 6, 7]])
    assert compounds.features["embedding_present"].sum() == 2
    with pytest.raises(ValueError, match="not NODE_TYPE=FILE"):
        make_consensus(ConsensusConfig(edges="hetionet/edges-10.sif", full_tables=False,
                                       max_drugs=10, node_embeddings=("drugs.npz",)))
