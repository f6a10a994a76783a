r"""Planted-mechanism demo: a heterogeneous GAT over a generated knowledge graph, cold-drug split.

    perturbjax train --config experiments/demo.py --workdir runs/demo
    perturbjax train --config experiments/demo.py:test --workdir runs/demo-test   # seconds

Expected (2 CPU cores, a few minutes): in `runs/demo/summary.json` the KG model's test
`pearson_centered` is well above every baseline's, since held-out drugs mostly hit targets no
training drug hit, and only the graph says how a target's perturbation spreads. Variants:

    experiments/demo.py:ablate      drop the mechanism's edge types (gene interactions and
                                    pathway membership); the gain over the baselines disappears
    experiments/demo.py:model=rgcn  the same with R-GCN (any layer of models/registry.py's LAYERS)
    experiments/demo.py:seed=3      another seed (split, initialisation and data order)
"""

from perturbjax.config import parse_arg
from perturbjax.data.demo import MECHANISM_RELATIONS
from perturbjax.tasks.perturbation_config import base_config


def get_config(arg=None):
    arg = parse_arg(arg, test=False, ablate=False, model="hetero_gat", seed=0)
    c = base_config()
    c.seed = arg.seed
    c.data.demo.n_drugs = 400
    c.graph.drop_relations = list(MECHANISM_RELATIONS) if arg.ablate else []
    # The graph model sees drugs only through their edges (fingerprints go to the baselines).
    c.graph.drop_node_features = ["drug"]
    c.model.name = arg.model
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
