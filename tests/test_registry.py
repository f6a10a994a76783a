"""The data registry: checksums of the real files, clear errors, and the `perturbjax data` command."""

import json
import os
import shutil

import pytest

from perturbjax import cli
from perturbjax.data import registry


def test_every_shared_file_is_registered_and_matches(real_file):
    """Each file listed in the data folder's SHA256SUMS is in the registry, checksum equal."""
    sums = registry.data_dir() / "SHA256SUMS"
    listed = dict(reversed(line.split()) for line in sums.read_text().splitlines() if line.strip())
    listed = {name.removeprefix("./"): digest for name, digest in listed.items()}
    for name, digest in listed.items():
        assert registry.entry(name).sha256 == digest, name
        assert real_file(name).is_file()
        assert registry.status(name) == "ok"
    assert all(f.url or f.note for f in registry.FILES.values())


def test_missing_and_corrupt_files_name_their_address(tmp_path, monkeypatch):
    monkeypatch.setenv(registry.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(registry.DataFileError, match="is missing.*perturbjax data fetch "
                       "hetionet/nodes.tsv.*raw.githubusercontent.com/dhimmel/integrate"):
        registry.path("hetionet/nodes.tsv")
    (tmp_path / "hetionet").mkdir()
    (tmp_path / "hetionet" / "nodes.tsv").write_text("id\tname\tkind\n")
    assert registry.status("hetionet/nodes.tsv") == "corrupt"
    with pytest.raises(registry.DataFileError, match="does not match its sha256"):
        registry.path("hetionet/nodes.tsv")
    with pytest.raises(registry.DataFileError, match="no direct download.*converted"):
        registry.fetch("l1000/transigen_basal.tsv")
    with pytest.raises(KeyError, match="not a registered data file"):
        registry.path("hetionet/nope.tsv")


def test_present_file_is_used_offline(tmp_path, monkeypatch, real_file):
    source = real_file("hetionet/metaedges.tsv")
    (tmp_path / "hetionet").mkdir()
    shutil.copy(source, tmp_path / "hetionet" / "metaedges.tsv")
    monkeypatch.setenv(registry.DATA_DIR_ENV, str(tmp_path))
    assert registry.fetch("hetionet/metaedges.tsv") == tmp_path / "hetionet" / "metaedges.tsv"


def test_data_command(capsys, real_file, tmp_path, monkeypatch):
    cli.main(["data", "verify", "hetionet/edges-10.sif"])
    assert "ok" in capsys.readouterr().out
    cli.main(["data", "summary", "--format", "hetionet", "--path", str(real_file("hetionet/edges-10.sif"))])
    summary = json.loads(capsys.readouterr().out)
    assert summary["nodes"]["gene"] == 20945 and summary["edges"]["compound--binds-->gene"] == 10
    monkeypatch.setenv(registry.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(SystemExit, match="missing or corrupt"):
        cli.main(["data", "verify", "hetionet/nodes.tsv"])
    with pytest.raises(SystemExit, match="missing or corrupt") as info:  # every file missing
        cli.main(["data", "verify"])
    assert info.value.code == 2
    cli.main(["data", "list"])
    out = capsys.readouterr().out
    assert f"data directory: {tmp_path}" in out and "missing  hetionet/nodes.tsv" in out


def test_data_summary_of_a_primekg_file(tmp_path, capsys):
    from perturbjax.data.primekg_synthetic import synthetic_primekg

    written = synthetic_primekg(tmp_path / "kg.csv", n_nodes=2000, n_edges=20000, seed=1)
    cli.main(["data", "summary", "--format", "primekg", "--path", str(tmp_path / "kg.csv")])
    summary = json.loads(capsys.readouterr().out)
    assert sum(summary["nodes"].values()) == 2000
    assert sum(summary["edges"].values()) == written.num_rows == 20000
    assert "gene/protein--protein_protein-->gene/protein" in summary["edges"]


def test_optional_files_are_the_ones_no_built_in_experiment_needs():
    optional = {n for n, f in registry.FILES.items() if f.optional}
    assert "primekg/kg.csv" in optional
    # What the built-in experiments read stays required.
    assert not optional & {"hetionet/nodes.tsv", "hetionet/edges-5k.sif.gz",
                           "lincs/consensi-drugbank.tsv.gz", "l1000/modzs_n272x978.gct",
                           "l1000/transigen_basal.tsv", "singlecell/pbmc68k_reduced.h5ad"}


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def small_registry(tmp_path, monkeypatch):
    """A registry of five small files in an empty data directory; downloads come from a dict."""
    import io
    import urllib.error

    content = {"https://example.org/a": b"a\n", "https://example.org/bad": b"changed\n"}
    files = [registry.DataFile("x/a.tsv", "https://example.org/a", _digest(b"a\n"), "CC0", "a"),
             registry.DataFile("x/bad.tsv", "https://example.org/bad", _digest(b"b\n"), "CC0",
                               "upstream changed"),
             registry.DataFile("x/here.tsv", "https://example.org/here", _digest(b"here\n"),
                               "CC0", "present"),
             registry.DataFile("x/hand.tsv", None, _digest(b"hand\n"), "CC0", "by hand",
                               note="made by hand from the paper's supplement"),
             registry.DataFile("x/big.csv", "https://example.org/offline", None, "CC BY",
                               "optional", optional=True)]
    monkeypatch.setattr(registry, "FILES", {f.name: f for f in files})
    monkeypatch.setenv(registry.DATA_DIR_ENV, str(tmp_path))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "here.tsv").write_bytes(b"here\n")
    fetched = []

    def urlopen(url, timeout):
        fetched.append(url)
        if url not in content:
            raise urllib.error.URLError("network is unreachable")
        return io.BytesIO(content[url])

    monkeypatch.setattr(registry.urllib.request, "urlopen", urlopen)
    return fetched


def test_fetch_all_fetches_skips_lists_and_reports_each_file(small_registry, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["data", "fetch", "--all"])
    assert info.value.code == 2
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert lines[0].startswith("[1/5] x/a.tsv: fetched 0.0 MB from https://example.org/a "
                               "(sha256 ok)")
    assert lines[1].startswith("[2/5] x/bad.tsv: FAILED: ") and "expected" in lines[1]
    assert lines[2] == "[3/5] x/here.tsv: present (sha256 ok), skipped"
    assert lines[3] == ("[4/5] x/hand.tsv: missing; no direct download, get it by hand: "
                        "made by hand from the paper's supplement")
    assert lines[4].startswith("[5/5] x/big.csv: FAILED: could not download")
    assert lines[5] == (f"1 fetched, 1 already present, 1 to get by hand, 2 failed; data "
                        f"directory {tmp_path}")
    assert lines[6] == "no direct download (see each line above): ['x/hand.tsv']"
    assert out.err.strip() == ("perturbjax: error: data fetch: 2 file(s) not fetched: "
                               "['x/bad.tsv', 'x/big.csv'] (reasons above)")
    assert (tmp_path / "x" / "a.tsv").read_bytes() == b"a\n"
    assert not (tmp_path / "x" / "bad.tsv").exists()
    assert sorted(os.listdir(tmp_path / "x")) == ["a.tsv", "here.tsv"]  # no temporary left
    assert "https://example.org/here" not in small_registry  # present: never downloaded


def test_fetch_all_passes_when_only_hand_made_files_are_left(small_registry, tmp_path,
                                                             monkeypatch, capsys):
    monkeypatch.delitem(registry.FILES, "x/bad.tsv")
    monkeypatch.delitem(registry.FILES, "x/big.csv")
    cli.main(["data", "fetch", "--all"])  # exit 0: x/hand.tsv is listed, not an error
    assert "1 to get by hand, 0 failed" in capsys.readouterr().out
    cli.main(["data", "fetch", "--all"])  # again: everything present is skipped
    out = capsys.readouterr().out
    assert "0 fetched, 2 already present" in out and out.count("skipped") == 2
    # A file without an address that the user names is an error.
    with pytest.raises(SystemExit, match=r"not fetched: \['x/hand.tsv'\]") as info:
        cli.main(["data", "fetch", "x/hand.tsv"])
    assert info.value.code == 2
    # --force downloads a present file again.
    (tmp_path / "x" / "a.tsv").write_bytes(b"corrupt\n")
    cli.main(["data", "fetch", "x/a.tsv"])
    assert "replacing a corrupt copy" in capsys.readouterr().out
    assert (tmp_path / "x" / "a.tsv").read_bytes() == b"a\n"


@pytest.mark.parametrize("argv, message", [
    (["data", "fetch"], "name the files to fetch, or give --all"),
    (["data", "fetch", "x/a.tsv", "--all"], "not both"),
    (["data", "fetch", "x/nope.tsv"], "not a registered data file"),
])
def test_fetch_mistakes_are_one_line(small_registry, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2 and message in str(info.value)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("perturbjax: error: data fetch: ")
    assert small_registry == []  # nothing was downloaded


def test_verify_passes_when_only_optional_files_are_missing(small_registry, tmp_path, capsys):
    for name, data in (("a.tsv", b"a\n"), ("bad.tsv", b"b\n"), ("hand.tsv", b"hand\n")):
        (tmp_path / "x" / name).write_bytes(data)
    cli.main(["data", "verify"])  # x/big.csv, optional, is missing: exit 0
    out = capsys.readouterr().out
    assert f"missing  {tmp_path / 'x' / 'big.csv'}  (optional)" in out
    assert out.strip().splitlines()[-1] == ("4 of 5 file(s) present and not corrupt; missing but "
                                            "optional (no built-in experiment needs them): "
                                            "['x/big.csv']")
    # Named, an optional file is required.
    with pytest.raises(SystemExit, match=r"1 file\(s\) missing or corrupt: \['x/big.csv'\]"):
        cli.main(["data", "verify", "x/big.csv"])
    (tmp_path / "x" / "big.csv").write_bytes(b"anything")  # unpinned: present is enough
    cli.main(["data", "verify", "x/big.csv"])
    (tmp_path / "x" / "big.csv").unlink()
    (tmp_path / "x" / "hand.tsv").unlink()  # a required file missing
    with pytest.raises(SystemExit) as info:
        cli.main(["data", "verify"])
    assert info.value.code == 2 and "['x/hand.tsv']" in str(info.value)
    (tmp_path / "x" / "hand.tsv").write_bytes(b"hand\n")
    (tmp_path / "x" / "a.tsv").write_bytes(b"corrupt\n")  # any corrupt file fails
    capsys.readouterr()
    with pytest.raises(SystemExit, match=r"missing or corrupt: \['x/a.tsv'\]") as info:
        cli.main(["data", "verify"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "perturbjax data fetch --all" in err[0]
