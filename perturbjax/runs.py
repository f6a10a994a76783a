"""Run directories from Python: train one, open one, compare many.

    import perturbjax as pj

    run = pj.train("experiments/demo.py:test", "runs/demo-test")   # as `perturbjax train`
    run = pj.load_run("runs/demo-test")                               # a finished run
    run.summary["test"]; run.parts["test"]["drugs"]                   # read from its files
    run.predict(smiles="CC(=O)Oc1ccccc1C(=O)O", targets=["5742"])    # a DataFrame per gene
    run.predict_known("DB00945")                                      # predicted beside measured
    run.explain(drug="DB00945", out="report/")                        # an Explanation
    run.repurpose("query.tsv")                                        # a DataFrame per drug
    pj.compare(["runs/ablate"])                                       # a DataFrame per row

`Run` reads what the run directory holds: `config.json`, `summary.json` and `parts.json` (the
drugs, cell lines and readout genes of every split part, written by `perturbjax train`). Those
need no data and no JAX. `predict`, `predict_known`, `explain` and `repurpose` rebuild the
trained model from the data on first use (`training/restore.py`: seconds for the demo, a minute
or more for Hetionet); a run whose model cannot do what is asked is refused from its config
first.

The CLI commands `train`, `runs show`, `predict`, `explain`, `repurpose` and `compare` are thin
shells over these functions.
"""

from __future__ import annotations

import difflib
import json
import os
import warnings

import numpy as np

PARTS_FILE = "parts.json"


class RunError(ValueError):
    """A directory that is not the run asked for (missing or unreadable files, a task or model
    that cannot do what is asked); the message names the file."""


def placing_models() -> dict[str, list[str]]:
    """Models whose runs can place a drug the graph does not know: {"message_passing": the
    encoder and support models (full-graph runs), "closed_form": kg_ridge}."""
    from perturbjax.models.registry import model_names

    return {"message_passing": list(model_names("encoder", "support")),
            "closed_form": list(model_names("host"))}


def check_can_place(config: dict, workdir: str, placing: dict[str, list[str]] | None = None,
                    drug_type: str | None = None) -> None:
    """Refuses, from a run's config.json alone (a dict; no data loaded), a run that cannot
    place new drugs. `placing` is `placing_models()` and `drug_type` the drugs' node type (as
    parts.json records them).

    Raises:
      RunError: the run's model cannot, or it was trained on sampled subgraphs.
    """
    placing = placing_models() if placing is None else placing
    path = os.path.join(workdir, "config.json")
    name = config.get("model", {}).get("name")
    every = placing["message_passing"] + placing["closed_form"]
    if name not in every:
        raise RunError(f"{path}: model.name is {name!r}, whose closed-form fit spans only the "
                       f"run's own drugs; placing a new drug needs a run of {', '.join(every)}")
    mode = config.get("graph", {}).get("mode", "full")
    if name in placing["message_passing"] and mode != "full":
        raise RunError(f"{path}: graph.mode is {mode!r}; placing a new drug needs a full-graph "
                       f"run (graph.mode=full)")
    if drug_type is not None and drug_type in config.get("model", {}).get(
            "embedded_node_types", []):
        raise RunError(f"{path}: model.embedded_node_types includes {drug_type!r}: the run "
                       f"learned a vector per drug node, which a new drug does not have")


# ---- training ------------------------------------------------------------------------------
def train(config, workdir: str, *, overrides=(), progress: bool = True, experiment: str = "",
          variant: str = "", group: str | None = None, job_type: str | None = None) -> Run:
    """Trains and evaluates one run in `workdir`, as `perturbjax train` does (the same code:
    `train.loop.train_and_evaluate`), and returns it.

    Args:
      config: an experiment file, "FILE.py[:VARIANT]", or a config (`load_config`'s).
      workdir: the run directory (created; a directory with checkpoints is resumed).
      overrides: "KEY=VALUE" strings, as `--config.KEY=VALUE` on the command line.
      progress: show progress bars.
      experiment, variant: recorded in the summary (default: the file's name and variant); the
        W&B group and job type unless `group` / `job_type` are given.

    Raises:
      ValueError: a config key or value no run can use (the key is named).
      checkpoint.WorkdirConflict: the workdir holds a run of another config.
      checkpoint.Preempted: stopped by SIGTERM or Ctrl-C with a checkpoint saved.
    """
    from perturbjax.config import apply_overrides, load_config
    from perturbjax.training.loop import train_and_evaluate

    if isinstance(config, str):
        path, _, spec = config.partition(".py:")
        experiment = experiment or os.path.splitext(os.path.basename(path))[0]
        variant = variant or spec
        config = load_config(config)
    config = apply_overrides(config, list(overrides)) if overrides else config
    summary = train_and_evaluate(config, workdir, experiment=experiment, variant=variant,
                                 progress=progress, group=group, job_type=job_type)
    return Run(workdir, summary=summary)


