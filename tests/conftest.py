"""Shared fixtures: small generated graphs, demo data, and the real data directory.

Tests of real files read them through `perturbjax.data.registry`, from the data directory the
commands use (`$PERTURBJAX_DATA_DIR`, default `~/.cache/perturbjax/data`). A missing or corrupt
file makes those tests fail (never skip), with the registry's message naming the file and its
address.
"""

import hashlib
import os

import numpy as np
import pytest

from perturbjax.runtime import tune_host_allocator

tune_host_allocator()  # as the CLI runs: before JAX starts its threads

from perturbjax.data import registry  # noqa: E402 (after the allocator)
from perturbjax.data.demo import DemoConfig, make_demo  # noqa: E402 (after the allocator)
from perturbjax.graph.hetero import EdgeSet, EdgeType, HeteroGraph, NodeSet  # noqa: E402 (after the allocator)


def small_graph() -> HeteroGraph:
    """Three node types with features of differing widths (one featureless), four edge types."""
    rng = np.random.default_rng(0)
    nodes = {
        "drug": NodeSet(np.array(["d0", "d1", "d2"]), {"fp": rng.random((3, 5))}),
        "gene": NodeSet(np.array([f"g{i}" for i in range(6)]),
                        {"emb": rng.normal(size=(6, 3)), "x": rng.normal(size=(6, 1))}),
        "pathway": NodeSet(np.array(["p0", "p1"])),
    }
    edges = {
        EdgeType("drug", "targets", "gene"): EdgeSet(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 3])),
        EdgeType("gene", "interacts", "gene"): EdgeSet(np.array([0, 1, 2, 4]), np.array([1, 2, 3, 5])),
        EdgeType("gene", "participates", "pathway"): EdgeSet(np.array([0, 3, 5]), np.array([0, 1, 1])),
        EdgeType("pathway", "contains", "gene"): EdgeSet(np.array([0, 1, 1]), np.array([0, 3, 5])),
    }
    return HeteroGraph(nodes, edges)


@pytest.fixture
def graph() -> HeteroGraph:
    return small_graph()


TINY_DEMO = DemoConfig(n_genes=120, n_druggable=60, n_readout=30, n_pathways=8, n_diseases=5,
                       n_cells=4, n_drugs=40, cells_per_drug=3)


@pytest.fixture(scope="session")
def tiny_demo():
    return make_demo(TINY_DEMO)


@pytest.fixture(scope="session")
def real_file():
    """`real_file("hetionet/nodes.tsv")` -> checked local path; raises if missing or corrupt."""
    return registry.path


def _tree_digest(root) -> dict[str, str]:
    """sha256 of every file under `root` (29 MB here: a fraction of a second)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def data_dir_unchanged():
    """Asserts that the test wrote nothing into the data directory: only `data fetch` may."""
    root = registry.data_dir()
    before = _tree_digest(root)
    assert before, f"the data directory {root} is empty"
    yield root
    assert _tree_digest(root) == before, f"{root} was written to"


DEMO_EXPERIMENT = os.path.join(os.path.dirname(__file__), "..", "experiments", "demo.py")
DEMO_SEEDS = (0, 1)


@pytest.fixture(scope="session")
def demo_runs(tmp_path_factory):
    """The planted-mechanism demo trained for 300 steps, seeds 0 and 1, with and
    without the mechanism's edge types: {(seed, "" | "ablate"): (summary, workdir)}. Shared by
    the science and explanation tests (minutes of training, done once)."""
    from perturbjax.config import apply_overrides, load_config
    from perturbjax.training.loop import train_and_evaluate

    shorter = ["train.num_steps=300", "train.eval_every=100", "wandb.mode=disabled"]
    out = {}
    for seed in DEMO_SEEDS:
        for variant in ("", "ablate"):
            config = apply_overrides(load_config(f"{DEMO_EXPERIMENT}:seed={seed},{variant}"),
                                     shorter)
            if variant:
                config.baselines = []  # same split as the full run, whose baselines we use
            workdir = tmp_path_factory.mktemp(f"seed{seed}{variant}")
            out[seed, variant] = (train_and_evaluate(config, str(workdir), progress=False),
                                  str(workdir))
    return out
