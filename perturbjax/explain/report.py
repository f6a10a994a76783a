"""`perturbjax explain`: why a trained model predicts the signature it does for one condition.

For a message-passing model: the most affected predicted genes (largest |prediction - training
mean|), integrated-gradient attributions of every edge to each of them
(`attribution.integrated_gradients`), their sums per relation beside the occlusion effect of
each relation and its attention, and the top KG paths from the drug to each gene, scored by the
attributions along them. For a kernel-ridge model (`kg_ridge`, `tanimoto_ridge`, ...): which
training drugs carry the prediction (kernel weight times their fitted coefficients, projected
on the prediction) and which targets they share with the drug.

Writes `explanation.md`, `explanation.json` (everything in the report, for scripts) and PNG
figures (`signature.png`; `relations.png` for message-passing models) to the output folder.
"""

from __future__ import annotations

import difflib
import json
import os

import numpy as np

from perturbjax.explain import attribution
from perturbjax.training.restore import TrainedRun, condition_function


class ExplainError(ValueError):
    """A request the run cannot answer (an unknown drug or cell line); the message says why."""


# ---- names ---------------------------------------------------------------------------------
def plain_names(graph, source: str, drug_type: str) -> dict[str, np.ndarray]:
    """Names per node type where the data source has them (Hetionet's nodes.tsv, DrugBank's
    slim table), "" where it has none (then the node id is all there is)."""
    out = {t: np.full(ns.count, "", dtype=object) for t, ns in graph.nodes.items()}
    if not source.startswith("hetionet"):
        return out
    from perturbjax.data import registry
    from perturbjax.data.hetionet import read_nodes
    from perturbjax.data.tables import read_table

    nodes = read_nodes(registry.path("hetionet/nodes.tsv"))
    names = dict(zip(zip(nodes["node_type"], nodes["node_id"]), nodes["name"]))
    try:
        slim = read_table(registry.path("drugbank/drugbank-slim.tsv"),
                          ("drugbank_id", "name", "inchikey")).frame
        names.update({(drug_type, i): n for i, n in zip(slim["drugbank_id"], slim["name"])})
    except (OSError, ValueError):
        pass  # compound names then come from Hetionet alone
    for t, ns in graph.nodes.items():
        out[t] = np.array([names.get((t, i)) or "" for i in ns.names], dtype=object)
    return out


def node_names(run: TrainedRun) -> dict[str, np.ndarray]:
    """Display names per node type, "name (id)" where the data source has names (see
    `plain_names`), else the node ids."""
    graph = run.task.graph
    plain = plain_names(graph, run.config.data.source, run.task.data.drug_type)
    return {t: np.array([f"{n} ({i})" if n else str(i) for i, n in zip(ns.names, plain[t])],
                        dtype=object) for t, ns in graph.nodes.items()}


def _find(kind: str, query: str, ids, labels) -> int:
    """Position of `query` among node `ids` (exact id, then case-insensitive id or name)."""
    ids = [str(i) for i in ids]
    if query in ids:
        return ids.index(query)
    low = query.lower()
    hits = [k for k, (i, lab) in enumerate(zip(ids, labels))
            if low in (i.lower(), str(lab).lower()) or str(lab).lower().startswith(low + " (")]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise ExplainError(f"{kind} {query!r} matches {len(hits)} nodes: "
                           f"{[str(labels[k]) for k in hits[:5]]}; give the id")
    candidates = list(dict.fromkeys(ids + [str(x).split(" (")[0] for x in labels]))
    close = difflib.get_close_matches(query, candidates, n=5)
    raise ExplainError(f"{kind} {query!r} is not a node of the run's graph"
                       + (f"; close: {close}" if close else ""))


def find_condition(run: TrainedRun, drug: str, cell: str | None, names) -> tuple[int, str]:
    """The data's first condition of `drug` (in `cell` if given) and its split part.

    Raises:
      ExplainError: the drug or cell line is unknown, or has no measured condition.
    """
    data, task = run.task.data, run.task
    d = _find("drug", drug, task.graph.nodes[data.drug_type].names, names[data.drug_type])
    rows = np.flatnonzero(data.drug == d)
    if cell is not None:
        c = _find("cell line", cell, task.graph.nodes[data.cell_type].names,
                  names[data.cell_type])
        rows = rows[data.cell[rows] == c]
    if not len(rows):
        where = f" in cell line {cell!r}" if cell else ""
        raise ExplainError(f"drug {drug!r} has no measured condition{where} in the run's data")
    condition = int(rows[0])
    part = next(p for p, idx in task.split.parts().items() if condition in set(idx.tolist()))
    return condition, part


