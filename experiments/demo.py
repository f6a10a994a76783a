r"""Planted-mechanism demo: a heterogeneous GAT over a generated knowledge graph, cold-drug split.

    perturbjax train --config experiments/demo.py --workdir runs/demo
    perturbjax train --config experiments/demo.py:test --workdir runs/demo-test   # seconds

Expected (2 CPU cores, a few minutes): in `runs/demo/summary.json` the KG model's test
`pearson_centered` is well above every baseline's, since held-out drugs mostly hit targets no
training drug hit, and only the graph says how a target's perturbation spreads. Variants:

    experiments/demo.py:ablate      drop the mechanism's edge types (gene interactions and
                                    pathway membership); the gain over the baselines disappears
    experiments/demo.py:model=rgcn  the same with R-GCN (or model=hgt)
    experiments/demo.py:seed=3      another seed (split, initialisation and data order)
"""

import ml_collections

from perturbjax.config import parse_arg
from perturbjax.data.demo import MECHANISM_RELATIONS, DemoConfig


def get_config(arg=None):
    arg = parse_arg(arg, test=False, ablate=False, model="hetero_gat", seed=0)
    c = ml_collections.ConfigDict()
    c.seed = arg.seed
    c.task = "perturbation"

    c.data = ml_collections.ConfigDict()
    c.data.source = "demo"
    c.data.demo = ml_collections.ConfigDict(vars(DemoConfig()))
    c.data.demo.n_drugs = 400
    c.data.split = "cold_drug"
    c.data.validation_fraction = 0.15
    c.data.test_fraction = 0.15

    c.graph = ml_collections.ConfigDict()
    c.graph.drop_relations = list(MECHANISM_RELATIONS) if arg.ablate else []
    # The graph model sees drugs only through their edges (fingerprints go to the baselines).
    c.graph.drop_node_features = ["drug"]
    c.graph.padding_multiple = 256

    c.model = ml_collections.ConfigDict()
    c.model.name = arg.model  # an encoder (hetero_gat, rgcn, hgt) or a baseline's name
    c.model.hidden = 64
    c.model.num_layers = 2
    c.model.heads = 4
    c.model.bases = 0  # R-GCN basis count; 0 = one weight matrix per relation
    c.model.dropout = 0.1
    c.model.channels = 8  # width of the drug signal propagated through the graph
    c.model.propagation_steps = 3  # hops it travels (drug -> target -> partners -> ...)

    c.baselines = ["mean", "tanimoto_knn", "ridge", "target_ridge", "mlp"]

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 1000
    c.train.batch_size = 32
    c.train.learning_rate = 3e-3
    c.train.warmup_steps = 100
    c.train.weight_decay = 1e-4
    c.train.clip_norm = 1.0
    c.train.log_every = 50
    c.train.eval_every = 100

    c.wandb = ml_collections.ConfigDict()
    c.wandb.mode = "auto"  # online with an API key, offline otherwise; "disabled" turns it off
    c.wandb.project = "perturbjax"
    c.wandb.entity = ""
    c.wandb.tags = ["demo"]

    if arg.test:  # seconds on a laptop: fewer steps, smaller world, two baselines
        c.data.demo.n_drugs = 60
        c.data.demo.n_genes = 200
        c.data.demo.n_druggable = 100
        c.data.demo.n_readout = 50
        c.model.hidden = 32
        c.train.num_steps = 30
        c.train.warmup_steps = 5
        c.train.log_every = 10
        c.train.eval_every = 15
        c.baselines = ["mean", "ridge"]
        c.wandb.mode = "disabled"
    return c
