"""Small files in the published layouts a user brings: PrimeKG's kg.csv, an edge table, and the
LINCS level-5 matrix with its info tables in the LINCS 2020 (beta) and GEO layouts.

The world: 6 genes (4 landmarks + 2 inferred), 3 KG drugs, 3 LINCS compounds and 2 cell lines.
  - "aspirin" (BRD-A1) matches KG drug DB1 by name (cmap_name vs PrimeKG's x_name);
  - BRD-B2 matches DB2 by InChIKey (through the user's drug table);
  - BRD-C3 ("novelcide") is not in the KG: it joins as a new drug with targets GENE2 and GENE3;
  - cell line A375 has primary disease "melanoma", a KG disease; MCF7's is not in the KG;
  - signatures: each compound in each cell line at two doses (2 replicates each), plus a
    vehicle control and an shRNA signature, which the route drops.
"""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd

from perturbjax.data.primekg_synthetic import write_primekg_csv

GENES = pd.DataFrame({"gene_id": ["101", "102", "103", "104", "105", "106"],
                      "gene_symbol": ["GENE1", "GENE2", "GENE3", "GENE4", "GENE5", "GENE6"],
                      "feature_space": ["landmark"] * 4 + ["inferred", "best inferred"]})
LANDMARKS = ["101", "102", "103", "104"]
COMPOUNDS = [("BRD-A1", "aspirin"), ("BRD-B2", "brd-b2"), ("BRD-C3", "novelcide")]
CELLS = ["A375", "MCF7"]


def _kg_rows() -> pd.DataFrame:
    """PrimeKG rows (both directions of each edge, as kg.csv stores them)."""
    nodes = {  # index: (type, id, name, source)
        0: ("drug", "DB1", "Aspirin", "DrugBank"), 1: ("drug", "DB2", "Otherdrug", "DrugBank"),
        2: ("drug", "DB3", "Thirddrug", "DrugBank"),
        **{10 + i: ("gene/protein", g, s, "NCBI") for i, (g, s) in
           enumerate(zip(GENES["gene_id"], GENES["gene_symbol"]))},
        20: ("disease", "D1", "melanoma", "MONDO"), 21: ("disease", "D2", "asthma", "MONDO")}
    edges = [("drug_protein", "target", 0, 10), ("drug_protein", "target", 1, 11),
             ("drug_protein", "target", 2, 13), ("protein_protein", "ppi", 10, 11),
             ("protein_protein", "ppi", 11, 12), ("protein_protein", "ppi", 12, 13),
             ("disease_protein", "associated with", 20, 12),
             ("indication", "indication", 0, 21)]
    rows = []
    for rel, display, x, y in edges:
        for a, b in ((x, y), (y, x)):
            (at, ai, an, asrc), (bt, bi, bn, bsrc) = nodes[a], nodes[b]
            rows.append(dict(relation=rel, display_relation=display, x_index=a, x_id=ai,
                             x_type=at, x_name=an, x_source=asrc, y_index=b, y_id=bi, y_type=bt,
                             y_name=bn, y_source=bsrc))
    return pd.DataFrame(rows)


def write_primekg(path) -> None:
    write_primekg_csv(path, _kg_rows())


def write_edge_table(path) -> None:
    """The same graph as an edge table, one row per edge (kg.csv has both directions)."""
    rows = _kg_rows().iloc[::2]
    pd.DataFrame({"source": rows["x_id"], "source_type": rows["x_type"],
                  "relation": rows["relation"], "target": rows["y_id"],
                  "target_type": rows["y_type"], "source_name": rows["x_name"],
                  "target_name": rows["y_name"]}).to_csv(path, sep="\t", index=False)


def write_drug_table(path, vocabulary: bool = False) -> None:
    """KG drugs' InChIKeys: drugbank-slim.tsv's columns, or (vocabulary) those of DrugBank's
    vocabulary CSV ("DrugBank ID", "Common name", "Standard InChI Key")."""
    table = pd.DataFrame({"drugbank_id": ["DB1", "DB2"], "name": ["Aspirin", "Otherdrug"],
                          "inchikey": ["AAAAAAAAAAAAAA-BBBBBBBBBB-C",
                                       "KEYB2KEYB2KEYB-BBBBBBBBBB-C"]})
    if vocabulary:
        table.columns = ["DrugBank ID", "Common name", "Standard InChI Key"]
        table.to_csv(path, index=False)
    else:
        table.to_csv(path, sep="\t", index=False)


