"""LINCS L1000 info tables in both published layouts, read into one schema.

Two layouts are in use, and a user may hold either:

* LINCS 2020 ("beta", clue.io): `siginfo_beta.txt` (sig_id, pert_id, cmap_name, cell_iname,
  pert_type, pert_dose, pert_dose_unit, pert_time, pert_time_unit, is_hiq, qc_pass, tas,
  is_exemplar_sig, ...), `compoundinfo_beta.txt` (one row per compound *and target*: pert_id,
  cmap_name, target, moa, canonical_smiles, inchi_key), `geneinfo_beta.txt` (gene_id,
  gene_symbol, feature_space = landmark / best inferred / inferred) and `cellinfo_beta.txt`
  (cell_iname, primary_disease, ...).
* GEO GSE92742 / GSE70138: `sig_info` (sig_id, pert_id, pert_iname, pert_type, cell_id,
  pert_dose + pert_dose_unit and pert_time + pert_time_unit, or only pert_idose / pert_itime
  such as "10 uM" / "24 h"), `pert_info` (pert_id, pert_iname, pert_type, canonical_smiles,
  inchi_key), `gene_info` (pr_gene_id, pr_gene_symbol, pr_is_lm), `cell_info` (cell_id, ...).
  CMap's older probe table (pr_id, pr_gene_id, pr_gene_symbol, is_lm) is read too.

Each reader finds the layout by its column names and returns a frame with fixed columns, plus a
`LoadReport`; a table that fits neither layout raises a ValueError naming the file and the
columns expected. CMap's missing-value spellings ("-666", "NA", "") become missing.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from perturbjax.data.lincs import MISSING_TOKENS
from perturbjax.data.load_report import LoadReport
from perturbjax.data.tables import read_table

SIGNATURE_COLUMNS = ("sig_id", "pert_id", "pert_name", "pert_type", "cell", "dose_um", "time_h",
                     "is_hiq", "qc_pass", "tas", "is_exemplar")
"""The columns of `read_signature_info`'s frame (dose in µM, time in hours; the quality columns
are NaN where the layout lacks them)."""

# Concentration units -> factor to µM. LINCS writes "uM", "µM" (UTF-8 or Latin-1) and "um".
_DOSE_UNITS = {"um": 1.0, "µm": 1.0, "μm": 1.0, "nm": 1e-3, "mm": 1e3, "pm": 1e-6, "m": 1e6}
_TIME_UNITS = {"h": 1.0, "hr": 1.0, "hrs": 1.0, "hour": 1.0, "hours": 1.0, "d": 24.0,
               "day": 24.0, "days": 24.0, "m": 1 / 60, "min": 1 / 60}


def _first(columns, *names) -> str | None:
    """The first of `names` present in `columns`."""
    return next((n for n in names if n in columns), None)


def _layout_error(name: str, what: str, columns, expected: str) -> ValueError:
    shown = ", ".join(list(columns)[:12]) + (" ..." if len(columns) > 12 else "")
    return ValueError(f"{name} line 1: not a LINCS {what} table: expected {expected}; found "
                      f"columns {shown}")


def _read(path, report: LoadReport):
    return read_table(path, strip=True, missing=MISSING_TOKENS, report=report)


def _amount(value: pd.Series, unit: pd.Series | None, units: dict[str, float]) -> np.ndarray:
    """Numbers with units -> float64 in the unit whose factor is 1; NaN where either part is
    missing or the unit unknown. `unit` None: `value` is text like "10 uM" / "24 h"."""
    if unit is None:
        # "10 uM", "10.0 um", "500 nM"; CMap's GCTs spell µ "<b5>"; "6 h & 4 h" -> 6 h
        parts = value.astype(str).str.extract(r"^\s*([-+0-9.eE]+)\s*([^\s&]*)")
        number, unit = parts[0], parts[1]
    else:
        number = value
    factor = unit.fillna("").astype(str).str.strip().str.lower().str.replace(
        "<b5>", "µ", regex=False).str.replace("\ufffd", "µ", regex=False).map(units)
    out = pd.to_numeric(number, errors="coerce") * factor
    return out.to_numpy(np.float64)


def _flag(frame: pd.DataFrame, column: str | None) -> np.ndarray:
    """0/1, True/False or 1.0/0.0 -> float (1, 0, NaN where missing or the column absent)."""
    if column is None:
        return np.full(len(frame), np.nan)
    s = frame[column].astype("string").str.strip().str.lower()
    s = s.replace({"true": "1", "false": "0", "t": "1", "f": "0"})
    return pd.to_numeric(s, errors="coerce").to_numpy(np.float64)


def normalise_signature_info(frame: pd.DataFrame, name: str, report: LoadReport,
                             ids: pd.Series | None = None) -> pd.DataFrame:
    """A signature table of either layout (or a matrix's column metadata) -> SIGNATURE_COLUMNS.

    Args:
      frame: the table's cells as strings.
      name: the file, for messages.
      report: receives what was dropped.
      ids: the signature ids when `frame` has no `sig_id` column (a GCTX's column ids).
    """
    cols = frame.columns
    pert_name = _first(cols, "cmap_name", "pert_iname")
    cell = _first(cols, "cell_iname", "cell_id")
    missing = [c for c, v in (("sig_id", "sig_id" in cols or ids is not None),
                              ("pert_id", "pert_id" in cols), ("pert_type", "pert_type" in cols),
                              ("cmap_name or pert_iname", pert_name),
                              ("cell_iname or cell_id", cell)) if not v]
    if missing:
        raise _layout_error(name, "signature (siginfo_beta / sig_info)", cols,
                            f"columns sig_id, pert_id, pert_type, cmap_name (beta) or "
                            f"pert_iname (GEO), cell_iname (beta) or cell_id (GEO); missing "
                            f"{', '.join(missing)}")
    if "pert_dose" in cols and "pert_dose_unit" in cols:
        dose = _amount(frame["pert_dose"], frame["pert_dose_unit"], _DOSE_UNITS)
    elif "pert_idose" in cols:
        dose = _amount(frame["pert_idose"], None, _DOSE_UNITS)
    else:
        dose = np.full(len(frame), np.nan)
        report.notes["dose"] = "no pert_dose/pert_dose_unit or pert_idose column: doses unknown"
    if "pert_time" in cols and "pert_time_unit" in cols:
        time = _amount(frame["pert_time"], frame["pert_time_unit"], _TIME_UNITS)
    elif "pert_itime" in cols:
        time = _amount(frame["pert_itime"], None, _TIME_UNITS)
    else:
        time = np.full(len(frame), np.nan)
        report.notes["time"] = "no pert_time/pert_time_unit or pert_itime column: times unknown"
    out = pd.DataFrame({
        "sig_id": (frame["sig_id"] if "sig_id" in cols else ids).astype(str).to_numpy(),
        "pert_id": frame["pert_id"].to_numpy(dtype=object),
        "pert_name": frame[pert_name].to_numpy(dtype=object),
        "pert_type": frame["pert_type"].to_numpy(dtype=object),
        "cell": frame[cell].to_numpy(dtype=object),
        "dose_um": dose, "time_h": time,
        "is_hiq": _flag(frame, _first(cols, "is_hiq")),
        "qc_pass": _flag(frame, _first(cols, "qc_pass")),
        "tas": pd.to_numeric(frame["tas"], errors="coerce").to_numpy(np.float64)
        if "tas" in cols else np.full(len(frame), np.nan),
        "is_exemplar": _flag(frame, _first(cols, "is_exemplar_sig", "is_exemplar")),
    })
    report.notes["layout"] = "LINCS 2020 (beta)" if pert_name == "cmap_name" else "GEO"
    report.notes["quality columns"] = [c for c in ("is_hiq", "qc_pass", "tas", "is_exemplar_sig")
                                       if c in cols]
    blank = out["sig_id"].isin(["", "nan"]) | out["pert_id"].isna() | out["cell"].isna()
    report.drop("blank sig_id, pert_id or cell line", int(blank.sum()), out["sig_id"][blank])
    out = out[~blank.to_numpy()]
    dup = out["sig_id"].duplicated().to_numpy()
    report.drop("repeated sig_id (kept the first)", int(dup.sum()), out["sig_id"][dup])
    out = out[~dup].reset_index(drop=True)
    report.kept["signatures"] = len(out)
    return out


def read_signature_info(path) -> tuple[pd.DataFrame, LoadReport]:
    """`siginfo_beta.txt` or GEO's `sig_info` -> one row per signature (SIGNATURE_COLUMNS)."""
    report = LoadReport(str(path))
    table = _read(path, report)
    return normalise_signature_info(table.frame, table.name, report), report


def read_compound_info(path) -> tuple[pd.DataFrame, LoadReport]:
    """`compoundinfo_beta.txt` or GEO's `pert_info` -> one row per compound.

    Returns a frame indexed by pert_id with columns name, smiles, inchikey, drugbank_id (when
    the table has a `drugbank_id` column, else empty) and targets (a tuple of gene symbols:
    beta's one row per compound and target, or "|"/";"/","-separated lists, are gathered).
    """
    report = LoadReport(str(path))
    table = _read(path, report)
    frame, cols = table.frame, table.frame.columns
    name = _first(cols, "cmap_name", "pert_iname")
    if "pert_id" not in cols or name is None:
        raise _layout_error(table.name, "compound (compoundinfo_beta / pert_info)", cols,
                            "columns pert_id and cmap_name (beta) or pert_iname (GEO)")
    if "pert_type" in cols:  # GEO's pert_info lists every perturbagen: compounds only
        other = frame["pert_type"].fillna("") != "trt_cp"
        report.drop("pert_type is not trt_cp (not a compound)", int(other.sum()))
        frame = frame[~other.to_numpy()]
    blank = frame["pert_id"].isna().to_numpy()
    report.drop("blank pert_id", int(blank.sum()))
    frame = frame[~blank]

    def column(*names):
        c = _first(cols, *names)
        return frame[c] if c else pd.Series(np.nan, index=frame.index, dtype=object)

    targets = column("target", "targets").fillna("").astype(str).str.split(r"\s*[|;,]\s*")
    parts = pd.DataFrame({"pert_id": frame["pert_id"], "name": frame[name],
                          "smiles": column("canonical_smiles", "smiles"),
                          "inchikey": column("inchi_key", "inchikey"),
                          "drugbank_id": column("drugbank_id"), "targets": targets})
    first = parts.groupby("pert_id", sort=False)[["name", "smiles", "inchikey", "drugbank_id"]]
    out = first.first()  # first non-missing value of each column
    out["targets"] = parts.explode("targets").groupby("pert_id", sort=False)["targets"].agg(
        lambda t: tuple(sorted({x for x in t if isinstance(x, str) and x})))
    out = out.fillna("")
    report.kept["compounds"] = len(out)
    report.kept["compounds with targets"] = int((out["targets"].map(len) > 0).sum())
    report.kept["compounds with SMILES"] = int((out["smiles"] != "").sum())
    report.notes["layout"] = "LINCS 2020 (beta)" if name == "cmap_name" else "GEO"
    return out, report


def read_gene_info(path) -> tuple[pd.DataFrame, LoadReport]:
    """`geneinfo_beta.txt`, GEO's `gene_info` or CMap's probe table -> one row per gene (probe).

    Returns columns entrez (str), symbol, landmark (bool) and probe (the probe id, or the
    Entrez id where the layout has no probes). Beta: landmark = feature_space "landmark";
    GEO: pr_is_lm = 1; probe table: is_lm. Inferred genes are never landmarks.
    """
    report = LoadReport(str(path))
    table = _read(path, report)
    frame, cols = table.frame, table.frame.columns
    if {"gene_id", "gene_symbol", "feature_space"} <= set(cols):
        entrez, symbol = frame["gene_id"], frame["gene_symbol"]
        landmark = frame["feature_space"].fillna("").str.lower() == "landmark"
        probe, layout = entrez, "LINCS 2020 (beta)"
    elif {"pr_gene_id", "pr_gene_symbol"} <= set(cols) and _first(cols, "pr_is_lm", "is_lm"):
        entrez, symbol = frame["pr_gene_id"], frame["pr_gene_symbol"]
        landmark = pd.Series(_flag(frame, _first(cols, "pr_is_lm", "is_lm")) == 1,
                             index=frame.index)
        probe = frame["pr_id"] if "pr_id" in cols else entrez
        layout = "CMap probe table" if "pr_id" in cols else "GEO"
    else:
        raise _layout_error(table.name, "gene (geneinfo_beta / gene_info)", cols,
                            "columns gene_id, gene_symbol, feature_space (beta) or pr_gene_id, "
                            "pr_gene_symbol, pr_is_lm (GEO)")
    out = pd.DataFrame({"entrez": entrez.fillna("").astype(str).to_numpy(),
                        "symbol": symbol.fillna("").astype(str).to_numpy(),
                        "landmark": landmark.to_numpy(bool),
                        "probe": probe.fillna("").astype(str).to_numpy()})
    bad = ~out["entrez"].str.fullmatch(r"\d+")
    report.drop("gene id is not one Entrez id (blank, or a probe of several genes)",
                int(bad.sum()), out["probe"][bad])
    out = out[~bad.to_numpy()].reset_index(drop=True)
    report.kept["genes"] = int(out["entrez"].nunique())
    report.kept["landmark genes"] = int(out.loc[out["landmark"], "entrez"].nunique())
    report.notes["layout"] = layout
    return out, report


def read_cell_info(path) -> tuple[pd.DataFrame, LoadReport]:
    """`cellinfo_beta.txt` or GEO's `cell_info` -> index cell id, column disease ("" unknown).

    The disease is beta's `primary_disease` (or a `disease` column); GEO's table has none.
    """
    report = LoadReport(str(path))
    table = _read(path, report)
    cols = table.frame.columns
    cell = _first(cols, "cell_iname", "cell_id")
    if cell is None:
        raise _layout_error(table.name, "cell-line (cellinfo_beta / cell_info)", cols,
                            "a column cell_iname (beta) or cell_id (GEO)")
    disease = _first(cols, "primary_disease", "disease")
    frame = table.frame.dropna(subset=[cell]).drop_duplicates(cell)
    out = pd.DataFrame({"disease": frame[disease].fillna("").to_numpy() if disease else ""},
                       index=pd.Index(frame[cell].astype(str), name="cell"))
    report.kept["cell lines"] = len(out)
    report.kept["with a primary disease"] = int((out["disease"] != "").sum())
    return out, report


def read_gene_list(path) -> tuple[pd.Series, LoadReport]:
    """A user's readout genes: one Entrez id or symbol per line (a header line naming a column
    such as gene_id is skipped), or a table whose first column holds them."""
    report = LoadReport(str(path))
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [re.split(r"[\t,]", ln.strip())[0] for ln in f if ln.strip()]
    if lines and not re.fullmatch(r"\d+", lines[0]) and lines[0].lower() in (
            "gene", "genes", "gene_id", "entrez", "entrez_id", "gene_symbol", "symbol"):
        lines = lines[1:]
    if not lines:
        raise ValueError(f"{path}: no genes; expected one Entrez id or symbol per line")
    genes = pd.Series(pd.unique(pd.Series(lines)), dtype=str)
    report.kept["genes"] = len(genes)
    return genes, report
