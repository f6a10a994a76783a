"""The notebooks: each runs top to bottom on tiny settings (code cells in order, in one namespace,
from notebooks/, with its `TINY = False` flipped), and each committed notebook carries the
outputs of its full settings (`notebooks/regenerate.py`) and teaches through the public API."""

import base64
import glob
import os
import re

import matplotlib
import nbformat
import pytest

NOTEBOOK_DIR = os.path.join(os.path.dirname(__file__), "..", "notebooks")
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))
FLAG = "TINY = False"
INTERNAL = re.compile(r"^\s*(from\s+perturbjax[.\w]*\s+import|import\s+perturbjax\.)", re.M)
MAX_PNG_BYTES = 100_000  # readable on GitHub: modest figsize and dpi


def code_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def run_tiny(path, monkeypatch) -> dict:
    """Executes the notebook's code with TINY on; returns its namespace."""
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    plt.close("all")
    data_dir = os.environ.get("PERTURBJAX_DATA_DIR")
    if data_dir:  # a relative data directory must survive the chdir
        monkeypatch.setenv("PERTURBJAX_DATA_DIR", os.path.abspath(data_dir))
    monkeypatch.chdir(NOTEBOOK_DIR)
    namespace = {"__name__": "__main__"}
    for i, cell in enumerate(code_cells(path)):
        source = cell.source.replace(FLAG, "TINY = True")
        try:
            exec(compile(source, f"{os.path.basename(path)}[cell {i}]", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"{path}: cell {i} failed: {e!r}") from e
    namespace["figures"] = [plt.figure(n) for n in plt.get_fignums()]
    return namespace


def test_the_notebooks_are_the_three_that_teach():
    assert sorted(map(os.path.basename, NOTEBOOKS)) == [
        "ablation_analysis.ipynb", "quickstart.ipynb", "real_data_walkthrough.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_committed_notebook_has_outputs_and_uses_the_public_api(path):
    cells = code_cells(path)
    sources = "\n".join(c.source for c in cells)
    assert sources.count(FLAG) == 1, f"{path}: one `{FLAG}` flag, which the tests flip"
    assert "import perturbjax as pj" in sources
    assert not INTERNAL.search(sources), f"{path}: imports a perturbjax module; use `pj.`"
    assert "matplotlib.use" not in sources and "perturbjax." not in sources
    counts = [c.execution_count for c in cells]
    assert counts == list(range(1, len(cells) + 1)), f"{path}: run notebooks/regenerate.py"
    assert sum(bool(c.outputs) for c in cells) >= len(cells) - 1  # the setup cell prints nothing
    outputs = [o for c in cells for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [base64.b64decode(o.data["image/png"]) for o in outputs
              if "image/png" in o.get("data", {})]
    assert images, f"{path}: no figure in its outputs"
    assert max(map(len, images)) < MAX_PNG_BYTES
    assert "TINY = False" in cells[0].source + cells[1].source  # near the top


@pytest.mark.parametrize("name", ["quickstart.ipynb"])
def test_quickstart_tables_the_model_against_its_baselines(name, monkeypatch):
    ns = run_tiny(os.path.join(NOTEBOOK_DIR, name), monkeypatch)
    table, run = ns["table"], ns["run"]
    assert set(table.index) == {f"{run.summary['model']} (KG model)", *run.config.baselines}
    assert table["pearson_centered"].is_monotonic_decreasing
    assert len(ns["figures"]) == 2 and all(f.axes for f in ns["figures"])


@pytest.mark.parametrize("name", ["real_data_walkthrough.ipynb"])
def test_real_data_walkthrough_runs_on_a_slice(name, monkeypatch):
    ns = run_tiny(os.path.join(NOTEBOOK_DIR, name), monkeypatch)
    assert ns["EXPERIMENT"].endswith(":test")
    table, summary = ns["table"], ns["summary"]
    assert f"{summary['model']} (KG model)" in table.index and len(table) > 1
    assert ns["x"]["relations"] and ns["x"]["genes"]
    assert (ns["weights"] > 0).all() and len(ns["chosen"]) >= 1
    assert ns["with_target"].shape[0] == len(ns["training_mean"])
    assert len(ns["figures"]) == 4


@pytest.mark.parametrize("name", ["ablation_analysis.ipynb"])
def test_ablation_analysis_pairs_every_ablation_with_the_full_graph(name, monkeypatch):
    ns = run_tiny(os.path.join(NOTEBOOK_DIR, name), monkeypatch)
    rows = ns["model_rows"]
    assert sorted(rows.group) == sorted(ns["ABLATIONS"][1:])
    assert (rows.pairs == len(ns["SEEDS"])).all()
    assert (rows.testable == (len(ns["SEEDS"]) >= 3)).all()
    assert len(ns["figures"]) == 1