def signature_table() -> pd.DataFrame:
    """siginfo_beta rows: 3 compounds x 2 cells x 2 doses x 2 replicates, a control, an shRNA."""
    rows = []
    for pert_id, name in COMPOUNDS:
        for cell in CELLS:
            for dose in (1.0, 10.0):
                for rep in (1, 2):
                    rows.append(dict(sig_id=f"P{rep}_{cell}_24H:{pert_id}:{dose:g}",
                                     pert_id=pert_id, cmap_name=name, cell_iname=cell,
                                     pert_type="trt_cp", pert_dose=dose, pert_dose_unit="uM",
                                     pert_time=24, pert_time_unit="h",
                                     is_hiq=int(rep == 1), qc_pass=1.0, tas=0.1 * rep,
                                     is_exemplar_sig=int(rep == 1 and dose == 10.0)))
    rows.append(dict(sig_id="P1_A375_24H:DMSO", pert_id="DMSO", cmap_name="DMSO",
                     cell_iname="A375", pert_type="ctl_vehicle", pert_dose=-666,
                     pert_dose_unit="-666", pert_time=24, pert_time_unit="h", is_hiq=1,
                     qc_pass=1.0, tas=0.0, is_exemplar_sig=0))
    rows.append(dict(sig_id="P1_A375_96H:TRCN1", pert_id="TRCN1", cmap_name="GENE2",
                     cell_iname="A375", pert_type="trt_sh", pert_dose=1, pert_dose_unit="uL",
                     pert_time=96, pert_time_unit="h", is_hiq=1, qc_pass=1.0, tas=0.5,
                     is_exemplar_sig=1))
    return pd.DataFrame(rows)


