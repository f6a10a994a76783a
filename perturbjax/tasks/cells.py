"""The cell-graph task: classify samples of a dataset in the OmniCellTOSG layout.

Every sample is the same graph (`perturbjax.data.tosg`) with its own expression; a batch is
node values for B samples on one shared topology (`perturbjax.models.cells`). The split is by
donor when the metadata names donors (asserted leak-free), else stratified random, recorded in
the summary; classes are balanced with loss weights computed on the training part only; input
standardisation statistics come from training samples only; the model is selected on
validation macro-F1 and the test part is scored once. Baselines (majority class, logistic
regression, MLP on the expression vector) run on the same split.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from perturbjax.data.splits import donor_split, stratified_split
from perturbjax.data.tosg import EDGE_FILES, EMBEDDING_FILES, TOSGDataset, TOSGError
from perturbjax.eval.metrics import classification_metrics
from perturbjax.graph.hetero import EdgeSet, EdgeType, HeteroGraph, NodeSet
from perturbjax.graph.topology import Topology
from perturbjax.models.cells import CELL_LAYERS, READOUTS, CellGraphClassifier
from perturbjax.models.classifiers import CLASSIFIERS, make_classifier
from perturbjax.tasks.base import SelectionMetric
from perturbjax.training.settings import at_least, config_checker, loop_config, validate_loop_config

log = logging.getLogger(__name__)
SPLITS = ("donor", "stratified")
NORMALIZATIONS = ("none", "log1p")
BALANCING = ("weights", "none")
# Training samples read to estimate per-node standardisation statistics, and samples read at a
# time (memory: READ_CHUNK x N floats).
STATS_SAMPLES = 4096
READ_CHUNK = 256


def base_config() -> ml_collections.ConfigDict:
    """Every setting of a cell-graph run, with defaults (the loop's and the task's own)."""
    c = loop_config()
    c.task = "cells"
    c.data = ml_collections.ConfigDict()
    c.data.root = ""  # an OmniCellTOSG-layout dataset directory (read only)
    c.data.label_column = "cell_type"  # a metadata column or alias (perturbjax.data.tosg)
    # "column=value" or "column=v1|v2" filters, all of which a sample must match (any case).
    c.data.conditions = []
    c.data.edge_files = ["edge_index", "internal_edge_index", "ppi_edge_index"]  # their union
    c.data.symmetric = True  # add each edge's reverse (undirected interaction networks)
    c.data.embedding_files = ["x_name_emb", "x_desc_emb", "x_bio_emb"]  # text features used
    c.data.normalize = "none"  # "log1p": counts scaled to 1e4 per sample, then log1p
    c.data.split = "donor"  # by donor (stratified random when donors are unknown), "stratified"
    c.data.validation_fraction = 0.15
    c.data.test_fraction = 0.15
    c.data.balance = "weights"  # class weights in the training loss, from training counts
    c.data.baseline_features = 4096  # baselines see the most variable nodes (training std), at most

    c.model = ml_collections.ConfigDict()
    c.model.name = "gcn"  # a key of models/cells.py's CELL_LAYERS or of CLASSIFIERS
    c.model.hidden = 32
    c.model.num_layers = 2
    c.model.heads = 2
    c.model.dropout = 0.1
    c.model.readout = "genes"  # a gene-level head (perturbjax/models/cells.py), "mean", "attention"
    c.model.node_embedding = False  # a learned vector per node besides its text features
    c.baselines = list(CLASSIFIERS)

    c.train.num_steps = 300
    c.train.warmup_steps = 20
    c.train.log_every = 10
    c.train.eval_every = 25
    c.train.checkpoint.every = 100
    return c


def validate_config(c: ml_collections.ConfigDict) -> None:
    """ValueError naming the first key no cell-graph run can use."""
    validate_loop_config(c)
    need = config_checker(c)
    need("data.root", lambda v: isinstance(v, str) and v != "",
         "a dataset directory in the OmniCellTOSG layout (--config.data.root=DIR)")
    need("data.label_column", lambda v: isinstance(v, str) and v != "", "a metadata column")
    need("data.conditions", lambda v: all(isinstance(x, str) and "=" in x for x in v),
         "a list of 'column=value' or 'column=v1|v2' strings")
    need("data.edge_files", lambda v: set(v) <= set(EDGE_FILES),
         f"names from {EDGE_FILES} (the layout's edge files, without .npy)")
    need("data.embedding_files", lambda v: set(v) <= set(EMBEDDING_FILES),
         f"names from {EMBEDDING_FILES} (the layout's node embeddings, without .npy)")
    need("data.split", lambda v: v in SPLITS, f"one of {SPLITS}")
    need("data.normalize", lambda v: v in NORMALIZATIONS, f"one of {NORMALIZATIONS}")
    need("data.balance", lambda v: v in BALANCING, f"one of {BALANCING}")
    for key in ("data.validation_fraction", "data.test_fraction"):
        need(key, lambda v: isinstance(v, (int, float)) and 0 < v < 1, "a fraction in (0, 1)")
    need("data.validation_fraction", lambda v: v + c.data.test_fraction < 1,
         f"a fraction with data.test_fraction ({c.data.test_fraction}) summing below 1")
    need("data.baseline_features", at_least(1), "an integer >= 1")
    models = tuple(CELL_LAYERS) + CLASSIFIERS
    need("model.name", lambda v: v in models, f"one of {models}")
    need("baselines", lambda v: set(v) <= set(CLASSIFIERS), f"names from {CLASSIFIERS}")
    for key in ("model.hidden", "model.num_layers", "model.heads"):
        need(key, at_least(1), "an integer >= 1")
    need("model.dropout", lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "in [0, 1)")
    need("model.readout", lambda v: v in READOUTS, f"one of {READOUTS}")


def parse_conditions(items) -> dict[str, list[str]]:
    """["tissue=blood", "sex=female|male"] -> {"tissue": ["blood"], "sex": ["female", "male"]}."""
    out = {}
    for item in items:
        key, _, values = item.partition("=")
        out[key.strip()] = [v.strip() for v in values.split("|")]
    return out


def shared_graph(dataset: TOSGDataset, edge_files, symmetric: bool) -> tuple[HeteroGraph, dict]:
    """One node type, one relation: the union of the chosen edge files (duplicates and
    self-loops removed, reverses added when `symmetric`), and the count of each part."""
    g = dataset.graph
    parts = [g.edges[name] for name in edge_files if name in g.edges]
    pairs = np.concatenate(parts, axis=1) if parts else np.zeros((2, 0), np.int64)
    if symmetric:
        pairs = np.concatenate([pairs, pairs[::-1]], axis=1)
    pairs = pairs[:, pairs[0] != pairs[1]]
    pairs = np.unique(pairs, axis=1) if pairs.size else pairs
    report = {"edge_files": {name: int(g.edges[name].shape[1]) for name in edge_files
                             if name in g.edges},
              "symmetric": bool(symmetric), "edges": int(pairs.shape[1])}
    names = g.node_names or [str(i) for i in range(g.num_nodes)]
    graph = HeteroGraph({"node": NodeSet(np.asarray(names, object))},
                        {EdgeType("node", "interacts", "node"): EdgeSet(pairs[0], pairs[1])})
    return graph, report


def disjoint_copies(graph: HeteroGraph, copies: int, *, pad_nodes: int = 0, pad_edges: int = 0,
                    sparse: bool = False) -> tuple[Topology, np.ndarray]:
    """`copies` disjoint copies of a one-type, one-relation graph laid end to end, padded with
    `pad_nodes` masked nodes and `pad_edges` masked edges (between the last padding node and
    itself): the layout a batch of separately padded graphs has, for comparing it with one
    shared topology. Returns the host topology and each node's copy (padding: the last)."""
    if len(graph.node_types) != 1 or len(graph.edge_types) != 1:
        raise ValueError("disjoint_copies takes a graph of one node type and one relation")
    one = Topology.build(graph, sparse=False)
    n, e = one.num_nodes, one.num_edges
    if pad_edges and not pad_nodes:
        raise ValueError("padding edges need a padding node to join")
    total_n, total_e = copies * n + pad_nodes, copies * e + pad_edges
    offset = np.repeat(np.arange(copies) * n, e)
    senders = np.concatenate([np.tile(one.senders, copies) + offset,
                              np.full(pad_edges, total_n - 1)])
    receivers = np.concatenate([np.tile(one.receivers, copies) + offset,
                                np.full(pad_edges, total_n - 1)])
    layout = dataclasses.replace(one.layout, node_blocks=((0, total_n),),
                                 relations=(one.layout.relations[0]._replace(edge_stop=total_e),),
                                 active_sources=None)
    topology = Topology.from_arrays(
        layout, senders, receivers, np.arange(total_e) < copies * e, np.zeros(total_n),
        np.arange(total_n) < copies * n, sparse=sparse)
    node_graph = np.minimum(np.arange(total_n) // n, copies - 1).astype(np.int32)
    return topology, node_graph


class CellGraphTask:
    """Classify samples (cells, meta-cells) of one shared signalling graph by a label column."""

    selection = SelectionMetric("macro_f1", True)
    report_metrics = ("macro_f1", "accuracy", "balanced_accuracy")
    default_config = staticmethod(base_config)
    validate_config = staticmethod(validate_config)

    def __init__(self, config: ml_collections.ConfigDict):
        validate_config(config)
        self.config = config
        d = config.data
        self.model_name = config.model.name
        self.baselines = tuple(config.baselines)
        self.dataset = TOSGDataset(d.root, parse_conditions(d.conditions),
                                   edge_files=tuple(d.edge_files),
                                   embedding_files=tuple(d.embedding_files))
        codes, classes, known = self.dataset.labels(d.label_column)
        self.label_column = self.dataset.column(d.label_column)
        self.dropped_unknown_label = int((~known).sum())
        if self.dropped_unknown_label:
            log.warning("%d of %d samples have no known %s and are left out",
                        self.dropped_unknown_label, len(known), self.label_column)
        self.samples = np.flatnonzero(known)  # rows of the dataset's (filtered) metadata
        self.labels = codes[known]
        self.classes = classes
        if len(classes) < 2:
            raise TOSGError(f"{self.dataset.metadata_file}: column {self.label_column!r} has "
                            f"{len(classes)} known class(es) among the selected samples; "
                            f"a classifier needs at least 2")
        self.split, self.split_note = self._split()
        self.batch_size = min(config.train.batch_size, len(self.split.train))
        if self.batch_size < config.train.batch_size:
            log.warning("train.batch_size %d is larger than the %d training samples; using %d",
                        config.train.batch_size, len(self.split.train), self.batch_size)
        counts = np.bincount(self.labels[self.split.train], minlength=len(classes))
        self.train_counts = counts
        weights = (len(self.split.train) / (len(classes) * np.maximum(counts, 1))
                   if d.balance == "weights" else np.ones(len(classes)))
        self.class_weight = weights.astype(np.float32)
        self.mean, self.raw_std = self._train_statistics()
        self.std = np.where(self.raw_std > 1e-6, self.raw_std, 1.0).astype(np.float32)
        graph, self.graph_report = shared_graph(self.dataset, d.edge_files, d.symmetric)
        text = [np.asarray(self.dataset.graph.embeddings[n], np.float32)
                for n in d.embedding_files if n in self.dataset.graph.embeddings]
        self.text_dim = sum(t.shape[1] for t in text)
        self.inputs = {
            "topology": Topology.build(graph, sparse=True).to_device(),
            "mean": jnp.asarray(self.mean), "std": jnp.asarray(self.std),
            "text": jnp.asarray(np.concatenate(text, 1)) if text else None,
        }

    # ---- data --------------------------------------------------------------------------
    def _split(self):
        d, seed = self.config.data, self.config.seed
        fractions = dict(validation_fraction=d.validation_fraction, test_fraction=d.test_fraction)
        donors = self.dataset.donors()
        if d.split == "donor" and donors is not None:
            donors = donors[self.samples]
            split = donor_split(donors, seed, **fractions)  # asserts that no donor is shared
            return split, f"by donor ({len(set(donors))} donors; dataset_id|donor_id)"
        if d.split == "donor":
            note = ("stratified random: the metadata names no donors (no donor_id column, or "
                    "fewer than two known donors), so samples of one donor may sit in "
                    "different parts")
            log.warning("%s: %s", self.dataset.metadata_file, note)
        else:
            note = "stratified random (data.split=stratified)"
        return stratified_split(self.labels, seed, **fractions), note

    def _expression(self, rows: np.ndarray) -> np.ndarray:
        """Expression `[len(rows), N]` of task samples `rows`, normalised as configured."""
        x = self.dataset.expression(self.samples[rows])
        if self.config.data.normalize == "log1p":
            negative = np.argwhere(x < 0)
            if len(negative):  # scaled or log values, not counts: log1p would give NaN
                r, g = negative[0]
                meta = self.dataset.metadata.iloc[self.samples[rows[r]]]
                name = (self.dataset.graph.node_names[g]
                        if self.dataset.graph.node_names is not None else f"node {g}")
                raise ValueError(
                    f"{meta['matrix_file_path']}: row {meta['matrix_row_idx']} holds {x[r, g]:.4g} "
                    f"for {name}; data.normalize=log1p needs counts (>= 0): the values look "
                    f"scaled or already logged, so use data.normalize=none")
            total = x.sum(1, keepdims=True)
            x = np.log1p(x / np.maximum(total, 1e-12) * 1e4)
        return x

    def _chunks(self, rows: np.ndarray):
        """Expression of `rows` in chunks of READ_CHUNK samples (memory bounded by N)."""
        for start in range(0, len(rows), READ_CHUNK):
            yield self._expression(rows[start:start + READ_CHUNK])

    def _train_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-node mean and standard deviation over (at most STATS_SAMPLES) training samples,
        accumulated in float64 chunk by chunk."""
        rng = np.random.default_rng(self.config.seed)
        train = self.split.train
        rows = np.sort(rng.choice(train, min(len(train), STATS_SAMPLES), replace=False))
        total = np.zeros(self.dataset.graph.num_nodes)
        squares = np.zeros(self.dataset.graph.num_nodes)
        for x in self._chunks(rows):
            total += x.sum(0, dtype=np.float64)
            squares += np.square(x, dtype=np.float64).sum(0)
        mean = total / len(rows)
        std = np.sqrt(np.maximum(squares / len(rows) - mean ** 2, 0.0))
        return mean.astype(np.float32), std.astype(np.float32)

    def examples(self, part: str) -> np.ndarray:
        return self.split.parts()[part]

    def make_batch(self, idx: np.ndarray, sample_seed: tuple[int, ...]) -> dict:
        return {"x": self._expression(idx), "label": self.labels[idx].astype(np.int32),
                "weight": self.class_weight[self.labels[idx]]}

    # ---- model -------------------------------------------------------------------------
    @property
    def model_is_baseline(self) -> bool:
        return self.model_name in CLASSIFIERS

    def build_model(self, rngs: nnx.Rngs) -> CellGraphClassifier:
        m = self.config.model
        return CellGraphClassifier(len(self.classes), text_dim=self.text_dim,
                                   num_nodes=self.dataset.graph.num_nodes, layer=m.name,
                                   hidden=m.hidden, num_layers=m.num_layers, heads=m.heads,
                                   dropout=m.dropout, readout=m.readout,
                                   node_embedding=int(m.node_embedding), rngs=rngs)

    def forward(self, model, inputs, batch, *, rngs=None, deterministic: bool = True
                ) -> jax.Array:
        values = ((batch["x"] - inputs["mean"]) / inputs["std"]).T  # [N, B]: node-major
        return model(values, inputs["text"], inputs["topology"], rngs=rngs,
                     deterministic=deterministic)

    def loss(self, model, inputs, batch, key):
        logits = self.forward(model, inputs, batch, rngs=nnx.Rngs(dropout=key),
                              deterministic=False)
        per_sample = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        # The weights average 1 over the training part, so a plain mean is the class-balanced
        # objective; a mean, unlike sum(w * l) / sum(w), is also exactly the mean of equal
        # device shares' losses (data parallelism).
        loss = jnp.mean(batch["weight"] * per_sample)
        return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}

    # ---- metrics and baselines ---------------------------------------------------------
    def metrics(self, part: str, predictions: np.ndarray) -> dict:
        return classification_metrics(self.labels[self.examples(part)], predictions,
                                      self.classes)

    def fit_baseline(self, name: str) -> dict:
        parts = {p: self.examples(p) for p in ("train", "validation", "test")}
        # The most variable nodes of the training statistics, read chunk by chunk, so a wide
        # graph (OmniCellTOSG's 533k nodes) never has all samples' full rows in memory.
        most = np.argsort(-self.raw_std, kind="stable")[:self.config.data.baseline_features]
        keep = np.sort(most)
        x = {p: np.concatenate([((c - self.mean) / self.std)[:, keep] for c in self._chunks(i)])
             for p, i in parts.items()}
        y = {p: self.labels[i] for p, i in parts.items()}
        model = make_classifier(name)
        model.fit(x["train"], y["train"], self.class_weight[y["train"]], x["validation"],
                  y["validation"], len(self.classes), self.config.seed)
        predictions = {p: model.scores(x[p]) for p in ("validation", "test")}
        return {p: self.metrics(p, s) for p, s in predictions.items()} | {
            "chosen": model.chosen, "predictions": predictions}

    def artifacts(self) -> dict[str, dict]:
        return {"split.json": {"seed": self.config.seed, "note": self.split_note,
                               "samples": self.dataset.metadata_rows[self.samples].tolist(),
                               **self.split.to_json()}}

    def describe(self) -> dict:
        return {
            "dataset": self.dataset.summary(),
            "label_column": self.label_column,
            "classes": self.classes,
            "train_class_counts": dict(zip(self.classes, self.train_counts.tolist())),
            "class_weights": dict(zip(self.classes, self.class_weight.round(4).tolist())),
            "dropped_unknown_label": self.dropped_unknown_label,
            "split": {"kind": self.split.kind, "note": self.split_note, "fold": None,
                      "num_folds": None,
                      **{k: int(len(v)) for k, v in self.split.parts().items()}},
            "graph": self.graph_report,
            "text_dim": int(self.text_dim),
        }
