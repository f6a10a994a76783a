"""Writes the built-in consensus dataset's inputs as a user's files, to check the files route.

    export PERTURBJAX_DATA_DIR=../shared/data
    python benchmarks/consensus_as_files.py --out runs/consensus_files/data
    # then the five cold-drug folds through the files route (commands printed at the end)

`experiments/hetionet_lincs_consensus.py` builds its data from the registry's files by code
written for them. Here the same inputs are written in the layouts a user downloads, so that
`experiments/kg_lincs.py:collapse=drug` reads them through the general route and its scores can
be set beside the built-in route's on the same drugs and folds:

  kg.tsv                  Hetionet (the 5k-per-metaedge sample with the full CbG, DaG, PPI and
                          pathway tables, as the consensus route builds it) as an edge table
                          (source, source_type, relation, target, target_type, names);
  consensus.gctx          the 1,170 drugs' consensus signatures, 978 Entrez-id rows (one
                          level-5-like signature per drug, sig_id = DrugBank id);
  siginfo_beta.txt        one trt_cp row per signature, cell line "consensus";
  compoundinfo_beta.txt   one row per drug and target (CbG-binding.tsv targets as symbols),
                          with SMILES, InChIKey and a drugbank_id column;
  geneinfo_beta.txt       lincs/genes.tsv in the beta layout (landmark = status "measured");
  drugs.tsv               DrugBank ids with name, InChIKey and SMILES (the KG drugs' features).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

import h5py
import numpy as np
import pandas as pd

from perturbjax.data import registry
from perturbjax.data.hetionet import read_compound_gene_binding, read_nodes
from perturbjax.data.hetionet_lincs import hetionet_graph, read_drugbank_smiles
from perturbjax.data.lincs import read_consensus
from perturbjax.data.tables import read_table


def write_files(out: str) -> dict[str, str]:
    """Writes the files into `out`; returns the data.files settings that read them."""
    os.makedirs(out, exist_ok=True)
    path = registry.path
    graph, _ = hetionet_graph("hetionet/edges-5k.sif.gz", full_tables=True)
    nodes = read_nodes(path("hetionet/nodes.tsv")).set_index(["node_type", "node_id"])["name"]

    def names(node_type, ids):
        return [nodes.get((node_type, i), i) for i in ids]

    rows = []
    for key, es in graph.edges.items():
        if key.relation.startswith("rev_"):
            continue  # the route adds the way back
        src = graph.nodes[key.source].names[es.senders]
        dst = graph.nodes[key.target].names[es.receivers]
        rows.append(pd.DataFrame({"source": src, "source_type": key.source,
                                  "relation": key.relation, "target": dst,
                                  "target_type": key.target,
                                  "source_name": names(key.source, src),
                                  "target_name": names(key.target, dst)}))
    pd.concat(rows).to_csv(os.path.join(out, "kg.tsv"), sep="\t", index=False)

    consensus, _ = read_consensus(path("lincs/consensi-drugbank.tsv.gz"))
    drugs = consensus.perturbagens.astype(str)
    with h5py.File(os.path.join(out, "consensus.gctx"), "w") as f:
        f.create_dataset("0/DATA/0/matrix", data=consensus.values.astype(np.float32),
                         chunks=(min(1000, len(drugs)), len(consensus.genes)))
        f.create_dataset("0/META/ROW/id", data=consensus.genes.astype("S"))
        f.create_dataset("0/META/COL/id", data=drugs.astype("S"))

    slim = read_table(path("drugbank/drugbank-slim.tsv"), ("drugbank_id", "name", "inchikey"))
    slim = slim.frame.set_index("drugbank_id")
    smiles = read_drugbank_smiles(path("drugbank/drugbank_smiles.txt"))
    name = pd.Series(drugs, index=drugs).map(slim["name"]).fillna(pd.Series(drugs, index=drugs))
    pd.DataFrame({"sig_id": drugs, "pert_id": drugs, "cmap_name": name.to_numpy(),
                  "cell_iname": "consensus", "pert_type": "trt_cp", "pert_dose": 10.0,
                  "pert_dose_unit": "uM", "pert_time": 24.0, "pert_time_unit": "h",
                  "is_hiq": 1, "qc_pass": 1.0, "tas": np.nan, "is_exemplar_sig": 1}).to_csv(
        os.path.join(out, "siginfo_beta.txt"), sep="\t", index=False)

    genes = nodes.loc["gene"]
    cbg = read_compound_gene_binding(path("hetionet/CbG-binding.tsv"))
    cbg = cbg[cbg["source_id"].isin(drugs)]
    targets = pd.DataFrame({"pert_id": cbg["source_id"].to_numpy(),
                            "target": cbg["target_id"].map(genes).fillna("").to_numpy()})
    info = pd.DataFrame({"pert_id": drugs, "cmap_name": name.to_numpy(),
                         "canonical_smiles": pd.Series(drugs).map(smiles).fillna("").to_numpy(),
                         "inchi_key": pd.Series(drugs).map(slim["inchikey"]).fillna("").str
                         .replace("InChIKey=", "", regex=False).to_numpy(),
                         "drugbank_id": drugs})
    info = info.merge(targets, on="pert_id", how="left").fillna({"target": ""})
    info[["pert_id", "cmap_name", "target", "canonical_smiles", "inchi_key",
          "drugbank_id"]].to_csv(os.path.join(out, "compoundinfo_beta.txt"), sep="\t",
                                 index=False)

    table = read_table(path("lincs/genes.tsv"), ("entrez_gene_id", "status", "symbol")).frame
    pd.DataFrame({"gene_id": table["entrez_gene_id"], "gene_symbol": table["symbol"],
                  "feature_space": np.where(table["status"] == "measured", "landmark",
                                            "inferred")}).to_csv(
        os.path.join(out, "geneinfo_beta.txt"), sep="\t", index=False)
    pd.DataFrame({"drugbank_id": smiles.index, "smiles": smiles.to_numpy(),
                  "name": smiles.index.map(slim["name"]).fillna(""),
                  "inchikey": smiles.index.map(slim["inchikey"]).fillna("")}).to_csv(
        os.path.join(out, "drugs.tsv"), sep="\t", index=False)
    return {"kg": os.path.join(out, "kg.tsv"), "kg_format": "edges", "drug_type": "compound",
            "gene_type": "gene", "target_relations": "['binds']",
            "signatures": os.path.join(out, "consensus.gctx"),
            "siginfo": os.path.join(out, "siginfo_beta.txt"),
            "compoundinfo": os.path.join(out, "compoundinfo_beta.txt"),
            "geneinfo": os.path.join(out, "geneinfo_beta.txt"),
            "drug_table": os.path.join(out, "drugs.tsv")}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/consensus_files/data", help="folder to write")
    parser.add_argument("--root", default="runs/consensus_files/relational_sgc",
                        help="where the printed launch command puts its runs")
    args = parser.parse_args(argv)
    try:
        files = write_files(args.out)
    except (registry.DataFileError, OSError, ValueError) as e:
        sys.exit(f"consensus_as_files: {e}")
    overrides = " ".join(shlex.quote(f"--config.data.files.{k}={v}") for k, v in files.items())
    print(f"wrote {args.out}; the five cold-drug folds through the files route:\n"
          f"perturbjax launch --config experiments/kg_lincs.py:collapse=drug --sweep "
          f"--root {args.root} --target local {overrides}")


if __name__ == "__main__":
    main()