# ---- the run's files -----------------------------------------------------------------------
def parts_record(task) -> dict | None:
    """`parts.json`: node types, readout genes (ids, symbols) and each split part's drugs and
    cell lines (ids, names), so a run's contents can be listed without loading its data. None
    for tasks without drugs (cell-graph runs)."""
    data = getattr(task, "data", None)
    if data is None or not hasattr(data, "drug_type"):
        return None
    from perturbjax.explain.report import plain_names

    graph = task.graph
    names = plain_names(graph, task.config.data.source, data.drug_type)

    def nodes(node_type, index):
        index = np.asarray(index)
        return {"id": [str(x) for x in graph.nodes[node_type].names[index]],
                "name": [str(x) for x in names[node_type][index]]}

    parts = {part: {"conditions": int(len(idx)), "drugs": nodes(data.drug_type,
                                                                  np.unique(data.drug[idx])),
                    "cell_lines": nodes(data.cell_type, np.unique(data.cell[idx]))}
             for part, idx in task.split.parts().items()}
    genes = nodes(data.gene_type, data.readout)
    return {"placing_models": placing_models(),  # predict refuses other runs without imports
            "node_types": {"drug": data.drug_type, "cell_line": data.cell_type,
                           "gene": data.gene_type},
            "graph_drugs": int(graph.nodes[data.drug_type].count),
            "readout_genes": {"id": genes["id"],
                              "symbol": [n or i for i, n in zip(genes["id"], genes["name"])]},
            "parts": parts}


def _read_json(path: str, what: str):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} cannot be read as {what} ({e})") from None


def _not_a_run(workdir: str) -> RunError:
    """The error for a directory without config.json, with the closest run directories."""
    parent = os.path.dirname(os.path.abspath(workdir))
    try:
        siblings = [d for d in os.listdir(parent)
                    if os.path.exists(os.path.join(parent, d, "config.json"))]
    except OSError:
        siblings = []
    close = difflib.get_close_matches(os.path.basename(os.path.normpath(workdir)), siblings, n=3)
    hint = (f"; close: {', '.join(os.path.join(os.path.dirname(workdir), c) for c in close)}"
            if close else "")
    what = "does not exist" if not os.path.exists(workdir) else "has no config.json"
    return RunError(f"{os.path.join(workdir, 'config.json')} is missing: {workdir} {what}, so "
                    f"it is not a run directory (perturbjax train writes one){hint}")


