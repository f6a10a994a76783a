"""Task-agnostic training: `train_and_evaluate(config, workdir)`.

A task supplies the model, batches, loss and metrics. The loop owns the optimizer, the jitted
train and predict steps (each compiled once: every batch has the same shapes and the padded
graph is passed as an argument, not captured), validation-only model selection, the single
final test evaluation, and the run directory:

    WORKDIR/config.json    the resolved config
    WORKDIR/metrics.jsonl  one JSON object per logged train step or evaluation
    WORKDIR/summary.json   {"validation": {...}, "test": {...}, "baselines": {name: {...}}, ...}
    WORKDIR/<name>.json    the task's own records (e.g. split.json: the indices of every part)
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from perturbjax.config import config_to_json
from perturbjax.tasks import make_task
from perturbjax.train.logging import RunLogger


def make_optimizer(train: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with linear warm-up then cosine decay, after global-norm gradient clipping."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=train.learning_rate, warmup_steps=train.warmup_steps,
        decay_steps=max(train.num_steps, train.warmup_steps + 1), end_value=0.0)
    tx = optax.chain(optax.clip_by_global_norm(train.clip_norm),
                     optax.adamw(schedule, weight_decay=train.weight_decay))
    return tx, schedule


def make_steps(task, graphdef, rest, tx):
    """Pure jitted train and predict steps over (params, optimizer state).

    `rest` is the model's non-parameter state (e.g. RNG streams), held fixed: randomness comes
    from the step's key so that a step is a pure function of its arguments.
    """

    def train_step(params, opt_state, key, inputs, batch):
        def loss_fn(p):
            return task.loss(nnx.merge(graphdef, p, rest), inputs, batch, key)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        stats = {"loss": loss, "grad_norm": optax.tree.norm(grads),
                 "update_norm": optax.tree.norm(updates), "param_norm": optax.tree.norm(params)}
        return params, opt_state, stats

    def predict_step(params, inputs, batch):
        return task.forward(nnx.merge(graphdef, params, rest), inputs, batch)

    return jax.jit(train_step, donate_argnums=(0, 1)), jax.jit(predict_step)


def predict(predict_step, params, task, part: str) -> np.ndarray:
    out = [np.asarray(predict_step(params, task.inputs, batch))[:n]
           for batch, n in task.eval_batches(part)]
    return np.concatenate(out)


def host() -> dict:
    """What ran the job, for the summary (results tables name their hardware)."""
    return {"cpus": os.cpu_count(), "jax_backend": jax.default_backend(),
            "devices": sorted({d.device_kind for d in jax.devices()}), "jax": jax.__version__}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, experiment: str = "",
                       variant: str = "", progress: bool = True) -> dict:
    """Trains the configured model, evaluates it and the baselines, writes the run directory.

    Returns:
      The summary that is also written to `workdir/summary.json`.
    """
    start = time.time()
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config_to_json(config))
    task = make_task(config)
    for name, record in task.artifacts().items():
        with open(os.path.join(workdir, name), "w") as f:
            json.dump(record, f)
    logger = RunLogger(workdir, config, experiment=experiment, variant=variant)
    summary = {"experiment": experiment, "variant": variant, "model": config.model.name,
               "seed": config.seed, "selection_metric": task.selection_metric, "host": host(),
               **task.describe()}
    try:
        if task.model_is_baseline:
            result = task.fit_baseline(config.model.name)
            summary.update(validation=result["validation"], test=result["test"],
                           chosen=result["chosen"])
        else:
            summary.update(_train(config, task, logger, progress))
        summary["baselines"] = {}
        for name in tqdm(config.baselines, desc="baselines", disable=not progress):
            summary["baselines"][name] = task.fit_baseline(name)
        for part in ("validation", "test"):
            logger.log(summary.get("step", 0), f"final_{part}", summary[part])
    finally:
        logger.close()
    summary["wall_time_s"] = round(time.time() - start, 2)
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def _train(config, task, logger, progress) -> dict:
    t = config.train
    model = task.build_model(nnx.Rngs(config.seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx, schedule = make_optimizer(t)
    opt_state = tx.init(params)
    train_step, predict_step = make_steps(task, graphdef, rest, tx)
    key = jax.random.key(config.seed)
    batches = task.train_batches(config.seed)
    metric = task.selection_metric

    best = {"score": -np.inf, "step": 0, "params": jax.tree.map(np.asarray, params)}
    bar = tqdm(range(1, t.num_steps + 1), desc="train", disable=not progress, mininterval=0.5)
    step_start = time.time()
    for step in bar:
        key, step_key = jax.random.split(key)
        params, opt_state, stats = train_step(params, opt_state, step_key, task.inputs, next(batches))
        if step % t.log_every == 0 or step == t.num_steps:
            stats = jax.device_get(stats)
            if not np.isfinite(stats["loss"]):
                raise FloatingPointError(f"loss is {stats['loss']} at step {step}")
            elapsed, step_start = time.time() - step_start, time.time()
            logger.log(step, "train", {**stats, "learning_rate": float(schedule(step)),
                                       "steps_per_s": t.log_every / max(elapsed, 1e-9)})
            bar.set_postfix(loss=f"{stats['loss']:.4f}")
        if step % t.eval_every == 0 or step == t.num_steps:
            val = task.metrics("validation", predict(predict_step, params, task, "validation"))
            logger.log(step, "validation", val)
            if val[metric] > best["score"]:
                best = {"score": val[metric], "step": step,
                        "params": jax.tree.map(np.asarray, params)}
            bar.set_postfix(loss=f"{float(stats['loss']):.4f}", **{f"val_{metric}": f"{val[metric]:.3f}"})

    # The test part is evaluated once, with the parameters chosen on validation.
    chosen = jax.tree.map(jnp.asarray, best["params"])
    return {
        "step": t.num_steps,
        "selected_step": best["step"],
        "validation": task.metrics("validation", predict(predict_step, chosen, task, "validation")),
        "test": task.metrics("test", predict(predict_step, chosen, task, "test")),
        "num_params": int(sum(x.size for x in jax.tree.leaves(best["params"]))),
        "compilations": {"train_step": train_step._cache_size(),
                         "predict_step": predict_step._cache_size()},
    }
