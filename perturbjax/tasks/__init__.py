"""Tasks plug data, model, loss and metrics into the task-agnostic train loop."""

import ml_collections

from perturbjax.tasks.perturbation import PerturbationTask

TASKS = {"perturbation": PerturbationTask}


def make_task(config: ml_collections.ConfigDict):
    """The task named by `config.task`, built from the config."""
    if config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r}; expected one of {sorted(TASKS)}")
    return TASKS[config.task](config)
