r"""Edge-type ablations of the real task (LINCS consensus signatures, Hetionet), over the 5 folds.

    export PERTURBJAX_DATA_DIR=../shared/data
    perturbjax launch --config experiments/ablate_consensus.py --sweep --target local \
        --root runs/ablate_consensus --parallel 2
    perturbjax compare runs/ablate_consensus --metrics pearson_centered,pearson,rmse

Every run is `experiments/hetionet_lincs_consensus.py` (cold-drug folds, leakage guard on) with
`graph.ablation` set (perturbjax/graph/ablation.py), each relation with its reverse:
  * none: the full graph, the reference (its runs also fit the baselines);
  * drop:R for every relation R, and drop:G / keep:G for every group G of EDGE_GROUPS (a group
    drop equal to a one-relation drop is not repeated);
  * shuffle:R for every relation (degree-preserving: same degrees, random partners);
  * randomize:compound, the drugs' fingerprints permuted across drugs.
Runs of one fold pair across ablations (same split, same seed).

The model is `kg_ridge` (the closed-form graph model that wins on this task; a run takes about
25 s); `model=NAME`, any layer of perturbjax/models/registry.py's LAYERS (e.g. hetero_gat),
ablates a message-passing model instead (about 100 s a run). Variants: model=NAME, groups (the
group-level ablations only: drop, keep and shuffle per group, 17 ablations instead of about 40),
test (the test suite's small slice, two folds).
"""

import os

from perturbjax.config import load_config, parse_arg

EDGE_GROUPS = {
    "drug_gene": ["binds"],
    "gene_gene": ["interacts", "covaries"],
    "gene_pathway_go": ["participates"],
    "disease_anatomy": ["associates", "upregulates", "downregulates", "expresses", "localizes",
                        "presents"],
    "drug_context": ["treats", "palliates", "causes", "resembles", "includes"],
}
RELATIONS = [r for members in EDGE_GROUPS.values() for r in members]
DEFAULTS = dict(model="kg_ridge", groups=False, test=False, fold=0, ablation="none")
BASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hetionet_lincs_consensus.py")


def get_config(arg=None):
    arg = parse_arg(arg, **DEFAULTS)
    c = load_config(f"{BASE}:fold={arg.fold},model={arg.model}" + (",test" if arg.test else ""))
    c.graph.edge_groups = EDGE_GROUPS
    c.graph.ablation = arg.ablation
    c.wandb.tags = list(c.wandb.tags) + ["ablation"]
    return c


def ablations(groups: bool = False) -> list[str]:
    """Every ablation of the sweep, the reference first."""
    out = ["none"]
    if not groups:
        out += [f"drop:{r}" for r in RELATIONS]
    out += [f"drop:{g}" for g, members in EDGE_GROUPS.items() if groups or len(members) > 1]
    out += [f"keep:{g}" for g in EDGE_GROUPS]
    out += [f"shuffle:{x}" for x in (EDGE_GROUPS if groups else RELATIONS)]
    return out + ["randomize:compound"]


def get_sweep(arg=None):
    arg = parse_arg(arg, **DEFAULTS)
    folds = range(2) if arg.test else range(5)
    return [[f"graph.ablation={a}", f"data.fold={k}"]
            for a in ablations(arg.groups or arg.test) for k in folds]