class Run:
    """A run directory. Its files are read on first use; the trained model is rebuilt (data
    loaded) only for `predict`, `predict_known`, `explain` and `repurpose`.

    Attributes:
      workdir: the directory.
      config: the run's config (`config.json`, with defaults for keys it predates).
      summary: `summary.json` (RunError while the run is unfinished).
      metrics: `metrics.jsonl` as a DataFrame (step, split, metrics).
      parts: {part: {"conditions": n, "drugs", "cell_lines", "genes": DataFrames}}; drugs and
        cell lines with `id` and `name` ("" where the data have no names), readout genes with
        `entrez_id` and `symbol` (the same in every part).
    """

    def __init__(self, workdir: str, *, summary: dict | None = None):
        self.workdir = str(workdir)
        path = os.path.join(self.workdir, "config.json")
        try:
            self.record = _read_json(path, "a run config")
        except FileNotFoundError:
            raise _not_a_run(self.workdir) from None
        if not isinstance(self.record, dict):
            raise RunError(f"{path} is not a run config (expected a JSON object)")
        self._summary, self._config, self._trained, self._names = summary, None, None, None
        self._parts = None

    def __repr__(self) -> str:
        model = self.record.get("model", {}).get("name", "?")
        return f"Run({self.workdir!r}, model={model!r})"

    @property
    def config(self):
        if self._config is None:
            from perturbjax.training.restore import run_config

            self._config = run_config(self.workdir)
        return self._config

    @property
    def summary(self) -> dict:
        if self._summary is None:
            path = os.path.join(self.workdir, "summary.json")
            try:
                self._summary = _read_json(path, "a run summary")
            except FileNotFoundError:
                raise RunError(f"{path} is missing: the run in {self.workdir} has not finished "
                               f"(rerun its train command to resume it)") from None
        return self._summary

    @property
    def metrics(self):
        """metrics.jsonl as a DataFrame: one row per logged train step or evaluation (`step`,
        `split`, then the metrics)."""
        import pandas as pd

        path = os.path.join(self.workdir, "metrics.jsonl")
        try:
            return pd.read_json(path, lines=True)
        except (OSError, ValueError) as e:
            raise RunError(f"{path} cannot be read as the run's metrics ({e})") from None

    @property
    def task_name(self) -> str:
        return self.record.get("task", "perturbation")

    def parts_record(self) -> dict:
        """`parts.json` as written; for runs that predate it, rebuilt from the data (slow)."""
        if self._parts is None:
            self._require_perturbation("list")
            path = os.path.join(self.workdir, PARTS_FILE)
            try:
                self._parts = _read_json(path, "a run's parts")
            except FileNotFoundError:
                from perturbjax import PerturbjaxWarning

                warnings.warn(f"{path} is missing (runs trained before perturbjax 0.2 lack it): "
                              f"the run's data are loaded again to list its parts",
                              PerturbjaxWarning, stacklevel=3)
                self._parts = parts_record(self.trained.task)
        return self._parts

    @property
    def parts(self) -> dict:
        import pandas as pd

        record = self.parts_record()
        genes = pd.DataFrame({"entrez_id": record["readout_genes"]["id"],
                              "symbol": record["readout_genes"]["symbol"]})
        return {part: {"conditions": p["conditions"], "drugs": pd.DataFrame(p["drugs"]),
                       "cell_lines": pd.DataFrame(p["cell_lines"]), "genes": genes}
                for part, p in record["parts"].items()}

    # ---- the trained model ---------------------------------------------------------------
    def _require_perturbation(self, doing: str) -> None:
        if self.task_name != "perturbation":
            raise RunError(f"{os.path.join(self.workdir, 'config.json')}: task is "
                           f"{self.task_name!r}; only perturbation runs have drugs to {doing}")

    def _parts_file(self) -> dict:
        """parts.json as written, {} when the run has none."""
        try:
            return _read_json(os.path.join(self.workdir, PARTS_FILE), "a run's parts")
        except FileNotFoundError:
            return {}

    def _placing(self) -> dict[str, list[str]]:
        """parts.json's `placing_models`, else the model registry's (importing the models)."""
        return self._parts_file().get("placing_models") or placing_models()

    def _require_full_graph(self) -> None:
        graph = self.record.get("graph", {})
        if (self.record.get("model", {}).get("name") in self._placing()["message_passing"]
                and graph.get("mode", "full") != "full"):
            raise RunError(f"{os.path.join(self.workdir, 'config.json')}: graph.mode is "
                           f"{graph.get('mode')!r}; predict, explain and repurpose need a "
                           f"full-graph run (graph.mode=full)")

    @property
    def trained(self):
        """The `train.restore.TrainedRun` (data, split, graph and model), rebuilt once."""
        if self._trained is None:
            self._require_perturbation("predict")
            self._require_full_graph()
            from perturbjax.training.restore import load_run as restore

            self._trained = restore(self.workdir)
            self._config = self._trained.config
        return self._trained

    @property
    def names(self) -> dict:
        """Display names per node type ("name (id)" where the data have names)."""
        if self._names is None:
            from perturbjax.explain.report import node_names

            self._names = node_names(self.trained)
        return self._names

    def _check_can_place(self) -> None:
        """From config.json (and parts.json's list of the models that can), before JAX or any
        data are loaded."""
        self._require_perturbation("predict")
        drug_type = self._parts_file().get("node_types", {}).get("drug")
        check_can_place(self.record, self.workdir, self._placing(), drug_type)

    # ---- what a run answers ----------------------------------------------------------------
    def predict(self, smiles=None, *, targets=(), name=None, library=None, cell=None,
                dose=None, time=None, source: str = "smiles"):
        """Predicted signatures of drugs the graph does not know (see `perturbjax.predict`).

        Args:
          smiles: one SMILES, or a list of them.
          targets: the drug's target genes' ids (e.g. Entrez; a list, or "a,b"); with a list of
            SMILES, one such entry per drug.
          name: the drug's name (or a list), default new_drug (new_drug_0, ...).
          library: instead of smiles: a drug table's path (`predict.read_drugs`) or a list of
            `predict.NewDrug`.
          cell, dose, time: the condition (default: the data's most common; kg_ridge predicts
            one signature per drug and ignores them).
          source: how errors name the input.

        Returns:
          A DataFrame, one row per readout gene: `entrez_id`, `symbol`, one column per drug
          (signature values in the data's units); `.attrs["condition"]` says which condition.
          Without targets a drug is placed by its chemistry alone (a `PredictWarning` says so).

        Raises:
          RunError: the run's model cannot place new drugs (from config.json, before JAX or any
            data are loaded).
          PredictError: an invalid SMILES, target, cell line, dose or time (named).
        """
        if (smiles is None) == (library is None):
            raise ValueError("give smiles or library (one of them)")
        self._check_can_place()  # before the imports: a refusal takes a second
        from perturbjax.predict import (
            NewDrug,
            PredictError,
            gene_columns,
            predict_new_drugs,
            read_drugs,
            signature_frame,
        )

        if library is not None:
            drugs = (read_drugs(str(library)) if isinstance(library, (str, os.PathLike))
                     else list(library))
        else:
            many = not isinstance(smiles, str)
            smiles = list(smiles) if many else [smiles]
            per = list(targets) if many and targets else [targets] * len(smiles)
            names = (list(name) if many and name is not None else
                     [name] if name is not None else
                     [f"new_drug_{i}" if many else "new_drug" for i in range(len(smiles))])
            if len(per) != len(smiles) or len(names) != len(smiles):
                raise PredictError(f"{len(smiles)} SMILES need as many targets and names "
                                   f"entries (got {len(per)} and {len(names)})")
            drugs = [NewDrug(n, s, _targets(t)) for n, s, t in zip(names, smiles, per)]
        run = self.trained
        values, condition = predict_new_drugs(run, drugs, source, cell=cell, dose=dose,
                                              time=time, names=self.names)
        ids, symbols = gene_columns(run, self.names)
        frame = signature_frame(ids, symbols, [d.name for d in drugs], values)
        frame.attrs["condition"] = condition
        return frame

    def predict_known(self, drug: str, *, cell: str | None = None):
        """The run's prediction for a drug its data measured, beside the measurement: the
        drug's first measured condition (in `cell` if given), as `explain` picks it.

        Args:
          drug: the drug's id or name (close matches are suggested for a typo).
          cell: a cell line's id or name (default: the drug's first measured condition).

        Returns:
          A DataFrame, one row per readout gene: `entrez_id`, `symbol`, `predicted`,
          `measured` and `training_mean` (the mean training signature), in the data's units
          (LINCS: moderated z-scores); subtract `training_mean` from the other two for the part
          particular to this drug, which `pearson_centered` scores. `.attrs` hold the
          "condition" ("cell line, dose µM, time h") and its split "part" (train, validation
          or test: only the last two were held out from fitting).

        Raises:
          ExplainError: an unknown drug or cell line (with close matches), or no measured
            condition.
        """
        self._require_perturbation("predict")
        import pandas as pd

        from perturbjax.explain.report import find_condition
        from perturbjax.predict import gene_columns
        from perturbjax.training.restore import condition_function

        run = self.trained
        task, data = run.task, run.task.data
        condition, part = find_condition(run, drug, cell, self.names)
        if run.is_graph_network:
            predicted = np.asarray(condition_function(run, condition)[0]())
        else:
            predicted = np.asarray(run.host_model.predict(run.host_data,
                                                          np.array([condition])))[0]
        ids, symbols = gene_columns(run, self.names)
        frame = pd.DataFrame({"entrez_id": ids, "symbol": symbols,
                              "predicted": predicted.astype(np.float64),
                              "measured": np.asarray(data.signatures[condition], np.float64),
                              "training_mean": np.asarray(task.train_mean, np.float64)})
        d, c = int(data.drug[condition]), int(data.cell[condition])
        frame.attrs["drug"] = str(self.names[data.drug_type][d])
        frame.attrs["condition"] = (f"{self.names[data.cell_type][c]}, "
                                    f"{float(data.dose[condition]):g} µM, "
                                    f"{float(data.time[condition]):g} h")
        frame.attrs["part"] = part
        return frame

    def explain(self, drug: str, *, cell: str | None = None, genes: int = 10, paths: int = 5,
                steps: int = 16, out: str | None = None, progress=None):
        """Why the run predicts its signature for `drug`'s first measured condition (in `cell`
        if given); see `perturbjax.explain.report`. Writes explanation.md, .json and figures to
        `out` only when it is given.

        Returns:
          An `Explanation` (a dict; `.markdown()`, `.write(dir)`; `.written`: the files written).

        Raises:
          ExplainError: an unknown drug or cell line (with close matches).
        """
        from perturbjax.explain.report import explain

        for key, value in (("genes", genes), ("paths", paths), ("steps", steps)):
            if value < 1:
                raise ValueError(f"{key} must be at least 1, got {value}")
        self._require_perturbation("explain")
        self._require_full_graph()
        x = explain(self.trained, drug, cell=cell, genes=genes, paths=paths, steps=steps,
                    progress=progress)
        if out is not None:
            x.written = x.write(out)
        return x

    def repurpose(self, signature, *, library=None, top_k: int = 50, cell=None, dose=None,
                  time=None, out: str | None = None, title: str | None = None):
        """Every drug of the run's graph (and of `library`) ranked by how strongly its predicted
        signature reverses the query (XSum connectivity; see `perturbjax.predict`).

        Args:
          signature: the query: a file (gene and value per line), a mapping or pandas Series
            gene (Entrez id or symbol) -> value, or an array over the readout genes.
          library: new drugs too (a drug table's path or a list of `NewDrug`).
          top_k: genes in the query's up and down sets (at most a tenth of its genes).
          out: a folder for repurposing.tsv, .md and .png (nothing is written without it).

        Returns:
          A DataFrame: rank, drug, source (graph / library), part, connectivity (most reversing
          first); `.attrs` hold the "condition" predicted and the files "written".
        """
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self._require_perturbation("repurpose")
        self._require_full_graph()
        if library is not None and len(library):
            self._check_can_place()
        import pandas as pd

        from perturbjax.predict import gene_columns, read_drugs, repurpose, write_repurposing

        drugs = (read_drugs(str(library)) if isinstance(library, (str, os.PathLike))
                 else list(library or []))
        run = self.trained
        ids, symbols = gene_columns(run, self.names)
        query = _query(signature, ids, symbols)
        rows, condition = repurpose(run, query, self.names, k=top_k, library=drugs, cell=cell,
                                    dose=dose, time=time)
        frame = pd.DataFrame(rows)
        frame.attrs["condition"] = condition
        if out is not None:
            what = (os.path.basename(signature) if isinstance(signature, (str, os.PathLike))
                    else "the query")
            title = title or f"Drugs reversing {what} ({run.config.model.name}, {condition})"
            frame.attrs["written"] = write_repurposing(rows, out, title)
        return frame