def values(sig_ids) -> np.ndarray:
    """[6 genes, n] deterministic z-scores: every signature differs, all finite."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(len(GENES), len(sig_ids))).astype(np.float32)


def write_gctx(path, row_ids, col_ids, data: np.ndarray) -> None:
    """A GCTX as CMap writes it: /0/DATA/0/matrix [n_cols, n_rows], ids under /0/META."""
    with h5py.File(path, "w") as f:
        f.attrs["version"] = "GCTX1.0"
        f.create_dataset("0/DATA/0/matrix", data=np.asarray(data, np.float32).T,
                         chunks=(min(4, len(col_ids)), len(row_ids)))
        f.create_dataset("0/META/ROW/id", data=np.asarray(row_ids, dtype="S"))
        f.create_dataset("0/META/COL/id", data=np.asarray(col_ids, dtype="S"))


def write_beta(folder) -> dict[str, str]:
    """The LINCS 2020 files and a PrimeKG kg.csv in `folder`; returns data.files overrides."""
    sig = signature_table()
    write_gctx(folder / "level5_beta.gctx", GENES["gene_id"], sig["sig_id"], values(sig["sig_id"]))
    sig.to_csv(folder / "siginfo_beta.txt", sep="\t", index=False)
    compounds = pd.DataFrame([("BRD-A1", "aspirin", "GENE1", "COX inhibitor", "CC(=O)Oc1ccccc1C(=O)O",
                               "ZZZZZZZZZZZZZZ-BBBBBBBBBB-C"),
                              ("BRD-B2", "brd-b2", "", "", "CCO", "KEYB2KEYB2KEYB-BBBBBBBBBB-C"),
                              ("BRD-C3", "novelcide", "GENE2", "", "c1ccccc1N", "NEWNEWNEWNEWNE-X-C"),
                              ("BRD-C3", "novelcide", "GENE3", "", "c1ccccc1N", "NEWNEWNEWNEWNE-X-C"),
                              ("BRD-C3", "novelcide", "NOTAGENE", "", "c1ccccc1N",
                               "NEWNEWNEWNEWNE-X-C")],
                             columns=["pert_id", "cmap_name", "target", "moa", "canonical_smiles",
                                      "inchi_key"])
    compounds.to_csv(folder / "compoundinfo_beta.txt", sep="\t", index=False)
    GENES.assign(ensembl_id="", gene_title="", gene_type="protein-coding", src="NCBI").to_csv(
        folder / "geneinfo_beta.txt", sep="\t", index=False)
    pd.DataFrame({"cell_iname": CELLS, "primary_disease": ["melanoma", "breast cancer"],
                  "cell_lineage": ["skin", "breast"]}).to_csv(folder / "cellinfo_beta.txt",
                                                              sep="\t", index=False)
    write_primekg(folder / "kg.csv")
    write_drug_table(folder / "drugs.tsv")
    return {"kg": str(folder / "kg.csv"), "kg_format": "primekg",
            "signatures": str(folder / "level5_beta.gctx"),
            "siginfo": str(folder / "siginfo_beta.txt"),
            "compoundinfo": str(folder / "compoundinfo_beta.txt"),
            "geneinfo": str(folder / "geneinfo_beta.txt"),
            "cellinfo": str(folder / "cellinfo_beta.txt"), "drug_table": str(folder / "drugs.tsv")}


def write_geo(folder) -> dict[str, str]:
    """The same data in GEO's GSE70138 layout (pert_idose / pert_itime text, pr_gene_id rows,
    pr_is_lm) with an edge-table KG; returns data.files overrides."""
    sig = signature_table()
    geo = pd.DataFrame({"sig_id": sig["sig_id"], "pert_id": sig["pert_id"],
                        "pert_iname": sig["cmap_name"], "pert_type": sig["pert_type"],
                        "cell_id": sig["cell_iname"],
                        "pert_idose": [f"{d:g} um" if d > 0 else "-666" for d in sig["pert_dose"]],
                        "pert_itime": [f"{t} h" for t in sig["pert_time"]],
                        "distil_id": "x|y"})
    geo.to_csv(folder / "sig_info.txt", sep="\t", index=False)
    write_gctx(folder / "level5_geo.gctx", GENES["gene_id"], sig["sig_id"], values(sig["sig_id"]))
    pd.DataFrame({"pert_id": ["BRD-A1", "BRD-B2", "BRD-C3", "TRCN1"],
                  "pert_iname": ["aspirin", "brd-b2", "novelcide", "GENE2"],
                  "pert_type": ["trt_cp", "trt_cp", "trt_cp", "trt_sh"],
                  "canonical_smiles": ["CC(=O)Oc1ccccc1C(=O)O", "CCO", "c1ccccc1N", "-666"],
                  "inchi_key": ["ZZZZZZZZZZZZZZ-BBBBBBBBBB-C", "KEYB2KEYB2KEYB-BBBBBBBBBB-C",
                                "NEWNEWNEWNEWNE-X-C", "-666"]}).to_csv(
        folder / "pert_info.txt", sep="\t", index=False)
    pd.DataFrame({"pr_gene_id": GENES["gene_id"], "pr_gene_symbol": GENES["gene_symbol"],
                  "pr_gene_title": "", "pr_is_lm": [1, 1, 1, 1, 0, 0],
                  "pr_is_bing": 1}).to_csv(folder / "gene_info.txt", sep="\t", index=False)
    pd.DataFrame({"cell_id": CELLS, "cell_type": "cell line", "primary_site": ["skin", "breast"]}
                 ).to_csv(folder / "cell_info.txt", sep="\t", index=False)
    write_edge_table(folder / "edges.tsv")
    write_drug_table(folder / "drugbank_vocabulary.csv", vocabulary=True)
    return {"kg": str(folder / "edges.tsv"), "kg_format": "edges", "drug_type": "drug",
            "gene_type": "gene/protein", "signatures": str(folder / "level5_geo.gctx"),
            "siginfo": str(folder / "sig_info.txt"), "compoundinfo": str(folder / "pert_info.txt"),
            "geneinfo": str(folder / "gene_info.txt"), "cellinfo": str(folder / "cell_info.txt"),
            "drug_table": str(folder / "drugbank_vocabulary.csv")}
