"""Every real data file the project knows: public address, sha256, licence; a checked local cache.

Files live under one data directory, `$PERTURBJAX_DATA_DIR` (default `~/.cache/perturbjax/data`),
at the relative path that names them here (e.g. `hetionet/nodes.tsv`). A file already present
whose checksum matches is used as is, so pointing the variable at a folder holding these files
(such as `../shared/data` beside the repository) runs everything offline. A missing or corrupt
file raises `DataFileError` naming its address and the command that fetches it.
`perturbjax data fetch --all` fetches every file that has an address (`fetch_all`); files that
no built-in experiment needs are marked `optional`, and `data verify` passes without them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

DATA_DIR_ENV = "PERTURBJAX_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/perturbjax/data")


@dataclasses.dataclass(frozen=True)
class DataFile:
    """One registered file.

    Attributes:
      name: path relative to the data directory; also the file's name in commands.
      url: public download address, or None where the file must be made by hand (see `note`).
      sha256: expected checksum; None where the upstream file is not pinned (checked by format).
      licence: the licence its source states.
      description: what it holds.
      note: how to obtain it when `url` is None, or anything else a user must know.
      optional: no built-in experiment reads it unless a user points a config or command at
        it (PrimeKG's kg.csv, reader fixtures the tests use): `data verify` lists it missing
        without failing.
    """

    name: str
    url: str | None
    sha256: str | None
    licence: str
    description: str
    note: str = ""
    optional: bool = False


def _raw(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


_LINCS_OLD = "69956dec590ce4caace9df31f5b60c978f321fdc"
_LINCS = "726793b5ce36576f6f17a0e015a4196113da270c"
_INTEGRATE = "93feba1765fbcd76fd79e22f25121f5399629148"
_CMAPPY = "d1652c3223e49e68e3a71634909342b4a6dbf361"
_TRANSIGEN = "e7582e7794f13d4dfddfb15e95e3ba7cd24bc07a"
_SIGNALING = "62694b570c72514d527c2de1f885128e62121659"
_CMAPPY_TESTS = "cmapPy/pandasGEXpress/tests/functional_tests"

FILES: dict[str, DataFile] = {f.name: f for f in [
    DataFile("lincs/consensi-drugbank.tsv.gz",
             _raw("dhimmel/lincs", _LINCS_OLD, "data/consensi/consensi-drugbank.tsv.gz"),
             "f36371a1acc0c4f7cbd20a35969af5447cfadac1c36a640ae892243562847ce2", "CC BY 4.0",
             "L1000 consensus signatures (moderated z-scores) of 1,170 DrugBank drugs x 978 "
             "landmark genes"),
    DataFile("lincs/genes.tsv", _raw("dhimmel/lincs", _LINCS, "data/consensi/genes.tsv"),
             "4b79462a64302bbcc944762b7196441b5b11efae08019370b6564db366a7da0c", "CC BY 4.0",
             "7,467 genes; status == measured marks the 978 landmark genes"),
    DataFile("lincs/pertinfo.tsv.gz", _raw("dhimmel/lincs", _LINCS, "data/pertinfo/pertinfo.tsv.gz"),
             "0a14bd9228851c38a5233f8aa09302d4fdd357fdbb1adeaf2d745f69e24bbff8", "CC BY 4.0",
             "51,385 LINCS perturbagens with SMILES and InChIKeys"),
    DataFile("lincs/cellinfo.tsv.gz", _raw("dhimmel/lincs", _LINCS, "data/cellinfo/cellinfo.tsv.gz"),
             "72c162d3ec457873d730935a14bc1d01989832db867aaae2c171897f5c9312c5", "CC BY 4.0",
             "2,541 LINCS cell lines with lineage and histology"),
    DataFile("lincs/geneinfo.tsv.gz", _raw("dhimmel/lincs", _LINCS, "data/geneinfo/geneinfo.tsv.gz"),
             "9a3e544a5bb1926721edc12a1bf3b6830b47a32c5f3ce5d840e3d0f2df046c0a", "CC BY 4.0",
             "36,590 L1000 probes with landmark flags"),
    DataFile("hetionet/nodes.tsv", _raw("dhimmel/integrate", _INTEGRATE, "data/nodes.tsv"),
             "3ad9eb86c031df8bc7d5efefa6edc93562182eb9a6a71e5129d3f18b9d42c50e", "CC0 1.0",
             "all 47,031 Hetionet v1.0 nodes"),
    DataFile("hetionet/edges-5k.sif.gz", _raw("dhimmel/integrate", _INTEGRATE, "data/edges-5k.sif.gz"),
             "c6bc934a764fd4c5b6f57cfcdfd4102bf306fbddc7a534fc85de6844ac102fdd",
             "CC0 1.0 overall, per-source terms",
             "up to 5,000 Hetionet edges per metaedge"),
    DataFile("hetionet/edges-10.sif", _raw("dhimmel/integrate", _INTEGRATE, "data/edges-10.sif"),
             "690d67fce835230631d4a37f78e4ec5525be5a6342c66ca60216ef63c2554cc2", "CC0 1.0",
             "10 Hetionet edges per metaedge"),
    DataFile("hetionet/CbG-binding.tsv", _raw("dhimmel/integrate", _INTEGRATE, "compile/CbG-binding.tsv"),
             "6918200b27b90f312c6e6bc636079eb6f72f006aeda308144c1f1fc5cae6fced",
             "per row, mostly CC BY-NC 4.0", "all 24,687 Compound-binds-Gene edges"),
    DataFile("hetionet/DaG-association.tsv",
             _raw("dhimmel/integrate", _INTEGRATE, "compile/DaG-association.tsv"),
             "571b45f4007045d904d926d8a01840f359345d37bc9d1db15d4dab1d38691e84", "per source",
             "all 12,623 Disease-associates-Gene edges"),
    DataFile("hetionet/metagraph.json", _raw("dhimmel/integrate", _INTEGRATE, "data/metagraph.json"),
             "054401cb7b8178fc3c8c6dffb527de09035b81cd57a4ef50a46e25fa2cef2050", "CC0 1.0",
             "Hetionet metagraph", optional=True),
    DataFile("hetionet/metaedges.tsv", _raw("dhimmel/integrate", _INTEGRATE, "data/metaedges.tsv"),
             "fd2d1f7f2d4658aacae5b0f19dbf8984b3b55e9ad4fc1a9c0c7c3859d86beb31", "CC0 1.0",
             "Hetionet metaedges: names, abbreviations and full edge counts"),
    DataFile("hetionet/metanodes.tsv", _raw("dhimmel/integrate", _INTEGRATE, "data/metanodes.tsv"),
             "0a8526f4b1ed66c70729fb52a63947d091a58211cec97f105944cd727fe56269", "CC0 1.0",
             "Hetionet node kinds and their abbreviations", optional=True),
    DataFile("pathways/pathways.tsv",
             _raw("dhimmel/pathways", "1bd2c68853e38297d20f8f885419ff81fc0608a8", "data/pathways.tsv"),
             "2f18d7d4790ff72b3d0f3076563dc60938167bdfcb9ed55901e4d5ddc5014925",
             "Reactome CC BY 4.0, WikiPathways CC BY 3.0, PID CC0",
             "1,862 pathways with member genes (Entrez ids)"),
    DataFile("ppi/protein-interactions.txt.gz",
             _raw("dhimmel/ppi", "9ae2ca12c20e0566e6644dc05b908de7f37ce15a",
                  "download/hetio/protein-interactions.txt.gz"),
             "e8bdeae04b35d56032836c85a94747dfab287a60787866213e68c10e3248e469", "CC BY 4.0",
             "98,187 curated human protein-protein interactions (HGNC ids and symbols)"),
    DataFile("drugbank/drugbank_smiles.txt",
             _raw("gnn4dr/DRKG", "d4bb1974312013c4bd79a13e42c1d9492033f8c7",
                  "drugbank_info/drugbank_smiles.txt"),
             "d20c0df34f0fbace791a98b38497dd9c0c73d23b33a35f426f9c7987a3570cc7",
             "CC BY-NC 4.0 (DrugBank)", "8,807 DrugBank ids -> SMILES"),
    DataFile("drugbank/drugbank-slim.tsv",
             _raw("dhimmel/drugbank", "6b9ae386d6ba4a0eca2d66d4b0337a6e90fe81f4", "data/drugbank-slim.tsv"),
             "72de0a8b93dcc9e7e0462bfe79c0ce20be0802efb2a1ccaeb08e372e2243356d",
             "CC BY-NC 4.0 (DrugBank)", "1,787 approved small-molecule drugs with InChIKeys"),
    DataFile("l1000/modzs_n272x978.gct",
             _raw("cmap/cmapR", "ca8d0773e9dae6faaac39abe2e65c4ca13dcb151",
                  "inst/extdata/modzs_n272x978.gct"),
             "f4cc4b7b3d7c354c22f145d2d2a9aeb78e507b9e4d8568ccab2ff9270af81d8f", "BSD-3-Clause",
             "GCT 1.3 level 5: 272 signatures (3 drugs, 65 cell lines, 5 doses, 2 times)"),
    DataFile("l1000/test_l1000.gct", _raw("cmap/cmapPy", _CMAPPY, f"{_CMAPPY_TESTS}/test_l1000.gct"),
             "efd7682a473e84f3bd76e79d83f99dcf35744fb0557322564468e80bf8d15a95", "BSD-3-Clause",
             "GCT 1.3 level 3: one A375 plate, 377 wells", optional=True),
    DataFile("l1000/test_l1000_highprecision.gctx",
             _raw("cmap/cmapPy", _CMAPPY, f"{_CMAPPY_TESTS}/test_l1000_highprecision.gctx"),
             "d7a3b8f773bff9b2726f4409678d26bfb89f65c756d61f311f7fe87012332af1", "BSD-3-Clause",
             "GCTX level 4 z-scores of the same plate", optional=True),
    DataFile("l1000/transigen_pairs.h5",
             _raw("myzhengSIMM/TranSiGen", _TRANSIGEN, "data/LINCS2020/data_example/processed_data.h5"),
             "6cf0dea218272ee8e436375b7d882e07a87d21fee8041788aca863611ce73c4b", "MIT",
             "100 LINCS 2020 control/treated profile pairs with SMILES and cell line",
             optional=True),
    DataFile("l1000/transigen_basal.tsv", None,
             "3f4b2a646a3a5f62636bf328136b47ff9f6e065c14e837c187f55e03f29f585d", "MIT",
             "basal 978-gene expression of 165 cell lines",
             note="converted to TSV from " + _raw("myzhengSIMM/TranSiGen", _TRANSIGEN,
                                                 "data/LINCS2020/modz_x1.pickle")),
    DataFile("l1000/landmark_geneinfo.csv",
             _raw("myzhengSIMM/TranSiGen", _TRANSIGEN, "data/LINCS2020/landmark_geneinfo.csv"),
             "1ff853b13aeaddaf38eb28ff53b298e6b4e54e01bac27686a34b078867109109", "MIT",
             "the 978 landmark genes: Entrez id, symbol, Ensembl id"),
    DataFile("signaling/pkn_edges.tsv",
             _raw("Lauffenburger-Lab/DrugsANNSignaling", _SIGNALING,
                  "preprocessing/preprocessed_data/PKN/l1000_lvl3_withsignor-Model.tsv"),
             "7a1c3968dd2b2f8cde9f974661b5094092df7e68c4591b28d04a928396efd4ed",
             "MIT repo; OmniPath/SIGNOR terms", "signed directed signalling network (UniProt)",
             optional=True),
    DataFile("signaling/pkn_nodes.tsv",
             _raw("Lauffenburger-Lab/DrugsANNSignaling", _SIGNALING,
                  "preprocessing/preprocessed_data/PKN/l1000_lvl3_withsignor-Annotation.tsv"),
             "c581bedc5e525abaeca8399a1b3696c7d1906a99c3d5cbe62446eb9baff17d9f",
             "MIT repo; OmniPath/SIGNOR terms", "UniProt -> gene name, TF and ligand flags",
             optional=True),
    DataFile("singlecell/pbmc68k_reduced.h5ad", None,
             "e71d41e737c941559b7c57c9243bdb3d2c889c2adfdf00e3422ac6b46783676f", "BSD-3-Clause",
             "AnnData, 700 PBMCs x 765 genes",
             note="scanpy/datasets/10x_pbmc68k_reduced.h5ad inside the PyPI wheel scanpy==1.11.5"),
    DataFile("primekg/kg.csv", "https://dataverse.harvard.edu/api/access/datafile/6180620", None,
             "CC BY 4.0 (Harvard Dataverse doi:10.7910/DVN/IXA7BM)",
             "PrimeKG: 129,375 nodes of 10 types, 8.1 million directed edges of 30 relations",
             note="about 1 GB; not pinned by checksum, checked by its header when loaded",
             optional=True),
]}


class DataFileError(FileNotFoundError):
    """A registered file is missing or does not match its checksum."""


def data_dir() -> Path:
    """The data directory: `$PERTURBJAX_DATA_DIR`, else `~/.cache/perturbjax/data`."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()


def entry(name: str) -> DataFile:
    if name not in FILES:
        raise KeyError(f"{name!r} is not a registered data file; known files: {sorted(FILES)}")
    return FILES[name]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_verified: dict[tuple[str, int, int], bool] = {}


def status(name: str) -> str:
    """'ok', 'missing', 'corrupt' or 'unpinned' (present, no checksum to compare)."""
    f, path = entry(name), data_dir() / name
    if not path.is_file():
        return "missing"
    if f.sha256 is None:
        return "unpinned"
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        _verified[key] = sha256(path) == f.sha256
    return "ok" if _verified[key] else "corrupt"


def path(name: str) -> Path:
    """Local path of a registered file, checked against its checksum.

    Raises:
      DataFileError: the file is missing or corrupt; the message says where to get it.
    """
    f, state = entry(name), status(name)
    local = data_dir() / name
    if state in ("ok", "unpinned"):
        return local
    where = (f"download it with `perturbjax data fetch {name}` (from {f.url})" if f.url
             else f"it has no direct download: {f.note}")
    problem = "is missing" if state == "missing" else f"does not match its sha256 {f.sha256}"
    raise DataFileError(f"data file {local} {problem}; {where}, or point ${DATA_DIR_ENV} at a "
                        f"folder that holds it (now {data_dir()})")


def fetch(name: str, *, force: bool = False) -> Path:
    """Downloads a registered file into the data directory and verifies it; returns its path."""
    f, local = entry(name), data_dir() / name
    if not force and status(name) in ("ok", "unpinned"):
        return local
    if f.url is None:
        raise DataFileError(f"{name} has no direct download: {f.note}")
    local.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=local.parent, delete=False) as tmp:
        try:
            with urllib.request.urlopen(f.url, timeout=60) as response:
                shutil.copyfileobj(response, tmp)
        except OSError as e:
            os.unlink(tmp.name)
            raise DataFileError(f"could not download {name} from {f.url}: {e}") from e
    got = sha256(Path(tmp.name))
    if f.sha256 is not None and got != f.sha256:
        os.unlink(tmp.name)
        raise DataFileError(f"{name} downloaded from {f.url} has sha256 {got}, expected {f.sha256}")
    os.replace(tmp.name, local)
    return local


