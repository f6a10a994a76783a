"""The delimited-table reader: line numbers, blank lines, quoting, gzip, and its errors."""

import gzip
import re

import pytest

from perturbjax.data.load_report import LoadReport
from perturbjax.data.tables import drop_bad_ids, read_table, to_bool, to_numeric


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    data = text.encode(encoding)
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def raises_at(path, line, fragment=""):
    return pytest.raises(ValueError, match=re.escape(f"{path} line {line}: ") + f".*{fragment}")


@pytest.mark.parametrize("quote", ["", '"'])  # the plain path and the quote-aware one
def test_rows_keep_their_line_after_blank_lines(tmp_path, quote):
    path = write(tmp_path, "t.tsv", f"id\tv\n\na\t{quote}1{quote}\n  \n\t \r\nb\t2\n\n")
    report = LoadReport(str(path))
    table = read_table(path, ("id",), report=report)
    assert table.frame["id"].tolist() == ["a", "b"] and table.frame["v"].tolist() == ["1", "2"]
    assert table.lineno.tolist() == [3, 6] and table.line(1) == f"{path} line 6"
    assert report.dropped == {"blank line": 4}
    assert report.examples["blank line"] == ["line 2", "line 4", "line 5", "line 7"]


def test_quoted_fields_may_hold_separators_and_span_lines(tmp_path):
    path = write(tmp_path, "q.tsv", 'id\tdescription\r\nA\t"two\r\nlines"\r\nB\t"a\ttab, ""quote"""\r\n'
                                    'C\tplain\r\n')
    table = read_table(path)
    assert table.frame["description"].tolist() == ['two\r\nlines', 'a\ttab, "quote"', "plain"]
    assert table.lineno.tolist() == [2, 4, 5]
    path = write(tmp_path, "q.csv", 'gene_id,title\n1,"kinase, alpha"\n2,"x"\n')
    assert read_table(path).frame["title"].tolist() == ["kinase, alpha", "x"]  # sep sniffed


def test_gzip_latin1_and_bom(tmp_path):
    text = "\ufeffid\tunit\nx\t10 \u00b5M\n"
    plain = read_table(write(tmp_path, "a.tsv", text))
    gz = read_table(write(tmp_path, "a.tsv.gz", text))
    latin = read_table(write(tmp_path, "b.tsv", text[1:], encoding="latin-1"))
    for table in (plain, gz, latin):
        assert list(table.frame.columns) == ["id", "unit"]
        assert table.frame["unit"].tolist() == ["10 \u00b5M"]


def test_cells_blank_strip_and_missing(tmp_path):
    path = write(tmp_path, "c.tsv", " id \tv\tw\n a \t\tNA\n")
    raw = read_table(path)
    assert list(raw.frame.columns) == ["id", "v", "w"]  # header names are always stripped
    assert raw.frame.iloc[0].tolist() == [" a ", "", "NA"]
    clean = read_table(path, strip=True, missing=("", "NA"))
    assert clean.frame["id"].tolist() == ["a"]
    assert clean.frame[["v", "w"]].isna().all(axis=None)


def test_headerless_file_counts_from_line_one(tmp_path):
    path = write(tmp_path, "s.txt", "DB1\tCCO\nDB2\tC\textra\n")
    with raises_at(path, 2, "expected 2 tab-separated fields, got 3"):
        read_table(path, header=False, names=("drug_id", "smiles"))
    path = write(tmp_path, "s2.txt", "DB1\tCCO\n\nDB2\tC\n")
    table = read_table(path, header=False, names=("drug_id", "smiles"))
    assert table.lineno.tolist() == [1, 3] and table.frame["smiles"].tolist() == ["CCO", "C"]


@pytest.mark.parametrize("text, line, fragment", [
    ("", 1, "expected a header row, got an empty file"),
    ("\nid\n", 1, "expected a header row, got a blank line"),
    ("id\tv\tid\na\tb\tc\n", 1, "column names must be unique, 'id' repeats"),
    ("id\tw\na\tb\n", 1, re.escape("missing required columns ['v']; found ['id', 'w']")),
    ("id\tv\na\tb\n\nc\n", 4, "expected 2 tab-separated fields \\(one per header column\\), got 1$"),
    ("id\tv\na\tb\tc\nd\n", 2, "expected 2 tab-separated fields.*got 3 \\(2 lines are malformed\\)"),
    ('id,v\na,"b,c"\nd,"e",f\n', 3, "expected 2 comma-separated fields.*got 3"),
    ('id\tv\na\t"b\tc\n', 2, "malformed quoted field"),  # the quote is never closed
])
def test_malformed_tables_name_file_and_line(tmp_path, text, line, fragment):
    path = write(tmp_path, "bad.tsv", text)
    with raises_at(path, line, fragment):
        read_table(path, ("id", "v"))


def test_converters_name_the_line(tmp_path):
    path = write(tmp_path, "p.tsv", "id\tn\tflag\nA\t1\tTrue\n\nB\tx\t\nA\t3\tno\n\t4\tyes\n")
    report = LoadReport(str(path))
    table = read_table(path, strip=True, missing=("",), report=report)
    with raises_at(path, 4, "expected a number in column 'n', got 'x'"):
        to_numeric(table, "n", report, strict=True)
    to_numeric(table, "n", report, strict=False, integer=True)
    assert report.examples["n not an integer (value set to missing)"] == ["line 4: 'x'"]
    assert table.frame["n"].dtype == "Int64" and table.frame["n"].isna().tolist() == [
        False, True, False, False]
    to_bool(table, "flag", report)
    assert table.frame["flag"].tolist() == [True, False, False, True]
    assert report.notes == {"flag_blank_as_false": 1}
    kept = drop_bad_ids(table, "id", report)
    assert kept.frame["id"].tolist() == ["A", "B"] and kept.lineno.tolist() == [2, 4]
    assert report.examples["duplicate id (kept the first)"] == ["A (line 5, first at line 2)"]
    assert report.examples["blank id"] == ["line 6"]
    with raises_at(path, 2, "expected True or False in column 'id'"):
        to_bool(read_table(path, strip=True, missing=("",)), "id", report)


def test_a_lone_carriage_return_is_not_a_silent_shift(tmp_path):
    path = write(tmp_path, "cr.tsv", "id\tv\nx\ry\tz\nw\t1\n")
    with raises_at(path, 2):
        read_table(path)


def test_empty_body_keeps_the_columns(tmp_path):
    table = read_table(write(tmp_path, "e.tsv", "id\tv\n\n"))
    assert list(table.frame.columns) == ["id", "v"] and len(table) == 0
    assert table.lineno.tolist() == []
