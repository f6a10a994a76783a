"""perturbjax: knowledge-graph models of drug-induced gene-expression changes, in JAX.

The Python API (the `perturbjax` command is a thin shell over the same functions):

    import perturbjax as pj

    config = pj.load_config("experiments/demo.py:test")   # an ml_collections.ConfigDict
    run = pj.train(config, "runs/demo-test")               # as `perturbjax train`; a Run
    run = pj.load_run("runs/demo-test")                    # a finished run directory
    run.summary, run.parts["test"]["drugs"]                # its files, no data loaded
    run.predict(smiles="CCO", targets=["1017"])            # DataFrame: entrez_id, symbol, drug
    run.explain("DB00945", out="report/")                  # an Explanation (a dict)
    run.repurpose("query.tsv")                             # DataFrame: rank, drug, connectivity
    pj.compare(["runs/ablate"])                            # DataFrame: row, metric, mean, CI, p

Importing the package is light: the functions load JAX, the models and the data when called.
"""

__version__ = "0.2.0.dev0"

__all__ = ["__version__", "PerturbjaxWarning", "Run", "compare", "load_config", "load_run",
           "train"]


class PerturbjaxWarning(UserWarning):
    """Something a result's reader should know (e.g. a new drug placed by chemistry alone);
    the CLI prints each as one `perturbjax: warning: ...` line."""


_LAZY = {"load_config": "perturbjax.config", "train": "perturbjax.runs",
         "load_run": "perturbjax.runs", "Run": "perturbjax.runs", "compare": "perturbjax.runs"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'perturbjax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
