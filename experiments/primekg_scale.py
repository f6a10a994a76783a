r"""Scale: sampled-subgraph training on a PrimeKG-size graph (129,375 nodes, 8.1M edges).

    perturbjax train --config experiments/primekg_scale.py --workdir runs/primekg_scale/hetero_gat
    python benchmarks/sampling.py   # the sampler's subgraphs/s, step time and peak memory

The first run writes PrimeKG-size synthetic data in kg.csv's format to
`runs/data/primekg_synthetic/kg.csv` (about 1 GB, a few minutes); point `data.planted.path` at a
real kg.csv (and `data.planted.synthesize=False`) to run on PrimeKG itself. Signatures are
planted (perturbjax/data/primekg_planted.py): drugs perturb their targets and the perturbation
spreads through protein-protein edges. A full-graph step on 8.1M edges does not fit this
workload on a CPU machine, so every batch trains on the 2-hop subgraph around its drugs, cell
lines and the 978 readout genes (graph.mode=sampled); this experiment measures speed and
memory at PrimeKG scale, it is not a biological result.

Variants: seed=S, model=NAME, full (graph.mode=full, for comparison on a machine that has the
memory), test (a PrimeKG-format graph of 3,000 nodes and 60,000 rows; seconds).
"""

from perturbjax.config import parse_arg
from perturbjax.tasks.perturbation_config import base_config, shrink_for_tests


def get_config(arg=None):
    arg = parse_arg(arg, seed=0, model="hetero_gat", full=False, test=False)
    c = base_config()
    c.seed = arg.seed
    c.data.source = "primekg_planted"
    c.data.planted = {"path": "runs/data/primekg_synthetic/kg.csv", "synthesize": True,
                      "synthetic_nodes": 129_375, "synthetic_rows": 8_100_498,
                      "synthetic_seed": 0, "n_readout": 978, "n_cells": 20, "basal_width": 32,
                      "expressed_genes": 200, "max_drugs": 2000, "cells_per_drug": 3,
                      "noise": 0.3, "seed": 0}
    c.data.split = "cold_drug"
    c.graph.mode = "full" if arg.full else "sampled"
    c.graph.sampling.fanouts = [4, 2]
    c.graph.padding_multiple = 64

    c.model.name = arg.model
    c.model.hidden = 32
    c.model.heads = 2
    c.model.dropout = 0.0
    c.model.propagation_steps = 0
    # The synthetic graph's genes carry no features: a learned vector per gene lets a drug tell
    # its targets apart (drugs are held out, so they get none).
    c.model.embedded_node_types = ["gene/protein"]

    # The fingerprint and target baselines need SMILES or a drugs x genes matrix (8k x 28k).
    c.baselines = ["zero", "mean"]
    c.train.num_steps = 200
    c.train.batch_size = 32
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 20
    c.train.log_every = 10
    c.train.eval_every = 100
    c.wandb.tags = ["primekg", "scale", "synthetic"]

    if arg.test:
        c.data.planted.update(path="runs/data/primekg_synthetic_test/kg.csv",
                              synthetic_nodes=3_000, synthetic_rows=60_000, n_readout=50,
                              n_cells=4, expressed_genes=20, max_drugs=120)
        shrink_for_tests(c, baselines=["mean"])
    return c
