"""The Python API (`import perturbjax as pj`) and the commands that are thin shells over it:
`--version`, `runs show`, predict and repurpose, compare, and W&B's one console line. (kg_ridge's
new drugs, the fast refusal of runs that cannot place one, and explanations are in
test_explain.py, beside the runs they share.)"""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import perturbjax as pj
from perturbjax import cli
from perturbjax.predict import PredictWarning
from tests.test_ablation import _write_run
from tests.test_cli_errors import one_line_error

ROOT = os.path.join(os.path.dirname(__file__), "..")


@pytest.fixture(scope="module")
def gat_run(demo_runs):
    """The demo's trained hetero_gat run (conftest's, shared with the explanation tests)."""
    return pj.load_run(demo_runs[0, ""][1])


def test_version_is_one_source_and_import_is_light(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"perturbjax {pj.__version__}"
    setup = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT,
                           capture_output=True, text=True, check=True)
    assert setup.stdout.strip().splitlines()[-1] == pj.__version__
    light = subprocess.run([sys.executable, "-c", "import sys, perturbjax as pj; pj.load_run; "
                            "print(sorted({'jax', 'flax', 'pandas'} & set(sys.modules)))"],
                           cwd=ROOT, capture_output=True, text=True, check=True)
    assert light.stdout.strip() == "[]"


def test_runs_show_lists_each_part_from_the_run_files(gat_run, capsys):
    with open(os.path.join(gat_run.workdir, "summary.json")) as f:
        assert gat_run.summary == json.load(f)
    task = gat_run.trained.task  # the data, loaded again: the truth parts.json must match
    data, drugs = task.data, task.graph.nodes["drug"].names
    run = pj.load_run(gat_run.workdir)
    for part, idx in task.split.parts().items():
        assert run.parts[part]["drugs"]["id"].tolist() == sorted(
            str(x) for x in set(drugs[data.drug[idx]]))
        assert run.parts[part]["conditions"] == len(idx)
    genes = run.parts["test"]["genes"]
    assert genes["entrez_id"].tolist() == [str(g) for g in
                                           task.graph.nodes["gene"].names[data.readout]]
    cli.main(["runs", "show", run.workdir])
    out = capsys.readouterr().out
    test_block = out[out.index("\ntest: "):out.index("readout genes")]
    assert all(d in test_block for d in run.parts["test"]["drugs"]["id"])
    assert not any(d in test_block for d in run.parts["train"]["drugs"]["id"])
    assert f"readout genes: {len(genes)} (id, symbol)" in out
    line = one_line_error(capsys, ["runs", "show", run.workdir + "x"])
    assert "config.json is missing" in line and f"close: {run.workdir}" in line


