"""Task-agnostic training: `train_and_evaluate(config, workdir)`.

A task (the `perturbjax.tasks.base.Task` contract) supplies the model, batches, loss, metrics
and baselines. The loop owns batch order and device shares (`batching.py`), the optimizer, the jitted
train and predict steps (each compiled once: every batch has the same shapes and the padded
graph is passed as an argument, not captured), validation-only model selection, the single
final test evaluation, and the run directory:

    WORKDIR/config.json    the resolved config
    WORKDIR/metrics.jsonl  one JSON object per logged train step or evaluation
    WORKDIR/summary.json   {"validation": {...}, "test": {...}, "baselines": {name: {...}}, ...}
    WORKDIR/<name>.json    the task's own records (e.g. split.json: the indices of every part)
    WORKDIR/parts.json     perturbation runs: each part's drugs and cell lines and the readout
                           genes, ids and names (`perturbjax runs show` lists them without data)
    WORKDIR/checkpoints/   every `train.checkpoint.every` steps (see `checkpoint.py`)
    WORKDIR/model.npz      the validation-selected parameters, when training ends (what
                           `perturbjax explain` and `predict` load)
    WORKDIR/predictions.npz  validation and test predictions of the model and of every baseline
                           (`write_predictions`); with `ensemble`, "model" is the blend and
                           "model_alone" the trained model's own

A workdir with checkpoints is resumed from the latest one, exactly: the batches are a function of
(seed, step), the PRNG key, optimizer state and validation selection so far are restored, and
metrics.jsonl is cut back to what it held at that checkpoint. On SIGTERM or a first Ctrl-C the loop saves a
checkpoint at the next step boundary (with several processes, at a step they agree on; see
`checkpoint.StopSignals`) and raises `checkpoint.Preempted` (no summary.json).

With `train.data_parallel` the steps are the shard_map ones of `parallel.py`: the global batch
`train.batch_size` is split over a 1-D "data" mesh of all devices (or the first
`train.num_devices` of a single process), and parameters, optimizer state and the padded graph
are replicated.

With several processes (multi-host, after `parallel.initialize_processes`; `train.data_parallel`
is then required) every process runs the whole loop, evaluation and baselines included, on the
same global batches, of which it builds only its devices' shares; all call the checkpoint saves
and restores. Only process 0 writes config.json, metrics.jsonl, summary.json, the task's records
and W&B, and shows progress bars.

Train records carry, besides the step's statistics and learning rate, the throughput of the
interval since the previous train record: `step_time_s` (mean wall seconds per step),
`steps_per_s` and `examples_per_s` (global batch conditions per second). Evaluation and
checkpoint saves are not counted; the first interval includes compilation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from perturbjax.config import config_to_json
from perturbjax.runs import PARTS_FILE, parts_record
from perturbjax.tasks import default_config, make_task, validate_config
from perturbjax.training.batching import eval_batches, train_batches
from perturbjax.training.checkpoint import (Checkpoints, Preempted, StopSignals, check_workdir_config,
                                         save_model)
from perturbjax.training.logging import RunLogger, peak_rss_gib
from perturbjax.training.optim import apply_gradients, make_optimizer
from perturbjax.training.parallel import (ProcessSetupError, Shares, make_mesh, make_parallel_steps,
                                       replicate)


def make_steps(task, graphdef, rest, tx):
    """Pure jitted train and predict steps over (params, optimizer state).

    `rest` is the model's non-parameter state (e.g. RNG streams), held fixed: randomness comes
    from the step's key so that a step is a pure function of its arguments.
    """

    def train_step(params, opt_state, key, inputs, batch):
        def loss_fn(p):
            return task.loss(nnx.merge(graphdef, p, rest), inputs, batch, key)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return apply_gradients(tx, params, opt_state, grads, loss, aux)

    def predict_step(params, inputs, batch):
        return task.forward(nnx.merge(graphdef, params, rest), inputs, batch)

    return jax.jit(train_step, donate_argnums=(0, 1)), jax.jit(predict_step)


def predict(predict_step, params, task, part: str, seed: int, inputs=None, shares=None
            ) -> np.ndarray:
    """Predictions for every example of a split part; `inputs` defaults to `task.inputs`, and
    `shares` (data parallelism) says how each batch is divided over the devices."""
    inputs = task.inputs if inputs is None else inputs
    out = [np.asarray(predict_step(params, inputs, batch))[:n]
           for batch, n in eval_batches(task, part, seed, shares)]
    return np.concatenate(out)


def host() -> dict:
    """What ran the job, for the summary (results tables name their hardware)."""
    return {"cpus": os.cpu_count(), "jax_backend": jax.default_backend(),
            "devices": sorted({d.device_kind for d in jax.devices()}), "jax": jax.__version__,
            "processes": jax.process_count(), "device_count": jax.device_count()}


def ensemble(task, members: dict, resolution: int = 10, progress: bool = False
             ) -> tuple[dict, dict]:
    """Blends members' predictions ({name: {"validation", "test"}}, "model" first) with the
    weights on a simplex grid of step 1/resolution that score best on validation (the task's
    selection metric; ties go to the heavier model weight), so the test part is scored once,
    with weights chosen without it. Returns ({name: weight}, {part: blended predictions})."""
    names = list(members)
    sign = 1.0 if task.selection.higher_is_better else -1.0

    def compositions(total, parts):  # the model's share first, from the largest down
        if parts == 1:
            yield (total,)
            return
        for first in range(total, -1, -1):
            for rest in compositions(total - first, parts - 1):
                yield (first,) + rest

    def blend(weights, part):
        return sum(w * np.asarray(members[n][part], np.float64)
                   for w, n in zip(weights, names) if w)

    best, best_score = None, -np.inf
    grid = math.comb(resolution + len(names) - 1, len(names) - 1)  # grows fast with members
    for counts in tqdm(compositions(resolution, len(names)), total=grid, desc="ensemble",
                       disable=not progress):
        weights = [c / resolution for c in counts]
        score = sign * task.metrics("validation", blend(weights, "validation"))[task.selection.name]
        if score > best_score:
            best, best_score = weights, score
    return ({n: round(w, 6) for n, w in zip(names, best)},
            {part: blend(best, part).astype(np.float32) for part in ("validation", "test")})


def write_predictions(path: str, task, predictions: dict) -> None:
    """`predictions.npz`: for the validation and test parts, each example's index in the task's
    data (`index/PART`) and the predictions of the model (`model/PART`) and of every baseline
    (`baseline/NAME/PART`; with `ensemble`, `model` is the blend and `model_alone/PART` the
    trained model), rows in the same order; so ensembles and per-example analyses need
    no refitting."""
    arrays = {f"index/{part}": np.asarray(task.examples(part)) for part in ("validation", "test")}
    for who, parts in predictions.items():
        arrays.update({f"{who}/{part}": np.asarray(v, np.float32) for part, v in parts.items()})
    with open(f"{path}.tmp", "wb") as f:
        np.savez(f, **arrays)
    os.replace(f"{path}.tmp", path)


def _write(path: str, text: str) -> None:
    """Writes whole or not at all: the other processes of a multi-host run may be reading it."""
    with open(f"{path}.tmp", "w") as f:
        f.write(text)
    os.replace(f"{path}.tmp", path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, experiment: str = "",
                       variant: str = "", progress: bool = True, group: str | None = None,
                       job_type: str | None = None) -> dict:
    """Trains the configured model, evaluates it and the baselines, writes the run directory.

    `experiment` and `variant` are recorded in the summary and are the W&B group and job type
    unless `group` / `job_type` are given.

    Resumes from the latest checkpoint in `workdir/checkpoints` if there is one.

    Returns:
      The summary that is also written to `workdir/summary.json`.

    Raises:
      ValueError: a config value no run can use (the key is named).
      checkpoint.WorkdirConflict: `workdir/config.json` holds a different config.
      checkpoint.Preempted: SIGTERM arrived during training; a checkpoint was saved and
        summary.json was not written (rerunning resumes).
      parallel.ProcessSetupError: several processes without `train.data_parallel`, or processes
        that see different checkpoints (a workdir not shared by all; see
        `checkpoint.Checkpoints.latest_step`).
    """
    start = time.time()
    validate_config(config)  # before anything is written
    if jax.process_count() > 1 and not config.train.data_parallel:
        raise ProcessSetupError(f"{jax.process_count()} processes train one model only with "
                                f"data parallelism: pass --config.train.data_parallel=True")
    primary = jax.process_index() == 0
    progress = progress and primary
    config_json = config_to_json(config)
    check_workdir_config(workdir, config_json, config_to_json(default_config(config.task)))
    task = make_task(config)  # loads and checks the data: nothing is written before it succeeds
    os.makedirs(workdir, exist_ok=True)
    if primary:
        _write(os.path.join(workdir, "config.json"), config_json)
        for name, record in task.artifacts().items():
            _write(os.path.join(workdir, name), json.dumps(record))
        parts = parts_record(task)
        if parts is not None:
            _write(os.path.join(workdir, PARTS_FILE), json.dumps(parts))
    ckpt = Checkpoints(workdir, config.train.checkpoint.keep)
    resume = None if task.model_is_baseline else ckpt.latest_step()
    loop_state = ckpt.read_json(resume)["loop"] if resume is not None else None
    if resume is not None and primary:
        print(f"perturbjax: resuming from step {resume} ({ckpt.directory})", file=sys.stderr)
    logger = RunLogger(workdir, config, experiment=experiment, variant=variant,
                       keep_bytes=loop_state["metrics_offset"] if loop_state else 0,
                       group=group, job_type=job_type, write=primary)
    summary = {"experiment": experiment, "variant": variant, "task": config.task,
               "model": task.model_name, "seed": config.seed,
               # Runs of one config share it whatever their workdir (config.json holds the config).
               "config_hash": hashlib.sha256(config_json.encode()).hexdigest()[:16],
               "selection_metric": task.selection.name,
               "selection_higher_is_better": task.selection.higher_is_better,
               "report_metrics": list(task.report_metrics), "host": host(),
               "resumed_from_step": resume, **task.describe()}
    try:
        if task.model_is_baseline:
            result = task.fit_baseline(task.model_name)
            predictions = {"model": result.pop("predictions")}
            summary.update(validation=result["validation"], test=result["test"],
                           chosen=result["chosen"])
        else:
            result = _train(config, task, logger, progress, ckpt, config_json, loop_state)
            predictions = {"model": result.pop("predictions")}
            summary.update({part: task.metrics(part, predictions["model"][part])
                            for part in ("validation", "test")}, **result)
        summary["baselines"] = {}
        for name in tqdm(task.baselines, desc="baselines", disable=not progress):
            result = task.fit_baseline(name)
            predictions[f"baseline/{name}"] = result.pop("predictions")
            summary["baselines"][name] = result
        if config.ensemble:
            summary["model_alone"] = {part: summary[part] for part in ("validation", "test")}
            predictions["model_alone"] = predictions["model"]
            weights, predictions["model"] = ensemble(
                task, {"model": predictions["model_alone"],
                       **{name: predictions[f"baseline/{name}"] for name in config.ensemble}},
                progress=progress)
            summary["ensemble_weights"] = weights
            summary.update({part: task.metrics(part, predictions["model"][part])
                            for part in ("validation", "test")})
        if primary:
            write_predictions(os.path.join(workdir, "predictions.npz"), task, predictions)
        for part in ("validation", "test"):
            logger.log(summary.get("step", 0), f"final_{part}", summary[part])
            for name, result in summary["baselines"].items():  # `compare --wandb` reads them
                logger.log(summary.get("step", 0), f"final_{part}_baseline/{name}", result[part])
    finally:
        ckpt.close()  # waits for a save in flight
        logger.close()
    summary.update(task.describe())  # again: what the run did to its data (e.g. trims) counts
    summary["wall_time_s"] = round(time.time() - start, 2)
    summary["peak_rss_gib"] = round(peak_rss_gib(), 3)
    if primary:
        _write(os.path.join(workdir, "summary.json"), json.dumps(summary, indent=2))
    return summary


class _TrainClock:
    """Wall time of the training steps between train records (evaluation and checkpoint saves
    paused out), as step_time_s, steps_per_s and examples_per_s."""

    def __init__(self, step: int, batch_size: int):
        self.step, self.start, self.batch_size = step, time.time(), batch_size

    def lap(self, step: int) -> dict:
        now = time.time()
        seconds, steps = max(now - self.start, 1e-9), step - self.step
        self.step, self.start = step, now
        return {"step_time_s": seconds / steps, "steps_per_s": steps / seconds,
                "examples_per_s": steps * self.batch_size / seconds}

    @contextlib.contextmanager
    def paused(self, outputs):
        """Time in the block is not training time. The step's `outputs` are waited for first:
        steps run asynchronously, and the step's own compute is training time."""
        jax.block_until_ready(outputs)
        begin = time.time()
        try:
            yield
        finally:
            self.start += time.time() - begin