# ---- the explanation -----------------------------------------------------------------------
class Explanation(dict):
    """What `explain` found, as a JSON-friendly dict (the keys `explanation.json` holds), with
    its report: `markdown()`, `write(directory)`; a notebook shows it as Markdown."""

    def markdown(self, figures: list[str] = ()) -> str:
        return markdown(self, figures)

    def write(self, directory: str) -> list[str]:
        """explanation.md, explanation.json and the figures in `directory`; their paths."""
        return write_report(self, directory)

    def _repr_markdown_(self) -> str:
        return markdown(self)


def explain(run: TrainedRun, drug: str, *, cell: str | None = None, genes: int = 10,
            paths: int = 5, steps: int = 16, progress=None) -> Explanation:
    """Everything the report shows (see the module docstring).

    Signature values are in the data's units (LINCS: moderated z-scores); "effect" and
    "measured_effect" are the predicted and the measured signature minus the training mean, the
    part that is particular to this condition.

    Raises:
      ExplainError: an unknown drug or cell line (with close matches), or no measured condition.
    """
    task, data = run.task, run.task.data
    names = node_names(run)
    condition, part = find_condition(run, drug, cell, names)
    d, c = int(data.drug[condition]), int(data.cell[condition])
    gene_names = names[data.gene_type][data.readout]
    out = Explanation(
        workdir=run.workdir, model=run.config.model.name, condition=condition, part=part,
        drug=str(names[data.drug_type][d]), cell_line=str(names[data.cell_type][c]),
        dose_um=float(data.dose[condition]), time_h=float(data.time[condition]))
    if run.is_graph_network:
        f, topology = condition_function(run, condition)
        pred = np.asarray(f())
    else:
        pred = np.asarray(run.host_model.predict(run.host_data, np.array([condition])))[0]
    effect = pred - task.train_mean
    top = np.argsort(-np.abs(effect))[:genes]
    measured = data.signatures[condition]
    out["genes"] = [{"gene": str(gene_names[g]), "readout_index": int(g),
                     "predicted": float(pred[g]), "effect": float(effect[g]),
                     "measured": float(measured[g]),
                     "measured_effect": float(measured[g] - task.train_mean[g])} for g in top]
    out["pearson_centered"] = float(np.corrcoef(effect, measured - task.train_mean)[0, 1])
    if run.is_graph_network:
        out.update(_graph_explanation(run, condition, f, topology, top, d, c, names, paths, steps,
                                      progress))
    elif hasattr(run.host_model, "kernel"):
        out["training_drugs"] = _kernel_explanation(run, condition, top, names)
    return out


def _graph_explanation(run, condition, f, topology, top, d, c, names, k, steps, progress
                       ) -> dict:
    task, data = run.task, run.task.data
    graph = task.graph
    offsets = graph.node_offsets()
    flat_names = np.concatenate([names[t] for t in graph.node_types])
    relations = [str(k_) for k_ in graph.edge_types]
    senders, receivers = np.asarray(topology.senders), np.asarray(topology.receivers)
    edge_type = np.asarray(topology.edge_type)
    e = topology.num_edges
    ig = attribution.integrated_gradients(f.forward, f.args, e, top, steps=steps,
                                          progress=progress)
    pred = np.asarray(f())[top]
    empty = np.asarray(f(np.zeros(e, np.float32)))[top]
    occlusion = np.array([np.linalg.norm(np.asarray(f((edge_type != r).astype(np.float32)))[top]
                                         - pred) for r in range(len(relations))])
    gene_nodes = offsets[data.gene_type] + data.readout[top]
    drug_node, cell_node = offsets[data.drug_type] + d, offsets[data.cell_type] + c
    attention = _attention(run, condition, topology, receivers, edge_type,
                           np.r_[drug_node, cell_node, gene_nodes], len(relations))
    imp = attribution.relation_importance(relations, edge_type, ig, occlusion, attention)
    order = np.argsort(-imp.ig_share)
    out = {"completeness": {"sum_of_attributions": ig.sum(1).tolist(),
                            "prediction_minus_no_messages": (pred - empty).tolist()},
           "relations": [{"relation": imp.relation[r], "edges": int(imp.edges[r]),
                          "ig_share": float(imp.ig_share[r]), "ig_signed": float(imp.ig_signed[r]),
                          "occlusion": float(imp.occlusion[r]),
                          "attention": (None if np.isnan(imp.attention[r])
                                        else float(imp.attention[r]))}
                         for r in order]}
    relation_names = [k_.relation for k_ in graph.edge_types]
    per_edge_relation = [relation_names[t] for t in edge_type.tolist()]
    for i, gene_node in enumerate(gene_nodes):
        found = attribution.top_paths(senders, receivers, per_edge_relation, np.abs(ig[i]),
                                      drug_node, int(gene_node), topology.num_nodes, k=k)
        out.setdefault("paths", []).append({
            "gene": str(flat_names[gene_node]),
            "paths": [{"nodes": [str(flat_names[n]) for n in p.nodes],
                       "node_ids": [int(n) for n in p.nodes], "relations": list(p.relations),
                       "forward": list(p.forward), "score": p.score} for p in found]})
    return out


