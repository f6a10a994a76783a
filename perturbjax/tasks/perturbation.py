"""The perturbation task: data, split, padded graph, model, loss and metrics for the train loop.

The loop in `perturbjax.train.loop` knows nothing of drugs or genes; this class supplies them.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections import Counter

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from perturbjax.data import leakage
from perturbjax.data.demo import DemoConfig, make_demo
from perturbjax.data.perturbation import PerturbationData
from perturbjax.data.splits import make_split, split_groups
from perturbjax.eval.metrics import higher_is_better, signature_metrics
from perturbjax.graph.ablation import apply_ablation, parse_ablation
from perturbjax.graph.padding import GraphSchema, PaddingBudget, flat_nodes
from perturbjax.graph.sampling import BUDGETS, NeighbourSampler, parse_fanouts
from perturbjax.graph.topology import Topology
from perturbjax.models.baselines import BASELINES, SELECTION_METRIC, make_baseline
from perturbjax.models.graph_ridge import GraphRidge
from perturbjax.models.perturbation import (DECODERS, ENCODERS, PerturbationModel,
                                           leave_out_groups)
from perturbjax.models.relational_sgc import RelationalSGC
from perturbjax.tasks.base import SelectionMetric
from perturbjax.train.settings import (at_least, config_checker, is_integer, loop_config,
                                     validate_loop_config)


log = logging.getLogger(__name__)
DATA_SOURCES = ("demo", "hetionet_lincs_consensus", "hetionet_l1000_cell_lines",
                "primekg_planted", "files")
# Models fitted on the host in closed form (no training loop) that read the model's graph, so
# edge-type ablations reach them; the baselines read only drug targets and features.
GRAPH_HOST_MODELS = {GraphRidge.name: GraphRidge}
# Trained models that read the training drugs' signatures (the "support") in full-graph mode.
SUPPORT_MODELS = ("relational_sgc",)
MAX_SUPPORT = 50_000  # their [support, support] kernel: 10 GB in float32
TRAINED_MODELS = ENCODERS + SUPPORT_MODELS
MODELS = TRAINED_MODELS + tuple(sorted(GRAPH_HOST_MODELS)) + tuple(sorted(BASELINES))


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
    c.model.name = "hetero_gat"  # an encoder (hetero_gat, rgcn, hgt) or a baseline's name
    c.model.hidden = 64
    c.model.num_layers = 2
    c.model.heads = 4
    c.model.bases = 0  # R-GCN basis count; 0 = one weight matrix per relation
    c.model.dropout = 0.1
    c.model.channels = 8  # width of the drug signal propagated through the graph
    c.model.propagation_steps = 3  # hops it travels (drug -> target -> partners -> ...); 0 = off
    c.model.readout_embedding = False  # a free vector per readout gene
    # Node types given a learned input vector per node (featureless types whose nodes are in
    # every split, e.g. genes); never the held-out type (drugs in a cold-drug split).
    c.model.embedded_node_types = []
    # "bilinear" (drug x gene and cell x gene terms) or "kernel_ridge": kernel ridge on the
    # training drugs' signatures in a learned kernel of the drug embeddings (one condition per
    # drug, full-graph mode; models/perturbation.py, KernelRidgeReadout)
    c.model.decoder = "bilinear"
    c.model.kernel_dim = 64  # width of the kernel-ridge decoder's drug keys
    # relational_sgc's initial kernel: "kg_ridge" (the one kg_ridge picks on validation, a
    # closed-form fit of about half a minute on Hetionet) or "" (all weights equal, 3 hops).
    c.model.warm_start = ""
    # relational_sgc's node-value statistics: over the "support" (training drugs, as kg_ridge)
    # or "all_drugs" (also the held-out drugs' graph neighbourhoods; never their signatures)
    c.model.standardise_over = "support"
    # relational_sgc: a second readout, kernel ridge on the drugs' direct targets shrinking
    # toward the training mean, mixed in with a learned weight (models/relational_sgc.py)
    c.model.target_readout = False
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

    for key in ("model.hidden", "model.num_layers", "model.heads", "model.kernel_dim"):
        need(key, at_least(1), "an integer >= 1")
    for key in ("model.bases", "model.propagation_steps", "data.num_folds"):
        need(key, at_least(0), "an integer >= 0")
    need("model.dropout", lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "in [0, 1)")
    for key in ("data.validation_fraction", "data.test_fraction"):
        need(key, fraction, "a fraction strictly between 0 and 1")
    need("data.validation_fraction", lambda v: v + c.data.test_fraction < 1,
         f"a fraction with data.test_fraction ({c.data.test_fraction}) summing below 1")
    need("data.num_folds", lambda v: v != 1, "0 (one split) or at least 2 folds")
    if c.data.num_folds:
        need("data.fold", lambda v: is_integer(v) and 0 <= v < c.data.num_folds,
             f"an integer in [0, {c.data.num_folds}) (data.num_folds)")
    need("data.source", lambda v: v in DATA_SOURCES, f"one of {DATA_SOURCES}")
    need("data.split", lambda v: v in SPLITS, f"one of {SPLITS}")
    need("model.name", lambda v: v in MODELS, f"one of {MODELS}")
    need("baselines", lambda v: set(v) <= set(BASELINES), f"names from {tuple(sorted(BASELINES))}")
    need("graph.mode", lambda v: v in ("full", "sampled"), "'full' or 'sampled'")
    need("model.decoder", lambda v: v in DECODERS, f"one of {DECODERS}")
    need("model.loss", lambda v: v in LOSSES, f"one of {LOSSES}")
    need("model.warm_start", lambda v: v in ("", "kg_ridge"), "'' or 'kg_ridge'")
    need("model.standardise_over", lambda v: v in ("support", "all_drugs"),
         "'support' or 'all_drugs'")
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
    if c.model.name in SUPPORT_MODELS:
        need("graph.mode", lambda v: v == "full",
             f"'full' with model.name={c.model.name} (it propagates every training drug)")
    need("graph.padding_multiple", at_least(1), "an integer >= 1")
    need("graph.sampling.budget", lambda v: v in BUDGETS, f"one of {BUDGETS}")
    parse_ablation(c.graph.ablation)  # its errors name the key
    need("graph.edge_groups", lambda v: all(
        isinstance(m, (list, tuple)) and all(isinstance(x, str) for x in m) for m in v.values()),
        "a mapping of group name -> list of relation names")


def _row_pearson(a: jax.Array, b: jax.Array) -> jax.Array:
    """[B] Pearson r of matching rows (eval/metrics.py's, differentiable)."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return jnp.sum(a * b, 1) / jnp.sqrt(jnp.sum(a * a, 1) * jnp.sum(b * b, 1) + 1e-12)


def _frozen(section: ml_collections.ConfigDict) -> dict:
    """A config section as keyword arguments of a frozen dataclass: lists become tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in section.to_dict().items()}


def load_data(config: ml_collections.ConfigDict) -> tuple[PerturbationData, dict]:
    """The dataset named by `config.data.source`, and its load reports (empty for the demo).

    Real sources take from seconds to minutes: each stage says what it reads as it starts
    (logger `perturbjax.data.*`, shown by the CLI), and the end says what came of it.
    """
    started = time.perf_counter()
    data, reports = _load_source(config)
    if config.data.source != "demo":
        dropped = sum(sum(r.get("dropped", {}).values()) for r in reports.values())
        log.info("data ready in %.0f s: %d nodes, %d edges, %d conditions; %d records dropped "
                 "(load_reports in summary.json says why)", time.perf_counter() - started,
                 data.graph.num_nodes, data.graph.num_edges, data.num_conditions, dropped)
    return data, reports


def _load_source(config: ml_collections.ConfigDict) -> tuple[PerturbationData, dict]:
    source = config.data.source
    if source == "demo":
        return make_demo(DemoConfig(**config.data.demo.to_dict())), {}
    if source == "hetionet_lincs_consensus":
        from perturbjax.data.hetionet_lincs import ConsensusConfig, make_consensus

        return make_consensus(ConsensusConfig(**_frozen(config.data.consensus)))
    if source == "hetionet_l1000_cell_lines":
        from perturbjax.data.hetionet_lincs import CellLineConfig, make_cell_lines

        return make_cell_lines(CellLineConfig(**_frozen(config.data.cell_lines)))
    if source == "primekg_planted":
        from perturbjax.data.primekg_planted import PlantedConfig, make_planted

        return make_planted(PlantedConfig(**_frozen(config.data.planted)))
    if source == "files":
        from perturbjax.data.kg_lincs import FilesConfig, FilterConfig, make_from_files

        return make_from_files(FilesConfig(**_frozen(config.data.files)),
                               FilterConfig(**_frozen(config.data.filters)), config.data.collapse,
                               drug_features=tuple(config.data.drug_features),
                               morgan_bits=config.data.morgan_bits, progress=sys.stderr.isatty())
    raise ValueError(f"unknown data source {source!r}; expected one of {DATA_SOURCES}")


class PerturbationTask:
    """Predict readout-gene signatures of held-out conditions from the knowledge graph."""

    selection = SelectionMetric(SELECTION_METRIC, higher_is_better(SELECTION_METRIC))
    report_metrics = (SELECTION_METRIC, "pearson", "spearman", "rmse", "precision_up@20",
                      "precision_down@20")
    default_config = staticmethod(base_config)
    validate_config = staticmethod(validate_config)

    def __init__(self, config: ml_collections.ConfigDict):
        validate_config(config)
        self.config = config
        self.model_name = config.model.name
        self.baselines = tuple(config.baselines)
        # Baselines see the guarded graph whatever the ablation (they read only drug targets
        # and features); graph models see the guarded, ablated graph.
        self.data, self.load_reports = load_data(config)
        graph, self.leakage = leakage.guard(self.data.graph, keep_leaky=config.graph.keep_leaky_edges)
        self.baseline_data = self.data.with_graph(graph)
        graph = graph.drop_edge_types(config.graph.drop_relations)
        graph = graph.without_features(config.graph.drop_node_features)
        graph, self.ablation, permuted = apply_ablation(
            graph, config.graph.ablation, config.graph.edge_groups.to_dict(), config.seed)
        # Drug features permuted: closed-form graph models read the drugs' SMILES, which follow.
        self._drug_order = permuted.get(self.data.drug_type)
        if config.graph.ablation != "none" and self.baselines:
            # They read the unablated graph, so they would repeat the reference run's scores.
            log.info("graph.ablation is %r: baselines skipped (they never see the ablation; "
                     "the graph.ablation=none run of the same seed and fold has them)",
                     config.graph.ablation)
            self.baselines = ()
        self.graph = graph
        self.schema = GraphSchema.of(graph)
        self.split = make_split(self.data, config.data.split, seed=config.seed,
                                validation_fraction=config.data.validation_fraction,
                                test_fraction=config.data.test_fraction,
                                num_folds=config.data.num_folds or None,
                                fold=config.data.fold if config.data.num_folds else None)
        self.train_mean = self.data.signatures[self.split.train].mean(0)

        offsets = graph.node_offsets()
        d = self.data
        self._drug_pos = (d.drug + offsets[d.drug_type]).astype(np.int32)
        self._cell_pos = (d.cell + offsets[d.cell_type]).astype(np.int32)
        self._readout_pos = (d.readout + offsets[d.gene_type]).astype(np.int32)
        self._covariates = d.condition_covariates()
        # Each condition's row in a kernel-ridge model's support (the training part), else -1.
        self._support_row = np.full(len(d.signatures), -1, np.int32)
        self._support_row[self.split.train] = np.arange(len(self.split.train), dtype=np.int32)
        self.several_conditions_per_drug = (len(np.unique(self._drug_pos[self.split.train]))
                                            < len(self.split.train))
        if self.model_name in SUPPORT_MODELS and len(self.split.train) > MAX_SUPPORT:
            raise ValueError(
                f"model.name={self.model_name} solves kernel ridge over all {len(self.split.train)} "
                f"training conditions (memory and time grow with the square and cube of their "
                f"number; at most {MAX_SUPPORT}): collapse the signatures (data.collapse=drug_cell "
                f"or drug), filter them (data.filters), or train a message-passing model "
                f"(model.name=hetero_gat with graph.mode=sampled)")
        self.batch_size = config.train.batch_size
        if self.batch_size > len(self.split.train):
            # One batch holds the whole training part; evaluation batches are no larger.
            log.warning("train.batch_size %d is larger than the %d training conditions; using "
                        "%d for training and evaluation", self.batch_size,
                        len(self.split.train), len(self.split.train))
            self.batch_size = len(self.split.train)
        self.sampler = None
        if config.graph.mode == "sampled":
            s = config.graph.sampling
            fanouts = parse_fanouts(s.fanouts, s.relation_fanouts,
                                    [k.relation for k in graph.edge_types])
            max_seeds = Counter({d.drug_type: self.batch_size})  # the types may coincide
            max_seeds.update({d.cell_type: self.batch_size})
            max_seeds.update({d.gene_type: len(d.readout)})
            # Calibrated on the seeds of random batches of any part (node ids only, no labels).
            rng = np.random.default_rng(config.seed)
            calibration = [self._seeds(rng.choice(len(d.signatures), self.batch_size))
                           for _ in range(16)]
            self.sampler = NeighbourSampler(graph, self.schema, fanouts, max_seeds,
                                            padding_multiple=config.graph.padding_multiple,
                                            budget=s.budget, calibration_seeds=calibration)
            self.budget = self.sampler.budget
            self.inputs = {}  # every batch brings its own subgraph
        elif config.graph.mode == "full":
            # The whole graph, exactly (no padding), with the sparse backend's index.
            self.budget = PaddingBudget(n_node=graph.num_nodes, n_edge=graph.num_edges, n_graph=1)
            features, _ = flat_nodes(graph, self.schema)
            self.inputs = {
                "topology": Topology.build(graph, self.schema, sparse=True).to_device(),
                "nodes": {"features": jnp.asarray(features),
                          "id": jnp.arange(graph.num_nodes, dtype=jnp.int32)},
                "readout": jnp.asarray(self._readout_pos),
            }
            if config.model.decoder == "kernel_ridge" or config.model.name in SUPPORT_MODELS:
                self.inputs["support"] = self.support(graph.num_nodes)
        else:
            raise ValueError(f"graph.mode is {config.graph.mode!r}; expected 'full' or 'sampled'")

    def support(self, num_nodes: int, position: np.ndarray | None = None) -> dict:
        """The kernel-ridge models' support: the training drugs (at `position` [old position]
        in a graph of `num_nodes`, default the run's own) and the training signatures; where
        drugs have several training conditions, each condition's drug (index into "drug"),
        cell line, covariates and leave-out group (the unit the split holds out)."""
        train = self.split.train
        drug_of = self._drug_pos[train]
        drugs = np.unique(drug_of) if self.several_conditions_per_drug else drug_of
        if self.several_conditions_per_drug and self.model_name not in SUPPORT_MODELS:
            raise ValueError("model.decoder=kernel_ridge needs one training condition per drug "
                             "(consensus signatures); this dataset has several per drug")
        unlabelled = np.setdiff1d(self._drug_pos, drugs)  # held-out drugs (no signatures)
        cells = self._cell_pos[train]
        if position is not None:
            drugs, unlabelled, cells = position[drugs], position[unlabelled], position[cells]
        out = {"drug": jnp.asarray(drugs, jnp.int32),
               "signature": jnp.asarray(self.data.signatures[train], jnp.float32)}
        if self.config.model.standardise_over == "all_drugs":
            out["unlabelled"] = jnp.asarray(unlabelled, jnp.int32)
        if self.several_conditions_per_drug:
            # A training condition is predicted with the split's whole unit (its cell line, its
            # drug) left out, as a test condition is. (Leaving out whole scaffolds of a
            # scaffold split's single-condition drugs changed validation by < 0.001 on folds 0
            # and 1, so those stay leave-one-drug-out.)
            labels = split_groups(self.data, self.split.kind)[train]
            out["groups"] = jax.tree.map(jnp.asarray, leave_out_groups(labels))
            out |= {"condition_drug": jnp.asarray(np.searchsorted(np.unique(drug_of), drug_of),
                                                  jnp.int32),
                    "cell": jnp.asarray(cells, jnp.int32),
                    "covariates": jnp.asarray(self._covariates[train])}
        return out

    # ---- model -----------------------------------------------------------------------------
    @property
    def model_is_baseline(self) -> bool:
        return self.config.model.name in BASELINES or self.config.model.name in GRAPH_HOST_MODELS

    def build_model(self, rngs: nnx.Rngs) -> PerturbationModel | RelationalSGC:
        m = self.config.model
        held_out = {"cold_drug": self.data.drug_type, "scaffold": self.data.drug_type,
                    "cold_cell": self.data.cell_type}.get(self.split.kind)
        if held_out in m.embedded_node_types:
            raise ValueError(f"model.embedded_node_types includes {held_out!r}, the type a "
                             f"{self.split.kind} split holds out: its test nodes would keep "
                             f"their untrained random vectors")
        if m.name not in TRAINED_MODELS:
            raise ValueError(f"unknown model {m.name!r}; expected one of {MODELS}")
        if m.name == "relational_sgc":
            targets = (self.data.drug_type, self.data.gene_type) if m.target_readout else None
            return RelationalSGC(self.schema, hops=m.num_layers, rngs=rngs, targets=targets,
                                 conditions=self.several_conditions_per_drug,
                                 num_covariates=self._covariates.shape[1])
        return PerturbationModel(self.schema, len(self.data.readout), layer=m.name,
                                 hidden=m.hidden, num_layers=m.num_layers, heads=m.heads,
                                 bases=m.bases or None, dropout=m.dropout, channels=m.channels,
                                 steps=m.propagation_steps,
                                 readout_embedding=m.readout_embedding,
                                 embedded_types=tuple(m.embedded_node_types),
                                 decoder=m.decoder, kernel_dim=m.kernel_dim,
                                 # node ids (positions in the full graph) index the table
                                 num_nodes=self.graph.num_nodes, rngs=rngs)

    def warm_start(self, model) -> None:
        """Before training from scratch (not on resume or restore): relational_sgc with
        model.warm_start=kg_ridge starts from the kernel kg_ridge picks on validation."""
        if not isinstance(model, RelationalSGC) or self.config.model.warm_start != "kg_ridge":
            return
        if self.several_conditions_per_drug:
            raise ValueError("model.warm_start=kg_ridge needs one training condition per drug "
                             "(kg_ridge fits consensus signatures); this dataset has several "
                             "per drug: use model.warm_start=''")
        ridge = GraphRidge()
        ridge.fit(self.graph_data(), self.split.train, self.split.validation)
        log.info("relational_sgc starts from kg_ridge's validation choice %s", ridge.chosen)
        model.start_from(ridge.chosen, ridge.training_diagonal)

    def model_report(self, model) -> dict:
        """The summary's "learned" entry: relational_sgc's relation weights (1 = as kg_ridge
        weighs every edge), its hop and chemistry mixture, Tanimoto power and penalty."""
        if not isinstance(model, RelationalSGC):
            return {}
        return model.report()

    def forward(self, model, inputs, batch, *, rngs=None, deterministic=True) -> jax.Array:
        x = {**inputs, **batch}  # the graph and readout are in the batch in sampled mode
        if "graph" in x:  # a sampled subgraph, laid out in the sampler's blocks, whose
            graph = x["graph"]  # topology the batch brings (built on the host)
            x["nodes"] = {"features": graph.nodes["features"], "id": graph.nodes["id"]}
        return model(x["topology"], x["nodes"], x["drug"], x["cell"], x["covariates"],
                     x["readout"], support=x.get("support"), support_row=x.get("support_row"),
                     rngs=rngs, deterministic=deterministic)

    def loss(self, model, inputs, batch, key) -> tuple[jax.Array, dict]:
        pred = self.forward(model, inputs, batch, rngs=nnx.Rngs(dropout=key), deterministic=False)
        if self.config.model.loss == "pearson_centered":
            return 1.0 - jnp.mean(_row_pearson(pred - self.train_mean,
                                               batch["signature"] - self.train_mean)), {}
        return jnp.mean((pred - batch["signature"]) ** 2), {}

    # ---- batches ---------------------------------------------------------------------------
    def examples(self, part: str) -> np.ndarray:
        return self.split.parts()[part]

    def make_batch(self, idx: np.ndarray, sample_seed: tuple[int, ...]) -> dict[str, np.ndarray]:
        batch = {"drug": self._drug_pos[idx], "cell": self._cell_pos[idx],
                 "covariates": self._covariates[idx], "signature": self.data.signatures[idx]}
        if self.sampler is None:
            if "support" in self.inputs:
                batch["support_row"] = self._support_row[idx]
            return batch
        # The batch's subgraph; its nodes are numbered locally, so are the positions.
        sub = self.sampler.sample(self._seeds(idx), np.random.default_rng(sample_seed))
        b = len(idx)
        graph = self.sampler.padded(sub)
        # The sparse index is built here, on the host: sorts inside the step cost more than
        # the products save, numpy's cost milliseconds (and overlap the previous step).
        topology = Topology.from_graphs_tuple(graph, self.sampler.layout, sparse=True)
        return batch | {"graph": graph, "topology": topology, "drug": sub.seeds[:b].astype(np.int32),
                        "cell": sub.seeds[b:2 * b].astype(np.int32),
                        "readout": sub.seeds[2 * b:].astype(np.int32)}

    def _seeds(self, idx: np.ndarray) -> np.ndarray:
        """The sampler's seeds for conditions `idx`: their drugs, cell lines, readout genes."""
        return np.concatenate([self._drug_pos[idx], self._cell_pos[idx], self._readout_pos])

    # ---- metrics and baselines -----------------------------------------------------------
    def metrics(self, part: str, predictions: np.ndarray) -> dict[str, float]:
        idx = self.split.parts()[part]
        return signature_metrics(self.data.signatures[idx], predictions, self.train_mean)

    def graph_data(self) -> PerturbationData:
        """The data as the graph models see it: the ablated graph, and the drugs' SMILES
        permuted with their features under `randomize` of the drug type."""
        data = self.data.with_graph(self.graph)
        if self._drug_order is not None:
            data = dataclasses.replace(data, drug_smiles=data.drug_smiles[self._drug_order])
        return data

    def fit_baseline(self, name: str) -> dict:
        """Fits a baseline (or a closed-form graph model) on this split; returns its validation
        and test metrics and the hyperparameters it chose on validation."""
        if name in GRAPH_HOST_MODELS:
            model, data = GRAPH_HOST_MODELS[name](), self.graph_data()
        else:
            model, data = make_baseline(name, seed=self.config.seed), self.baseline_data
        model.fit(data, self.split.train, self.split.validation)
        predictions = {part: model.predict(data, self.split.parts()[part])
                       for part in ("validation", "test")}
        return {part: self.metrics(part, p) for part, p in predictions.items()} | {
            "chosen": model.chosen, "predictions": predictions}

    def artifacts(self) -> dict[str, dict]:
        """Files the run directory keeps: the split, so a run's parts can be checked or reused."""
        return {"split.json": {"seed": self.config.seed, **self.split.to_json()}}

    def describe(self) -> dict:
        """What a run's summary records about its data and graph."""
        return {
            "split": {"kind": self.split.kind, "fold": self.split.fold,
                      "num_folds": self.split.num_folds,
                      **{k: int(len(v)) for k, v in self.split.parts().items()}},
            "leakage": self.leakage,
            "load_reports": self.load_reports,
            "graph": self.graph.summary(),
            "schema": self.schema.to_json(),
            "graph_mode": self.config.graph.mode,
            "sampling": self.config.graph.sampling.to_dict() if self.sampler else None,
            # Subgraphs this process trimmed to fit the calibrated budget (see sampling.py).
            "sampling_trimmed": dict(self.sampler.trimmed) if self.sampler else None,
            "padding_budget": self.budget.to_json(),
            "dropped_relations": list(self.config.graph.drop_relations),
            "ablation": self.ablation,
        }

