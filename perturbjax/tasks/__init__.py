"""Tasks plug data, model, loss and metrics into the task-agnostic train loop."""

import ml_collections

from perturbjax.tasks.cells import CellGraphTask
from perturbjax.tasks.perturbation import PerturbationTask

TASKS = {"perturbation": PerturbationTask, "cells": CellGraphTask}


def _task_class(name: str):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name]


def make_task(config: ml_collections.ConfigDict):
    """The task named by `config.task`, built from the config."""
    return _task_class(config.task)(config)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first config key no run of its task can use."""
    _task_class(config.task).validate_config(config)


def default_config(name: str) -> ml_collections.ConfigDict:
    """Every setting of task `name` at its default: what a key that an older run's config.json
    lacks meant (see `checkpoint.check_workdir_config`)."""
    return _task_class(name).default_config()
