"""The perturbation task: data, split, graph, model, loss and metrics for the train loop.

The loop in `perturbjax.training.loop` knows nothing of drugs or genes; this class supplies them,
from the pieces that each have their own module:

    config schema            perturbjax/tasks/perturbation_config.py
    data sources             perturbjax/data/sources.py
    graph preparation        perturbjax/graph/prepare.py
    models, by name          perturbjax/models/registry.py
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from perturbjax.data.perturbation import PerturbationData
from perturbjax.data.sources import load_data
from perturbjax.data.splits import make_split, split_groups
from perturbjax.eval.metrics import higher_is_better, signature_metrics
from perturbjax.graph.prepare import prepare_graph
from perturbjax.graph.topology import Topology
from perturbjax.models.baselines import SELECTION_METRIC
from perturbjax.models.kernel_ridge import leave_out_groups
from perturbjax.models.registry import MODELS, ModelInputs, model_names
from perturbjax.models.relational_sgc import RelationalSGC
from perturbjax.tasks.base import SelectionMetric
from perturbjax.tasks.perturbation_config import base_config, validate_config

log = logging.getLogger(__name__)
MAX_SUPPORT = 50_000  # a support model's [support, support] kernel: 10 GB in float32


def _row_pearson(a: jax.Array, b: jax.Array) -> jax.Array:
    """[B] Pearson r of matching rows (eval/metrics.py's, differentiable)."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return jnp.sum(a * b, 1) / jnp.sqrt(jnp.sum(a * a, 1) * jnp.sum(b * b, 1) + 1e-12)


class PerturbationTask:
    """Predict readout-gene signatures of held-out conditions from the knowledge graph.

    Args:
      config: a perturbation run's config (`perturbation_config.base_config` and overrides);
        validated first.

    Raises:
      ValueError: a config no run can use, or one that does not fit the data (naming the key).
    """

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
        self.model_spec = MODELS[config.model.name]
        self.data, self.load_reports = load_data(config)
        d = self.data
        self.split = make_split(d, config.data.split, seed=config.seed,
                                validation_fraction=config.data.validation_fraction,
                                test_fraction=config.data.test_fraction,
                                num_folds=config.data.num_folds or None,
                                fold=config.data.fold if config.data.num_folds else None)
        self.train_mean = d.signatures[self.split.train].mean(0)

        # Positions in the flat node numbering (the graph's preparation never changes the nodes).
        offsets = d.graph.node_offsets()
        self._drug_pos = (d.drug + offsets[d.drug_type]).astype(np.int32)
        self._cell_pos = (d.cell + offsets[d.cell_type]).astype(np.int32)
        self._readout_pos = (d.readout + offsets[d.gene_type]).astype(np.int32)
        self._covariates = d.condition_covariates()
        # Each condition's row in a kernel-ridge model's support (the training part), else -1.
        self._support_row = np.full(len(d.signatures), -1, np.int32)
        self._support_row[self.split.train] = np.arange(len(self.split.train), dtype=np.int32)
        self.several_conditions_per_drug = (len(np.unique(self._drug_pos[self.split.train]))
                                            < len(self.split.train))
        if self.model_spec.family == "support" and len(self.split.train) > MAX_SUPPORT:
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

        max_seeds, calibration = None, ()
        if config.graph.mode == "sampled":
            max_seeds = Counter({d.drug_type: self.batch_size})  # the types may coincide
            max_seeds.update({d.cell_type: self.batch_size})
            max_seeds.update({d.gene_type: len(d.readout)})
            # Calibrated on the seeds of random batches of any part (node ids only, no labels).
            rng = np.random.default_rng(config.seed)
            calibration = [self._seeds(rng.choice(len(d.signatures), self.batch_size))
                           for _ in range(16)]
        prepared = prepare_graph(d.graph, config.graph, seed=config.seed, max_seeds=max_seeds,
                                 calibration_seeds=calibration)
        # Baselines see the guarded graph whatever the ablation (they read only drug targets
        # and features); graph models see the guarded, ablated graph.
        self.baseline_data = d.with_graph(prepared.guarded)
        self.graph, self.schema = prepared.graph, prepared.schema
        self.leakage, self.ablation = prepared.leakage, prepared.ablation
        # Drug features permuted: closed-form graph models read the drugs' SMILES, which follow.
        self._drug_order = prepared.permuted.get(d.drug_type)
        if config.graph.ablation != "none" and self.baselines:
            # They read the unablated graph, so they would repeat the reference run's scores.
            log.info("graph.ablation is %r: baselines skipped (they never see the ablation; "
                     "the graph.ablation=none run of the same seed and fold has them)",
                     config.graph.ablation)
            self.baselines = ()
        self.sampler, self.budget = prepared.sampler, prepared.budget
        self.inputs = {}  # sampled mode: every batch brings its own subgraph
        if prepared.topology is not None:
            self.inputs = {
                "topology": prepared.topology,
                "nodes": {"features": jnp.asarray(prepared.features),
                          "id": jnp.arange(self.graph.num_nodes, dtype=jnp.int32)},
                "readout": jnp.asarray(self._readout_pos),
            }
            if config.model.decoder == "kernel_ridge" or self.model_spec.family == "support":
                self.inputs["support"] = self.support(self.graph.num_nodes)

    def support(self, num_nodes: int, position: np.ndarray | None = None) -> dict:
        """The kernel-ridge models' support: the training drugs (at `position` [old position]
        in a graph of `num_nodes`, default the run's own) and the training signatures; where
        drugs have several training conditions, each condition's drug (index into "drug"),
        cell line, covariates and leave-out group (the unit the split holds out)."""
        train = self.split.train
        drug_of = self._drug_pos[train]
        drugs = np.unique(drug_of) if self.several_conditions_per_drug else drug_of
        if self.several_conditions_per_drug and self.model_spec.family != "support":
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
            # drug) left out, as a test condition is. A scaffold split's single-condition drugs
            # stay leave-one-drug-out (docs/decisions.md).
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
        """Whether the model is fitted on the host in closed form (`make_host_model`)."""
        return not self.model_spec.trained

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        """The trained model `model.name` names (perturbjax/models/registry.py), built for this
        run's graph and data."""
        m = self.config.model
        held_out = {"cold_drug": self.data.drug_type, "scaffold": self.data.drug_type,
                    "cold_cell": self.data.cell_type}.get(self.split.kind)
        if held_out in m.embedded_node_types:
            raise ValueError(f"model.embedded_node_types includes {held_out!r}, the type a "
                             f"{self.split.kind} split holds out: its test nodes would keep "
                             f"their untrained random vectors")
        if not self.model_spec.trained:
            raise ValueError(f"model {m.name!r} is fitted on the host (make_host_model); the "
                             f"trained models are {model_names('encoder', 'support')}")
        inputs = ModelInputs(self.schema, len(self.data.readout), self.graph.num_nodes,
                             self.data.drug_type, self.data.gene_type, self._covariates.shape[1],
                             self.several_conditions_per_drug)
        return self.model_spec.build(inputs, m, rngs)

    def make_host_model(self, name: str) -> tuple[object, PerturbationData]:
        """A closed-form model (a baseline or a host graph model) and the data it is fitted on:
        graph models read the ablated graph, baselines the guarded one."""
        spec = MODELS[name]
        if spec.family == "host":
            return spec.build(), self.graph_data()
        return spec.build(self.config.seed), self.baseline_data

    def warm_start(self, model) -> None:
        """Before training from scratch (not on resume or restore): relational_sgc with
        model.warm_start=kg_ridge starts from the kernel kg_ridge picks on validation."""
        if not isinstance(model, RelationalSGC) or self.config.model.warm_start != "kg_ridge":
            return
        if self.several_conditions_per_drug:
            raise ValueError("model.warm_start=kg_ridge needs one training condition per drug "
                             "(kg_ridge fits consensus signatures); this dataset has several "
                             "per drug: use model.warm_start=''")
        ridge = MODELS["kg_ridge"].build()
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
        model, data = self.make_host_model(name)
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