def _train(config, task, logger, progress, ckpt, config_json, loop_state) -> dict:
    """The training loop; `loop_state` (the latest checkpoint's "loop" item, or None) resumes it.

    Checkpoints are saved after a step's logging and evaluation, every `train.checkpoint.every`
    steps, at the last step of a run at least that long, and on SIGTERM.
    """
    t = config.train
    every = t.checkpoint.every
    model = task.build_model(nnx.Rngs(config.seed))
    warm_start = getattr(task, "warm_start", None)
    if warm_start is not None and loop_state is None:  # a resumed run restores its parameters
        warm_start(model)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx, schedule = make_optimizer(t)
    opt_state = tx.init(params)
    if t.data_parallel:
        mesh = make_mesh(t.num_devices)
        train_step, predict_step = make_parallel_steps(task, graphdef, rest, tx, mesh)
        # Replicated once, so every step sees the same shardings (one compilation) and the
        # padded graph is not copied to the devices again at every step.
        place = lambda tree: replicate(tree, mesh)  # noqa: E731
        shares = Shares.of(mesh)
    else:
        train_step, predict_step = make_steps(task, graphdef, rest, tx)
        place = lambda tree: tree  # noqa: E731
        shares = None
    inputs = place(task.inputs)
    key = jax.random.key(config.seed)
    selection = task.selection
    metric = selection.name
    best = {"score": selection.worst, "step": 0, "params": jax.tree.map(np.array, params)}
    first = 0
    if loop_state is not None:
        template = {"params": params, "opt_state": opt_state, "best_params": best["params"],
                    "key": np.asarray(jax.random.key_data(key))}
        state, loop_state = ckpt.restore(loop_state["step"], template)
        params, opt_state = jax.tree.map(jnp.asarray, (state["params"], state["opt_state"]))
        key = jax.random.wrap_key_data(state["key"], impl=jax.random.key_impl(key))
        best = {"score": loop_state["best_score"], "step": loop_state["best_step"],
                "params": state["best_params"]}
        first = loop_state["step"]
    params, opt_state = place((params, opt_state))
    batches = train_batches(task, config.seed, start_step=first, shares=shares)
    description = task.describe()

    def save(step):
        ckpt.save(step, {"params": params, "opt_state": opt_state, "best_params": best["params"],
                         "key": jax.random.key_data(key)},
                  {"step": step, "best_score": best["score"], "best_step": best["step"],
                   "metrics_offset": logger.offset()}, config_json, description)

    bar = tqdm(range(first + 1, t.num_steps + 1), desc="train", disable=not progress,
               mininterval=0.5, initial=first, total=t.num_steps)
    clock = _TrainClock(first, t.batch_size)
    with StopSignals(enabled=every > 0) as stop:
        for step in bar:
            key, step_key = jax.random.split(key)
            params, opt_state, stats = train_step(params, opt_state, step_key, inputs, next(batches))
            if step % t.log_every == 0 or step == t.num_steps:
                stats = jax.device_get(stats)
                if not np.isfinite(stats["loss"]):
                    raise FloatingPointError(
                        f"loss is {stats['loss']} at step {step} (checked every "
                        f"train.log_every={t.log_every} steps): check the inputs for NaN, "
                        f"infinite or unscaled values (data.normalize), or lower "
                        f"train.learning_rate ({t.learning_rate})")
                logger.log(step, "train", {**stats, "learning_rate": float(schedule(step)),
                                           **clock.lap(step)})
                bar.set_postfix(loss=f"{stats['loss']:.4f}")
            if step % t.eval_every == 0 or step == t.num_steps:
                with clock.paused(stats):
                    val = task.metrics("validation", predict(predict_step, params, task,
                                                             "validation", config.seed, inputs,
                                                             shares))
                logger.log(step, "validation", val)
                if selection.better(val[metric], best["score"]):
                    best = {"score": val[metric], "step": step,
                            "params": jax.tree.map(np.array, params)}
                bar.set_postfix(loss=f"{float(stats['loss']):.4f}", **{f"val_{metric}": f"{val[metric]:.3f}"})
            if stop.reached(step):
                logger.log(step, "preempted", {"checkpoint_step": step})
                save(step)
                ckpt.wait()
                raise Preempted(step, ckpt.directory, stop.signal_name or "SIGTERM")
            if every > 0 and (step % every == 0 or (step == t.num_steps and step >= every)):
                with clock.paused(stats):
                    save(step)

    # The test part is evaluated once, with the parameters chosen on validation.
    if jax.process_index() == 0:
        save_model(os.path.dirname(ckpt.directory), best["params"])
    chosen = place(jax.tree.map(jnp.asarray, best["params"]))
    # What a task can say about the selected model itself (e.g. learned relation weights).
    report = getattr(task, "model_report", None)
    learned = report(nnx.merge(graphdef, chosen, rest)) if report else {}
    return ({"learned": learned} if learned else {}) | {
        "step": t.num_steps,
        "selected_step": best["step"],
        "predictions": {part: predict(predict_step, chosen, task, part, config.seed, inputs,
                                      shares) for part in ("validation", "test")},
        "num_params": int(sum(x.size for x in jax.tree.leaves(best["params"]))),
        "compilations": {"train_step": train_step._cache_size(),
                         "predict_step": predict_step._cache_size()},
    }
