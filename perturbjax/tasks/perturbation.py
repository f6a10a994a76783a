"""The perturbation task: data, split, padded graph, model, loss and metrics for the train loop.

The loop in `perturbjax.train.loop` knows nothing of drugs or genes; this class supplies them.
"""

from __future__ import annotations

from typing import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from perturbjax.data.demo import DemoConfig, make_demo
from perturbjax.data.perturbation import PerturbationData
from perturbjax.data.splits import make_split
from perturbjax.eval.metrics import signature_metrics
from perturbjax.graph.padding import GraphSchema, PaddingBudget, to_graphs_tuple
from perturbjax.models.baselines import BASELINES, SELECTION_METRIC, make_baseline
from perturbjax.models.perturbation import ENCODERS, PerturbationModel


def load_data(config: ml_collections.ConfigDict) -> PerturbationData:
    """The dataset named by `config.data.source`."""
    if config.data.source == "demo":
        return make_demo(DemoConfig(**config.data.demo.to_dict()))
    raise ValueError(f"unknown data source {config.data.source!r}; expected 'demo'")


class PerturbationTask:
    """Predict readout-gene signatures of held-out conditions from the knowledge graph."""

    selection_metric = SELECTION_METRIC

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.data = load_data(config)  # baselines see the full data, whatever the ablation
        graph = self.data.graph.drop_edge_types(config.graph.drop_relations)
        graph = graph.without_features(config.graph.drop_node_features)
        self.graph = graph
        self.schema = GraphSchema.of(graph)
        self.budget = PaddingBudget.fitting(graph, multiple=config.graph.padding_multiple)
        self.split = make_split(self.data, config.data.split, seed=config.seed,
                                validation_fraction=config.data.validation_fraction,
                                test_fraction=config.data.test_fraction)
        self.train_mean = self.data.signatures[self.split.train].mean(0)

        offsets = graph.node_offsets()
        d = self.data
        self._drug_pos = (d.drug + offsets[d.drug_type]).astype(np.int32)
        self._cell_pos = (d.cell + offsets[d.cell_type]).astype(np.int32)
        self._covariates = d.condition_covariates()
        self.inputs = {
            "graph": jax.tree.map(jnp.asarray, to_graphs_tuple(graph, self.budget, self.schema)),
            "readout": jnp.asarray(d.readout + offsets[d.gene_type], jnp.int32),
        }
        self.batch_size = config.train.batch_size

    # ---- model -----------------------------------------------------------------------------
    @property
    def model_is_baseline(self) -> bool:
        return self.config.model.name in BASELINES

    def build_model(self, rngs: nnx.Rngs) -> PerturbationModel:
        m = self.config.model
        if m.name not in ENCODERS:
            raise ValueError(f"unknown model {m.name!r}; expected one of "
                             f"{ENCODERS + tuple(sorted(BASELINES))}")
        return PerturbationModel(self.schema, len(self.data.readout), layer=m.name,
                                 hidden=m.hidden, num_layers=m.num_layers, heads=m.heads,
                                 bases=m.bases or None, dropout=m.dropout, channels=m.channels,
                                 steps=m.propagation_steps, rngs=rngs)

    def forward(self, model, inputs, batch, *, rngs=None, deterministic=True) -> jax.Array:
        return model(inputs["graph"], batch["drug"], batch["cell"], batch["covariates"],
                     inputs["readout"], rngs=rngs, deterministic=deterministic)

    def loss(self, model, inputs, batch, key) -> jax.Array:
        pred = self.forward(model, inputs, batch, rngs=nnx.Rngs(dropout=key), deterministic=False)
        return jnp.mean((pred - batch["signature"]) ** 2)

    # ---- batches ---------------------------------------------------------------------------
    def _batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {"drug": self._drug_pos[idx], "cell": self._cell_pos[idx],
                "covariates": self._covariates[idx], "signature": self.data.signatures[idx]}

    def train_batches(self, seed: int) -> Iterator[dict[str, np.ndarray]]:
        """Endless shuffled batches of training conditions, all of the same size."""
        rng = np.random.default_rng(seed)
        train, size = self.split.train, min(self.batch_size, len(self.split.train))
        while True:
            order = rng.permutation(train)
            for start in range(0, len(order) - size + 1, size):
                yield self._batch(order[start:start + size])

    def eval_batches(self, part: str) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        """Fixed-size batches of a split part; the last is filled up and its real size given."""
        idx = self.split.parts()[part]
        for start in range(0, len(idx), self.batch_size):
            chunk = idx[start:start + self.batch_size]
            filled = np.resize(chunk, self.batch_size)
            yield self._batch(filled), len(chunk)

    # ---- metrics and baselines -----------------------------------------------------------
    def metrics(self, part: str, predictions: np.ndarray) -> dict[str, float]:
        idx = self.split.parts()[part]
        return signature_metrics(self.data.signatures[idx], predictions, self.train_mean)

    def fit_baseline(self, name: str) -> dict:
        """Fits a baseline on this split; returns its validation and test metrics."""
        baseline = make_baseline(name, seed=self.config.seed)
        baseline.fit(self.data, self.split.train, self.split.validation)
        return {part: self.metrics(part, baseline.predict(self.data, self.split.parts()[part]))
                for part in ("validation", "test")} | {"chosen": baseline.chosen}

    def describe(self) -> dict:
        """What a run's summary records about its data and graph."""
        return {
            "split": {"kind": self.split.kind,
                      **{k: int(len(v)) for k, v in self.split.parts().items()}},
            "graph": self.graph.summary(),
            "schema": self.schema.to_json(),
            "padding_budget": self.budget.to_json(),
            "dropped_relations": list(self.config.graph.drop_relations),
        }

