"""Gene-gene and gene-pathway tables, with genes mapped to Entrez ids.

`ppi/protein-interactions.txt.gz` (dhimmel/ppi) names proteins by HGNC id and symbol; the rest
of the project keys genes by Entrez id, so interactions are mapped through a symbol -> Entrez
table (Hetionet's gene nodes or `lincs/genes.tsv`). `pathways/pathways.tsv` (dhimmel/pathways)
lists each pathway's member genes as `|`-separated Entrez ids.
"""

from __future__ import annotations

from os import PathLike

import numpy as np
import pandas as pd

from perturbjax.data.load_report import LoadReport
from perturbjax.data.tables import read_table


def symbol_to_entrez(symbols: pd.Series, entrez: pd.Series) -> pd.Series:
    """A symbol -> Entrez id map; symbols that name two genes are left out (ambiguous)."""
    table = pd.DataFrame({"symbol": symbols.str.upper().to_numpy(), "entrez": entrez.to_numpy()})
    table = table[table["symbol"] != ""].drop_duplicates()
    return table.drop_duplicates("symbol", keep=False).set_index("symbol")["entrez"]


def read_ppi(path: str | PathLike, symbol_map: pd.Series | None
             ) -> tuple[pd.DataFrame, LoadReport]:
    """Interactions as Entrez pairs (columns source_id, target_id), undirected, deduplicated.

    Args:
      path: a table with columns source_symbol and target_symbol.
      symbol_map: upper-case symbol -> Entrez id (see `symbol_to_entrez`); None keeps the
        upper-case symbols as ids (to inspect a file on its own).
    """
    report = LoadReport(str(path))
    table = read_table(path, ("source_symbol", "target_symbol"), report=report)
    frame = table.frame
    source, target = (frame[c].str.upper().replace("", np.nan)
                      for c in ("source_symbol", "target_symbol"))
    if symbol_map is not None:
        source, target = source.map(symbol_map), target.map(symbol_map)
    unmapped = source.isna() | target.isna()
    report.drop("blank symbol" if symbol_map is None else "symbol without a unique Entrez id",
                int(unmapped.sum()),
                (f"{table.line(i)}: {a} - {b}" for i, a, b in
                 zip(np.flatnonzero(unmapped), frame["source_symbol"][unmapped], frame["target_symbol"][unmapped])))
    pairs = pd.DataFrame({"a": source[~unmapped], "b": target[~unmapped]})
    self_loops = pairs["a"] == pairs["b"]
    report.drop("self interaction", int(self_loops.sum()))
    pairs = pairs[~self_loops]
    # Undirected: order each pair so that A-B and B-A count once.
    lo = np.where(pairs["a"] < pairs["b"], pairs["a"], pairs["b"])
    hi = np.where(pairs["a"] < pairs["b"], pairs["b"], pairs["a"])
    out = pd.DataFrame({"source_id": lo, "target_id": hi}).drop_duplicates()
    report.drop("repeated interaction", len(pairs) - len(out))
    report.kept["interactions"] = len(out)
    report.kept["genes"] = int(pd.unique(np.concatenate([lo, hi])).size)
    return out.reset_index(drop=True), report


def read_pathways(path: str | PathLike) -> tuple[pd.DataFrame, pd.DataFrame, LoadReport]:
    """Pathways and memberships.

    Returns:
      pathways: columns node_id, name, source (one row per pathway).
      members: columns gene_id (Entrez), pathway_id.
      report: pathways without genes, repeated memberships.
    """
    report = LoadReport(str(path))
    table = read_table(path, ("identifier", "name", "genes"), report=report)
    frame = table.frame
    dup = np.flatnonzero(frame["identifier"].duplicated().to_numpy())
    if dup.size:
        raise ValueError(f"{table.line(dup[0])}: pathway {frame['identifier'].iloc[dup[0]]!r} "
                         f"is listed twice")
    pathways = pd.DataFrame({"node_id": frame["identifier"], "name": frame["name"],
                             "source": frame.get("source", "")})
    members = (frame[["identifier", "genes"]].assign(gene_id=frame["genes"].str.split("|"))
               .explode("gene_id")[["gene_id", "identifier"]]
               .rename(columns={"identifier": "pathway_id"}))
    members["gene_id"] = members["gene_id"].str.strip()
    empty = members["gene_id"].fillna("") == ""
    report.drop("pathway without genes", int(empty.sum()), members["pathway_id"][empty])
    members = members[~empty]
    bad = ~members["gene_id"].str.fullmatch(r"\d+")
    if bad.any():
        row = int(np.flatnonzero(frame["identifier"] == members["pathway_id"][bad].iloc[0])[0])
        raise ValueError(f"{table.line(row)}: gene {members['gene_id'][bad].iloc[0]!r} is not "
                         f"an Entrez id")
    deduped = members.drop_duplicates()
    report.drop("repeated membership", len(members) - len(deduped))
    report.kept["pathways"] = len(pathways)
    report.kept["memberships"] = len(deduped)
    return pathways, deduped.reset_index(drop=True), report
