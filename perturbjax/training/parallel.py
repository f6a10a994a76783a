"""Data parallelism: pmap's layout and meaning, written with `jax.shard_map` over a named mesh.

`jax.pmap` is in maintenance mode since JAX 0.8, so the data-parallel steps here are
`jax.jit(jax.shard_map(...))` over a 1-D mesh whose one axis is named "data". The layout is
pmap's: every batch array has a leading device axis, `[n_devices, B / n_devices, ...]` (the
task stacks its `Shares`), and device `i` receives row `i`: its own share of the conditions (in
sampled-subgraph mode with its own padded subgraph, every device's padded to the same frozen
budget), with the full padded graph if there is one (`inputs`), the parameters, optimizer state
and key replicated on every device. Each device computes the loss and gradients of its share, the gradients and statistics
are averaged with `jax.lax.pmean(..., "data")`, and the optimizer update, identical on every
device, keeps the parameters replicated.

The global batch is `train.batch_size`; each device gets `batch_size / n_devices` conditions.
Since the task's loss is a mean over the batch and every share has the same size, the mean of
the per-device losses (and gradients) is exactly the loss (and gradient) of the global batch:
with dropout 0 a step on n devices equals the single-device step up to float rounding
(`tests/test_parallel.py`). With dropout the per-device key is the step key folded with the
device's index (`jax.lax.axis_index("data")`), so the shares draw different masks, and the
masks differ from the single-device step's: the two then agree in distribution only.

Predictions are sharded the same way (each device predicts its share of the eval batch, and the
shares are concatenated back to `[B, ...]`, replicated on every device), so evaluation scales
with the devices too.

Several processes (multi-host: a TPU VM pod's workers, or processes on one machine) join JAX's
distributed runtime first (`initialize_processes`); the mesh then spans the devices of all
processes, in `jax.devices()` order. Every process draws the same global batch and builds only
the shares of its own devices (`Shares.of(mesh)`), which `ShardedStep` assembles into one global
array with `jax.make_array_from_process_local_data`; the parameters, optimizer state and graph
are replicated from identical values in every process, and predictions come back replicated, so
every process sees all of them in global order. Every process must run the same jitted steps in
the same order (their collectives pair up across processes); `same_on_every_process` checks a
decision that must not differ before it is taken.

A detail of `shard_map` (with its default `check_vma=True`): differentiating a device-varying
loss with respect to *replicated* parameters already sums the gradient over the devices (the
transpose of the implicit broadcast is a psum). To get pmap's per-device gradients, which are
then `pmean`-ed, the parameters are first marked device-varying with
`jax.lax.pcast(params, "data", to="varying")`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from perturbjax.training.optim import apply_gradients

AXIS = "data"


def initialize_processes(coordinator_address: str | None = None, num_processes: int | None = None,
                         process_id: int | None = None) -> None:
    """Joins JAX's distributed runtime, before anything touches a JAX device.

    Without arguments JAX detects them (Cloud TPU VMs, SLURM, Open MPI). Computations spanning
    processes on CPU need a collectives library: gloo is set unless
    $JAX_CPU_COLLECTIVES_IMPLEMENTATION chooses one. The option configures the CPU client only, so
    it is inert on TPUs and GPUs (their collectives are the accelerator's); setting it always is
    the one rule that needs no knowledge of the backend, which is not known before the backends
    start (JAX_PLATFORMS is usually unset, also on a machine without accelerators).
    """
    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


def make_mesh(num_devices: int = 0) -> Mesh:
    """A 1-D mesh named ("data",) over all devices of all processes, or, in a single process,
    over its first `num_devices` (all when <= 0)."""
    devices = jax.devices()
    if num_devices > 0 and num_devices != len(devices):
        if jax.process_count() > 1:
            raise ValueError(f"train.num_devices={num_devices} with {jax.process_count()} "
                             f"processes: their mesh spans all {len(devices)} devices; leave "
                             f"train.num_devices=0")
        if num_devices > len(devices):
            raise ValueError(f"train.num_devices={num_devices} but only {len(devices)} local "
                             f"devices are available ({jax.default_backend()})")
        devices = devices[:num_devices]
    return Mesh(np.array(devices), (AXIS,))


class ProcessSetupError(RuntimeError):
    """The processes of a multi-process run cannot go on together (a setting or a view of the
    workdir that one process does not share, or a config that needs data parallelism)."""


def same_on_every_process(value: int, what: str, remedy: str = "") -> None:
    """Raises, in every process, unless all processes pass the same `value` (one collective).

    Raises:
      ProcessSetupError: naming `what`, each process's value and the `remedy`.
    """
    if jax.process_count() == 1:
        return
    values = np.asarray(multihost_utils.process_allgather(np.int64(value))).reshape(-1)
    if np.any(values != values[0]):
        raise ProcessSetupError(f"the processes disagree on {what}: {values.tolist()} (process i's "
                           f"value at position i){'; ' + remedy if remedy else ''}")


@dataclasses.dataclass(frozen=True)
class Shares:
    """How a global batch is divided: into `total` equal shares, one per device of the mesh, of
    which this process builds the `local` ones (all of them on a single host).

    A task builds each local share with its own padded inputs (its conditions, and in sampled
    mode its own subgraph) and stacks them: pmap's layout, a leading device axis.
    """

    total: int
    local: tuple[int, ...]

    @classmethod
    def of(cls, mesh: Mesh) -> Shares:
        """One share per device of `mesh`; this process builds those of its own devices."""
        me = jax.process_index()
        return cls(mesh.size, tuple(i for i, d in enumerate(mesh.devices.flat)
                                    if d.process_index == me))

    def split(self, idx: np.ndarray) -> list[np.ndarray]:
        """The local shares of the batch `idx`: share i holds rows [i * B/n, (i + 1) * B/n).

        Raises:
          ValueError: B is not divisible by the number of shares.
        """
        if len(idx) % self.total:
            raise ValueError(f"batch size {len(idx)} is not divisible by the number of devices "
                             f"{self.total}; choose train.batch_size as a multiple of {self.total}")
        size = len(idx) // self.total
        return [idx[i * size:(i + 1) * size] for i in self.local]


def stack_shares(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-device batches (pytrees of equal structure and shapes) -> one with a leading device axis."""
    return jax.tree.map(lambda *xs: np.stack(xs), *batches)


def replicate(tree, mesh: Mesh):
    """Places every array of `tree` on all devices of `mesh` (fully replicated)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


class ShardedStep:
    """A jitted step taking this process's shares of a batch, stacked (`[n_local, ...]` leaves, in
    mesh order): makes them one global `[n_devices, ...]` array whose row i is on device i of the
    mesh, and calls the jitted shard_map function. `_cache_size()` is the jitted function's, so a
    run's summary counts its compilations as for the single-device steps."""

    def __init__(self, jitted: Callable, mesh: Mesh):
        self._jitted = jitted
        self.mesh = mesh
        self._batch_sharding = NamedSharding(mesh, P(AXIS))

    def __call__(self, *args):
        *rest, batch = args
        batch = jax.tree.map(lambda x: jax.make_array_from_process_local_data(
            self._batch_sharding, x, (self.mesh.size, *np.shape(x)[1:])), batch)
        return self._jitted(*rest, batch)

    def _cache_size(self) -> int:
        return self._jitted._cache_size()


