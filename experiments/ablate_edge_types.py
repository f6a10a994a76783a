r"""Edge-type ablations of the planted-mechanism demo, over seeds.

    perturbjax launch --config experiments/ablate_edge_types.py --sweep --target local \
        --root runs/ablate_demo --parallel 2
    perturbjax compare runs/ablate_demo        # table, comparison.csv/.md, forest plot
    # the small version (a few minutes on 2 cores; 2 seeds, groups only):
    perturbjax launch --config experiments/ablate_edge_types.py:test --sweep --target local \
        --root runs/ablate_demo_test --parallel 2

The sweep crosses `graph.ablation` with seeds (`seed` sets the split, the initialisation and
the data order; runs of one seed pair across ablations). Ablations (perturbjax/graph/ablation.py),
each relation with its reverse:
  * none: the full graph, the reference;
  * drop:R for every relation R;
  * drop:G and keep:G (only G left) for every group G of EDGE_GROUPS (a drop that equals a
    one-relation drop is not repeated);
  * shuffle:R, degree-preserving rewiring of every relation (same degrees, random partners);
  * randomize:T, node type T's input features permuted across its nodes, for every type the
    graph model reads features of.
The demo plants its mechanism in drug -> target -> interacting genes and pathways, so dropping
or shuffling `drug_gene`, `gene_gene` or `gene_pathway` should hurt and the rest should not.
Baselines never see the ablated graph, so only the reference runs fit them.

Every run is `experiments/demo.py` (its `test` variant under `test`) with `graph.ablation` set.
Variants: test (tiny world, 2 seeds, groups only), seeds=N.
"""

import os

from perturbjax.config import load_config, parse_arg

EDGE_GROUPS = {
    "drug_gene": ["inhibits", "activates"],
    "gene_gene": ["interacts"],
    "gene_pathway": ["participates"],
    "disease": ["associates", "treats"],
    "cell_line": ["expresses"],
}
FORWARD_RELATIONS = ["inhibits", "activates", "interacts", "participates", "associates", "treats",
                     "expresses"]
FEATURED_TYPES = ["gene", "pathway", "disease", "cell_line"]  # drug features are dropped
DEFAULTS = dict(test=False, seeds=3, ablation="none", seed=0)
BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo.py")


def get_config(arg=None):
    arg = parse_arg(arg, **DEFAULTS)
    c = load_config(f"{BASE}:seed={arg.seed}" + (",test" if arg.test else ""))
    c.graph.edge_groups = EDGE_GROUPS
    c.graph.ablation = arg.ablation
    c.wandb.tags = ["demo", "ablation"]
    if arg.test:
        c.model.propagation_steps = 0  # the sweep's 28 runs in a few minutes
    return c


def ablations(test: bool = False) -> list[str]:
    """Every ablation of the sweep (the reference first)."""
    out = ["none"]
    if not test:
        out += [f"drop:{r}" for r in FORWARD_RELATIONS]
    out += [f"drop:{g}" for g, members in EDGE_GROUPS.items() if test or len(members) > 1]
    out += [f"keep:{g}" for g in EDGE_GROUPS]
    if test:
        out += [f"shuffle:{g}" for g in ("drug_gene", "gene_gene")]
    else:
        out += [f"shuffle:{r}" for r in FORWARD_RELATIONS]
    out += [f"randomize:{t}" for t in FEATURED_TYPES[: 1 if test else None]]
    return out


def get_sweep(arg=None):
    arg = parse_arg(arg, **DEFAULTS)
    seeds = 2 if arg.test and arg.seeds == DEFAULTS["seeds"] else arg.seeds
    runs = []
    for ablation in ablations(arg.test):
        for seed in range(seeds):
            runs.append([f"graph.ablation={ablation}", f"seed={seed}"])
    return runs
