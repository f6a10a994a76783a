"""The perturbation task's config schema: every setting with its default (`base_config`) and
the checks a config must pass before any work (`validate_config`).

The `model` section is assembled from the model registry (perturbjax/models/registry.py), the
`data` section's sources are perturbjax/data/sources.py's, and the `graph` section is read by
perturbjax/graph/prepare.py.
"""

from __future__ import annotations

import copy

import ml_collections

from perturbjax.data.demo import DemoConfig
from perturbjax.data.sources import DATA_SOURCES
from perturbjax.graph.ablation import parse_ablation
from perturbjax.graph.prepare import GRAPH_MODES
from perturbjax.graph.sampling import BUDGETS
from perturbjax.models.baselines import BASELINES
from perturbjax.models.registry import MODELS, model_fields
from perturbjax.training.settings import (at_least, config_checker, is_integer, loop_config,
                                       validate_loop_config)


def base_config() -> ml_collections.ConfigDict:
    """Every setting of a perturbation run, with defaults (the loop's, `train.settings.loop_config`,
    and the task's own); experiment files change what differs.

    `data.source` names the dataset and the section of the same name holds its options.
    """
    c = loop_config()
    c.task = "perturbation"

    c.data = ml_collections.ConfigDict()
    c.data.source = "demo"
    c.data.demo = ml_collections.ConfigDict(vars(DemoConfig()))
    c.data.split = "cold_drug"  # random, cold_drug, cold_cell or scaffold
    c.data.validation_fraction = 0.15
    c.data.test_fraction = 0.15
    c.data.num_folds = 0  # k-fold cross-validation when > 0: fold `data.fold` is the test part
    c.data.fold = 0

    c.graph = ml_collections.ConfigDict()
    c.graph.drop_relations = []  # relation names or "src--rel-->dst" edge types to ablate
    c.graph.drop_node_features = []  # node types whose input features the graph model ignores
    # One ablation of the graph the model sees (perturbjax/graph/ablation.py): "none",
    # "drop:SEL", "keep:SEL", "shuffle:SEL" (degree-preserving) or "randomize:NODE_TYPE"; SEL
    # names groups of `edge_groups` (group -> relation names), relations or edge types.
    c.graph.ablation = "none"
    c.graph.edge_groups = ml_collections.ConfigDict()
    c.graph.padding_multiple = 8  # sampled mode: each type's and relation's budget rounds up to it
    # "full": every step runs on the whole padded graph (small graphs); "sampled": each batch
    # (each device's share) runs on the k-hop subgraph around its drugs, cell lines and the
    # readout genes (perturbjax/graph/sampling.py), for graphs too large for a full-graph step.
    c.graph.mode = "full"
    c.graph.sampling = ml_collections.ConfigDict()
    c.graph.sampling.fanouts = [8, 4]  # per hop, incoming edges kept per node and edge type
    c.graph.sampling.relation_fanouts = []  # "relation=f1,f2" for relations that differ
    # "calibrated": blocks sized from subgraphs around 16 random batches (tight; a rare overflow
    # is trimmed and logged); "bound": the worst case (never trims, slower steps).
    c.graph.sampling.budget = "calibrated"
    c.graph.keep_leaky_edges = False  # see perturbjax/data/leakage.py

    c.model = ml_collections.ConfigDict()
    c.model.name = "hetero_gat"  # a name of perturbjax/models/registry.py's MODELS
    # Every field some registered model reads, with its default (registry.FIELDS, LAYERS).
    for key, field in model_fields().items():
        c.model[key] = copy.deepcopy(field.default)  # never the registry's own list
    # "mse", or "pearson_centered": 1 - the selection metric, per condition (scale-free: MSE on
    # raw z-scores is ruled by the few drugs with the largest responses)
    c.model.loss = "mse"

    c.baselines = ["mean", "tanimoto_knn", "ridge", "target_ridge", "mlp"]

    return c


