"""The contract between a task and the task-agnostic train loop (`perturbjax.training.loop`).

A task knows its data, model, loss, metrics and baselines. The loop owns everything that is the
same for every task: the order of training batches and skipping them on resume, filling the last
evaluation batch, dividing batches into device shares (`perturbjax.training.batching`), the
optimizer, checkpoints, logging and validation-only model selection.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import jax
import numpy as np
from flax import nnx

PARTS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class SelectionMetric:
    """The validation metric that picks a run's parameters, and which way is better."""

    name: str
    higher_is_better: bool = True

    def better(self, value: float, than: float) -> bool:
        return value > than if self.higher_is_better else value < than

    @property
    def worst(self) -> float:
        return -np.inf if self.higher_is_better else np.inf


class Task(Protocol):
    """What a task supplies to the loop (`PerturbationTask` and `CellGraphTask` are two).

    Attributes:
      selection: the validation metric of model selection, with its direction.
      report_metrics: the metric keys a results table shows, selection metric first.
      model_name: the configured model (a trained model, or a baseline fitted instead).
      baselines: names of the baselines fitted beside the model, in the same harness.
      batch_size: examples per batch (training and evaluation).
      inputs: device arrays every batch shares (a whole graph and its topology), passed to
        every step as an argument, never captured; `{}` when each batch brings its own.
      model_is_baseline: True when `model_name` is fitted on the host, with no training loop.

    Optional methods the loop calls when a task has them: `warm_start(model)` before training
    from scratch (never on resume), and `model_report(model) -> dict`, what the selected model
    learned, kept in the summary under "learned" when not empty.
    """

    selection: SelectionMetric
    report_metrics: tuple[str, ...]
    model_name: str
    baselines: tuple[str, ...]
    batch_size: int
    inputs: dict
    model_is_baseline: bool

    def examples(self, part: str) -> np.ndarray:
        """The example indices of a split part ("train", "validation" or "test")."""

    def make_batch(self, idx: np.ndarray, sample_seed: tuple[int, ...]) -> dict[str, Any]:
        """Host arrays of the examples `idx` (every batch the same shapes); `sample_seed`
        seeds whatever randomness a batch has besides its examples (a sampled subgraph)."""

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module: ...

    def forward(self, model: nnx.Module, inputs: dict, batch: dict) -> jax.Array:
        """Predictions `[B, ...]` of a batch, deterministic (evaluation)."""

    def loss(self, model: nnx.Module, inputs: dict, batch: dict, key: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The training loss of a batch and auxiliary scalars to log beside it."""

    def metrics(self, part: str, predictions: np.ndarray) -> dict:
        """Scores of a part's predictions (rows in `examples(part)` order)."""

    def fit_baseline(self, name: str) -> dict:
        """{"validation": metrics, "test": metrics, "chosen": hyperparameters, "predictions":
        {"validation": array, "test": array}} of a baseline fitted on the training part, its
        hyperparameters chosen on validation (predictions in `examples(part)` order)."""

    def artifacts(self) -> dict[str, dict]:
        """JSON records the run directory keeps (file name -> record)."""

    def describe(self) -> dict:
        """What a run's summary records about its data."""
