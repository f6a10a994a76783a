"""Delimited tables (TSV/CSV, optionally gzipped) whose rows remember their file line.

Checks on a table often run long after parsing (an unknown id, a value that is not a number),
and a message is only useful if it says where to look, so every row keeps the 1-based line on
which it starts: `Table.line(row)` gives "FILE line N" even after blank lines were dropped or
quoted fields spanned lines. Malformed input (a bad header, a line with the wrong number of
fields) raises `ValueError` naming the file and the line.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import re
import warnings
import zlib
from itertools import repeat
from os import PathLike
from pathlib import Path
from typing import Collection, Sequence

import numpy as np
import pandas as pd

from perturbjax.data.load_report import LoadReport


@dataclasses.dataclass
class Table:
    """A table's cells with the file line of each row.

    Attributes:
      frame: the cells as strings (see `read_table` for blanks and missing values).
      lineno: int64 [len(frame)] 1-based line of the file on which each row starts.
      name: the file, as messages name it.
    """

    frame: pd.DataFrame
    lineno: np.ndarray
    name: str

    def __len__(self) -> int:
        return len(self.frame)

    def line(self, row: int) -> str:
        """'FILE line N' of a 0-based row."""
        return f"{self.name} line {self.lineno[row]}"

    def take(self, rows) -> "Table":
        """The rows chosen by a boolean mask or positions, with their lines."""
        rows = np.asarray(rows)
        return Table(self.frame.iloc[rows].reset_index(drop=True), self.lineno[rows], self.name)


def read_table(path: str | PathLike, required: Sequence[str] = (), *, sep: str | None = None,
               header: bool = True, names: Sequence[str] | None = None, strip: bool = False,
               missing: Collection[str] = (), report: LoadReport | None = None) -> Table:
    """Reads a delimited text file as strings, each row with the line it starts on.

    gzip is recognised by content, text is UTF-8 else Latin-1, and fields may be quoted as pandas
    writes them (holding the separator or spanning lines). Blank lines are dropped and counted
    in `report`.

    Args:
      required: columns that must be present.
      sep: None takes a tab if line 1 has one, else a comma.
      header: whether line 1 names the columns; if not, `names` does.
      strip: strip whitespace around every cell (column names always are).
      missing: cell values (after stripping) that become NaN; other cells keep the file's text,
        so an empty field is "".

    Raises:
      ValueError naming the file and line: a blank header, a repeated column name, missing
      required columns, a line whose field count differs from the header's.
    """
    name = str(path)
    if header == (names is not None):
        raise ValueError(f"{name}: give column names either by header=True or by names")
    raw = _read_bytes(path)
    end = raw.find(b"\n")
    first_line = raw if end < 0 else raw[:end]
    if sep is None:
        sep = "\t" if b"\t" in first_line else ","
    if header and not first_line.strip():
        raise ValueError(f"{name} line 1: expected a header row, got "
                         f"{'an empty file' if not raw else 'a blank line'}")

    where = f"{name} line 1" if header else name
    parsed = None
    if b'"' not in raw:
        fields = _split(_decode(first_line), sep) if header else names
        parsed = _parse_plain(raw, sep, _columns(fields, required, where), header, name)
    if parsed is None:
        parsed = _parse_quoted(_decode(raw), sep, names, required, where, name)
    frame, lineno, blank = parsed
    if report is not None:
        report.drop("blank line", int(blank.sum()), [f"line {n}" for n in lineno[blank][:5]])
    if blank.any():
        frame, lineno = frame[~blank].reset_index(drop=True), lineno[~blank]
    if strip or missing:
        frame = pd.DataFrame({c: _clean(frame[c], strip, list(missing)) for c in frame.columns},
                             index=frame.index)
    return Table(frame, lineno, name)


def _clean(s: pd.Series, strip: bool, missing: list) -> pd.Series:
    if strip:
        s = s.str.strip()
    return s.mask(s.isin(missing)) if missing else s


_BLANK_LINE = re.compile(rb"\n[ \t\r\f\v]*\n")


def _parse_plain(raw: bytes, sep: str, columns: list[str], header: bool, name: str):
    """Files without quotes: pandas' C parser reads the cells, one row per line.

    Most files have no blank line and the right field count on every line, which counts over the
    whole file show (pandas rejects a line with too many fields); otherwise the lines are
    examined one by one. Returns None where pandas' rows do not match the lines one to one (a
    lone CR, say), for the quote-aware path to decide.
    """
    skip = 1 if header else 0
    n_lines = raw.count(b"\n") + (bool(raw) and not raw.endswith(b"\n"))
    lineno = np.arange(skip + 1, n_lines + 1)
    if len(lineno) == 0:
        return _empty(columns), lineno, np.zeros(0, bool)
    end = raw.find(b"\n")
    first, last = raw[:end if end >= 0 else None], raw[raw.rfind(b"\n", 0, len(raw) - 1) + 1:]
    frame = None
    if last.strip() and first.strip() and not _BLANK_LINE.search(raw):
        frame = _read_csv_plain(raw, sep, columns, header)
        if (frame is not None and len(frame) == len(lineno)
                and raw.count(sep.encode()) == (len(columns) - 1) * n_lines):
            return frame, lineno, np.zeros(len(lineno), bool)
    lines = raw.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    body = lines[skip:]
    blank = np.fromiter(map(bytes.isspace, body), bool, len(body)) | (
        np.fromiter(map(len, body), np.int64, len(body)) == 0)
    counts = field_counts(body, sep.encode())
    check_field_counts(counts[~blank], len(columns), lineno[~blank], name, sep,
                       " (one per header column)" if header else "")
    if frame is None:
        frame = _read_csv_plain(raw, sep, columns, header)
    if frame is None or len(frame) != len(body):
        return None
    return frame, lineno, blank


def _read_csv_plain(raw: bytes, sep: str, columns: list[str], header: bool):
    """Cells as str, every line a row (blank ones too); None if pandas finds a malformed line."""
    for encoding in ("utf-8", "latin-1"):
        try:
            with warnings.catch_warnings():  # pandas cuts a long first row with a mere warning
                warnings.simplefilter("error", pd.errors.ParserWarning)
                frame = pd.read_csv(io.BytesIO(raw), sep=sep, header=0 if header else None,
                                    names=None if header else columns, dtype=str,
                                    na_filter=False, skip_blank_lines=False,
                                    quoting=csv.QUOTE_NONE, index_col=False, engine="c",
                                    encoding=encoding)
        except UnicodeDecodeError:
            continue
        except (pd.errors.ParserError, pd.errors.ParserWarning):
            return None
        frame.columns = columns
        return frame
    raise AssertionError("Latin-1 decodes any bytes")


def _parse_quoted(text: str, sep: str, names, required, where: str, name: str):
    """Quote-aware path: Python's csv module, following the line on which each record starts."""
    pieces = text.split("\n")
    if pieces[-1] == "":
        pieces.pop()
    reader = csv.reader((p + "\n" for p in pieces), delimiter=sep, strict=True)
    records, starts, line = [], [], 0
    try:
        for record in reader:
            records.append(record)
            starts.append(line + 1)
            line = reader.line_num
    except csv.Error as e:
        raise ValueError(f"{name} line {line + 1}: malformed quoted field ({e})") from e
    header = names is None
    if header:
        names, records, starts = records[0], records[1:], starts[1:]
    columns = _columns(names, required, where)
    lineno = np.asarray(starts, dtype=np.int64)
    blank = np.fromiter((not "".join(r).strip() for r in records), bool, len(records))
    counts = np.fromiter(map(len, records), np.int64, len(records))
    check_field_counts(counts[~blank], len(columns), lineno[~blank], name, sep,
                       " (one per header column)" if header else "")
    cells = [r if len(r) == len(columns) else [""] * len(columns) for r in records]
    frame = pd.DataFrame(cells, columns=columns, dtype=str) if cells else _empty(columns)
    return frame, lineno, blank


