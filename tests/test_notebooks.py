"""Every notebook runs top to bottom (code cells in order, in one namespace, from notebooks/)."""

import glob
import os

import matplotlib
import nbformat
import pytest

NOTEBOOKS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "notebooks", "*.ipynb")))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(os.path.dirname(path))
    namespace = {"__name__": "__main__"}
    for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type == "code":
            try:
                exec(compile(cell.source, f"{os.path.basename(path)}[cell {i}]", "exec"), namespace)
            except Exception as e:
                raise AssertionError(f"{path}: cell {i} failed: {e!r}") from e
