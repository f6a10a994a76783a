"""The data registry: checksums of the real files, clear errors, and the `perturbjax data` command."""

import json
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
    from perturbjax.data.primekg import synthetic_primekg

    written = synthetic_primekg(tmp_path / "kg.csv", n_nodes=2000, n_edges=20000, seed=1)
    cli.main(["data", "summary", "--format", "primekg", "--path", str(tmp_path / "kg.csv")])
    summary = json.loads(capsys.readouterr().out)
    assert sum(summary["nodes"].values()) == 2000
    assert sum(summary["edges"].values()) == written.num_rows == 20000
    assert "gene/protein--protein_protein-->gene/protein" in summary["edges"]
