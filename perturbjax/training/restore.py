"""A finished run rebuilt from its workdir: config, task (data, split, graph) and the model with
its validation-selected parameters (`model.npz`), or a closed-form model refitted exactly as the
run fitted it (they are deterministic). What `explain`, `predict` and `repurpose` start from.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from perturbjax.tasks import default_config, make_task
from perturbjax.training.checkpoint import WorkdirConflict, load_model


def run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir's run was trained with (keys it predates get their defaults).

    Raises:
      WorkdirConflict: no readable config.json (not a run directory).
    """
    path = os.path.join(workdir, "config.json")
    try:
        with open(path) as f:
            saved = json.load(f)
    except FileNotFoundError:
        raise WorkdirConflict(f"{path} is missing: {workdir} is not a run directory "
                              f"(perturbjax train writes one)") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WorkdirConflict(f"{path} cannot be read as a run config ({e})") from e
    if not isinstance(saved, dict):
        raise WorkdirConflict(f"{path} is not a run config (expected a JSON object)")
    config = default_config(saved.get("task", "perturbation"))
    _merge(config, saved)
    return config


def _merge(config: ml_collections.ConfigDict, saved: dict) -> None:
    with config.unlocked():
        for key, value in saved.items():
            if isinstance(value, dict) and isinstance(config.get(key), ml_collections.ConfigDict):
                _merge(config[key], value)
            else:
                config[key] = value


@dataclasses.dataclass
class TrainedRun:
    """A run ready to predict: `model` (an NNX module) for message-passing runs, `host_model`
    (fitted, with `predict(data, idx)`) for closed-form ones."""

    workdir: str
    config: ml_collections.ConfigDict
    task: object
    model: nnx.Module | None = None
    host_model: object | None = None
    host_data: object | None = None  # the data the host model was fitted on

    @property
    def is_graph_network(self) -> bool:
        return self.model is not None


def load_run(workdir: str) -> TrainedRun:
    """Rebuilds the run in `workdir` (the data are loaded again, as the run loaded them).

    Raises:
      WorkdirConflict: not a finished perturbation run, or a message-passing run trained on
        sampled subgraphs (explanations need the whole graph).
    """
    config = run_config(workdir)
    if config.get("task", "perturbation") != "perturbation":
        raise WorkdirConflict(f"{workdir} holds a {config.task!r} run; this command explains "
                              f"perturbation runs")
    task = make_task(config)
    run = TrainedRun(workdir, config, task)
    if task.model_is_baseline:
        run.host_model, data = task.make_host_model(config.model.name)
        run.host_model.fit(data, task.split.train, task.split.validation)
        run.host_data = data
        return run
    if config.graph.mode != "full":
        raise WorkdirConflict(f"{workdir} was trained on sampled subgraphs (graph.mode="
                              f"{config.graph.mode!r}); explanations need a full-graph run")
    model = task.build_model(nnx.Rngs(config.seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = load_model(workdir, params)
    run.model = nnx.merge(graphdef, jax.tree.map(jnp.asarray, params), rest)
    return run


def condition_function(run: TrainedRun, condition: int):
    """`f(edge_scale [E] or None) -> [G]` predictions for one condition (jitted; the topology
    and inputs are arguments, never constants), and the full-graph topology it scales."""
    task = run.task
    batch = jax.tree.map(jnp.asarray, task.make_batch(np.array([condition]), (0,)))
    inputs = task.inputs
    graphdef, state = nnx.split(run.model)

    @jax.jit
    def forward(state, inputs, batch, scale):
        model = nnx.merge(graphdef, state)
        scaled = {**inputs, "topology": inputs["topology"].with_edge_scale(scale)}
        return task.forward(model, scaled, batch)[0]

    def f(scale=None):
        if scale is None:
            scale = jnp.ones(inputs["topology"].num_edges, jnp.float32)
        return forward(state, inputs, batch, scale)

    f.forward, f.args = forward, (state, inputs, batch)
    return f, inputs["topology"]