def _attention(run, condition, topology, receivers, edge_type, nodes, num_relations):
    """Mean attention into the explained nodes per relation (last attention layer), or None."""
    from perturbjax.models.layers import attention_weights

    task = run.task
    batch = task.make_batch(np.array([condition]), (0,))
    x = {**task.inputs, **batch}
    alphas = attention_weights(run.model, topology, x["nodes"], x["drug"], x["cell"],
                               x["covariates"], x["readout"], support=x.get("support"))
    if not alphas:
        return None
    last = np.asarray(alphas[sorted(alphas)[-1]])
    return attribution.mean_attention_into(last, receivers, edge_type, nodes, num_relations)


def _kernel_explanation(run, condition, top, names, k: int = 10) -> list[dict]:
    """Training drugs ranked by their share of the prediction on the explained genes, with the
    kernel weight and the targets they share with the drug."""
    model, data = run.host_model, run.host_data
    pos = int(np.searchsorted(model.drugs, data.drug[condition]))
    weight = model.kernel[pos, model.train_pos]                     # [n_train conditions]
    contrib = weight[:, None] * model.coef                          # [n_train, G]
    train_drugs = model.drugs[model.train_pos]
    pred = contrib.sum(0)[top]
    share = contrib[:, top] @ pred / max(float(pred @ pred), 1e-30)
    per_drug = {}
    for drug, s, w in zip(train_drugs.tolist(), share.tolist(), weight.tolist()):
        total, kernel = per_drug.get(drug, (0.0, w))
        per_drug[drug] = (total + s, kernel)
    targets = _targets(data)
    mine = targets.get(int(data.drug[condition]), set())
    gene_names = names[data.gene_type]
    ranked = sorted(per_drug.items(), key=lambda x: -x[1][0])[:k]
    return [{"drug": str(names[data.drug_type][drug]), "share": float(s), "kernel": float(w),
             "shared_targets": sorted(str(gene_names[g]) for g in mine & targets.get(drug, set()))}
            for drug, (s, w) in ranked]


def _targets(data) -> dict[int, set[int]]:
    """drug -> its target genes (edges of the data's target relations, drug -> gene)."""
    out: dict[int, set[int]] = {}
    for key, es in data.graph.edges.items():
        if key.source == data.drug_type and key.target == data.gene_type \
                and key.relation in data.target_relations:
            for s, t in zip(es.senders.tolist(), es.receivers.tolist()):
                out.setdefault(s, set()).add(t)
    return out