def shrink_for_tests(c: ml_collections.ConfigDict, *, baselines: list[str]) -> None:
    """Makes a config's model and training tiny (seconds), W&B off: the `test` variants."""
    c.model.hidden = 16
    c.train.update(num_steps=6, batch_size=32, warmup_steps=2, log_every=3, eval_every=3)
    c.baselines = baselines
    c.wandb.mode = "disabled"


SPLITS = ("random", "cold_drug", "cold_cell", "scaffold")
LOSSES = ("mse", "pearson_centered")


def validate_config(c: ml_collections.ConfigDict) -> None:
    """Rejects settings no run can use, before any work: a ValueError naming the key and what
    was expected."""
    validate_loop_config(c)
    need = config_checker(c)

    def fraction(v) -> bool:
        return isinstance(v, (int, float)) and 0 < v < 1

    for key, field in model_fields().items():
        need(f"model.{key}", field.check, field.expected)
    need("data.num_folds", at_least(0), "an integer >= 0")
    for key in ("data.validation_fraction", "data.test_fraction"):
        need(key, fraction, "a fraction strictly between 0 and 1")
    need("data.validation_fraction", lambda v: v + c.data.test_fraction < 1,
         f"a fraction with data.test_fraction ({c.data.test_fraction}) summing below 1")
    need("data.num_folds", lambda v: v != 1, "0 (one split) or at least 2 folds")
    if c.data.num_folds:
        need("data.fold", lambda v: is_integer(v) and 0 <= v < c.data.num_folds,
             f"an integer in [0, {c.data.num_folds}) (data.num_folds)")
    need("data.source", lambda v: v in DATA_SOURCES, f"one of {tuple(DATA_SOURCES)}")
    need("data.split", lambda v: v in SPLITS, f"one of {SPLITS}")
    need("model.name", lambda v: v in MODELS, f"one of {tuple(MODELS)}")
    need("baselines", lambda v: set(v) <= set(BASELINES), f"names from {tuple(sorted(BASELINES))}")
    need("graph.mode", lambda v: v in GRAPH_MODES, "'full' or 'sampled'")
    need("model.loss", lambda v: v in LOSSES, f"one of {LOSSES}")
    if c.data.source == "files":
        from perturbjax.data.kg_lincs import COLLAPSES

        missing = [k for k in ("files", "filters", "collapse", "drug_features", "morgan_bits")
                   if k not in c.data]
        if missing:
            raise ValueError(f"config key data.{missing[0]} is missing; data.source=files needs "
                             f"the sections of perturbjax.data.kg_lincs.files_config() (as "
                             f"experiments/kg_lincs.py sets them)")
        need("data.collapse", lambda v: v in COLLAPSES, f"one of {COLLAPSES}")
        if c.data.collapse == "drug":
            need("data.split", lambda v: v != "cold_cell",
                 "not cold_cell with data.collapse=drug (one pooled cell line)")
    if c.model.target_readout:
        need("model.name", lambda v: v == "relational_sgc",
             "'relational_sgc' with model.target_readout=True")
    if c.model.warm_start == "kg_ridge":
        need("model.standardise_over", lambda v: v == "support",
             "'support' with model.warm_start=kg_ridge (kg_ridge's kernel uses the training "
             "drugs' statistics)")
    if c.model.decoder == "kernel_ridge":
        need("graph.mode", lambda v: v == "full",
             "'full' with model.decoder=kernel_ridge (it reads every training drug's embedding)")
        need("model.propagation_steps", lambda v: v == 0,
             "0 with model.decoder=kernel_ridge (signal propagation feeds the bilinear decoder)")
    if MODELS[c.model.name].family == "support":
        need("graph.mode", lambda v: v == "full",
             f"'full' with model.name={c.model.name} (it propagates every training drug)")
    need("graph.padding_multiple", at_least(1), "an integer >= 1")
    need("graph.sampling.budget", lambda v: v in BUDGETS, f"one of {BUDGETS}")
    parse_ablation(c.graph.ablation)  # its errors name the key
    need("graph.edge_groups", lambda v: all(
        isinstance(m, (list, tuple)) and all(isinstance(x, str) for x in m) for m in v.values()),
        "a mapping of group name -> list of relation names")