def test_predict_api_is_what_the_cli_writes_and_warns_without_targets(gat_run, tmp_path,
                                                                      capsys):
    run = pj.load_run(gat_run.workdir)
    task = run.trained.task
    cell = str(task.graph.nodes["cell_line"].names[task.data.cell[task.split.test[0]]])
    with pytest.warns(PredictWarning, match="'ethanol' has no targets"):
        frame = run.predict(smiles="CCO", name="ethanol", cell=cell, dose=1.0, time=24.0)
    assert frame.columns.tolist() == ["entrez_id", "symbol", "ethanol"]
    assert frame.attrs["condition"] == f"{cell}, 1 µM, 24 h"
    out = tmp_path / "sig.tsv"
    capsys.readouterr()
    cli.main(["predict", "--workdir", run.workdir, "--smiles", "CCO", "--name", "ethanol",
              "--cell", cell, "--dose", "1", "--time", "24", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("perturbjax: warning: 'ethanol' has no targets")
    written = pd.read_csv(out, sep="\t", dtype={"entrez_id": str})
    assert written["entrez_id"].tolist() == frame["entrez_id"].tolist()
    np.testing.assert_allclose(written["ethanol"], frame["ethanol"], rtol=1e-4, atol=1e-6)
    line = one_line_error(capsys, ["predict", "--workdir", run.workdir, "--smiles", "CCO",
                                   "--cell", cell[:-1] + "x", "--out", str(out)])
    assert f"cell line '{cell[:-1]}x' is not a node of the run's graph; close: [" in line


def test_predict_known_is_the_runs_own_test_prediction(gat_run):
    """The restored model's prediction for a held-out drug is the one training wrote to
    predictions.npz, beside the drug's measured signature."""
    run = pj.load_run(gat_run.workdir)
    task = run.trained.task
    saved = np.load(os.path.join(run.workdir, "predictions.npz"))
    row = 3
    condition = int(saved["index/test"][row])
    drug = str(task.graph.nodes["drug"].names[task.data.drug[condition]])
    frame = run.predict_known(drug)
    assert frame.columns.tolist() == ["entrez_id", "symbol", "predicted", "measured",
                                      "training_mean"]
    assert frame["entrez_id"].tolist() == run.parts["test"]["genes"]["entrez_id"].tolist()
    assert frame.attrs["part"] == "test" and drug in frame.attrs["drug"]
    first = int(np.flatnonzero(task.data.drug == task.data.drug[condition])[0])
    np.testing.assert_allclose(frame["measured"], task.data.signatures[first], rtol=1e-6)
    np.testing.assert_allclose(frame["training_mean"], task.train_mean, rtol=1e-6)
    at = int(np.flatnonzero(saved["index/test"] == first)[0])
    np.testing.assert_allclose(frame["predicted"], saved["model/test"][at], rtol=1e-4,
                               atol=1e-5)
    with pytest.raises(ValueError, match="is not a node of the run's graph"):
        run.predict_known(drug + "x")


def test_repurpose_takes_a_mapping_and_suggests_genes(gat_run, tmp_path, capsys):
    run = pj.load_run(gat_run.workdir)
    task = run.trained.task
    genes = run.parts["test"]["genes"]["entrez_id"]
    query = dict(zip(genes, -(task.data.signatures[task.split.test[0]] - task.train_mean)))
    table = run.repurpose(query, top_k=5)
    assert table.columns.tolist() == ["rank", "drug", "source", "part", "connectivity"]
    assert len(table) == task.graph.nodes["drug"].count
    assert table["connectivity"].is_monotonic_increasing
    signature = tmp_path / "typo.tsv"
    signature.write_text("".join(f"{g[:-1]}X\t1.0\n" for g in genes[:12]))
    line = one_line_error(capsys, ["repurpose", "--workdir", run.workdir, "--signature",
                                   str(signature)])
    assert "0 of its genes are readout genes" in line and f"'{genes[0][:-1]}X' (close:" in line


def test_compare_api_marks_too_few_pairs_not_testable(tmp_path, capsys):
    root = tmp_path / "sweep"
    for seed, (full, hurt) in enumerate([(0.5, 0.3), (0.6, 0.45)]):
        _write_run(root, f"none,s{seed}", ablation="none", seed=seed, value=full)
        _write_run(root, f"drop,s{seed}", ablation="drop:targets", seed=seed, value=hurt)
    table = pj.compare([str(root)], metrics=["pearson_centered"], out=str(tmp_path / "o"))
    row = table.set_index("row").loc["drop:targets: hetero_gat"]
    assert row["pairs"] == 2 and not row["testable"] and np.isnan(row["p_value"])
    assert row["diff_mean"] == pytest.approx(-0.175)
    written = pd.read_csv(tmp_path / "o" / "comparison.csv")
    assert written["row"].tolist() == table["row"].tolist()
    cli.main(["compare", str(root), "--metrics", "pearson_centered"])
    out = capsys.readouterr().out
    assert "| drop:targets: hetero_gat | 2 | " in out and "| not testable | not testable |" in out
    assert "Not testable: fewer than 3 runs pair with the reference's" in out


def test_wandb_says_one_line_and_logs_the_rest(tmp_path, capfd):
    from perturbjax.tasks import default_config
    from perturbjax.training.logging import RunLogger

    config = default_config("perturbation")
    config.wandb.mode = "offline"
    logger = RunLogger(str(tmp_path), config, experiment="demo", variant="test")
    logger.log(1, "train", {"loss": 1.0})
    logger.close()
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("perturbjax: W&B offline run in "), err
    sync_dir = err[0].split("`wandb sync ")[1].rstrip("`")
    assert os.path.getsize(os.path.join(sync_dir, "logs", "debug.log")) > 0


def test_no_library_module_sets_the_matplotlib_backend():
    package = os.path.join(ROOT, "perturbjax")
    offenders = [os.path.join(d, f) for d, _, files in os.walk(package) for f in files
                 if f.endswith(".py") and "matplotlib.use(" in open(os.path.join(d, f)).read()]
    assert offenders == []


def test_the_train_function_survives_importing_the_training_package():
    import perturbjax as pj
    import perturbjax.training.loop  # noqa: F401  (binds perturbjax.training, not .train)
    from perturbjax.runs import train

    assert pj.train is train
