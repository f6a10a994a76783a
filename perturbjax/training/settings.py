"""The train loop's own settings, shared by every task: seed, training, checkpoints, W&B.

A task's config is `loop_config()` plus its own sections (data, model, baselines, ...), and its
validation calls `validate_loop_config` before checking its own keys with `config_checker`.
"""

from __future__ import annotations

import ml_collections


def loop_config() -> ml_collections.ConfigDict:
    """The settings every task shares, with their defaults: seed, training, checkpoints, W&B.

    A task's config is this plus its own sections (data, model, baselines, ...).
    """
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.task = ""
    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 1000
    c.train.batch_size = 32
    c.train.learning_rate = 3e-3
    c.train.warmup_steps = 100
    c.train.weight_decay = 1e-4
    c.train.clip_norm = 1.0
    c.train.log_every = 50
    c.train.eval_every = 100
    # Data parallelism (perturbjax/training/parallel.py): the global batch `batch_size` is split
    # over a 1-D device mesh, `batch_size / n` examples per device, with pmean of gradients.
    # `num_devices` > 0 uses the first that many local devices, 0 all of them; without
    # `data_parallel` the single-device steps run and `num_devices` is ignored.
    c.train.data_parallel = False
    c.train.num_devices = 0
    # Orbax checkpoints in WORKDIR/checkpoints, for exact resume and preemption (SIGTERM):
    # every `every` steps (0 = never, and SIGTERM then kills as usual), the last `keep` kept.
    c.train.checkpoint = ml_collections.ConfigDict()
    c.train.checkpoint.every = 100
    c.train.checkpoint.keep = 2

    # Baselines (names from the task's `baselines`) to blend with the model after training:
    # the run's result is then the weighted mean of their predictions and the model's, the
    # weights chosen on validation (`loop.ensemble`); empty: the model alone.
    c.ensemble = []

    c.wandb = ml_collections.ConfigDict()
    c.wandb.mode = "auto"  # online with an API key, offline otherwise; "disabled" turns it off
    c.wandb.project = "perturbjax"
    c.wandb.entity = ""
    c.wandb.tags = []
    return c


WANDB_MODES = ("auto", "online", "offline", "disabled")


def config_checker(c: ml_collections.ConfigDict):
    """`need(key, ok, expected)`: raises ValueError naming `key` unless `ok(value)`."""
    def need(key: str, ok, expected: str) -> None:
        value = c
        for part in key.split("."):
            value = value[part]
        if not ok(value):
            raise ValueError(f"config key {key} is {value!r}; expected {expected}")
    return need


def is_integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def at_least(low):
    return lambda v: is_integer(v) and v >= low


def validate_loop_config(c: ml_collections.ConfigDict) -> None:
    """Rejects loop settings no run can use, before any work: a ValueError naming the key (a
    negative batch size would otherwise loop forever, a zero one divide by 0)."""
    need = config_checker(c)
    for key in ("train.num_steps", "train.batch_size", "train.log_every", "train.eval_every",
                "train.checkpoint.keep"):
        need(key, at_least(1), "an integer >= 1")
    for key in ("train.warmup_steps", "train.num_devices", "train.checkpoint.every"):
        need(key, at_least(0), "an integer >= 0")
    need("train.learning_rate", lambda v: isinstance(v, (int, float)) and v > 0, "a number > 0")
    for key in ("train.weight_decay", "train.clip_norm"):
        need(key, lambda v: isinstance(v, (int, float)) and v >= 0, "a number >= 0")
    need("wandb.mode", lambda v: v in WANDB_MODES, f"one of {WANDB_MODES}")
    if "baselines" in c:
        need("ensemble", lambda v: set(v) <= set(c.baselines),
             f"names from baselines ({list(c.baselines)}): an ensemble blends their predictions")
