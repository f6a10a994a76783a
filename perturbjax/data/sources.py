"""The datasets a perturbation run can name (`config.data.source`), in one table.

Each source reads its own config section (`config.data.<section>`; the demo's is
`config.data.demo`) and returns a `PerturbationData` and its load reports. The real sources'
modules are imported only when named: they pull in their readers' dependencies.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import ml_collections

from perturbjax.data.demo import DemoConfig, make_demo
from perturbjax.data.perturbation import PerturbationData

log = logging.getLogger(__name__)

Loaded = tuple[PerturbationData, dict]


def frozen_kwargs(section: ml_collections.ConfigDict) -> dict:
    """A config section as keyword arguments of a frozen dataclass: lists become tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in section.to_dict().items()}


def _demo(d: ml_collections.ConfigDict) -> Loaded:
    return make_demo(DemoConfig(**d.demo.to_dict())), {}


def _consensus(d: ml_collections.ConfigDict) -> Loaded:
    from perturbjax.data.hetionet_lincs import ConsensusConfig, make_consensus

    return make_consensus(ConsensusConfig(**frozen_kwargs(d.consensus)))


def _cell_lines(d: ml_collections.ConfigDict) -> Loaded:
    from perturbjax.data.hetionet_lincs import CellLineConfig, make_cell_lines

    return make_cell_lines(CellLineConfig(**frozen_kwargs(d.cell_lines)))


def _planted(d: ml_collections.ConfigDict) -> Loaded:
    from perturbjax.data.primekg_planted import PlantedConfig, make_planted

    return make_planted(PlantedConfig(**frozen_kwargs(d.planted)))


def _files(d: ml_collections.ConfigDict) -> Loaded:
    from perturbjax.data.kg_lincs import FilesConfig, FilterConfig, make_from_files

    return make_from_files(FilesConfig(**frozen_kwargs(d.files)),
                           FilterConfig(**frozen_kwargs(d.filters)), d.collapse,
                           drug_features=tuple(d.drug_features), morgan_bits=d.morgan_bits,
                           progress=sys.stderr.isatty())


DATA_SOURCES: dict[str, Callable[[ml_collections.ConfigDict], Loaded]] = {
    "demo": _demo,  # planted mechanism, generated in memory (perturbjax/data/demo.py)
    "hetionet_lincs_consensus": _consensus,  # data.consensus (perturbjax/data/hetionet_lincs.py)
    "hetionet_l1000_cell_lines": _cell_lines,  # data.cell_lines (the same module)
    "primekg_planted": _planted,  # data.planted (perturbjax/data/primekg_planted.py)
    "files": _files,  # data.files, data.filters, ... (perturbjax/data/kg_lincs.py)
}
"""`config.data.source` -> loader ``(config.data) -> (data, load reports)``."""


def load_data(config: ml_collections.ConfigDict) -> Loaded:
    """The dataset named by `config.data.source`, and its load reports (empty for the demo).

    Real sources take from seconds to minutes: each stage says what it reads as it starts
    (logger `perturbjax.data.*`, shown by the CLI), and the end says what came of it.

    Args:
      config: a perturbation run's config (its `data` section is read).

    Returns:
      The data and ``{file: load report}``.

    Raises:
      ValueError: an unknown source (listing the registered ones).
    """
    source = config.data.source
    if source not in DATA_SOURCES:
        raise ValueError(f"unknown data source {source!r}; expected one of {tuple(DATA_SOURCES)}")
    started = time.perf_counter()
    data, reports = DATA_SOURCES[source](config.data)
    if source != "demo":
        dropped = sum(sum(r.get("dropped", {}).values()) for r in reports.values())
        log.info("data ready in %.0f s: %d nodes, %d edges, %d conditions; %d records dropped "
                 "(load_reports in summary.json says why)", time.perf_counter() - started,
                 data.graph.num_nodes, data.graph.num_edges, data.num_conditions, dropped)
    return data, reports
