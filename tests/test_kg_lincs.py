"""The files source: a user's KG and LINCS level-5 files, in both published layouts."""

import json

import numpy as np
import pandas as pd
import pytest

from perturbjax import cli
from perturbjax.config import load_config
from perturbjax.data import kg_lincs
from perturbjax.data.kg_lincs import FilesConfig, FilterConfig, make_from_files, plan
from perturbjax.data.lincs import modz
from perturbjax.graph.hetero import EdgeType
from tests import lincs_files

N_TREATED = 3 * 2 * 2 * 2  # compounds x cells x doses x replicates


@pytest.fixture
def beta(tmp_path):
    return lincs_files.write_beta(tmp_path)


@pytest.fixture
def geo(tmp_path):
    return lincs_files.write_geo(tmp_path)


def _plan(files: dict, collapse="drug_cell", **filters):
    return plan(FilesConfig(**files), FilterConfig(**filters), collapse)


def _reports(p):
    return {r.source: r for r in p.reports}


def test_beta_layout_filters_maps_and_places(beta):
    p = _plan(beta)
    reports = _reports(p)
    filters = reports["signature filters"]
    assert filters.kept["signatures"] == N_TREATED
    assert sum(filters.dropped.values()) == 2  # the vehicle control and the shRNA
    assert set(p.signatures["pert_type"]) == {"trt_cp"}
    # Readout: the 4 landmarks, never the inferred genes, in the geneinfo's order.
    np.testing.assert_array_equal(p.matrix_rows, lincs_files.LANDMARKS)
    genes = p.graph.nodes["gene/protein"].names
    assert list(genes[p.readout]) == lincs_files.LANDMARKS
    assert reports["readout genes -> KG gene nodes"].kept["matched by Entrez id"] == 4
    # Compounds: one by name, one by InChIKey (the user's drug table), one new with targets.
    matching = reports["drug matching"].kept
    assert (matching["matched by name"], matching["matched by inchikey"],
            matching["unmatched"]) == (1, 1, 1)
    drugs = list(p.graph.nodes["drug"].names)
    assert drugs == ["DB1", "DB2", "DB3", "BRD-C3"]
    first = p.signatures.drop_duplicates("pert_id").set_index("pert_id")["drug"]
    assert first.to_dict() == {"BRD-A1": 0, "BRD-B2": 1, "BRD-C3": 3}
    targets = p.graph.edges[EdgeType("drug", "drug_protein", "gene/protein")]
    new_targets = {genes[r] for s, r in zip(targets.senders, targets.receivers) if s == 3}
    assert new_targets == {"102", "103"}  # GENE2, GENE3; NOTAGENE is reported
    assert reports["drug matching"].dropped["target symbol of a new compound not a KG gene"] == 1
    rev = p.graph.edges[EdgeType("gene/protein", "rev_drug_protein", "drug")]
    assert 3 in set(rev.receivers.tolist())
    assert p.drug_smiles[3] == "c1ccccc1N" and p.drug_smiles[2] == ""
    # Cell lines: A375 -> melanoma (a KG disease); MCF7's disease is not in the KG.
    cells = list(p.graph.nodes["cell_line"].names)
    link = p.graph.edges[EdgeType("cell_line", "cell_line_disease", "disease")]
    linked = {(cells[s], p.graph.nodes["disease"].names[r])
              for s, r in zip(link.senders, link.receivers)}
    assert linked == {("A375", "D1")}
    assert reports["cell lines"].dropped["primary disease not a KG disease name"] == 1


def test_collapse_is_modz_of_each_drug_cell_pair(beta):
    data, reports = make_from_files(FilesConfig(**beta), FilterConfig(), "drug_cell",
                                    morgan_bits=64)
    assert data.num_conditions == 3 * 2
    sig = lincs_files.signature_table()
    values = lincs_files.values(sig["sig_id"])
    rows = [lincs_files.GENES["gene_id"].tolist().index(g) for g in lincs_files.LANDMARKS]
    # The condition of BRD-C3 in MCF7: its 4 signatures (2 doses x 2 replicates) by MODZ.
    cols = np.flatnonzero(((sig["pert_id"] == "BRD-C3") & (sig["cell_iname"] == "MCF7")).to_numpy())
    expected, _ = modz(values[rows][:, cols], np.zeros(len(cols), int))
    drug = list(data.graph.nodes["drug"].names).index("BRD-C3")
    cell = list(data.graph.nodes["cell_line"].names).index("MCF7")
    at = np.flatnonzero((data.drug == drug) & (data.cell == cell))
    assert at.size == 1
    np.testing.assert_allclose(data.signatures[at[0]], expected[:, 0], rtol=1e-6)
    assert data.dose[at[0]] == pytest.approx(5.5) and data.time[at[0]] == 24
    assert data.graph.nodes["drug"].features["morgan"].shape == (4, 64)
    assert reports["collapse (drug_cell)"]["kept"]["conditions"] == 6

    none, _ = make_from_files(FilesConfig(**beta), FilterConfig(), "none", drug_features=())
    assert none.num_conditions == N_TREATED
    pooled, _ = make_from_files(FilesConfig(**beta), FilterConfig(), "drug", drug_features=())
    assert pooled.num_conditions == 3 and len(np.unique(pooled.cell)) == 1