def _targets(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.replace(";", ",").split(",")
    return tuple(str(t).strip() for t in value if str(t).strip())


def _query(signature, ids, symbols) -> np.ndarray:
    """A query as values over the readout genes (NaN where absent)."""
    from perturbjax.predict import PredictError, read_signature

    if isinstance(signature, (str, os.PathLike)):
        return read_signature(str(signature), ids, symbols)
    if hasattr(signature, "items"):  # a mapping or a Series: gene -> value
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
            f.writelines(f"{g}\t{float(v)}\n" for g, v in signature.items())
        try:
            return read_signature(f.name, ids, symbols)
        finally:
            os.unlink(f.name)
    values = np.asarray(signature, np.float64)
    if values.shape != (len(ids),):
        raise PredictError(f"a query array has shape {values.shape}; expected ({len(ids)},), one "
                           f"value per readout gene (or give a file or a gene -> value mapping)")
    return values


def load_run(workdir: str) -> Run:
    """The finished (or running) run in `workdir`.

    Raises:
      RunError: no config.json there (close run directories are named).
    """
    return Run(workdir)


# ---- many runs -----------------------------------------------------------------------------
def compare(roots=(), *, wandb=(), metrics=None, part: str = "test", paired: str | None = None,
            out: str | None = None):
    """The comparison `perturbjax compare` prints, as a DataFrame (one row per table row and
    metric: n, mean, sd, 95% CI; with a reference, the paired difference, its CI, p-values or
    `testable` False where fewer than 3 runs pair); `.attrs["markdown"]` is the printed table.
    Writes comparison.csv, .md and the forest plot to `out` when it is given (`.attrs["written"]`).
    See `perturbjax.eval.compare`.

    Args:
      roots: directories holding run directories.
      wandb: "ENTITY/PROJECT/GROUP" W&B groups (online).
      metrics: metric names (default: the runs' report metrics).
      part: "test" or "validation".
      paired: the reference row, or a group's name (its model's row); default: an ablation
        sweep's "none" group.
    """
    import pandas as pd

    from perturbjax.eval.compare import compare_roots, markdown, write_outputs

    comparison, _ = compare_roots(list(roots), wandb=list(wandb), metrics=metrics, part=part,
                                  paired=paired)
    table = pd.DataFrame(comparison.records())
    table.attrs["markdown"] = markdown(comparison)
    if out is not None:
        table.attrs["written"] = write_outputs(comparison, out)
    return table