def make_parallel_steps(task, graphdef, rest, tx, mesh: Mesh):
    """Data-parallel versions of `loop.make_steps`, with the same signatures.

    train_step(params, opt_state, key, inputs, batch) -> (params, opt_state, stats) and
    predict_step(params, inputs, batch) -> [B, ...] predictions, where `batch` holds this
    process's shares stacked (`[n_local, B / n, ...]` leaves; see `Shares`). Parameters and
    optimizer state should be placed with `replicate(..., mesh)` so that every call sees the same
    input shardings (one compilation). Outputs are replicated on every device, so every process
    can read all of them (the predictions in global order).
    """

    def local_train_step(params, opt_state, key, inputs, batch):
        batch = jax.tree.map(lambda x: x[0], batch)  # this device's [B / n, ...] share
        key = jax.random.fold_in(key, jax.lax.axis_index(AXIS))

        def loss_fn(p):
            return task.loss(nnx.merge(graphdef, p, rest), inputs, batch, key)

        # Per-device gradients, as under pmap (see the module docstring), then their mean.
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            jax.lax.pcast(params, AXIS, to="varying"))
        grads, loss, aux = jax.lax.pmean((grads, loss, aux), AXIS)
        return apply_gradients(tx, params, opt_state, grads, loss, aux)

    def local_predict_step(params, inputs, batch):
        batch = jax.tree.map(lambda x: x[0], batch)
        return task.forward(nnx.merge(graphdef, params, rest), inputs, batch)[None]

    train = jax.shard_map(local_train_step, mesh=mesh,
                          in_specs=(P(), P(), P(), P(), P(AXIS)), out_specs=P())

    def predict(params, inputs, batch):
        out = jax.shard_map(local_predict_step, mesh=mesh, in_specs=(P(), P(), P(AXIS)),
                            out_specs=P(AXIS))(params, inputs, batch)
        return out.reshape(-1, *out.shape[2:])  # [n, B / n, ...] -> [B, ...]

    # Replicated predictions: with several processes a sharded result would leave each process
    # only its own rows; this is one all-gather inside the compiled step.
    return (ShardedStep(jax.jit(train, donate_argnums=(0, 1)), mesh),
            ShardedStep(jax.jit(predict, out_shardings=NamedSharding(mesh, P())), mesh))