def test_quality_and_dose_filters_are_counted(beta):
    p = _plan(beta, collapse="none", is_hiq=True, min_tas=0.05, doses=(10.0,))
    filters = _reports(p)["signature filters"]
    assert filters.kept["signatures"] == N_TREATED // 4
    assert filters.dropped["is_hiq is not 1"] == N_TREATED // 2
    assert filters.dropped["dose not in [10.0] µM"] == N_TREATED // 4
    p = _plan(beta, collapse="none", exemplar_only=True)
    assert len(p.signatures) == 6


def test_geo_layout_with_an_edge_table_kg(geo):
    p = _plan(geo)
    reports = _reports(p)
    assert reports[geo["siginfo"]].notes["layout"] == "GEO"
    assert len(p.signatures) == N_TREATED
    assert set(np.round(p.signatures["dose_um"], 3)) == {1.0, 10.0}
    assert list(p.graph.nodes["gene/protein"].names[p.readout]) == lincs_files.LANDMARKS
    matching = reports["drug matching"].kept
    assert (matching["matched by name"], matching["matched by inchikey"],
            matching["unmatched"]) == (1, 1, 1)
    assert EdgeType("drug", "rev_drug_protein", "gene/protein") not in p.graph.edges
    assert EdgeType("gene/protein", "rev_drug_protein", "drug") in p.graph.edges
    with pytest.raises(ValueError, match=r"sig_info.txt: data.filters.is_hiq=True but the table "
                                         r"has no is_hiq values"):
        _plan(geo, is_hiq=True)


def test_siginfo_from_the_matrix_metadata_and_a_probe_gene_table(real_file):
    """cmapR's level-5 GCT: probe rows (pr_gene_id metadata), the siginfo columns in its
    column metadata (GEO names, doses like '10 <b5>M'), dhimmel's probe table and pertinfo."""
    files = FilesConfig(kg=str(real_file("hetionet/edges-10.sif")), kg_format="hetionet",
                        signatures=str(real_file("l1000/modzs_n272x978.gct")),
                        compoundinfo=str(real_file("lincs/pertinfo.tsv.gz")),
                        geneinfo=str(real_file("lincs/geneinfo.tsv.gz")))
    p = plan(files, FilterConfig(), "none")
    assert len(p.signatures) == 272 and len(p.readout) == 978
    assert set(np.round(p.signatures["dose_um"], 3)) == {0.1, 0.5, 1.0, 3.0, 10.0}
    assert p.signatures["drug"].nunique() == 3  # 6 BRD ids of vemurafenib, atorvastatin, venlafaxine
    assert _reports(p)["drug matching"].kept["matched by name"] == 6


@pytest.mark.parametrize("change, message", [
    ({"kg_format": "neo4j"}, r"data.files.kg_format is 'neo4j'; expected one of"),
    ({"siginfo": "nowhere.txt"}, r"data.files.siginfo: nowhere.txt does not exist"),
    ({"geneinfo": ""}, r"data.files.geneinfo is empty"),
    ({"leaky_relations": ("binds",)}, r"leaky_relations names \['binds'\], not relations"),
])
def test_bad_settings_name_the_key(beta, change, message):
    with pytest.raises(ValueError, match=message):
        _plan({**beta, **change})


def test_malformed_files_name_the_file_and_column(beta, tmp_path):
    sig = pd.read_csv(beta["siginfo"], sep="\t")
    sig.drop(columns="cmap_name").to_csv(tmp_path / "bad_sig.txt", sep="\t", index=False)
    with pytest.raises(ValueError, match=r"bad_sig.txt line 1: not a LINCS signature .* missing "
                                         r"cmap_name or pert_iname"):
        _plan({**beta, "siginfo": str(tmp_path / "bad_sig.txt")})
    sig.assign(sig_id="X" + sig["sig_id"]).to_csv(tmp_path / "other_sig.txt", sep="\t",
                                                  index=False)
    with pytest.raises(ValueError, match=r"level5_beta.gctx: none of its 26 column ids .* is a "
                                         r"sig_id of .*other_sig.txt"):
        _plan({**beta, "siginfo": str(tmp_path / "other_sig.txt")})
    pd.DataFrame({"gene": ["1"], "sym": ["A"]}).to_csv(tmp_path / "genes.txt", sep="\t",
                                                       index=False)
    with pytest.raises(ValueError, match=r"genes.txt line 1: not a LINCS gene"):
        _plan({**beta, "geneinfo": str(tmp_path / "genes.txt")})
    (tmp_path / "edges.csv").write_text("source,relation,target\na,b,c\n")
    with pytest.raises(ValueError, match=r"edges.csv line 1: .*source_type"):
        _plan({**beta, "kg": str(tmp_path / "edges.csv"), "kg_format": "edges"})
    with pytest.raises(ValueError, match=r"kg.csv: no drug node type 'compound'"):
        _plan({**beta, "drug_type": "compound"})


