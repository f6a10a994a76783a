"""Signatures for drugs the graph does not know (`perturbjax predict`), and drugs ranked by how
strongly they reverse a query signature (`perturbjax repurpose`).

A new drug joins a trained run's graph as a compound node: its input features from its SMILES
(Morgan bits of the width the run used), and edges to the targets given (the run's first target
relation, e.g. `binds`, and its reverse when the graph has one). Existing nodes keep their
learned vectors; a message-passing model runs on the extended graph as trained. `kg_ridge`
computes its validation-chosen kernel (hops, chemistry weight, Tanimoto power) on the extended
graph, over the run's drugs and the new ones, and solves its ridge system with the chosen
penalty again (`graph_ridge_signatures`); it predicts one signature per drug, whatever the cell
line, dose and time. The other closed-form models (the baselines) span only the run's own drugs
and cannot place a new one (`runs.placing_models` says which can). Without targets, a new drug is placed by
its chemistry alone, which the commands say in a warning.

Connectivity: the "eXtreme Sum" (XSum) score of Cheng et al. 2014 (Genome Medicine 6:40),
a Connectivity Map method on the query's top genes. The query's up set U and down set D are its
`k` largest and `k` smallest values over the readout genes it shares with the model (k at most
a tenth of them, at least 5). A drug's predicted signature (minus the training mean, so what
every drug does alike does not count) is z-scored over the readout genes, and its score is the
mean z over U minus the mean z over D: positive when the drug moves the query's genes the same
way, negative when it reverses them (ranked first by `repurpose`). The Kolmogorov-Smirnov
scores of the original CMap (Lamb et al. 2006) need rankings of thousands of genes; over the
978 landmark genes (120 in the demo) they put planted reversers lower (on 8 held-out demo drugs'
negated signatures, while this score was chosen: median rank 18 of 400 against 1.5).
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from perturbjax import PerturbjaxWarning
from perturbjax.data.chem import morgan_fingerprints, parse_smiles
from perturbjax.graph.hetero import EdgeType
from perturbjax.graph.padding import flat_nodes
from perturbjax.graph.topology import Topology
from perturbjax.runs import check_can_place


class PredictError(ValueError):
    """Bad input to predict or repurpose (SMILES, targets, cell line, a signature file), or a
    run that cannot place new drugs."""


class PredictWarning(PerturbjaxWarning):
    """A prediction to read with care (no targets given, genes of a query left out); the CLI
    prints each as one `perturbjax: warning: ...` line."""


@dataclasses.dataclass(frozen=True)
class NewDrug:
    name: str
    smiles: str
    targets: tuple[str, ...] = ()


def read_drugs(path: str) -> list[NewDrug]:
    """A library of drugs: a table with a `smiles` column (and optional `name`, `targets`:
    gene ids separated by `,` or `;`), tab- or comma-separated; or a `.smi` file, one
    "SMILES [name]" per line.

    Raises:
      PredictError: a missing file, no smiles column, or an empty SMILES (file and line named).
    """
    try:
        with open(path, newline="") as f:
            text = f.read()
    except OSError as e:
        raise PredictError(f"{path}: cannot read the drug library ({e.strerror})") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines:
        raise PredictError(f"{path}: no drugs in the file")
    delimiter = "\t" if "\t" in lines[0] else ","
    header = [h.strip().lower() for h in lines[0].split(delimiter)]
    drugs = []
    if "smiles" in header:
        for n, row in enumerate(csv.DictReader(lines, delimiter=delimiter), start=2):
            row = {str(k).strip().lower(): (v or "").strip() for k, v in row.items()}
            if not row.get("smiles"):
                raise PredictError(f"{path}:{n}: empty smiles")
            targets = tuple(t.strip() for t in row.get("targets", "").replace(";", ",").split(",")
                            if t.strip())
            drugs.append(NewDrug(row.get("name") or f"new_drug_{len(drugs)}", row["smiles"],
                                 targets))
    else:
        for n, line in enumerate(lines, start=1):
            parts = line.split()
            drugs.append(NewDrug(parts[1] if len(parts) > 1 else f"new_drug_{n - 1}", parts[0]))
    return drugs


def _check_smiles(drugs: list[NewDrug], source: str) -> None:
    parsed = parse_smiles([d.smiles for d in drugs])
    if parsed.invalid:
        i, s = parsed.invalid[0]
        raise PredictError(f"{source}: SMILES {s!r} of {drugs[i].name!r} is not a valid molecule "
                           f"(rdkit could not parse it; {len(parsed.invalid)} invalid in all)")


def extend_graph(run, drugs: list[NewDrug], source: str = "--smiles"):
    """The run's graph with `drugs` appended as drug nodes (see the module docstring); returns
    (graph, flat positions of the new nodes, old flat position of every node or -1 if new).

    Raises:
      PredictError: invalid SMILES, unknown targets, a drug feature a SMILES does not give, or
        targets for a graph without the target relation.
    """
    task, data = run.task, run.task.data
    graph, dt, gt = task.graph, data.drug_type, data.gene_type
    _check_smiles(drugs, source)
    features = {}
    for name, old in graph.nodes[dt].features.items():
        if name != "morgan":
            raise PredictError(f"the run's drugs carry input feature {name!r}, which this command "
                               f"cannot compute for a new drug (only 'morgan' fingerprints)")
        bits = morgan_fingerprints([d.smiles for d in drugs], n_bits=old.shape[1]).bits
        features[name] = bits.astype(np.float32)
    lookup = {str(g): i for i, g in enumerate(graph.nodes[gt].names)}
    start = graph.nodes[dt].count
    new = graph.with_nodes(dt, [f"new:{d.name}" for d in drugs], features)
    if any(d.targets for d in drugs):
        relation = data.target_relations[0]
        key = EdgeType(dt, relation, gt)
        if key not in graph.edges:
            raise PredictError(f"the run's graph has no {key} edges (dropped or ablated), so "
                               f"--targets cannot attach the drug")
        senders, receivers = [], []
        for i, d in enumerate(drugs):
            unknown = [t for t in d.targets if t not in lookup]
            if unknown:
                raise PredictError(f"{source}: targets {unknown[:5]} of {d.name!r} are not gene "
                                   f"nodes of the run's graph (give gene ids, e.g. Entrez ids "
                                   f"such as {list(lookup)[:3]})")
            senders += [start + i] * len(d.targets)
            receivers += [lookup[t] for t in d.targets]
        new = new.with_edges(key, senders, receivers)
        reverse = EdgeType(gt, "rev_" + relation, dt)
        if reverse in graph.edges:
            new = new.with_edges(reverse, receivers, senders)
    old_off, new_off = graph.node_offsets(), new.node_offsets()
    old_id = np.full(new.num_nodes, -1, np.int64)
    for t in graph.node_types:
        n = graph.nodes[t].count
        old_id[new_off[t]:new_off[t] + n] = np.arange(old_off[t], old_off[t] + n)
    positions = new_off[dt] + start + np.arange(len(drugs))
    return new, positions, old_id


def default_condition(run, cell: str | None, dose: float | None, time: float | None,
                      names) -> tuple[int, float, float, str]:
    """(cell line index, dose µM, time h, description): given values, or the data's most
    common cell line, dose and time."""
    from perturbjax.explain.report import _find

    data = run.task.data
    if cell is None:
        c = int(np.bincount(data.cell).argmax())
    else:
        c = _find("cell line", cell, run.task.graph.nodes[data.cell_type].names,
                  names[data.cell_type])
    common = lambda x: float(np.unique(x, return_counts=True)[0][  # noqa: E731
        np.unique(x, return_counts=True)[1].argmax()])
    dose = common(data.dose) if dose is None else float(dose)
    time = common(data.time) if time is None else float(time)
    if dose <= 0 or time < 0:
        raise PredictError(f"--dose must be > 0 µM and --time >= 0 h, got {dose} and {time}")
    return c, dose, time, f"{names[data.cell_type][c]}, {dose:g} µM, {time:g} h"


def predict_drugs(run, graph, drug_positions: np.ndarray, old_id: np.ndarray, cell: int,
                  dose: float, time: float, batch_size: int = 256) -> np.ndarray:
    """[len(drug_positions), G] predictions of a message-passing run on `graph` (the run's graph,
    possibly extended) for drugs at flat positions `drug_positions`."""
    task, data = run.task, run.task.data
    if data.drug_type in run.config.model.embedded_node_types:
        raise PredictError("the run learned a vector per drug node (model.embedded_node_types), "
                           "which a new drug does not have")
    features, _ = flat_nodes(graph, task.schema)
    offsets = graph.node_offsets()
    inputs = {"topology": Topology.build(graph, task.schema, sparse=True).to_device(),
              "nodes": {"features": jnp.asarray(features),
                        "id": jnp.asarray(np.maximum(old_id, 0), jnp.int32)},
              "readout": jnp.asarray(offsets[data.gene_type] + data.readout, jnp.int32)}
    if "support" in task.inputs:  # the kernel-ridge decoder: training drugs, renumbered
        known = np.flatnonzero(old_id >= 0)
        position = np.full(task.graph.num_nodes, -1, np.int64)
        position[old_id[known]] = known
        inputs["support"] = task.support(graph.num_nodes, position)
    covariates = np.array([[np.log10(dose), time / 24.0]], np.float32)
    graphdef, state = nnx.split(run.model)

    @jax.jit
    def forward(state, inputs, batch):
        return task.forward(nnx.merge(graphdef, state), inputs, batch)

    out = []
    for i in range(0, len(drug_positions), batch_size):
        chunk = np.asarray(drug_positions[i:i + batch_size], np.int32)
        n = len(chunk)
        pad = np.r_[chunk, np.full(batch_size - n, chunk[0], np.int32)]  # one compiled shape
        batch = {"drug": jnp.asarray(pad),
                 "cell": jnp.full(batch_size, offsets[data.cell_type] + cell, jnp.int32),
                 "covariates": jnp.asarray(np.repeat(covariates, batch_size, 0))}
        out.append(np.asarray(forward(state, inputs, batch))[:n])
    return np.concatenate(out) if out else np.zeros((0, len(data.readout)), np.float32)


def graph_ridge_signatures(run, data, drugs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """[len(rows), G] kg_ridge predictions for `drugs[rows]`: its validation-chosen kernel
    computed over `drugs` (sorted drug node indices, the run's fitted drugs first) in `data`'s
    graph, and its ridge system solved again with the chosen penalty. With `data` the run's own
    and `drugs` its fitted drugs, these are the run's predictions."""
    from perturbjax.models.baselines import tanimoto_kernels
    from perturbjax.models.graph_ridge import GraphRidge

    model, train = run.host_model, run.task.split.train
    chosen = model.chosen
    hops = GraphRidge().hop_kernels(data, drugs, run.host_data.drug[train])
    kernel = sum(hops[:chosen["hops"]]) / chosen["hops"]
    w = chosen["chemistry_weight"]
    if w:
        power = chosen["tanimoto_power"]
        kernel = (1 - w) * kernel + w * tanimoto_kernels(data, drugs, [power])[power]
    k_train = kernel[np.ix_(model.train_pos, model.train_pos)].astype(np.float64)
    coef = np.linalg.solve(k_train + chosen["alpha"] * np.eye(len(k_train)),
                           run.host_data.signatures[train].astype(np.float64))
    return (kernel[np.ix_(rows, model.train_pos)] @ coef).astype(np.float32)


def _graph_ridge_new_drugs(run, drugs: list[NewDrug], source: str) -> np.ndarray:
    """kg_ridge's signatures of `drugs` placed in the run's graph (module docstring)."""
    base = run.host_data
    graph, _, _ = extend_graph(run, drugs, source)
    smiles = np.asarray(list(base.drug_smiles) + [d.smiles for d in drugs], dtype=object)
    data = dataclasses.replace(base, graph=graph, drug_smiles=smiles)
    start = base.graph.nodes[base.drug_type].count
    fitted = run.host_model.drugs
    every = np.r_[fitted, start + np.arange(len(drugs))]
    return graph_ridge_signatures(run, data, every, len(fitted) + np.arange(len(drugs)))


def _warn_without_targets(run, drugs: list[NewDrug]) -> None:
    bare = [d.name for d in drugs if not d.targets]
    if not bare:
        return
    who = (f"{bare[0]!r} has" if len(bare) == 1 else
           f"{len(bare)} drugs ({', '.join(repr(b) for b in bare[:3])}"
           f"{', ...' if len(bare) > 3 else ''}) have")
    name = run.config.model.name
    if run.is_graph_network:
        chemistry = bool(run.task.graph.nodes[run.task.data.drug_type].features)
    else:
        chemistry = bool(run.host_model.chosen.get("chemistry_weight"))
    how = ("its signature comes from chemistry alone (Morgan fingerprint), not from where it "
           "acts in the graph" if chemistry else
           f"the {name} run gives drug chemistry no weight, so its signature is the same as any "
           f"drug's without targets")
    warnings.warn(f"{who} no targets: {how}; give targets (gene ids) to place it in the graph",
                  PredictWarning, stacklevel=3)


def predict_new_drugs(run, drugs: list[NewDrug], source: str = "--smiles", *, cell=None,
                      dose=None, time=None, names=None) -> tuple[np.ndarray, str]:
    """[len(drugs), G] predicted signatures of drugs the graph does not know, and a description
    of the condition predicted (message-passing runs: the given or the data's most common cell
    line, dose and time; kg_ridge: one signature per drug).

    Raises:
      PredictError: the run cannot place new drugs, or bad SMILES, targets, cell line, dose or
        time (the input is named).
    """
    from perturbjax.explain.report import node_names

    check_can_place(run.config.to_dict(), run.workdir)
    names = node_names(run) if names is None else names
    if run.is_graph_network:  # every input checked before any warning
        c, dose, time, where = default_condition(run, cell, dose, time, names)
        graph, positions, old_id = extend_graph(run, drugs, source)
        _warn_without_targets(run, drugs)
        return predict_drugs(run, graph, positions, old_id, c, dose, time), where
    where = _per_drug(run, cell, dose, time, names)
    values = _graph_ridge_new_drugs(run, drugs, source)
    _warn_without_targets(run, drugs)
    return values, where


def _per_drug(run, cell, dose, time, names) -> str:
    """kg_ridge's condition: none. A given cell line is still checked (a typo is an error)."""
    from perturbjax.explain.report import _find

    data = run.task.data
    if cell is not None:
        _find("cell line", cell, run.task.graph.nodes[data.cell_type].names, names[data.cell_type])
    given = [f for f, v in (("cell line", cell), ("dose", dose), ("time", time)) if v is not None]
    if given:
        warnings.warn(f"{run.config.model.name} predicts one signature per drug: the "
                      f"{', '.join(given)} given change(s) nothing", PredictWarning, stacklevel=3)
    return f"{run.config.model.name}: one signature per drug, whatever the cell line, dose and time"


# ---- connectivity ------------------------------------------------------------------------
def connectivity(up: np.ndarray, down: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """XSum scores (module docstring) of every predicted signature `[m, G]` for the query's up
    and down gene sets (column indices)."""
    z = (predicted - predicted.mean(1, keepdims=True)) / (predicted.std(1, keepdims=True) + 1e-12)
    return z[:, up].mean(1) - z[:, down].mean(1)


def read_signature(path: str, gene_ids, gene_symbols) -> np.ndarray:
    """A query signature file (gene and value per line: Entrez id or symbol, tab- or
    comma-separated, optional header) as values over the readout genes, NaN where absent.

    Raises:
      PredictError: an unreadable file, a non-numeric value (line named), or fewer than 10
        readout genes in it.
    """
    try:
        with open(path) as f:
            lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    except OSError as e:
        raise PredictError(f"{path}: cannot read the signature ({e.strerror})") from None
    index = {str(g): i for i, g in enumerate(gene_ids)}
    index.update({str(s).upper(): i for i, s in enumerate(gene_symbols) if s})
    values = np.full(len(gene_ids), np.nan)
    unknown = []
    for n, line in enumerate(lines, start=1):
        parts = [p.strip() for p in line.replace(",", "\t").split("\t") if p.strip()]
        if len(parts) < 2:
            raise PredictError(f"{path}:{n}: expected 'gene<TAB>value', got {line!r}")
        try:
            value = float(parts[-1])
        except ValueError:
            if n == 1:
                continue  # a header
            raise PredictError(f"{path}:{n}: value {parts[-1]!r} is not a number") from None
        i = index.get(parts[0], index.get(parts[0].upper()))
        if i is not None:
            values[i] = value
        else:
            unknown.append(parts[0])
    known = int(np.isfinite(values).sum())
    close = _close_genes(unknown, [str(g) for g in gene_ids] + [str(s) for s in gene_symbols if s])
    if known < 10:
        raise PredictError(f"{path}: {known} of its genes are readout genes of the run; at least "
                           f"10 are needed (give Entrez ids or symbols, e.g. "
                           f"{list(gene_ids)[:3]}){close}")
    if unknown:
        warnings.warn(f"{path}: {len(unknown)} of its {len(unknown) + known} genes are not readout "
                      f"genes of the run and are left out{close}", PredictWarning, stacklevel=2)
    return values


def _close_genes(unknown: list[str], genes: list[str], show: int = 3) -> str:
    """"; unknown 'X' (close: 'Y', 'Z'), ..." for the first unknown genes, or ""."""
    if not unknown:
        return ""
    upper = {g.upper(): g for g in genes}
    described = []
    for g in unknown[:show]:
        close = [upper[c] for c in difflib.get_close_matches(g.upper(), list(upper), n=3)]
        described.append(f"{g!r}" + (f" (close: {', '.join(map(repr, close))})" if close else ""))
    more = f", and {len(unknown) - show} more" if len(unknown) > show else ""
    return f"; not readout genes: {', '.join(described)}{more}"


def query_sets(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The query's k most up and k most down readout genes (k at most a tenth of its genes,
    at least 5)."""
    known = np.flatnonzero(np.isfinite(values))
    k = max(5, min(k, len(known) // 10))
    order = known[np.argsort(-values[known], kind="stable")]
    return order[:k], order[::-1][:k]


# ---- the commands' work --------------------------------------------------------------------
def gene_columns(run, names) -> tuple[list[str], list[str]]:
    """Readout genes' ids (Entrez for Hetionet) and symbols (the id where no name is known)."""
    data = run.task.data
    ids = [str(x) for x in run.task.graph.nodes[data.gene_type].names[data.readout]]
    labels = [str(x) for x in names[data.gene_type][data.readout]]
    return ids, [lab.split(" (")[0] if lab.endswith(f"({i})") else lab
                 for lab, i in zip(labels, ids)]


def signature_frame(ids, symbols, names: list[str], values: np.ndarray):
    """A pandas DataFrame, one row per readout gene: entrez_id, symbol, one column per drug."""
    import pandas as pd

    genes = pd.DataFrame({"entrez_id": list(ids), "symbol": list(symbols)})
    values = pd.DataFrame(np.asarray(values, np.float64).reshape(len(names), -1).T,
                          columns=list(names))
    return pd.concat([genes, values], axis=1)


def write_signatures(path: str, frame) -> None:
    """`signature_frame`'s table as TSV (values to 5 significant digits).

    Raises:
      OSError: the file cannot be written (its path named).
    """
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        frame.to_csv(path, sep="\t", index=False, float_format="%.5g")
    except OSError as e:
        raise OSError(f"{path}: cannot write the signatures ({e.strerror or e})") from None


def repurpose(run, query: np.ndarray, names, *, k: int = 50, library: list[NewDrug] = (),
              cell=None, dose=None, time=None) -> tuple[list[dict], str]:
    """Every graph drug (and library drug) with its connectivity to `query`, most reversing
    first, and a description of the condition predicted."""
    task, data = run.task, run.task.data
    up, down = query_sets(query, k)
    drug_names = [str(x) for x in names[data.drug_type]]
    parts = {}
    for part, idx in task.split.parts().items():
        parts.update({int(d): part for d in np.unique(data.drug[idx])})
    if run.is_graph_network:
        c, dose, time, where = default_condition(run, cell, dose, time, names)
        graph, positions, old_id = task.graph, None, None
        offsets = graph.node_offsets()
        candidates = offsets[data.drug_type] + np.arange(graph.nodes[data.drug_type].count)
        labels = [(n, "graph", parts.get(i, "unmeasured")) for i, n in enumerate(drug_names)]
        if library:
            _warn_without_targets(run, list(library))
            graph, positions, old_id = extend_graph(run, list(library), "--library")
            candidates = np.r_[graph.node_offsets()[data.drug_type]
                               + np.arange(graph.nodes[data.drug_type].count - len(library)),
                               positions]
            labels += [(d.name, "library", "new") for d in library]
        else:
            old_id = np.arange(graph.num_nodes)
        predicted = predict_drugs(run, graph, candidates, old_id, c, dose, time)
    else:
        drugs = np.unique(data.drug)
        first = np.array([np.flatnonzero(data.drug == d)[0] for d in drugs])
        predicted = np.asarray(run.host_model.predict(run.host_data, first))
        labels = [(drug_names[d], "graph", parts.get(int(d), "unmeasured")) for d in drugs]
        where = "each drug's first measured condition"
        if library:
            check_can_place(run.config.to_dict(), run.workdir)
            _warn_without_targets(run, list(library))
            predicted = np.r_[predicted, _graph_ridge_new_drugs(run, list(library), "--library")]
            labels += [(d.name, "library", "new") for d in library]
            where = _per_drug(run, cell, dose, time, names)
    scores = connectivity(up, down, predicted - task.train_mean)
    order = np.argsort(scores, kind="stable")
    rows = [{"rank": r + 1, "drug": labels[i][0], "source": labels[i][1], "part": labels[i][2],
             "connectivity": float(scores[i])} for r, i in enumerate(order)]
    return rows, where


def write_repurposing(rows: list[dict], directory: str, title: str, top: int = 20) -> list[str]:
    """repurposing.tsv (every drug), repurposing.md (the top reversers) and repurposing.png."""
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is

    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, f"repurposing.{ext}") for ext in ("tsv", "md", "png")]
    with open(paths[0], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        w.writeheader()
        w.writerows(rows)
    lines = [f"# {title}", "", "| rank | drug | source | split part | connectivity |",
             "|---:|---|---|---|---:|"]
    lines += [f"| {r['rank']} | {r['drug']} | {r['source']} | {r['part']} | "
              f"{r['connectivity']:+.3f} |" for r in rows[:top]]
    with open(paths[1], "w") as f:
        f.write("\n".join(lines) + "\n\nConnectivity: XSum over the query's top up and down "
                "genes (negative reverses the query; see perturbjax/predict.py).\n")
    best = rows[:top]
    fig = Figure(figsize=(7, 0.3 * len(best) + 1.5))
    ax = fig.subplots()
    y = np.arange(len(best))[::-1]
    ax.barh(y, [r["connectivity"] for r in best],
            color=["C1" if r["source"] == "library" else "C0" for r in best])
    ax.set_yticks(y)
    ax.set_yticklabels([r["drug"] for r in best], fontsize=8)
    ax.set_xlabel("XSum connectivity to the query: mean z of its up genes − mean z of its down "
                  "genes\n(z: SDs of the drug's predicted signature over the readout genes; "
                  "negative reverses the query)", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=120)
    return paths
