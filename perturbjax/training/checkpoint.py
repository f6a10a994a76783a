"""Checkpoints of a training run: exact resume, preemption, checkpoints that describe themselves.

One Orbax `CheckpointManager` under `WORKDIR/checkpoints/STEP/`, saving asynchronously (training
goes on while the files are written) and keeping the last `train.checkpoint.keep` steps. Each
step holds four items:

    state        arrays (StandardSave): params, opt_state, best_params, key (raw PRNG key data)
    loop         JSON: step, best_score, best_step (validation selection so far) and
                 metrics_offset, the length of metrics.jsonl when the checkpoint was taken
    config       JSON: the resolved config, equal to WORKDIR/config.json
    description  JSON: the task's `describe()` (graph schema and summary, padding budget, split)

The validation-selected parameters travel in every checkpoint (`best_params`), since an exact
resume needs them; so rotation never loses the best model, and the last checkpoint of a
finished run holds both the final and the selected parameters, with no separate best-checkpoint
policy.

In a multi-host run every process calls save and restore (Orbax synchronises them, and process 0
writes: the arrays saved are host copies, the same in every process), so the workdir must be on a
filesystem that every process sees (one machine's disk, NFS, a Filestore or gcsfuse mount) to
be resumed: a process that cannot read the checkpoints cannot resume, and `latest_step` stops
all of them when they disagree (before they could wait for each other forever).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from perturbjax.training.parallel import same_on_every_process

ITEMS = ("state", "loop", "config", "description")
MODEL_FILE = "model.npz"


def save_model(workdir: str, params) -> str:
    """Writes the validation-selected parameters to `WORKDIR/model.npz` (one array per leaf,
    named by its tree path), whole or not at all; what `explain` and `predict` load. Returns
    the path."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    arrays = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}
    path = os.path.join(workdir, MODEL_FILE)
    with open(f"{path}.tmp", "wb") as f:
        np.savez(f, **arrays)
    os.replace(f"{path}.tmp", path)
    return path


def load_model(workdir: str, template):
    """The parameters `save_model` wrote, in `template`'s tree (shapes and dtypes checked).

    Raises:
      WorkdirConflict: no model.npz (the run did not finish training, or predates it), or one
        whose arrays do not fit the model the workdir's config builds.
    """
    path = os.path.join(workdir, MODEL_FILE)
    if not os.path.exists(path):
        raise WorkdirConflict(f"{path} is missing: the run in {workdir} has not finished training "
                              f"(or was trained before model files were written; retrain it)")
    try:
        saved = dict(np.load(path))
    except (OSError, ValueError) as e:
        raise WorkdirConflict(f"{path} cannot be read ({e})") from e

    def fill(key_path, leaf):
        key = jax.tree_util.keystr(key_path)
        if key not in saved or saved[key].shape != np.shape(leaf):
            got = saved[key].shape if key in saved else "nothing"
            raise WorkdirConflict(f"{path}: parameter {key} holds {got}, the model built from "
                                  f"{workdir}/config.json needs shape {np.shape(leaf)}")
        return saved[key].astype(np.asarray(leaf).dtype)

    return jax.tree_util.tree_map_with_path(fill, template)


class WorkdirConflict(ValueError):
    """The workdir belongs to a run with another config."""


class Preempted(Exception):
    """Training stopped on SIGTERM or Ctrl-C after saving a checkpoint; rerunning the command
    resumes it."""

    def __init__(self, step: int, directory: str, signal_name: str = "SIGTERM"):
        super().__init__(f"preempted ({signal_name}) at step {step}; "
                         f"checkpoint saved in {directory}/{step}")
        self.step, self.directory = step, directory