FETCH_OUTCOMES = ("present", "fetched", "manual", "failed")


def fetch_all(names: Sequence[str] | None = None, *, force: bool = False,
              print_fn: Callable[[str], None] = print) -> dict[str, str]:
    """Fetches `names` (default: every registered file), one line per file as each is done.

    A present file whose checksum matches (or that has none pinned) is skipped unless `force`;
    a file without a download address is listed with how to obtain it; a failed download is
    reported and the others go on.

    Returns:
      Each file's outcome, one of FETCH_OUTCOMES: "present" (skipped), "fetched", "manual"
      (missing or corrupt, no direct download) or "failed" (download or checksum failed).

    Raises:
      KeyError: a name that is not registered (before anything is fetched).
    """
    names = list(FILES) if names is None else list(dict.fromkeys(names))
    for name in names:
        entry(name)
    outcomes: dict[str, str] = {}
    for i, name in enumerate(names, 1):
        f, line = FILES[name], f"[{i}/{len(names)}] {name}:"
        state = status(name)
        checked = "sha256 ok" if f.sha256 else "no sha256 pinned"
        if state in ("ok", "unpinned") and (not force or f.url is None):
            outcomes[name] = "present"
            print_fn(f"{line} present ({checked}), skipped")
            continue
        if f.url is None:
            outcomes[name] = "manual"
            print_fn(f"{line} {state}; no direct download, get it by hand: {f.note}")
            continue
        try:
            local = fetch(name, force=True)
        except DataFileError as e:
            outcomes[name] = "failed"
            print_fn(f"{line} FAILED: {e}")
            continue
        outcomes[name] = "fetched"
        print_fn(f"{line} fetched {local.stat().st_size / 1e6:.1f} MB from {f.url} ({checked})"
                 + (", replacing a corrupt copy" if state == "corrupt" else ""))
    return outcomes