def _empty(columns) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=str) for c in columns})


def _split(line: str, sep: str) -> list[str]:
    return line.split(sep) if sep == "\t" else next(csv.reader([line], delimiter=sep))


def _columns(fields, required: Sequence[str], where: str) -> list[str]:
    """Stripped column names; raises on a repeated name or a missing required column."""
    columns = [f.strip() for f in fields]
    dup = pd.Index(columns).duplicated()
    if dup.any():
        raise ValueError(f"{where}: column names must be unique, "
                         f"{columns[int(np.flatnonzero(dup)[0])]!r} repeats")
    absent = [c for c in required if c not in columns]
    if absent:
        raise ValueError(f"{where}: missing required columns {absent}; found {columns}")
    return columns


# --------------------------------------------------------------------------------------------
# Column converters: bad values raise naming the line, or are reported
# --------------------------------------------------------------------------------------------

def drop_bad_ids(table: Table, id_col: str, report: LoadReport,
                 blank_reason: str | None = None) -> Table:
    """Drops rows with a blank (or missing) id and later repeats of an id, reporting both."""
    ids = table.frame[id_col]
    blank = np.array(ids.isna() | (ids.str.strip() == ""), dtype=bool)
    report.drop(blank_reason or f"blank {id_col}", int(blank.sum()),
                [f"line {n}" for n in table.lineno[blank][:5]])
    dup = ids.duplicated(keep="first").to_numpy() & ~blank
    if dup.any():
        first_line = pd.Series(table.lineno, index=ids.to_numpy()).groupby(level=0).first()
        examples = [f"{i} (line {n}, first at line {first_line[i]})"
                    for i, n in zip(ids[dup][:5], table.lineno[dup][:5])]
        report.drop(f"duplicate {id_col} (kept the first)", int(dup.sum()), examples)
    return table.take(~(blank | dup))