def check_workdir_config(workdir: str, config_json: str, defaults_json: str = "{}") -> None:
    """Refuses a workdir whose config.json is not `config_json`.

    Resuming, or appending metrics, from another experiment would silently mix two runs. A key
    absent from the old config.json is accepted when its new value equals its value in
    `defaults_json` (the config every setting starts from): such a key was added to the code
    after that run started, and its default keeps the old behaviour.

    Raises:
      WorkdirConflict: naming the keys that differ and how to start fresh.
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    try:
        with open(path, "rb") as f:
            old = json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WorkdirConflict(f"{path} is not a readable run config ({e}); the workdir is damaged: "
                              f"pass another --workdir (or delete this one)") from e
    if not isinstance(old, dict):
        raise WorkdirConflict(f"{path} is not a run config (a JSON object); pass another "
                              f"--workdir (or delete this one)")
    old = _flatten(old)
    new = _flatten(json.loads(config_json))
    defaults = _flatten(json.loads(defaults_json))
    missing = object()
    diff = [f"{k}: {old.get(k, '<missing>')!r} -> {new.get(k, '<missing>')!r}"
            for k in sorted(set(old) | set(new))
            if old.get(k, missing) != new.get(k, missing)
            and not (k not in old and k in defaults and new.get(k, missing) == defaults[k])]
    if diff:
        raise WorkdirConflict(
            f"{path} holds another run's config ({len(diff)} difference(s): {'; '.join(diff[:5])}"
            f"{' ...' if len(diff) > 5 else ''}). A workdir is resumed only by the same config; "
            f"to start a fresh run, pass another --workdir (or delete this one).")


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


@contextlib.contextmanager
def _orbax_quiet():
    """Orbax logs unreadable checkpoint files through absl before raising; the raise is ours to
    report, in one line."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class Checkpoints:
    """Saves and restores a run's checkpoints under `WORKDIR/checkpoints`.

    The manager is created on first use, so a run that never saves leaves no directory.
    """

    def __init__(self, workdir: str, keep: int):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self._keep = keep
        self._manager = None

    @property
    def manager(self) -> ocp.CheckpointManager:
        if self._manager is None:
            options = ocp.CheckpointManagerOptions(
                enable_async_checkpointing=True,
                # Left behind by a save that a SIGKILL interrupted; never a valid checkpoint.
                cleanup_tmp_directories=True,
                preservation_policy=ocp.checkpoint_managers.LatestN(self._keep))
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        return self._manager

    def latest_step(self) -> int | None:
        """The newest completed checkpoint's step (interrupted saves are not counted).

        With several processes every one must see the same (creating the manager is a barrier,
        and a resume a collective decision), else all raise `parallel.ProcessSetupError`.
        """
        shared = ("a multi-host run resumes only from a workdir that every process sees (NFS, "
                  "Filestore, gcsfuse); else pass another --workdir or delete the checkpoints")
        exists = os.path.isdir(self.directory)
        same_on_every_process(int(exists), f"whether {self.directory} exists (1) or not (0)",
                              shared)
        with _orbax_quiet():  # a damaged checkpoint's metadata: reported when it is restored
            step = self.manager.latest_step() if exists else None
        same_on_every_process(-1 if step is None else step,
                              f"the latest checkpoint in {self.directory} (-1: none)", shared)
        return step

    def save(self, step: int, state: dict, loop: dict, config_json: str, description: dict) -> None:
        """Starts an asynchronous save of `state` (a pytree of arrays) and the JSON items.

        The arrays are copied to host memory first: the train step donates its parameter and
        optimizer-state buffers, so the next step would overwrite what is still being written.
        """
        state = jax.tree.map(lambda x: np.array(jax.device_get(x)), state)
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            loop=ocp.args.JsonSave(loop),
            config=ocp.args.JsonSave(json.loads(config_json)),
            description=ocp.args.JsonSave(description)))

    def restore(self, step: int, template: dict) -> tuple[dict, dict]:
        """(state, loop) of checkpoint `step`, bit for bit as saved.

        `template` gives the state's tree, shapes and dtypes. Arrays come back as numpy arrays:
        the caller places them as a fresh run places its own (restored device arrays would be
        committed to a device, and the predict step would then compile once more).
        """
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), template)
        with self._unreadable(step):
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), loop=ocp.args.JsonRestore()))
        return out.state, out.loop

    @contextlib.contextmanager
    def _unreadable(self, step: int):
        """A checkpoint that cannot be read (damaged files, a disk that filled up) is a
        WorkdirConflict naming it, with Orbax's own log lines about it silenced."""
        try:
            with _orbax_quiet():
                yield
        except Exception as e:  # Orbax raises many types (ValueError, OSError, KeyError, ...)
            raise WorkdirConflict(
                f"checkpoint {self.directory}/{step} cannot be read ({type(e).__name__}: {e}); "
                f"delete that folder to resume from the one before, or pass another --workdir"
            ) from e

    def read_json(self, step: int | None = None) -> dict:
        """The JSON items (loop, config, description) of checkpoint `step` (default: latest)."""
        step = self.latest_step() if step is None else step
        items = ("loop", "config", "description")
        with self._unreadable(step):
            out = self.manager.restore(step, args=ocp.args.Composite(
                **{name: ocp.args.JsonRestore() for name in items}))
        return {name: out[name] for name in items}

    def wait(self) -> None:
        """Blocks until every started save is complete on disk."""
        if self._manager is not None:
            self._manager.wait_until_finished()

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None


class StopSignals:
    """Context manager: while active, SIGTERM or a first Ctrl-C (SIGINT) asks the loop to stop
    at a step boundary.

    A TPU VM (or a batch scheduler) sends SIGTERM shortly before preemption, and a user at the
    terminal presses Ctrl-C; the loop asks `reached(step)` at every step and, when true, saves a
    checkpoint and stops cleanly. A second Ctrl-C aborts at once (KeyboardInterrupt). In a
    single process the flag is set by Python handlers; outside the block (and in a thread other
    than the main one, where Python cannot install handlers) the signals keep their previous
    meaning.

    With several processes each may get the signal at a different step, and a process that
    stopped alone would leave the others waiting in a collective. JAX's distributed runtime
    catches SIGTERM there itself (its preemption notifier) and the processes agree on one step to
    stop at: `reached` asks it (`multihost_utils.reached_preemption_sync_point`), so every
    process must call it at every step, as the loop does. No Python handler is installed then
    (it would replace the runtime's; Ctrl-C keeps its meaning), and with `enabled=False` SIGTERM
    stays caught by the runtime: the run goes on.

    Attributes:
      signal_name: "SIGTERM" or "SIGINT", the signal that set the flag (None before one came).
    """

    def __init__(self, enabled: bool = True):
        self.signal_name = None
        self._processes = jax.process_count()
        self._enabled = enabled and (self._processes > 1
                                     or threading.current_thread() is threading.main_thread())
        self._previous = {}

    def _handler(self, signum, frame):
        self.signal_name = signal.Signals(signum).name
        if signum == signal.SIGINT:  # the next Ctrl-C interrupts at once
            signal.signal(signal.SIGINT, signal.default_int_handler)
            print("perturbjax: Ctrl-C: saving a checkpoint at the end of this step (Ctrl-C "
                  "again to abort without saving)", file=sys.stderr)

    def reached(self, step: int) -> bool:
        """Whether to stop after `step` (in every process at the same step)."""
        if not self._enabled:
            return False
        if self._processes > 1:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.signal_name is not None

    def __enter__(self) -> "StopSignals":
        if self._enabled and self._processes == 1:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
