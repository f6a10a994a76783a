"""Reading delimited tables with errors that name the file, the line and what was expected."""

from __future__ import annotations

from os import PathLike

import pandas as pd


def read_table(path: str | PathLike, required: tuple[str, ...] = (), *, sep: str = "\t",
               header: bool = True, names: tuple[str, ...] | None = None,
               usecols: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Reads a (possibly gzipped) table as strings, blank cells as "".

    Args:
      path: the file.
      required: columns that must be present.
      sep: field separator.
      header: whether line 1 names the columns; if not, `names` does.
      names: column names of a header-less file.
      usecols: read only these columns (faster on wide files).

    Raises:
      ValueError: a line with the wrong number of fields (naming its line number) or missing
        required columns (naming them and the columns found).
    """
    try:
        table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False,
                            header=0 if header else None, names=list(names) if names else None,
                            usecols=list(usecols) if usecols else None)
    except pd.errors.ParserError as e:
        raise ValueError(f"{path}: malformed table: {e}") from e
    except ValueError as e:  # usecols naming absent columns
        raise ValueError(f"{path}: {e}") from e
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; found {list(table.columns)}")
    return table


def file_line(path, row: int, *, header: bool = True) -> str:
    """'FILE line N' of a 0-based data row, counting the header as line 1."""
    return f"{path} line {row + (2 if header else 1)}"