# ---- output ----------------------------------------------------------------------------------
def write_report(explanation: dict, directory: str) -> list[str]:
    """explanation.md, explanation.json and the figures in `directory`; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, "explanation.md"), os.path.join(directory, "explanation.json")]
    with open(paths[1], "w") as f:
        json.dump(explanation, f, indent=2)
    figures = _figures(explanation, directory)
    with open(paths[0], "w") as f:
        f.write(markdown(explanation, [os.path.basename(p) for p in figures]))
    return paths + figures


def markdown(x: dict, figures: list[str] = ()) -> str:
    lines = [f"# Why {x['model']} predicts this signature for {x['drug']}", "",
             f"Run `{x['workdir']}`; condition {x['condition']} ({x['part']} part): {x['drug']} "
             f"in {x['cell_line']}, {x['dose_um']:g} µM, {x['time_h']:g} h. Centred Pearson r of "
             f"the prediction with the measured signature: {x['pearson_centered']:.3f}.", "",
             "## Most affected predicted genes", "",
             "Signature values in the data's units (LINCS: moderated z-scores); \"− training "
             "mean\": minus the mean training signature, what is particular to this condition.",
             "",
             "| gene | predicted | measured | predicted − training mean | "
             "measured − training mean |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {g['gene']} | {g['predicted']:.3f} | {g['measured']:.3f} | {g['effect']:+.3f} | "
              f"{_measured_effect(x, g):+.3f} |" for g in x["genes"]]
    if "relations" in x:
        comp = x["completeness"]
        gap = np.max(np.abs(np.subtract(comp["sum_of_attributions"],
                                        comp["prediction_minus_no_messages"])))
        lines += ["", "## Relations", "",
                  "Integrated gradients over the edges' message scales, summed per relation "
                  "over the genes above (share of the total |attribution|, and signed); "
                  "occlusion: how far those genes' predictions move when the relation carries "
                  "no messages; attention: mean coefficient on its edges into the drug, the cell "
                  "line and the genes (attention is normalised within each relation). "
                  f"Completeness: attributions add up to the prediction minus the prediction "
                  f"without messages within {gap:.2g}.", "",
                  "| relation | edges | share of abs. IG | IG (signed) | occlusion | attention |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in x["relations"]:
            att = "–" if r["attention"] is None else f"{r['attention']:.3f}"
            lines.append(f"| {r['relation']} | {r['edges']} | {r['ig_share']:.1%} | "
                         f"{r['ig_signed']:+.3g} | {r['occlusion']:.3g} | {att} |")
        lines += ["", "## Top paths from the drug to each gene", "",
                  "Scored by the weakest step's attribution; `-[r]->` follows an edge, `<-[r]-` "
                  "goes against one.", ""]
        for entry in x["paths"]:
            lines.append(f"**{entry['gene']}**")
            lines.append("")
            if not entry["paths"]:
                lines.append("- no path of up to 3 edges carries attribution")
            for p in entry["paths"]:
                text = p["nodes"][0]
                for node, rel, fwd in zip(p["nodes"][1:], p["relations"], p["forward"]):
                    text += f" -[{rel}]-> {node}" if fwd else f" <-[{rel}]- {node}"
                lines.append(f"- {text}  (score {p['score']:.3g})")
            lines.append("")
    if "training_drugs" in x:
        lines += ["", "## Training drugs that carry the prediction", "",
                  "Kernel ridge predicts a weighted sum of training signatures: each training "
                  "drug's part (kernel weight times its fitted coefficients), projected on the "
                  "prediction over the genes above.", "",
                  "| training drug | share | kernel | shared targets |", "|---|---:|---:|---|"]
        for t in x["training_drugs"]:
            lines.append(f"| {t['drug']} | {t['share']:.1%} | {t['kernel']:.3f} | "
                         f"{', '.join(t['shared_targets']) or '–'} |")
    lines += [""] + [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def _measured_effect(x: dict, gene: dict) -> float:
    """Measured minus the training mean (explanation.json files before it was kept: NaN)."""
    return gene.get("measured_effect", float("nan"))


def _figures(x: dict, directory: str) -> list[str]:
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is

    out = []
    genes = x["genes"]
    fig = Figure(figsize=(7, 0.3 * len(genes) + 1.5))
    ax = fig.subplots()
    y = np.arange(len(genes))[::-1]
    ax.barh(y + 0.2, [g["effect"] for g in genes], height=0.4, label="predicted − training mean")
    # Both bars on one scale: the signature minus the training mean, predicted and measured.
    ax.barh(y - 0.2, [_measured_effect(x, g) for g in genes], height=0.4,
            label="measured − training mean", color="0.6")
    ax.set_yticks(y)
    ax.set_yticklabels([g["gene"] for g in genes], fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("signature − training mean (the data's units; LINCS: moderated z-score)")
    ax.legend(fontsize=8)
    ax.set_title(f"{x['drug']}: most affected predicted genes", fontsize=10)
    fig.tight_layout()
    out.append(os.path.join(directory, "signature.png"))
    fig.savefig(out[-1], dpi=120)
    if "relations" in x:
        rel = [r for r in x["relations"] if r["ig_share"] > 0.001][:20]
        fig = Figure(figsize=(10, 0.3 * len(rel) + 1.5))
        axes = fig.subplots(1, 2, sharey=True)
        y = np.arange(len(rel))[::-1]
        axes[0].barh(y, [r["ig_share"] for r in rel])
        axes[0].set_xlabel("share of |integrated gradients|\n(fraction of the total)", fontsize=9)
        axes[1].barh(y, [r["occlusion"] for r in rel], color="C1")
        axes[1].set_xlabel("occlusion: norm of the genes' prediction change\n(signature units)",
                           fontsize=9)
        axes[0].set_yticks(y)
        axes[0].set_yticklabels([r["relation"] for r in rel], fontsize=8)
        fig.suptitle(f"{x['drug']}: relations behind the prediction", fontsize=10)
        fig.tight_layout()
        out.append(os.path.join(directory, "relations.png"))
        fig.savefig(out[-1], dpi=120)
    return out