def test_relative_paths_resolve_in_the_data_directory(beta, tmp_path, monkeypatch):
    monkeypatch.setenv("PERTURBJAX_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path.parent)
    relative = {k: v.replace(str(tmp_path) + "/", "") if k != "kg_format" else v
                for k, v in beta.items()}
    assert kg_lincs.resolved_files(FilesConfig(**relative)).kg == str(tmp_path / "kg.csv")


def _overrides(files: dict) -> list[str]:
    return [f"--config.data.files.{k}={v}" for k, v in files.items() if k != "drug_type"
            and k != "gene_type"]


def test_data_check_prints_the_report_and_malformed_files_end_in_one_line(beta, tmp_path,
                                                                          capsys):
    cli.main(["data", "check", "--config", "experiments/kg_lincs.py", *_overrides(beta)])
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["signatures kept"] == N_TREATED
    assert summary["conditions after collapse"] == 6
    assert summary["graph"]["node types"]["cell_line"] == 2
    assert "matched by inchikey" in err and "pert_type not in ['trt_cp']" in err
    (tmp_path / "broken.gctx").write_bytes(b"not hdf5")
    with pytest.raises(SystemExit) as e:
        cli.main(["data", "check", "--config", "experiments/kg_lincs.py", *_overrides(beta),
                  f"--config.data.files.signatures={tmp_path / 'broken.gctx'}"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()  # progress lines, then the error
    assert err[-1].startswith("perturbjax: error: ") and "broken.gctx" in err[-1]
    assert not any("Traceback" in line for line in err)


def test_train_on_a_users_files_writes_nothing_when_they_are_bad(beta, tmp_path, capsys):
    workdir = tmp_path / "run"
    # The tiny world has 3 drugs in 2 cell lines: a random split of the 24 signatures.
    args = ["train", "--config", "experiments/kg_lincs.py:collapse=none,model=ridge",
            "--workdir", str(workdir), "--no-progress", "--config.wandb.mode=disabled",
            "--config.data.split=random",
            "--config.baselines=['mean']", "--config.data.num_folds=2", *_overrides(beta)]
    with pytest.raises(SystemExit) as e:
        cli.main([*args, "--config.data.files.geneinfo=" + beta["siginfo"]])
    assert e.value.code == 2 and not workdir.exists()
    cli.main(args)
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["split"]["kind"] == "random"
    assert summary["load_reports"]["signature filters"]["kept"]["signatures"] == N_TREATED
    assert np.isfinite(summary["test"]["pearson_centered"])


def test_experiment_variants():
    c = load_config("experiments/kg_lincs.py:collapse=drug,split=scaffold")
    assert (c.data.source, c.data.collapse, c.data.split) == ("files", "drug", "scaffold")
    assert c.model.name == "relational_sgc" and c.model.target_readout
    with pytest.raises(ValueError, match="split"):
        load_config("experiments/kg_lincs.py:split=random")


def test_edge_table_reverses_only_relations_listed_one_way(tmp_path):
    from perturbjax.data.kg_files import read_edge_table

    pd.DataFrame({"source": ["a", "b", "a"], "source_type": "gene", "target": ["b", "a", "c"],
                  "relation": ["interacts", "interacts", "regulates"],
                  "target_type": "gene"}).to_csv(tmp_path / "e.csv", index=False)
    graph, names, report = read_edge_table(str(tmp_path / "e.csv"))
    relations = sorted(k.relation for k in graph.edge_types)
    assert relations == ["interacts", "regulates", "rev_regulates"]
    assert list(names["gene"]) == ["a", "b", "c"]


def test_matrix_columns_the_table_does_not_describe_are_counted(beta, tmp_path):
    sig = pd.read_csv(beta["siginfo"], sep="\t")
    sig.iloc[1:].to_csv(tmp_path / "fewer.txt", sep="\t", index=False)
    p = _plan({**beta, "siginfo": str(tmp_path / "fewer.txt")}, collapse="none")
    report = _reports(p)[str(tmp_path / "fewer.txt")]
    assert report.dropped["matrix column without a row in the signature table"] == 1
    assert len(p.signatures) == N_TREATED - 1


def test_a_kernel_model_over_too_many_conditions_stops_before_training(beta, tmp_path, capsys,
                                                                       monkeypatch):
    from perturbjax.tasks import perturbation

    monkeypatch.setattr(perturbation, "MAX_SUPPORT", 5)
    workdir = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--config", "experiments/kg_lincs.py:collapse=none", "--workdir",
                  str(workdir), "--config.data.split=random", "--config.data.num_folds=2",
                  "--config.wandb.mode=disabled", *_overrides(beta)])
    assert e.value.code == 2 and not workdir.exists()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "kernel ridge over all" in err and "data.collapse" in err