def to_numeric(table: Table, col: str, report: LoadReport, *, strict: bool,
               integer: bool = False) -> None:
    """Converts a column to numbers in place; NaN stays missing.

    A value that is not a number raises naming its line (strict) or becomes NaN and is reported.
    """
    s = table.frame[col]
    num = pd.to_numeric(s, errors="coerce")
    bad = np.array(num.isna() & s.notna(), dtype=bool)
    if integer:
        bad |= np.array(num.notna() & (num % 1 != 0), dtype=bool)
    what = "an integer" if integer else "a number"
    if bad.any():
        if strict:
            k = np.flatnonzero(bad)[0]
            raise ValueError(f"{table.line(k)}: expected {what} in column {col!r}, "
                             f"got {s.iloc[k]!r}")
        report.drop(f"{col} not {what} (value set to missing)", int(bad.sum()),
                    [f"line {n}: {v!r}" for n, v in zip(table.lineno[bad][:5], s[bad][:5])])
        num = num.mask(bad)
    table.frame[col] = num.astype("Int64") if integer else num.astype(np.float64)


_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def to_bool(table: Table, col: str, report: LoadReport) -> None:
    """True/False-like strings -> bool in place; a missing value means False, counted in notes."""
    s = table.frame[col].str.lower()
    is_true, is_false = s.isin(_TRUE).to_numpy(), s.isin(_FALSE).to_numpy()
    blank = s.isna().to_numpy()
    bad = ~(is_true | is_false | blank)
    if bad.any():
        k = np.flatnonzero(bad)[0]
        raise ValueError(f"{table.line(k)}: expected True or False in column {col!r}, "
                         f"got {table.frame[col].iloc[k]!r}")
    if blank.any():
        report.notes[f"{col}_blank_as_false"] = int(blank.sum())
    table.frame[col] = is_true


# --------------------------------------------------------------------------------------------
# Low level, for formats with more than a header and rows (GCT)
# --------------------------------------------------------------------------------------------

def _read_bytes(path) -> bytes:
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: expected a valid gzip file: {e}") from e
    return raw[3:] if raw[:3] == b"\xef\xbb\xbf" else raw


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # older CMap files hold Latin-1 micro signs


def read_lines(path) -> list[str]:
    """Lines of a (possibly gzipped) text file without line ends; UTF-8, else Latin-1."""
    lines = _decode(_read_bytes(path)).replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def field_counts(lines: Sequence, sep) -> np.ndarray:
    """Fields on each line (str or bytes) of a file without quoting."""
    return np.fromiter(map(type(sep).count, lines, repeat(sep)), np.int64, len(lines)) + 1


def check_field_counts(counts: np.ndarray, expected: int, lineno: np.ndarray, name: str,
                       sep: str, what: str = "") -> None:
    """Raises naming the first line whose field count is not `expected` (and how many are not)."""
    bad = np.flatnonzero(counts != expected)
    if bad.size:
        i = bad[0]
        more = f" ({bad.size} lines are malformed)" if bad.size > 1 else ""
        word = {"\t": "tab", ",": "comma"}.get(sep, repr(sep))
        raise ValueError(f"{name} line {lineno[i]}: expected {expected} {word}-separated "
                         f"fields{what}, got {counts[i]}{more}")
